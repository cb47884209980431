"""A kernel runner as a real subprocess, and a blocking client for protocol tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from actors.agents.backends.base import BOOT_RUNNER, RUNNER_PACKAGE
from kernelhub.in_kernel.kernel_runner.framing import encode, read_frame


class RunnerProcess:
    """``python -m kernel_runner`` in a temp kernel dir; ``log`` is its kernel log."""

    def __init__(
        self,
        root: Path,
        *options: str,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.root = root
        self.work = root / "work"
        self.config = root / "config"
        for path in (self.work, self.config):
            path.mkdir(parents=True, exist_ok=True)
        self.socket_path = str(root / "r.sock")
        self.log_path = root / "kernel.log"
        argv = [
            python,
            "-c",
            BOOT_RUNNER,
            str(RUNNER_PACKAGE.parent),
            RUNNER_PACKAGE.name,
            "--socket",
            self.socket_path,
            "--work-dir",
            str(self.work),
            "--config-dir",
            str(self.config),
            *options,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=self.work,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={"PATH": os.environ["PATH"], "HOME": str(self.work), **(env or {})},
            )
        self.sock: socket.socket | None = None
        try:
            self.connect()
        except BaseException:
            self.stop()  # a runner that never answered is still a process to stop
            raise

    def connect(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.socket_path)
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.02)
        self.sock = sock
        self.stream = sock.makefile("rb")

    def disconnect(self) -> None:
        assert self.sock is not None
        self.stream.close()
        self.sock.close()
        self.sock = None

    def send(self, op: str, payload: str | bytes | dict[str, Any] = b"") -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        data = payload.encode() if isinstance(payload, str) else payload
        assert self.sock is not None
        self.sock.sendall(encode(op, data))

    def records_until(self, *ops: str, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """Records up to and including the first whose op is one of ``ops``."""
        assert self.sock is not None
        self.sock.settimeout(timeout)
        records = []
        while True:
            frame = read_frame(self.stream)
            assert frame is not None, f"the runner closed the socket before {ops}"
            records.append(frame)
            if frame[0] in ops:
                return records

    def query(self, code: str, timeout: float = 10.0) -> tuple[str, str, dict[str, Any]]:
        """stdout, stderr and the finished payload of one ``code`` request."""
        self.send("code", code)
        records = self.records_until("finished", timeout=timeout)
        return (console(records, "stdout"), console(records, "stderr"), json.loads(records[-1][1]))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """Stop the runner, then whatever it left in its process group (a service it
        started, a user's background ``sleep``): they are this test's processes too."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


def console(records: list[tuple[str, bytes]], op: str) -> str:
    """The text of every ``op`` (``stdout``/``stderr``) record, in order."""
    return b"".join(data for kind, data in records if kind == op).decode()
