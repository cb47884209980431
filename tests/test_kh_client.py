"""kernelhub's own SDK (``kernelhub.Client``, ``kernelhub.AsyncClient``) and the ``kh``
client commands against ``kh up``: every SDK method through the HTTP API, the CLI as a
subprocess (stdout only the result, ``--json`` shapes, exit codes, one-line errors) and
through typer's runner (issue "kernelhub's own Python SDK and kh CLI")."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors.runtime.metrics import DOCUMENTED
from kernelhub import AsyncClient, Client
from kernelhub.client_cli import output
from kernelhub.client_cli.app import app
from kernelhub.sdk import (
    AuthenticationFailed,
    ClientConfig,
    ConnectionFailed,
    InputRequired,
    InvalidRequest,
    PendingTimeout,
    QuotaExceeded,
    SessionNotFound,
)
from kernelhub.testing import eventually

from .khstack import KH, Stack, second_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def stack(shared_stack: Stack) -> Stack:
    return shared_stack


def config_of(stack: Stack, **overrides: str) -> ClientConfig:
    exports = {**stack.exports, **overrides}
    return ClientConfig(
        endpoint=exports["BACKEND_ENDPOINT"],
        access_key=exports["BACKEND_ACCESS_KEY"],
        secret_key=exports["BACKEND_SECRET_KEY"],
    )


@pytest.fixture(scope="module")
def limited(stack: Stack) -> dict[str, str]:
    """A tenant allowed one session at a time."""
    access_key, secret_key = asyncio.run(
        second_tenant(stack, "limited", policy={"max_concurrent_sessions": 1})
    )
    return {"BACKEND_ACCESS_KEY": access_key, "BACKEND_SECRET_KEY": secret_key}


# ---- the SDK ---------------------------------------------------------------------------------
def test_the_sync_client_runs_code_with_input_and_streams(stack: Stack) -> None:
    with Client(config_of(stack)) as client:
        assert client.server_version()["version"] == "v7.20230615"
        with client.session("python", name="sdk-code") as session:
            assert session.info is not None and session.info.status == "RUNNING"
            result = session.execute("print(6 * 7)")
            assert (result.stdout, result.exit_code, result.ok) == ("42\n", 0, True)
            asked = session.execute("a = input('a? ')\nb = input()\nprint(a + b)", input=["x", "y"])
            assert asked.stdout.endswith("xy\n"), asked
            with pytest.raises(InputRequired):
                session.execute("input()")
            streamed = session.stream(
                "import sys, time\nfor i in range(3):\n"
                "    print(i, flush=True); time.sleep(0.3)\n"
                "print('e', file=sys.stderr)"
            )
            pieces = list(streamed)
            assert "".join(p.text for p in pieces if p.kind == "stdout") == "0\n1\n2\n"
            assert [p.text for p in pieces if p.kind == "stderr"] == ["e\n"]
            assert streamed.exit_code == 0 and streamed.run_id
            batch = session.execute(mode="batch", exec="echo out; echo err >&2; exit 3")
            assert (batch.stdout, batch.stderr, batch.exit_code) == ("out\n", "err\n", 3)
            assert "runner started" in session.logs()
            session.execute("kept = 1")
            session.restart(timeout=60)
            lost = session.execute("print('kept' in dir())")
            assert lost.stdout == "False\n"  # a restart starts a fresh kernel
        ended = client.get_session(session.id).info
        assert ended is not None and ended.status in ("TERMINATING", "TERMINATED")


def test_files_go_up_and_come_back_with_progress(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (tmp_path / "a.txt").write_text("alpha")
    seen: list[tuple[int, int]] = []
    with Client(config_of(stack)) as client, client.session(name="sdk-files") as session:
        names = session.upload(
            ["a.txt", "data/big.bin"],
            base_dir=tmp_path,
            progress=lambda done, total: seen.append((done, total)),
        )
        assert names == ["a.txt", "data/big.bin"]
        assert seen[-1] == (2**20 + 5, 2**20 + 5) and len(seen) > 2
        listing = session.list_files()
        assert listing.path == "/home/work"
        by_name = {f.name: f for f in listing.files}
        assert by_name["a.txt"].size == 5 and by_name["data"].is_dir
        with pytest.raises(ValueError, match="outside"):
            session.upload(["../a.txt"], base_dir=tmp_path / "data")
        back = tmp_path / "back"
        written = session.download(["a.txt", "data"], dest=back)
        relative = sorted(p.relative_to(back).as_posix() for p in written)
        assert relative == ["a.txt", "data/big.bin"]
        assert (back / "data" / "big.bin").read_bytes() == (
            tmp_path / "data" / "big.bin"
        ).read_bytes()
        assert (back / "a.txt").read_text() == "alpha"


def test_lookups_listing_and_the_errors_a_caller_catches(
    stack: Stack, limited: dict[str, str]
) -> None:
    with Client(config_of(stack)) as client:
        session = client.create_session(name="sdk-listed")
        try:
            by_name = client.get_session("sdk-listed")
            assert by_name.id == session.id
            page = client.list_sessions("RUNNING", limit=1)
            assert page.total >= 1 and len(page.items) == 1 and page.limit == 1
            assert session.id in {s.id for s in client.iter_sessions()}
            with pytest.raises(SessionNotFound) as missing:
                client.get_session("no-such-session")
            assert missing.value.status == 404 and missing.value.title == "No such session."
            with pytest.raises(InvalidRequest) as bad:
                client.create_session(name="x!")  # not a valid name
            assert bad.value.status == 400 and bad.value.slug == "invalid-api-params"
            with pytest.raises(QuotaExceeded) as over:
                client.create_session(name="sdk-cluster", cluster_size=5)
            assert over.value.status == 412 and "containers" in str(over.value)
        finally:
            session.destroy()
        assert client.get_session(session.id).info.status in ("TERMINATING", "TERMINATED")
    other = config_of(stack, **limited)
    with Client(other) as client:
        with pytest.raises(SessionNotFound):  # another tenant's session is never found
            client.get_session(session.id)
        with client.session(name="sdk-first") as first:
            with pytest.raises(PendingTimeout) as waiting:
                client.create_session(name="sdk-second", timeout=5)
            reason = waiting.value.session.pending_reason
            assert reason and "concurren" in reason.lower(), reason
            assert "concurren" in str(waiting.value).lower()
            client.get_session("sdk-second").destroy(forced=True)
            assert first.execute("print(1)").stdout == "1\n"
    with Client(config_of(stack, BACKEND_SECRET_KEY="wrong")) as client:
        with pytest.raises(AuthenticationFailed) as refused:
            client.list_sessions()
        assert refused.value.status == 401 and refused.value.problem["type"].endswith("auth-failed")
    with Client(config_of(stack, BACKEND_ENDPOINT=f"http://127.0.0.1:{free_port()}")) as client:
        with pytest.raises(ConnectionFailed):
            client.server_version()


async def test_the_async_client_watches_events_and_forwards_an_app(stack: Stack) -> None:
    async with AsyncClient(config_of(stack)) as client:
        session = await client.create_session(name="sdk-async", preopen_ports=[8080])
        async with session:
            served = await session.execute(
                "import subprocess\nopen('hi.txt', 'w').write('hello through the tunnel')\n"
                "subprocess.Popen(['python3', '-m', 'http.server', '8080', '--bind',"
                " '127.0.0.1'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
            )
            assert served.exit_code == 0, served
            assert [a.name for a in await session.apps()] == ["8080"]
            async with session.forward_app("8080") as (host, port):

                def fetch() -> bytes:
                    try:
                        with urllib.request.urlopen(
                            f"http://{host}:{port}/hi.txt", timeout=10
                        ) as r:
                            return bytes(r.read())
                    except OSError:
                        return b""  # the server in the kernel is not listening yet

                got = await eventually(lambda: asyncio.to_thread(fetch), timeout=60, interval=0.5)
                assert got == b"hello through the tunnel"
            seen: list[str] = []

            async def watch() -> None:
                async for event in session.events():
                    seen.append(event.name)

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(1)  # subscribed before the destroy
            await session.destroy()
            await asyncio.wait_for(watcher, 60)  # the stream ends with the session
        assert seen[-1] == "session_terminated" and "kernel_terminated" in seen, seen


# ---- the CLI, as a user runs it ----------------------------------------------------------------
def one_error_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kh: error: "), result.stderr
    assert all(w in lines[0] for w in words), result.stderr
    assert "Traceback" not in result.stderr


def test_kh_run_rm_prints_exactly_42(stack: Stack) -> None:
    ran = stack.kh("run", "--rm", "python", "-c", "print(6*7)")
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "42\n", "")
    shown = stack.kh(
        "run",
        "--rm",
        "--json",
        "-r",
        "cpu=1",
        "-r",
        "mem=512m",
        "python",
        "-c",
        "import sys; print('o'); print('e', file=sys.stderr)",
    )
    result = output.RunOutput.model_validate_json(shown.stdout)
    assert (result.stdout, result.stderr, result.exit_code, result.removed) == (
        "o\n",
        "e\n",
        0,
        True,
    )
    assert set(json.loads(shown.stdout)) == set(output.RunOutput.model_fields)


def test_kh_run_talks_on_a_terminal_and_keeps_stdout_clean(stack: Stack) -> None:
    """With stderr on a terminal: the status notes (and spinner) appear there; stdout,
    a pipe, still carries only the program's output."""
    controller, terminal = pty.openpty()
    try:
        ran = subprocess.run(
            [*KH, "run", "--rm", "-n", "cli-tty", "python", "-c", "print(6*7)"],
            env=stack.env(TERM="xterm", COLUMNS="100"),
            cwd=stack.workdir,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=180,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert (ran.returncode, ran.stdout) == (0, "42\n")
    text = shown.decode(errors="replace")
    assert "session cli-tty is running" in text and "session cli-tty destroyed" in text, text


def test_kh_run_files_batch_sessions_and_failures(stack: Stack) -> None:
    (stack.workdir / "job.py").write_text("import sys\nprint('job ran')\nsys.exit(3)\n")
    ran = stack.kh("run", "--rm", "python", "job.py")
    assert (ran.returncode, ran.stdout) == (1, "job ran\n"), ran.stderr
    as_json = output.RunOutput.model_validate_json(
        stack.kh("run", "--rm", "--json", "python", "job.py").stdout
    )
    assert as_json.exit_code == 3
    batch = stack.kh("run", "--rm", "--type", "batch", "--exec", "echo from-batch", "python")
    assert batch.returncode == 0 and "from-batch" in batch.stdout, batch.stderr
    failed = stack.kh("run", "--rm", "--type", "batch", "--exec", "exit 4", "python", "--json")
    assert failed.returncode == 1 and json.loads(failed.stdout)["exit_code"] == 4


def test_kh_session_commands_and_their_json(stack: Stack) -> None:
    created = stack.kh("run", "-n", "cli-life", "python", "-c", "x = 41")
    assert created.returncode == 0 and created.stdout == "", created.stderr
    listed = output.PsOutput.model_validate_json(stack.kh("ps", "--json").stdout)
    assert "cli-life" in {s.name for s in listed.items}
    table = stack.kh("ps")
    assert table.returncode == 0 and "cli-life" in table.stdout and "RUNNING" in table.stdout
    info = output.InfoOutput.model_validate_json(stack.kh("info", "cli-life", "--json").stdout)
    assert (info.status, info.kernels[0].agent) == ("RUNNING", "i-local")
    assert "status       RUNNING" in stack.kh("info", "cli-life").stdout
    executed = stack.kh("exec", "cli-life", "-c", "print(x + 1, input())", input="more\n")
    assert (executed.returncode, executed.stdout) == (0, "42 more\n"), executed.stderr
    failing = stack.kh("exec", "cli-life", "--exec", "exit 7", "--json")
    assert failing.returncode == 1 and json.loads(failing.stdout)["exit_code"] == 7
    (stack.workdir / "notes.txt").write_text("up and back")
    uploaded = stack.kh("upload", "cli-life", "notes.txt", "--json")
    assert output.UploadOutput.model_validate_json(uploaded.stdout).files == ["notes.txt"]
    listing = output.LsOutput.model_validate_json(stack.kh("ls", "cli-life", "--json").stdout)
    assert "notes.txt" in {f.name for f in listing.files}
    assert "notes.txt" in stack.kh("ls", "cli-life").stdout
    fetched = stack.kh("download", "cli-life", "notes.txt", "--dest", "got")
    assert fetched.returncode == 0 and (stack.workdir / "got" / "notes.txt").read_text() == (
        "up and back"
    )
    logs = output.LogsOutput.model_validate_json(stack.kh("logs", "cli-life", "--json").stdout)
    assert "runner started" in logs.logs
    removed = stack.kh("rm", "cli-life", "--json")
    assert output.RmOutput.model_validate_json(removed.stdout).removed == [info.id]
    one_error_line(stack.kh("rm", "cli-life"), 3, "cli-life", "ended")
    assert "runner started" in stack.kh("logs", "cli-life").stdout  # logs outlive the session


def test_kh_exit_codes_mean_something(stack: Stack, limited: dict[str, str]) -> None:
    one_error_line(stack.kh("info", "no-such-session"), 3, "No such session.")
    one_error_line(stack.kh("run", "python"), 2, "-c CODE")
    one_error_line(stack.kh("run", "-r", "cpu", "python", "-c", "1"), 2, "KEY=VALUE")
    one_error_line(
        stack.kh("run", "python", "-c", "1", BACKEND_SECRET_KEY="wrong"),
        1,
        "Credential/signature mismatch.",
    )
    one_error_line(
        stack.kh("ps", BACKEND_ENDPOINT=f"http://127.0.0.1:{free_port()}"), 5, "cannot reach"
    )
    unknown = stack.kh("ps", "--bogus")
    assert unknown.returncode == 2 and "No such option" in unknown.stderr
    held = stack.kh("run", "-n", "cli-held", "python", "-c", "1", **limited)
    assert held.returncode == 0, held.stderr
    waited = stack.kh("run", "--rm", "--max-wait", "4", "python", "-c", "1", **limited)
    one_error_line(waited, 4, "PENDING", "concurren")
    assert waited.stdout == ""
    assert stack.kh("rm", "cli-held", **limited).returncode == 0
    with Client(config_of(stack, **limited)) as client:  # --rm cancelled the queued one
        assert not client.list_sessions().items


def test_kh_app_and_watch(stack: Stack) -> None:
    started = stack.kh(
        "run",
        "-n",
        "cli-app",
        "--preopen",
        "9090",
        "python",
        "-c",
        (
            "import subprocess\nopen('page.txt', 'w').write('app page')\n"
            "subprocess.Popen(['python3', '-m', 'http.server', '9090', '--bind', '127.0.0.1'],"
            " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
        ),
    )
    assert started.returncode == 0, started.stderr
    one_error_line(stack.kh("app", "cli-app", "nope", "-b", str(free_port())), 3, "app service")
    port = free_port()
    proxy = subprocess.Popen(
        [*KH, "app", "cli-app", "9090", "-b", f"127.0.0.1:{port}", "--json"],
        env=stack.env(),
        cwd=stack.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watcher = subprocess.Popen(
        [*KH, "watch", "cli-app", "--json"],
        env=stack.env(),
        cwd=stack.workdir,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        announced = output.AppOutput.model_validate_json(proxy.stdout.readline())
        assert announced.port == port and announced.url == f"http://127.0.0.1:{port}"
        assert [a.name for a in announced.services] == ["9090"]

        def fetch() -> bytes:
            try:
                with urllib.request.urlopen(f"{announced.url}/page.txt", timeout=10) as reply:
                    return bytes(reply.read())
            except OSError:
                return b""  # the server in the kernel is not listening yet

        assert asyncio.run(eventually(fetch, timeout=60, interval=0.5)) == b"app page"
    finally:
        proxy.kill()
        proxy.wait(10)
    time.sleep(1.5)  # the watch subscribed
    assert stack.kh("rm", "cli-app").returncode == 0
    out, _ = watcher.communicate(timeout=60)
    names = [output.WatchOutput.model_validate_json(line).name for line in out.splitlines()]
    assert names[-1] == "session_terminated" and "session_terminating" in names, names


def test_kh_through_typers_runner(stack: Stack) -> None:
    runner = CliRunner()
    environ = {k: v for k, v in stack.exports.items() if k.startswith("BACKEND_")}
    listed = runner.invoke(app, ["ps", "--json", "--all"], env=environ)
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["total"] >= 1
    missing = runner.invoke(app, ["logs", "never-was"], env=environ)
    assert missing.exit_code == 3 and "No such session." in missing.stderr


# ---- metrics, as Prometheus scrapes them ------------------------------------------------------
_SAMPLE = re.compile(r"^(?:ray_)?(kernelhub_\w+)(?:\{(.*)\})?\s+(\S+)$")


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """The endpoint's kernelhub samples: (name, labels, value)."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    samples = []
    for line in text.splitlines():
        if (match := _SAMPLE.match(line)) is not None:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        v
        for n, have, v in samples
        if n == name and all(have.get(k) == w for k, w in labels.items())
    )


def test_the_documented_metrics_are_exported_and_move(stack: Stack) -> None:
    """From the head's Prometheus endpoint (not the actors' internals): the documented
    metrics exist, and the ones a session moves do move."""
    state = json.loads((stack.root / "data" / "embedded.json").read_text())
    url = state["metrics_url"]
    assert url.startswith("http://127.0.0.1:"), url
    before = scrape(url)
    with Client(config_of(stack)) as client, client.session(name="sdk-metrics") as session:
        assert session.execute("print(1)").stdout == "1\n"
    moving = {
        "kernelhub_scheduling_decisions_total": {"scaling_group": "default"},
        "kernelhub_kernels_started_total": {"agent": "i-local"},
        "kernelhub_gateway_requests_total": {
            "route": "/session",
            "method": "POST",
            "status": "201",
        },
        "kernelhub_gateway_request_seconds_count": {"route": "/session/{ref}"},
        "kernelhub_session_commands_total": {"command": "create"},
    }

    def moved() -> list[tuple[str, dict[str, str], float]] | None:
        now = scrape(url)
        if all(total(now, n, **ls) > total(before, n, **ls) for n, ls in moving.items()):
            return now
        return None

    after = asyncio.run(eventually(moved, timeout=90, interval=2, message="metrics moved"))
    assert total(after, "kernelhub_redis_used_memory_bytes") > 0
    assert total(after, "kernelhub_slots", slot="cpu", state="available") >= 1
    assert total(after, "kernelhub_sessions", status="TERMINATED") >= 1
    exported = {
        name.removesuffix("_count").removesuffix("_sum").removesuffix("_bucket")
        for name, _, _ in after
    }
    never_moved_here = {  # no policy reclaims, no callback_url, no endpoint in this stack
        "kernelhub_idle_reclaims_total",
        "kernelhub_callbacks_total",
        "kernelhub_serving_requests_total",
        "kernelhub_serving_request_seconds",
        "kernelhub_serving_errors_total",
        "kernelhub_endpoint_routes_total",
    }
    assert set(DOCUMENTED) - never_moved_here <= exported, set(DOCUMENTED) - exported


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_one_api_call_is_traced_through_every_component(stack: Stack) -> None:
    """The create call's correlation id (answered in ``X-Correlation-ID``) is in the logs of
    the gateway, the shard, the scheduler and the agent, and on the events it caused;
    ``kh trace`` puts them on one timeline and ``--component`` narrows it."""
    with Client(config_of(stack)) as client, client.session("python", name="traced") as session:
        correlation_id = session.correlation_id
        assert correlation_id is not None
        assert session.execute("print(1)").stdout == "1\n"
    with Client(config_of(stack)) as client:
        try:
            client.create_session("python", name="bad name!")
        except InvalidRequest as exc:
            refused = exc.correlation_id
    assert refused is not None and refused != correlation_id

    home = {"HOME": os.environ["HOME"]}  # where `kh up` keeps Ray's token (~/.ray/auth_token)

    def traced() -> list[dict[str, object]]:
        shown = stack.kh("trace", str(correlation_id), "--json", **home)
        assert shown.returncode == 0 and not shown.stderr, shown.stderr  # every node read
        return [json.loads(line) for line in shown.stdout.splitlines()]

    wanted = {"gateway", "sessions", "scheduler", "agent", "events"}
    deadline = time.monotonic() + 30  # Ray writes a worker's stderr to its file as it comes
    entries = traced()
    while not wanted <= {e["component"] for e in entries}:
        assert time.monotonic() < deadline, entries
        time.sleep(0.5)
        entries = traced()
    said = {(e["component"], e["what"]) for e in entries}
    assert {
        ("gateway", "request"),
        ("sessions", "session enqueued"),
        ("scheduler", "sessions scheduled"),
        ("agent", "kernel started"),
    } <= said, said
    events = [e["what"] for e in entries if e["component"] == "events"]
    assert events[:2] == ["session_enqueued", "session_scheduled"], events
    assert {"session_preparing", "kernel_started", "session_started"} <= set(events)
    assert "session_terminating" not in events  # the destroy was another call
    times = [e["time"] for e in entries]
    assert times == sorted(times)

    only = stack.kh("trace", str(correlation_id), "--component", "agent", **home)
    assert only.returncode == 0 and only.stdout.strip(), only.stderr
    assert all("  agent  " in line for line in only.stdout.splitlines()), only.stdout
    assert "kernel started" in only.stdout
    shown = stack.kh("trace", str(refused), "--component", "gateway", **home)
    assert "status=400" in shown.stdout, shown.stdout + shown.stderr

    unknown = stack.kh("trace", "6f1c9a59-6d4b-4c55-9d57-13a1f6c1e0aa", **home)
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr.startswith("kh: error: nothing carries correlation id")
    bad = stack.kh("trace", "not-an-id")
    assert bad.returncode == 1 and "is not a correlation id" in bad.stderr
