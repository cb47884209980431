"""Every session-creation option of ``kh run``, ``kh session create`` and the SDK's
``create_session`` goes into the request, none is dropped on the way (issue 28), and what
the server refuses comes back as its one line; the small things a new user trips over
(``python`` in the base image, ``kh status`` after ``kh up``'s exports, memory in ``256m``).

What is *sent* is asserted against a real local HTTP server that records the request and
answers as the gateway would (a 400 problem body, or a created session); what is
*honoured* is asserted end to end through one ``kh up`` stack shared by the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kernelhub import Client
from kernelhub.client_cli.create_options import OptionError, environ_of, sdk_options
from kernelhub.client_cli.units import format_size, format_slots
from kernelhub.config import Settings
from kernelhub.sdk import ClientConfig, InvalidRequest
from kernelhub.status import own_stack, same_redis

from .khstack import KH, ROOT, Stack

REFUSAL = {
    "type": "https://api.backend.ai/probs/invalid-api-params",
    "title": "Invalid API parameters.",
    "msg": "config.mounts: virtual folders are not supported",
}


# ---- a receiver that records what a client sends ------------------------------------------
class Receiver:
    """``POST /session`` recorded and answered with ``reply`` (status, JSON body)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.reply: tuple[int, dict[str, Any]] = (400, REFUSAL)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path == "/session":
                    receiver.bodies.append(json.loads(raw))
                    status, body = receiver.reply
                else:
                    status, body = 404, {"type": "not-found", "title": "Not found."}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def kh(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "KH_"))}
    return subprocess.run(
        [*KH, *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


OPTIONS = [
    *("-e", "FOO=bar baz", "-e", "EQ=a=b", "-e", "EMPTY="),
    *("--bootstrap-script", "boot.sh"),
    *("--tag", "nightly"),
    *("--callback-url", "http://127.0.0.1:9/hook"),
    *("--starts-at", "30m"),
    *("--resource-opts", "shmem=64m"),
    *("--arch", "aarch64"),
    *("--assign-agent", "i-a,i-b"),
    *("--scaling-group", "gpu"),
    *("--preopen", "8080,8081", "--preopen", "9000"),
    *("--cluster-size", "2", "--cluster-mode", "multi-node"),
    *("-d", "dom", "-g", "proj"),
    *("-o", "AKOTHER"),
    *("--depends", "first"),
    *("-m", "data=/home/work/data", "-m", "scratch"),
]


def assert_every_option_sent(body: dict[str, Any]) -> None:
    config = body["config"]
    assert config["environ"] == {"FOO": "bar baz", "EQ": "a=b", "EMPTY": ""}
    assert body["bootstrap_script"] == "#!/bin/sh\necho booted\n"
    assert (body["tag"], body["callback_url"], body["starts_at"]) == (
        "nightly",
        "http://127.0.0.1:9/hook",
        "30m",
    )
    assert config["resource_opts"] == {"shmem": "64m"}
    assert body["architecture"] == "aarch64"
    assert config["agentList"] == ["i-a", "i-b"]
    assert config["scalingGroup"] == "gpu"
    assert config["preopen_ports"] == [8080, 8081, 9000]
    assert (body["clusterSize"], body["clusterMode"]) == (2, "multi-node")
    assert (body["domain"], body["group"], body["owner_access_key"]) == ("dom", "proj", "AKOTHER")
    assert body["dependencies"] == ["first"]
    assert config["mounts"] == ["data", "scratch"]
    assert config["mount_map"] == {"data": "/home/work/data"}


def assert_one_line_refusal(done: subprocess.CompletedProcess[str], code: int = 1) -> None:
    """The server's words on one line, a non-zero exit, no traceback."""
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "kh: error: Invalid API parameters.: config.mounts: virtual folders are not supported"
    ], done.stderr


def test_kh_run_sends_every_create_option(receiver: Receiver, tmp_path: Path) -> None:
    (tmp_path / "boot.sh").write_text("#!/bin/sh\necho booted\n")
    env = {
        "BACKEND_ENDPOINT": receiver.url,
        "BACKEND_ACCESS_KEY": "AKIATEST",
        "BACKEND_SECRET_KEY": "s" * 40,
        "HOME": str(tmp_path),
    }
    done = kh(["run", *OPTIONS, "python", "-c", "print(1)"], env, tmp_path)
    assert_one_line_refusal(done)
    [body] = receiver.bodies
    assert_every_option_sent(body)
    assert (body["image"], body["type"]) == ("python", "interactive")


def test_kh_session_create_sends_every_create_option(receiver: Receiver, tmp_path: Path) -> None:
    """The operator's create goes through the HTTP API with ``kh up``'s admin keypair."""
    (tmp_path / "boot.sh").write_text("#!/bin/sh\necho booted\n")
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(
        f'endpoint = "{receiver.url}"\naccess_key = "AKIATEST"\nsecret_key = "{"s" * 40}"\n'
    )
    env = {"KH_CONFIG_DIR": str(config_dir), "KH_DATA_DIR": str(tmp_path / "data")}
    done = kh(["session", "create", "--mem", "512m", *OPTIONS], env, tmp_path)
    assert_one_line_refusal(done)
    [body] = receiver.bodies
    assert_every_option_sent(body)
    assert body["config"]["resources"] == {"cpu": "1", "mem": "512m"}


def test_the_sdk_sends_every_create_option(receiver: Receiver) -> None:
    config = ClientConfig(endpoint=receiver.url, access_key="AKIATEST", secret_key="s" * 40)
    with Client(config) as client:
        with pytest.raises(InvalidRequest, match="virtual folders"):
            client.create_session(
                "python",
                environ={"FOO": "bar"},
                bootstrap_script="echo hi",
                tag="t",
                callback_url="http://127.0.0.1:9/",
                starts_at="2030-01-01T00:00:00",
                resource_opts={"shmem": "64m"},
                architecture="x86_64",
                agent_list=["i-local"],
                cluster_mode="single-node",
                mounts=["data"],
                mount_map={"data": "/home/work/d"},
                domain="dom",
                group="proj",
                wait=False,
            )
        receiver.reply = (201, {"sessionId": str(uuid.uuid4()), "sessionName": "plain"})
        plain = client.create_session("python", name="plain", wait=False)
    sent, default = receiver.bodies
    assert sent["config"]["environ"] == {"FOO": "bar"}
    assert sent["bootstrap_script"] == "echo hi"
    assert (sent["tag"], sent["starts_at"], sent["architecture"]) == (
        "t",
        "2030-01-01T00:00:00",
        "x86_64",
    )
    assert sent["config"]["resource_opts"] == {"shmem": "64m"}
    assert sent["config"]["agentList"] == ["i-local"]
    assert sent["config"]["mount_map"] == {"data": "/home/work/d"}
    assert (sent["domain"], sent["group"], sent["clusterMode"]) == ("dom", "proj", "single-node")
    # unset options are left out: a request asks for exactly what was given
    assert plain.name == "plain"
    for key in ("bootstrap_script", "tag", "callback_url", "starts_at", "architecture"):
        assert key not in default
    assert not {"resource_opts", "agentList", "mounts", "mount_map"} & set(default["config"])
    assert (default["domain"], default["group"]) == ("default", "default")


def test_options_that_cannot_be_sent_are_usage_errors(tmp_path: Path) -> None:
    env = {"BACKEND_ENDPOINT": "http://127.0.0.1:9", "BACKEND_ACCESS_KEY": "AK"}
    env["BACKEND_SECRET_KEY"] = "s" * 40
    for bad in (["-e", "NOVALUE"], ["--preopen", "http"], ["--cluster-mode", "mesh"]):
        done = kh(["run", *bad, "python", "-c", "1"], env, tmp_path)
        assert done.returncode == 2 and done.stderr.startswith("kh: error: "), done.stderr
        assert "Traceback" not in done.stderr
    both = kh(
        ["run", "--bootstrap", "x", "--bootstrap-script", "f", "python", "-c", "1"], env, tmp_path
    )
    assert both.returncode == 2 and "--bootstrap" in both.stderr
    missing = kh(["run", "--bootstrap-script", "nope.sh", "python", "-c", "1"], env, tmp_path)
    assert (
        missing.returncode == 3
        and "nope.sh" in missing.stderr
        and "Traceback" not in missing.stderr
    )


def test_environ_values_are_kept_verbatim() -> None:
    assert environ_of(["A= spaced ", "B=x=y", " C =", "D=1"]) == {
        "A": " spaced ",
        "B": "x=y",
        "C": "",
        "D": "1",
    }
    for bad in ("NOEQ", "=value", " =x"):
        with pytest.raises(OptionError):
            environ_of([bad])
    assert sdk_options()["environ"] == {}
    assert sdk_options(bootstrap="echo inline")["bootstrap_script"] == "echo inline"


# ---- one formatter for memory -------------------------------------------------------------
def test_memory_is_shown_as_users_write_it() -> None:
    assert format_size(256 * 2**20) == "256m"
    assert format_size("1610612736") == "1.5g"
    assert format_size(512) == "512"
    assert format_size("Infinity") == "Infinity"
    assert format_size("-Infinity") == "-Infinity"
    assert format_size("lots") == "lots"
    slots = {"mem": str(256 * 2**20), "cpu": "1.000", "cuda.mem": str(2**30), "cuda.shares": "0.5"}
    assert format_slots(slots) == "cpu=1 cuda.mem=1g cuda.shares=0.5 mem=256m"


def test_a_redis_url_is_recognised_in_its_spellings() -> None:
    assert same_redis("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/0")
    assert same_redis("redis://localhost:6379/", "redis://127.0.0.1:6379/0")
    assert not same_redis("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/0")
    assert not same_redis("redis://127.0.0.1:6380", "redis://127.0.0.1:6379")
    assert not same_redis("redis://10.0.0.2:6379", "redis://127.0.0.1:6379")
    assert same_redis("unix:///tmp/r.sock", "unix:///tmp/r.sock")
    assert not same_redis("unix:///tmp/r.sock", "unix:///tmp/other.sock")
    assert not same_redis("redis://h:port", "redis://h:6379")


# ---- end to end through kh up -------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(shared_stack: Stack) -> Stack:
    return shared_stack


def bai(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    client = Path(os.environ.get("KH_BAI_CLIENT") or ROOT / ".venv-bai" / "bin" / "backend.ai")
    return subprocess.run(
        [str(client), *args],
        env=stack.env(),
        cwd=stack.workdir,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_python_answers_in_the_base_image(stack: Stack) -> None:
    """``backend.ai run --exec 'python main.py' python main.py`` runs, as against Backend.AI's
    python images (it failed with 127: the image had only ``python3``)."""
    (stack.workdir / "main.py").write_text("import sys\nprint('main', sys.version_info[0])\n")
    official = bai(stack, "run", "--rm", "--exec", "python main.py", "python", "main.py")
    assert "main 3" in official.stdout, (official.stdout, official.stderr)
    batch = stack.kh(
        "run", "--rm", "--type", "batch", "--exec", "python -c 'print(6 * 7)'", "python"
    )
    assert batch.returncode == 0 and "42" in batch.stdout.splitlines(), batch.stderr


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_environ_reaches_the_kernel(stack: Stack) -> None:
    code = "import os; print(os.environ['FOO'], os.environ['EQ'], sep='|')"
    done = stack.kh("run", "--rm", "-e", "FOO=bar baz", "-e", "EQ=a=b", "python", "-c", code)
    assert (done.returncode, done.stdout) == (0, "bar baz|a=b\n"), done.stderr


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_tag_and_memory_in_kh_info_ps_and_session_show(stack: Stack) -> None:
    done = stack.kh(
        "run", "-n", "opt-tag", "--tag", "nightly", "-r", "mem=512m", "python", "-c", "pass"
    )
    assert done.returncode == 0, done.stderr
    try:
        info = stack.kh("info", "opt-tag")
        assert info.returncode == 0, info.stderr
        assert "tag          nightly" in info.stdout, info.stdout
        requested = next(line for line in info.stdout.splitlines() if line.startswith("requested"))
        assert "mem=512m" in requested and str(512 * 2**20) not in info.stdout, info.stdout
        listed = json.loads(stack.kh("info", "opt-tag", "--json").stdout)
        assert listed["tag"] == "nightly" and listed["requested_slots"]["mem"] == str(512 * 2**20)
        table = stack.kh("ps")
        assert "mem=512m" in table.stdout, table.stdout
        show = stack.kh("session", "show", listed["id"], KH_CONFIG_DIR=str(stack.root / "cfg"))
        assert show.returncode == 0 and "mem=512m" in show.stdout, (show.stdout, show.stderr)
    finally:
        stack.kh("rm", "-f", "opt-tag")


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_kh_session_create_sends_environ_and_tag(stack: Stack) -> None:
    created = stack.kh(
        "session",
        "create",
        "--name",
        "opt-admin",
        "-e",
        "FOO=admin",
        "--tag",
        "ops",
        "--wait",
        "120",
        KH_CONFIG_DIR=str(stack.root / "cfg"),
    )
    assert created.returncode == 0, created.stderr
    try:
        executed = stack.kh("exec", "opt-admin", "-c", "import os; print(os.environ['FOO'])")
        assert (executed.returncode, executed.stdout) == (0, "admin\n"), executed.stderr
        assert "tag          ops" in stack.kh("info", "opt-admin").stdout
    finally:
        stack.kh("rm", "-f", "opt-admin")


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_bootstrap_script_output_in_the_log(stack: Stack) -> None:
    (stack.workdir / "boot.sh").write_text("#!/bin/sh\necho bootstrapped-$((6 * 7))\n")
    done = stack.kh(
        "run", "-n", "opt-boot", "--bootstrap-script", "boot.sh", "python", "-c", "pass"
    )
    assert done.returncode == 0, done.stderr
    try:
        assert "bootstrapped-42" in stack.kh("logs", "opt-boot").stdout
    finally:
        stack.kh("rm", "-f", "opt-boot")


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_refused_option_is_one_line_and_nonzero(stack: Stack) -> None:
    """A mount of a folder the caller has not got is refused in one line (not dropped: the
    session would run without the data it asked for), and so is a mount path outside the
    work dir, naming the option."""
    done = stack.kh("run", "--rm", "-m", "data", "python", "-c", "pass")
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "No such virtual folder" in done.stderr, done.stderr
    mapped = stack.kh("run", "--rm", "-m", "data=/etc", "python", "-c", "pass")
    assert mapped.returncode != 0 and "Traceback" not in mapped.stderr
    assert len(mapped.stderr.strip().splitlines()) == 1 and "mount" in mapped.stderr.lower()


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_status_after_the_exports_lists_actors_and_metrics(stack: Stack) -> None:
    """With ``kh up``'s exports set (``KH_REDIS_URL`` among them), ``kh status`` still
    knows the stack as its own."""
    assert stack.exports["KH_REDIS_URL"]
    done = stack.kh("status", HOME=os.environ.get("HOME", str(stack.root)))
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "metrics" in lines and "Prometheus" in lines["metrics"], done.stdout
    assert "actors" in lines and "sessions:0" in lines["actors"], done.stdout
    as_json = json.loads(stack.kh("status", "--json").stdout)
    assert as_json["ray_address"] and as_json["metrics_url"]
    data_dir = stack.exports["KH_DATA_DIR"]
    exported = {"KH_DATA_DIR": data_dir, "KH_REDIS_URL": stack.exports["KH_REDIS_URL"]}
    assert own_stack(Settings.from_env(exported)) is not None
    other = {"KH_DATA_DIR": data_dir, "KH_REDIS_URL": "redis://127.0.0.1:1/0"}
    assert own_stack(Settings.from_env(other)) is None  # another Redis: an external stack


def test_the_statuses_ps_asks_for_are_the_servers() -> None:
    """``kh ps`` filters by these; the server refuses a status it does not know by name."""
    from actors.domain.statuses import SessionStatus
    from kernelhub.sdk.models import DEAD_STATUSES, LIVE_STATUSES

    assert {*LIVE_STATUSES, *DEAD_STATUSES} <= {status.name for status in SessionStatus}


def test_docs_name_every_option_of_run_and_session_create() -> None:
    import typer

    from kernelhub.cli import app

    docs = (ROOT / "docs" / "cli.md").read_text()
    root = typer.main.get_command(app)
    commands = {
        "run": root.commands["run"],  # type: ignore[attr-defined]
        "session create": root.commands["session"].commands["create"],  # type: ignore[attr-defined]
    }
    missing = {
        f"{name} {flag}"
        for name, command in commands.items()
        for param in command.params
        for flag in param.opts
        if flag.startswith("--")
        and flag not in ("--help", "--data-dir")
        and f"`{flag}" not in docs
        and f" {flag} " not in docs
        and f"[{flag}" not in docs
    }
    assert not missing, f"docs/cli.md does not name: {sorted(missing)}"


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_starts_at_and_shmem_are_honoured(stack: Stack) -> None:
    admin = {"KH_CONFIG_DIR": str(stack.root / "cfg")}
    interactive = stack.kh("session", "create", "--name", "opt-now", "--starts-at", "1h", **admin)
    assert interactive.returncode == 1 and "Traceback" not in interactive.stderr
    assert "starts_at should be used only for batch sessions" in interactive.stderr
    later = stack.kh(
        "session",
        "create",
        "--name",
        "opt-later",
        "--starts-at",
        "1h",
        "--command",
        "true",
        **admin,
    )
    assert later.returncode == 0, later.stderr
    try:
        info = json.loads(stack.kh("info", "opt-later", "--json").stdout)
        assert info["status"] == "PENDING" and info["starts_at"], info
        assert "starts at" in stack.kh("info", "opt-later").stdout
    finally:
        stack.kh("rm", "-f", "opt-later")
    code = "import os; s = os.statvfs('/dev/shm'); print(s.f_blocks * s.f_frsize)"
    shm = stack.kh(
        "run", "--rm", "--resource-opts", "shmem=128m", "-r", "mem=1g", "python", "-c", code
    )
    assert (shm.returncode, shm.stdout) == (0, f"{128 * 2**20}\n"), shm.stderr
