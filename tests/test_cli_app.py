"""``kh``'s one typer app, without a running stack: every group under ``kh --help``, the
operator's choices in step with the server's lists, usage errors as exit 2, and no server
module imported until an operator command runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from actors.agents.accelerators import ACCELERATOR_CHOICES
from actors.agents.backends import BACKEND_KINDS
from events import Durability
from kernelhub.cli import app, main
from kernelhub.operator_cli import ACCELERATORS_HELP, BackendChoice, DurabilityChoice

pytestmark = pytest.mark.unit

CLIENT = ("run", "ps", "info", "rm", "logs", "exec", "upload", "download", "ls", "app", "watch")
OPERATOR = ("up", "down", "status", "session", "agent", "projections", "events")
OPERATOR += (
    "replay",
    "fairshare",
    "eta",
    "why",
    "trace",
    "whatif",
    "import-trace",
    "admin",
    "vfolder",
    "service",
)


def test_kh_help_lists_every_command_and_group() -> None:
    shown = CliRunner().invoke(app, ["--help"])
    assert shown.exit_code == 0, shown.output
    listed = [
        line.split()[0] for line in shown.stdout.split("Commands:")[1].splitlines() if line.strip()
    ]
    assert listed == [*CLIENT, *OPERATOR]


@pytest.mark.parametrize(
    ("group", "commands"),
    [
        ("session", ["create", "destroy", "restart", "exec", "logs", "show", "list"]),
        ("agent", ["drain", "undrain", "start"]),
        ("projections", ["status", "rebuild", "run"]),
        (
            "events",
            ["tail", "show", "verify", "checkpoint", "audit", "export", "import", "archive"],
        ),
    ],
)
def test_each_group_has_its_commands_and_a_data_dir(group: str, commands: list[str]) -> None:
    shown = CliRunner().invoke(app, [group, "--help"])
    assert shown.exit_code == 0, shown.output
    listed = [
        line.split()[0] for line in shown.stdout.split("Commands:")[1].splitlines() if line.strip()
    ]
    assert listed == commands
    assert "--data-dir" in shown.stdout


def test_the_operator_choices_are_the_servers() -> None:
    assert tuple(b.value for b in BackendChoice) == BACKEND_KINDS
    assert {d.value for d in DurabilityChoice} == {d.value for d in Durability}
    assert ACCELERATORS_HELP == ACCELERATOR_CHOICES


@pytest.mark.parametrize(
    "args",
    [
        ["session", "exec", "6f1c9a59-6d4b-4c55-9d57-13a1f6c1e0aa"],
        ["session", "exec", "6f1c9a59-6d4b-4c55-9d57-13a1f6c1e0aa", "-c", "1", "--batch", "ls"],
        ["up", "--backend", "vm"],
        ["replay", "cluster"],
        ["events", "nope"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_kh_starts_without_the_servers_modules() -> None:
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kernelhub.cli import main; main(['--help']); main(['up', '--help']); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'actors', 'events', 'projections', 'ray', 'redis', 'structlog', 'aiodocker'}))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[-1] == "[]"
