"""``kh`` as a user runs it: a real process, a real embedded Redis, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from kernelhub.testing import docker_missing

from .khstack import stack_root, stop_stack

pytestmark = pytest.mark.redis

KH = [sys.executable, "-m", "kernelhub.cli"]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with stack_root("kh-cli-") as root:
        try:
            yield root
        finally:
            stop_stack(root, {**os.environ, "KH_DATA_DIR": str(root)})


def kh(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "KH_DATA_DIR": str(data_dir),
        "KH_CONFIG_DIR": str(data_dir / "cfg"),
        "KH_GATEWAY_PORT": "0",
        **env,
    }
    environ.pop("KH_REDIS_URL", None)
    return subprocess.run([*KH, *args], env=environ, capture_output=True, text=True, timeout=60)


def test_up_status_down(data_dir: Path) -> None:
    up = kh(data_dir, "up", "--durability", "always")
    assert up.returncode == 0, up.stderr
    assert "kernelhub is up" in up.stdout
    assert "export KH_REDIS_URL=unix://" in up.stdout
    url = next(line.split("=", 1)[1] for line in up.stdout.splitlines() if "KH_REDIS_URL=" in line)
    client = redis.Redis.from_url(url)
    assert client.config_get("appendfsync")["appendfsync"] == "always"
    client.close()

    again = kh(data_dir, "up")
    assert again.returncode == 0 and "already running" in again.stdout

    access_key = next(
        line.split("=", 1)[1]
        for line in up.stdout.splitlines()
        if line.startswith("export BACKEND_ACCESS_KEY=")
    )
    secret_key = next(
        line.split("=", 1)[1]
        for line in up.stdout.splitlines()
        if line.startswith("export BACKEND_SECRET_KEY=")
    )
    assert len(access_key) == 20 and len(secret_key) == 40
    assert f"export BACKEND_SECRET_KEY={secret_key}" in again.stdout  # the same keypair
    config = data_dir / "cfg" / "config.toml"
    assert config.stat().st_mode & 0o777 == 0o600 and secret_key in config.read_text()

    status = kh(data_dir, "status", "--json")
    report = json.loads(status.stdout)
    assert report["running"] and report["redis_url"] == url
    assert report["events"] > 0  # the bootstrap: domain, project, policy, admin, ...
    assert [(a["id"], a["status"]) for a in report["agents"]] == [("i-local", "ALIVE")]
    assert {p["projection"] for p in report["projections"]} == {"sessions", "agents", "tenancy"}
    assert isinstance(report["sessions"], dict)
    actors = {a["name"]: a for a in report["actors"]}  # Ray's state API, with the token
    assert {
        "projector",
        "gateway",
        "reaper",
        "tenancy",
        "scheduler:default",
        "agent:i-local",
    } <= set(actors)
    assert all(a["state"] == "ALIVE" and a["restarts"] == 0 for a in actors.values())
    shown = kh(data_dir, "status").stdout
    assert "agents     1" in shown and "  i-local" in shown and "actors     " in shown

    down = kh(data_dir, "down")
    assert down.returncode == 0 and "kernelhub is down" in down.stdout
    stopped = kh(data_dir, "status")
    assert stopped.returncode == 3 and "not running" in stopped.stdout
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(url).ping()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["up"], {"KH_DURABILITY": "sometimes"}, "kh: error: invalid configuration"),
        (["up", "--redis-port", "99999"], {}, "kh: error: invalid configuration"),
        (["up"], {"KH_REDIS_SERVER": "/nonexistent"}, "kh: error: redis-server '/nonexistent'"),
        (
            ["up", "--address", "127.0.0.1:1"],
            {},
            "kh: error: joining a Ray cluster needs the external Redis that holds the log",
        ),
        (
            ["agent", "start", "--address", "127.0.0.1:1"],
            {},
            "kh: error: joining a Ray cluster needs the external Redis that holds the log",
        ),
        (
            ["trace", "6f1c9a59-6d4b-4c55-9d57-13a1f6c1e0aa"],
            {},
            "kh: error: kernelhub is not running",
        ),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    data_dir: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = kh(data_dir, *args, **env)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_no_command_prints_help(data_dir: Path) -> None:
    result = kh(data_dir)
    assert result.returncode == 2 and "Usage: kh" in result.stdout
    for command in ("run", "ps", "info", "rm", "logs", "exec", "watch", "up", "events", "why"):
        assert f"  {command} " in result.stdout, command  # client and operator commands
    for group in ("session", "agent", "projections", "replay", "trace", "status", "down"):
        assert f"  {group} " in result.stdout, group


def test_projections_commands(data_dir: Path) -> None:
    up = kh(data_dir, "up")
    assert up.returncode == 0, up.stderr
    actors = next(line for line in up.stdout.splitlines() if line.startswith("  actors"))
    backend = "process" if docker_missing() else "docker"  # auto: Docker when it answers
    assert actors.split(None, 1)[1] == (
        "projector, sessions:0, sessions:1, scheduler:default, agent:i-local, tenancy, serving, "
        f"reaper, callbacks, gateway ({backend} backend)"
    )
    url = next(line.split("=", 1)[1] for line in up.stdout.splitlines() if "KH_REDIS_URL=" in line)
    appended = subprocess.run(
        [sys.executable, "-c", APPEND_WORKLOAD, url], capture_output=True, text=True, timeout=60
    )
    assert appended.returncode == 0, appended.stderr
    assert int(appended.stdout) > 0
    events = json.loads(kh(data_dir, "status", "--json").stdout)["events"]  # bootstrap + workload

    def caught_up() -> bool:
        rows = json.loads(kh(data_dir, "projections", "status", "--json").stdout)
        return all(r["state"] == "running" and r["lag_ms"] == 0 for r in rows)

    deadline = time.monotonic() + 30
    while not caught_up():  # the background projector started by `kh up` folds the log
        assert time.monotonic() < deadline, "the projector never caught up"
        time.sleep(0.2)
    rows = json.loads(kh(data_dir, "projections", "status", "--json").stdout)
    assert {r["projection"] for r in rows} == {"sessions", "agents", "tenancy"}

    rebuilt = kh(data_dir, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"{events}/{events} events" in rebuilt.stderr  # the progress bar
    assert "sessions: generation 2 is active" in rebuilt.stdout

    bad = kh(data_dir, "projections", "rebuild", "nope")
    assert bad.returncode == 1
    assert (
        bad.stderr.strip()
        == "kh: error: no projection named 'nope' (there are: agents, sessions, tenancy)"
    )


APPEND_WORKLOAD = """
import asyncio, sys
from events import RedisEventStore
from kernelhub.workload import Workload, append_steps

async def main():
    store = RedisEventStore.from_url(sys.argv[1])
    print(await append_steps(store, Workload(sessions=40, agents=2, seed=9).steps()))
    await store.close()

asyncio.run(main())
"""


@pytest.mark.timeout(300)  # some thirty CLI processes after a `kh up`: 100-120 s under load
def test_session_commands_run_a_session_through_its_life(data_dir: Path) -> None:
    assert kh(data_dir, "up", "--accelerator", "sim:2").returncode == 0
    created = kh(
        data_dir, "session", "create", "--name", "cli-life", "-r", "cuda.device=1", "--wait", "60"
    )
    assert created.returncode == 0, created.stderr
    session_id, status_line = created.stdout.strip().splitlines()
    assert status_line == f"{session_id} RUNNING"
    ran = kh(data_dir, "session", "exec", session_id, "-c", "x = 6\nprint(x * 7)")
    assert (ran.returncode, ran.stdout) == (0, "42\n"), ran.stderr
    device = "import os; print(os.environ['BACKENDAI_MOCK_CUDA_DEVICES'])"
    assert kh(data_dir, "session", "exec", session_id, "-c", device).stdout == "0\n"
    bad = kh(data_dir, "session", "create", "-r", "cuda.device")
    assert bad.returncode == 1 and bad.stderr.strip() == (
        "kh: error: -r 'cuda.device': use SLOT=AMOUNT, e.g. -r cuda.device=1"
    )
    batch = kh(data_dir, "session", "exec", session_id, "--batch", "echo out; echo err >&2; exit 3")
    assert (batch.returncode, batch.stdout, batch.stderr) == (3, "out\n", "err\n")
    restarted = kh(data_dir, "session", "restart", session_id, "--wait", "60")
    assert restarted.returncode == 0 and restarted.stdout.strip() == f"{session_id} RUNNING"
    destroyed = kh(data_dir, "session", "destroy", session_id, "--wait", "60")
    assert destroyed.returncode == 0 and destroyed.stdout.strip() == f"{session_id} TERMINATED"
    logged = kh(data_dir, "session", "logs", session_id)  # kept after the session ended
    lines = logged.stdout.splitlines()  # two pipes of one command: no order between them
    assert logged.returncode == 0 and "out" in lines and "err" in lines
    not_running = kh(data_dir, "session", "exec", session_id, "-c", "1")
    assert not_running.returncode == 1
    assert not_running.stderr.strip() == (
        "kh: error: the session is TERMINATED; code runs while it is RUNNING"
    )
    shown = kh(data_dir, "session", "show", session_id)
    history = [line.split()[-1] for line in shown.stdout.splitlines() if line.startswith("  20")]
    assert history == [
        "PENDING",
        "SCHEDULED",
        "PREPARING",
        "RESTARTING",
        "RUNNING",
        "TERMINATING",
        "TERMINATED",
    ]
    refused = kh(data_dir, "session", "restart", session_id)  # a refusal from inside an actor
    assert refused.returncode == 1
    assert refused.stderr.strip() == "kh: error: Cannot restart sessions in terminated status"
    listed = kh(data_dir, "session", "list")
    assert session_id in listed.stdout and "(1 in all)" in listed.stdout
    drained = kh(data_dir, "agent", "drain", "i-local")
    assert drained.returncode == 0 and drained.stdout.strip() == "i-local drained"
    waiting = kh(data_dir, "session", "create", "--name", "held", "--wait", "3")
    assert waiting.returncode == 1 and "is still PENDING after 3s" in waiting.stderr
    held = waiting.stdout.strip()
    undrained = kh(data_dir, "agent", "undrain", "i-local")
    assert undrained.returncode == 0 and undrained.stdout.strip() == "i-local schedulable"
    assert kh(data_dir, "session", "destroy", held, "--wait", "30").returncode == 0
    unknown = kh(data_dir, "agent", "drain", "i-nowhere")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "kh: error: no agent 'i-nowhere' in this installation"
    missing = kh(data_dir, "session", "show", "nope")
    assert missing.returncode == 1 and missing.stderr.strip() == "kh: error: no session nope"
    no_image = kh(data_dir, "session", "create", "--image", "nope:1")  # not in the catalogue
    assert no_image.returncode == 1  # the API's refusal, as the client commands say it
    assert no_image.stderr.strip() == (
        "kh: error: No such environment image.: unknown alias or disallowed registry"
    )
    short = kh(data_dir, "session", "create", "--name", "cli")  # the API's names: 4-64 chars
    assert short.returncode == 1 and short.stdout == ""
    assert short.stderr.startswith("kh: error: ") and "invalid session name 'cli'" in short.stderr
