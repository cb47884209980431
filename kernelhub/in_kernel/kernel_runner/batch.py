"""Batch mode: ``clean``, ``build`` and ``exec`` shell commands, strictly in order (the
runner's task queue serialises them), each answered by its own ``*-finished`` record.

``"*"`` asks for the runtime's heuristic (Python: ``make`` / ``pip install -e .`` /
``python main.py``); an empty command finishes at once with 0; a failed build makes the
next ``exec`` answer 127 without running. Each command runs in its own process group so an
``interrupt`` reaches it (and its children) and not the runner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from typing import IO

from .outbox import Outbox

FINISHED = {"clean": "clean-finished", "build": "build-finished", "exec": "finished"}
_CHUNK = 4096


class BatchEngine:
    def __init__(
        self,
        outbox: Outbox,
        work_dir: str,
        runtime_path: str,
        record_path: str | None = None,
        kernel_id: str = "",
    ) -> None:
        self.outbox = outbox
        self.work_dir = work_dir
        self.runtime_path = runtime_path
        self.record_path = record_path
        self.kernel_id = kernel_id
        self.build_ok = True
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def step(self, op: str, command: str) -> int:
        """Run one batch op and send its finished record; returns the exit code."""
        command = command.strip()
        if command == "*":
            command = self._heuristic(op)
        if (op == "exec" and not self.build_ok) or command == _MISSING:
            code = 127  # the build before it failed, or nothing to run
        elif not command:
            code = 0
        else:
            code = self.run(command)
        if op == "build":
            self.build_ok = code == 0
        elif op == "exec":
            self.build_ok = True
        self.outbox.send(FINISHED[op], json.dumps({"exitCode": code}))
        self._record(op, code)
        return code

    def _heuristic(self, op: str) -> str:
        def exists(name: str) -> bool:
            return os.path.isfile(os.path.join(self.work_dir, name))

        if op == "clean":
            return "make clean" if exists("Makefile") else ""
        if op == "build":
            if exists("Makefile"):
                return "make"
            if exists("setup.py") or exists("pyproject.toml"):
                return _quote(self.runtime_path) + " -m pip install --user -e ."
            return ""
        if exists("main.py"):
            return _quote(self.runtime_path) + " main.py"
        self.outbox.send("stderr", "kernelhub: no main.py to execute in the work dir\n")
        return _MISSING

    def run(self, command: str) -> int:
        env = dict(os.environ)
        env["_BACKEND_BATCH_MODE"] = "1"
        log = self._task_log()
        try:
            process = subprocess.Popen(
                command,
                shell=True,
                cwd=self.work_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=os.setpgrp,
            )
        except OSError as exc:
            self.outbox.send("stderr", "kernelhub: cannot run the command: " + str(exc) + "\n")
            return -1
        with self._lock:
            self.process = process
        try:
            readers = [
                threading.Thread(target=self._pump, args=(process.stdout, "stdout", log)),
                threading.Thread(target=self._pump, args=(process.stderr, "stderr", log)),
            ]
            for reader in readers:
                reader.start()
            code = process.wait()
            for reader in readers:
                reader.join()
            return code
        finally:
            with self._lock:
                self.process = None
            if log is not None:
                log.close()

    def _pump(self, pipe: IO[bytes] | None, name: str, log: IO[bytes] | None) -> None:
        assert pipe is not None
        while True:
            chunk = os.read(pipe.fileno(), _CHUNK)
            if not chunk:
                pipe.close()
                return
            self.outbox.send(name, chunk)
            _mirror(1 if name == "stdout" else 2, chunk)
            if log is not None:
                try:
                    log.write(chunk)
                    log.flush()
                except (OSError, ValueError):
                    pass

    def interrupt(self) -> bool:
        """SIGINT to the running command's process group; False when none runs."""
        with self._lock:
            process = self.process
        if process is None:
            return False
        try:
            os.killpg(process.pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def terminate(self, grace_s: float = 2.0) -> None:
        """At shutdown: the running command's group gets SIGTERM, then SIGKILL."""
        with self._lock:
            process = self.process
        if process is None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(process.pid, signal.SIGKILL)

    def _task_log(self) -> IO[bytes] | None:
        """Upstream's task log: ``.logs/task/<id[:2]>/<id[2:4]>/<id[4:]>.log`` when the work
        dir has a ``.logs`` folder."""
        logs = os.path.join(self.work_dir, ".logs")
        if not self.kernel_id or not os.path.isdir(logs):
            return None
        k = self.kernel_id
        path = os.path.join(logs, "task", k[:2], k[2:4], k[4:] + ".log")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return open(path, "ab")
        except OSError:
            return None

    def _record(self, op: str, code: int) -> None:
        """Each finished step, for an agent that restarts and asks again."""
        if self.record_path is None:
            return
        line: dict[str, object] = {"op": op, "exitCode": code, "at": time.time()}
        try:
            with open(self.record_path, "a") as record:
                record.write(json.dumps(line) + "\n")
        except OSError:
            pass


_MISSING = "\0missing"


def _mirror(fd: int, chunk: bytes) -> None:
    """Batch output goes to the kernel log too (the runner's own stdout/stderr), so it can
    be read after the session ended, as a container's log would have it."""
    try:
        os.write(fd, chunk)
    except OSError:
        pass


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def last_exec_code(record_path: str) -> int | None:
    """The exit code of the last finished ``exec`` in a record file, if any."""
    try:
        with open(record_path, "rb") as record:
            return last_exec_code_in(record.read())
    except OSError:
        return None


def last_exec_code_in(record: bytes) -> int | None:
    """The exit code of the last finished ``exec`` in a record's text (or its tail: a line
    cut at the front is skipped), if any."""
    for line in reversed(record.splitlines()):
        try:
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("op") == "exec":
                return int(entry["exitCode"])
        except (ValueError, TypeError, KeyError):
            continue
    return None
