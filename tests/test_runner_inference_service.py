"""The runner's inference service (a model-serving replica's), against a real runner process:
its definition comes inline and only for protocol ``inference``; it is started without
waiting for its port (the reconciler's probe decides), answered "running" while it lives and
started again when asked after it died; an inline definition on any other protocol, a
field the runner does not honour, or a malformed one is refused, naming it."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runner_process import RunnerProcess

pytestmark = pytest.mark.timeout(120)

SERVER = (
    "import http.server, os, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def do_GET(self):\n"
    "        body = os.environ.get('GREETING', 'none').encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "open('pid', 'w').write(str(os.getpid()))\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[RunnerProcess]:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "web.json").write_text(json.dumps({"command": ["sleep", "30"]}))
    process = RunnerProcess(tmp_path / "k", "--service-defs", str(defs), "--port-timeout", "1")
    (process.work / "server.py").write_text(SERVER)
    try:
        yield process
    finally:
        process.stop()


def _start(runner: RunnerProcess, **info: object) -> dict[str, object]:
    runner.send("start-service", dict(info))
    return dict(json.loads(runner.records_until("service-result", timeout=10)[-1][1]))


def _get(port: int, deadline_s: float = 10.0) -> bytes:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                return data
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _definition(port: int, **env: str) -> dict[str, object]:
    return {"command": [sys.executable, "server.py", str(port)], "env": env}


def test_an_inference_service_starts_from_its_inline_definition_and_again_after_it_died(
    runner: RunnerProcess,
) -> None:
    port = _free_port()
    options = {"definition": _definition(port, GREETING="hello")}
    started = time.monotonic()
    assert _start(runner, name="model", port=port, protocol="inference", options=options) == {
        "status": "started"
    }
    assert time.monotonic() - started < 5  # not held while the model loads
    reply = _get(port)
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello"), reply
    assert _start(runner, name="model", port=port, protocol="inference", options=options) == {
        "status": "running"
    }
    os.kill(int((runner.work / "pid").read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _start(runner, name="model", port=port, protocol="inference", options=options) != {
        "status": "started"
    }:
        assert time.monotonic() < deadline, "the dead service was not started again"
        time.sleep(0.2)
    assert _get(port).endswith(b"hello")


@pytest.mark.parametrize(
    ("info", "error"),
    [
        (  # an inline definition anywhere else: the user's start-service never carries one
            {"name": "web", "protocol": "http", "options": {"definition": {"command": ["id"]}}},
            "an inline definition is accepted for inference services only",
        ),
        (
            {"name": "model", "protocol": "inference", "options": {}},
            "an inference service needs its definition",
        ),
        (
            {
                "name": "model",
                "protocol": "inference",
                "options": {"definition": {"command": ["id"], "prestart_actions": []}},
            },
            "unsupported definition fields: prestart_actions",
        ),
        (
            {
                "name": "model",
                "protocol": "inference",
                "options": {"definition": {"command": ["id"]}, "envs": {"A": "1"}},
            },
            "unsupported options for an inference service: envs",
        ),
        (
            {"name": "model", "protocol": "inference", "options": {"definition": {"command": []}}},
            "the definition's command is empty",
        ),
        (
            {
                "name": "model",
                "protocol": "inference",
                "options": {"definition": {"command": "id"}},
            },
            "the definition's command must be a list of strings",
        ),
        (
            {
                "name": "model",
                "protocol": "inference",
                "options": {"definition": {"command": ["id"], "env": {"A": 1}}},
            },
            "the definition's env maps names to strings",
        ),
    ],
)
def test_what_the_runner_does_not_honour_is_refused_by_name(
    runner: RunnerProcess, info: dict[str, object], error: str
) -> None:
    assert _start(runner, port=_free_port(), **info) == {"status": "failed", "error": error}
