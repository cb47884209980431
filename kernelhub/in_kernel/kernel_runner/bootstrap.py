"""The session's bootstrap script (``bootstrap_script`` at create; 23.03's
``/home/work/bootstrap.sh``): run once by ``/bin/sh`` each time the runner starts (the kernel's
first start and each restart, as upstream runs it at every container start), before the runner
answers ``status``, so the agent reports the kernel started only after it.

Its output goes to the kernel log (the runner's stderr: the container's output, the process
kernel's log file) as it comes; the last part is also kept for the agent, which ends the
session with it when the script fails. It runs with the kernel's environment, in the work dir,
as the kernel's user, in a process group of its own inside the runner's session (so the
runner can kill it and whatever it started at its time limit, and a process kernel's stop
still reaches what it left behind). Past ``timeout_s`` the whole group is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Mapping

TAIL_BYTES = 2000
"""What of the script's output the agent is told (the whole output is in the kernel log)."""
_CHUNK = 4096


class BootstrapOutcome:
    """How the script ended: ``exit_code`` (negative: killed by that signal), whether it ran
    past its time, and its output's tail."""

    def __init__(self, exit_code: int, timed_out: bool, tail: bytes, duration_s: float) -> None:
        self.exit_code = exit_code
        self.timed_out = timed_out
        self.tail = tail
        self.duration_s = duration_s

    def to_status(self) -> dict[str, object]:
        """What the runner's ``status`` reply carries about it."""
        return {
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "tail": self.tail.decode("utf-8", "replace"),
            "duration_s": round(self.duration_s, 3),
        }


def run_bootstrap(
    path: str, work_dir: str, env: Mapping[str, str], timeout_s: float, out_fd: int = 2
) -> BootstrapOutcome | None:
    """Run the script at ``path`` if there is one (None when there is not); blocking."""
    if not os.path.isfile(path):
        return None
    started = time.monotonic()
    _say(out_fd, "kernelhub-runner: bootstrap script started\n")
    try:
        process = subprocess.Popen(
            ["/bin/sh", path],
            cwd=work_dir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=os.setpgrp,
        )
    except OSError as exc:
        message = f"kernelhub-runner: the bootstrap script could not start: {exc}\n"
        _say(out_fd, message)
        return BootstrapOutcome(127, False, message.encode(), time.monotonic() - started)
    tail = bytearray()
    lock = threading.Lock()

    def pump() -> None:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, _CHUNK)
            except OSError:
                return
            if not chunk:
                return
            _say(out_fd, chunk)
            with lock:
                tail.extend(chunk)
                del tail[:-TAIL_BYTES]

    # a daemon: what the script left running in the background may hold the pipe for as
    # long as it lives, and its output keeps reaching the log
    reader = threading.Thread(target=pump, name="bootstrap-output", daemon=True)
    reader.start()
    timed_out = False
    try:
        code = process.wait(timeout_s if timeout_s > 0 else None)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process.pid)
        code = process.wait()
    reader.join(0.5)
    duration = time.monotonic() - started
    if timed_out:
        _say(
            out_fd,
            f"kernelhub-runner: bootstrap script killed after {timeout_s:g} s (its time limit)\n",
        )
    else:
        _say(out_fd, f"kernelhub-runner: bootstrap script exited with {code}\n")
    with lock:
        kept = bytes(tail)
    return BootstrapOutcome(code, timed_out, kept, duration)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _say(fd: int, data: object) -> None:
    chunk = data if isinstance(data, bytes) else str(data).encode("utf-8", "replace")
    try:
        os.write(fd, chunk)
    except OSError:
        pass
