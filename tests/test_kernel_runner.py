"""The kernel runner's protocol against a real runner process (23.03's ``kernel/base.py``;
docs/kernel-environment.md, The runner; docs/deviations.md): query and batch modes, input,
interrupt, completion, control replies, services, OOM forensics, environment, reconnection."""

from __future__ import annotations

import glob
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runner_process import RunnerProcess, console


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[RunnerProcess]:
    process = RunnerProcess(
        tmp_path,
        "--snapshot-interval",
        "0.2",
        "--oom-polls",
        "8",
        "--oom-poll-interval",
        "0.1",
        "--port-timeout",
        "1",
    )
    try:
        yield process
    finally:
        process.stop()


# ---- query mode ---------------------------------------------------------------------------------
def test_code_output_comes_before_finished_and_state_persists(runner: RunnerProcess) -> None:
    assert runner.query("print(6*7)") == ("42\n", "", {"exitCode": 0})
    runner.query("counter = 40")
    assert runner.query("counter += 2\ncounter")[0] == "42\n"  # a trailing expression shows


def test_an_exception_goes_to_stderr_and_still_finishes_with_zero(runner: RunnerProcess) -> None:
    stdout, stderr, finished = runner.query("def f():\n    return 1/0\nf()")
    assert finished == {"exitCode": 0} and stdout == ""
    assert "ZeroDivisionError: division by zero" in stderr and "line 2, in f" in stderr
    assert "kernel_runner" not in stderr  # the runner's own frames are not the user's
    assert runner.query("print('alive')")[0] == "alive\n"


def test_a_syntax_error_is_reported_not_fatal(runner: RunnerProcess) -> None:
    _, stderr, finished = runner.query("def (:")
    assert "SyntaxError" in stderr and finished == {"exitCode": 0}


def test_without_query_mode_code_answers_127(tmp_path: Path) -> None:
    process = RunnerProcess(tmp_path, "--no-query")
    try:
        assert process.query("print(1)") == ("", "", {"exitCode": 127})
    finally:
        process.stop()


def test_input_prompts_waits_and_continues_with_the_reply(runner: RunnerProcess) -> None:
    runner.send("code", "name = input('who? ')\nprint('hello', name)")
    records = runner.records_until("waiting-input")
    assert console(records, "stdout") == "who? "
    assert json.loads(records[-1][1]) == {"is_password": False}
    runner.send("input", "alice")
    records = runner.records_until("finished")
    assert console(records, "stdout") == "hello alice\n"


def test_getpass_asks_for_a_password(runner: RunnerProcess) -> None:
    runner.send("code", "import getpass\nsecret = getpass.getpass()")
    records = runner.records_until("waiting-input")
    assert json.loads(records[-1][1]) == {"is_password": True}
    runner.send("input", "s3cret")
    runner.records_until("finished")
    assert runner.query("print(len(secret))")[0] == "6\n"


def test_a_busy_loop_is_interrupted_within_a_second_and_the_namespace_lives(
    runner: RunnerProcess,
) -> None:
    runner.query("kept = 'still here'")
    runner.send("code", "while True:\n    pass")
    time.sleep(0.3)
    started = time.monotonic()
    runner.send("interrupt")
    records = runner.records_until("finished", timeout=5)
    assert time.monotonic() - started < 1.0
    assert "KeyboardInterrupt" in console(records, "stderr")
    assert json.loads(records[-1][1]) == {"exitCode": 0}
    assert runner.query("print(kept)")[0] == "still here\n"
    assert runner.process.poll() is None


def test_an_interrupt_with_nothing_running_is_harmless(runner: RunnerProcess) -> None:
    runner.send("interrupt")
    assert runner.query("print('ok')")[0] == "ok\n"


def test_html_and_images_are_records_that_parse(runner: RunnerProcess) -> None:
    runner.send("code", "class H:\n    def _repr_html_(self):\n        return '<b>hi</b>'\nH()")
    records = runner.records_until("finished")
    assert ("html", b"<b>hi</b>") in records
    runner.send("code", "class P:\n    def _repr_png_(self):\n        return b'\\x89PNG'\nP()")
    media = [json.loads(data) for op, data in runner.records_until("finished") if op == "media"]
    assert media == [{"type": "image/png", "data": "data:image/png;base64,iVBORw=="}]


def test_top_level_await_runs(runner: RunnerProcess) -> None:
    assert runner.query("import asyncio\nawait asyncio.sleep(0)\nprint('awaited')")[0] == (
        "awaited\n"
    )


# ---- completion ---------------------------------------------------------------------------------
def test_completion_always_answers(runner: RunnerProcess) -> None:
    runner.send("complete", {"code": "import o", "options": {}})
    matches = json.loads(runner.records_until("completion")[-1][1])
    assert "os" in matches and all(m.startswith("o") for m in matches)
    runner.query("counter_value = 1")
    runner.send("complete", {"code": "x = counter_v"})
    assert json.loads(runner.records_until("completion")[-1][1]) == ["counter_value"]
    runner.query("import os")
    runner.send("complete", {"code": "os.pa"})
    assert "os.path" in json.loads(runner.records_until("completion")[-1][1])
    runner.send("complete", {"code": "zzz_nothing"})
    assert json.loads(runner.records_until("completion")[-1][1]) == []


def test_completion_answers_while_code_runs(runner: RunnerProcess) -> None:
    runner.send("code", "import time\ntime.sleep(1.5)")
    runner.send("complete", {"code": "import sy"})
    records = runner.records_until("completion", timeout=1.0)
    assert "sys" in json.loads(records[-1][1])
    runner.records_until("finished")


# ---- batch mode (must-test 9) -------------------------------------------------------------------
def test_batch_steps_run_in_order_and_empty_commands_finish_with_zero(
    runner: RunnerProcess,
) -> None:
    runner.send("clean", "echo cleaning")
    runner.send("build", "")
    runner.send("exec", 'echo "mode=$_BACKEND_BATCH_MODE"; echo oops >&2; exit 4')
    records = runner.records_until("finished")
    order = [op for op, _ in records]
    assert order.index("clean-finished") < order.index("build-finished") < order.index("finished")
    assert records[order.index("build-finished")][1] == b'{"exitCode": 0}'
    before_finished = records[: order.index("finished")]
    assert console(before_finished, "stdout") == "cleaning\nmode=1\n"
    assert console(before_finished, "stderr") == "oops\n"
    assert json.loads(records[-1][1]) == {"exitCode": 4}


def test_a_failed_build_skips_exec_with_127(runner: RunnerProcess) -> None:
    marker = runner.work / "ran"
    runner.send("clean", "")
    runner.send("build", "exit 2")
    runner.send("exec", f"touch {marker}")
    records = runner.records_until("finished")
    assert (records[-2][0], json.loads(records[-2][1])) == ("build-finished", {"exitCode": 2})
    assert json.loads(records[-1][1]) == {"exitCode": 127}
    assert not marker.exists()


def test_the_exec_heuristic_runs_main_py(runner: RunnerProcess) -> None:
    (runner.work / "main.py").write_text("import sys\nprint('main', sys.argv[0])\n")
    runner.send("build", "*")
    runner.send("exec", "*")
    records = runner.records_until("finished")
    assert console(records, "stdout") == "main main.py\n"
    assert json.loads(records[-1][1]) == {"exitCode": 0}
    assert "main main.py" in runner.log()  # batch output is in the kernel log too


def test_interrupting_a_batch_command_reports_its_exit_code(runner: RunnerProcess) -> None:
    runner.send("exec", "sleep 30")
    time.sleep(0.3)
    started = time.monotonic()
    runner.send("interrupt")
    records = runner.records_until("finished", timeout=5)
    assert time.monotonic() - started < 1.0
    assert json.loads(records[-1][1])["exitCode"] in (-signal.SIGINT, 128 + signal.SIGINT)
    assert [op for op, _ in records] == ["finished"]  # no reply to the interrupt itself


# ---- control replies (must-test 12) -------------------------------------------------------------
def test_status_answers_with_the_start_time(runner: RunnerProcess) -> None:
    runner.send("status")
    status = json.loads(runner.records_until("status")[-1][1])
    assert set(status) == {"started_at"} and status["started_at"] <= time.monotonic()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def service_runner(tmp_path: Path) -> Iterator[RunnerProcess]:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "web.json").write_text(
        json.dumps(
            {
                "command": [
                    "{runtime_path}",
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    "{ports[0]}",
                ],
                "url_template": "http://{host}:{port}/",
                "allowed_arguments": ["--directory"],
            }
        )
    )
    (defs / "mute.json").write_text(json.dumps({"command": ["sleep", "30"]}))
    process = RunnerProcess(tmp_path / "k", "--service-defs", str(defs), "--port-timeout", "1")
    try:
        yield process
    finally:
        process.stop()


def _start(runner: RunnerProcess, **info: object) -> dict[str, object]:
    runner.send("start-service", dict(info))
    return dict(json.loads(runner.records_until("service-result", timeout=10)[-1][1]))


def test_services_start_once_and_report_their_failures(service_runner: RunnerProcess) -> None:
    port = _free_port()
    assert _start(service_runner, name="web", port=port, protocol="http") == {"status": "started"}
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert _start(service_runner, name="web", port=port, protocol="http") == {"status": "running"}
    assert _start(service_runner, name="nope", port=_free_port(), protocol="http") == {
        "status": "failed",
        "error": "unsupported service",
    }
    assert _start(service_runner, name="jupyter", port=1, protocol="preopen") == {
        "status": "started"
    }
    assert _start(service_runner, name="mute", port=_free_port(), protocol="http") == {
        "status": "failed",
        "error": "opening the service port timed out: mute",
    }
    assert (
        _start(
            service_runner,
            name="web",
            port=_free_port(),
            protocol="http",
            options={"arguments": {"--bind": "0.0.0.0"}},
        )["status"]
        == "running"
    )
    service_runner.send("get-apps", "")
    apps = json.loads(service_runner.records_until("apps-result")[-1][1])
    assert apps["status"] == "done"
    assert sorted(a["name"] for a in apps["data"]) == ["mute", "web"]
    service_runner.send("shutdown-service", json.dumps("web"))

    def closed() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return False
        except OSError:
            return True

    deadline = time.monotonic() + 5
    while not closed():
        assert time.monotonic() < deadline, "the service still listens"
        time.sleep(0.05)


def test_a_disallowed_argument_is_refused(service_runner: RunnerProcess) -> None:
    result = _start(
        service_runner,
        name="web",
        port=_free_port(),
        protocol="http",
        options={"arguments": {"--cgi": None}},
    )
    assert result == {"status": "failed", "error": "DisallowedArgument: --cgi"}


# ---- OOM forensics (must-test 14) ---------------------------------------------------------------
def _wait_for_log(runner: RunnerProcess, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while text not in runner.log():
        assert time.monotonic() < deadline, f"{text!r} not in the kernel log:\n{runner.log()}"
        time.sleep(0.05)
    return runner.log()


def test_an_oom_event_logs_the_killed_process_tree(runner: RunnerProcess) -> None:
    runner.query("import subprocess\nvictim = subprocess.Popen(['sleep', '61'])")
    time.sleep(0.6)  # at least two snapshots see it
    runner.query("victim.kill(); victim.wait()")
    runner.send("event", {"type": "oom", "data": {}})
    log = _wait_for_log(runner, "sleep 61")
    block = log[log.index("OOM-killed process") :]
    lines = block.splitlines()
    assert "running for" in lines[1] and "rss:" in lines[1]  # the runner: the root
    assert "└─" in block and "sleep 61" in block  # the victim below it


def test_an_oom_event_with_nothing_gone_says_so(runner: RunnerProcess) -> None:
    time.sleep(0.5)
    runner.send("event", {"type": "oom", "data": {}})
    _wait_for_log(runner, "failed to get the information of oom-killed processes")


def test_other_events_are_only_logged(runner: RunnerProcess) -> None:
    runner.send("event", {"type": "custom", "data": {"x": 1}})
    _wait_for_log(runner, "Agent-notified event")
    assert runner.query("print(1)")[0] == "1\n"


# ---- environment, connections, shutdown ---------------------------------------------------------
def test_the_environment_merges_environ_txt_and_fixes_the_basics(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "environ.txt").write_text("BACKENDAI_SESSION_NAME=mysess\nX=a=b\n")
    (tmp_path / "work" / ".local" / "bin").mkdir(parents=True)
    process = RunnerProcess(tmp_path)
    try:
        stdout, _, _ = process.query(
            "import os\nfor k in ('BACKENDAI_SESSION_NAME', 'X', 'LANG', 'TERM'):\n"
            "    print(os.environ[k])\nprint(os.environ['PATH'].split(':')[0])"
        )
        assert stdout.splitlines() == [
            "mysess",
            "a=b",
            "C.UTF-8",
            "xterm",
            str(process.work / ".local" / "bin"),
        ]
        process.send("exec", "echo $BACKENDAI_SESSION_NAME")
        assert console(process.records_until("finished"), "stdout") == "mysess\n"
    finally:
        process.stop()


def test_records_made_while_no_agent_is_connected_reach_the_next_one(
    runner: RunnerProcess,
) -> None:
    runner.send("code", "import time\ntime.sleep(0.5)\nprint('made while away')")
    runner.disconnect()
    time.sleep(0.8)
    runner.connect()
    records = runner.records_until("finished")
    assert console(records, "stdout") == "made while away\n"


def test_shutdown_stops_the_runner_and_sigterm_ends_it_by_sigterm(tmp_path: Path) -> None:
    first = RunnerProcess(tmp_path / "a")
    first.send("shutdown")
    assert first.process.wait(5) == 0
    second = RunnerProcess(tmp_path / "b")
    second.send("exec", "sleep 30")
    time.sleep(0.2)
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(5) == -signal.SIGTERM


def _oldest_python() -> str | None:
    """A python3.8 that runs (a pyenv shim may exist without the version selected)."""
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.8*/bin/python3.8")))
    candidates.append(shutil.which("python3.8") or "")
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_the_runner_runs_under_python_3_8(tmp_path: Path) -> None:
    """Images bring their own python3; the runner promises 3.8 and later."""
    python = _oldest_python()
    if python is None:
        pytest.skip("no python3.8 on this machine")
    process = RunnerProcess(tmp_path, python=python)
    try:
        assert process.query("import sys\nprint(sys.version_info[:2])")[0] == "(3, 8)\n"
        process.send("exec", "echo batch")
        assert console(process.records_until("finished"), "stdout") == "batch\n"
        process.send("complete", {"code": "import o"})
        assert "os" in json.loads(process.records_until("completion")[-1][1])
    finally:
        process.stop()
