"""The embedded ``redis-server``, kept running: ``python -m kernelhub.redis_supervisor``.

``kh up`` starts this small process detached; it runs ``redis-server`` as its child (the
command line of :class:`~kernelhub.redis_server.EmbeddedRedis`: same data dir, address and
durability) and, when the server dies for any reason but this supervisor's own stop
(SIGKILL, a crash, the OOM killer), starts it again on the same socket or port, where it
replays its AOF. Without it, one killed ``redis-server`` left every actor and the gateway
failing until an operator noticed (issue 32).

- Restarts back off (0.2 s doubling to 5 s; reset once the server stayed up 10 s), so a
  server that dies at once does not spin a core, and each is a line in ``supervisor.log``.
- A server that cannot start (a corrupt AOF, a port taken) is tried a few times; then the
  supervisor gives up, saying why in its log and its state file, which ``kh status`` shows.
  Looping silently forever would hide the one thing the operator must fix.
- SIGSTOP/SIGCONT of the server is no death: only its exit (``waitpid``) counts.
- SIGTERM (or SIGINT) stops the server with SIGTERM (Redis fsyncs its AOF) and exits.
- ``supervisor.json`` beside the AOF says who runs: the supervisor's pid, the current
  ``redis-server`` pid (it changes with each restart), the state, the restarts and why the
  last one happened. It is written whole (rename), so a reader never sees half of it.
- Each restart uses the ``appendfsync`` that ``kh up`` last asked (the file ``appendfsync``
  beside it), not the one this process started with: ``kh up --durability always`` on a
  running stack changes the running server, and a restart must not quietly undo it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal

from pydantic import BaseModel, ValidationError

from events import Durability
from events.server import server_probe

from .errors import RedisStartError
from .redis_server import EmbeddedRedis

__all__ = [
    "STATE_FILE",
    "Backoff",
    "SupervisorState",
    "describe_exit",
    "launch",
    "main",
    "read_supervisor",
    "want_durability",
]

STATE_FILE = "supervisor.json"
LOG_FILE = "supervisor.log"
DURABILITY_FILE = "appendfsync"
MODULE = "kernelhub.redis_supervisor"

Phase = Literal["starting", "running", "restarting", "failed", "stopped"]


class SupervisorState(BaseModel):
    """``supervisor.json``: what ``kh status``, ``kh down`` and a chaos driver read."""

    pid: int
    """The supervisor's own pid (SIGTERM it to stop Redis cleanly)."""
    redis_pid: int | None = None
    """The ``redis-server`` running now (None while it is down)."""
    state: Phase
    restarts: int = 0
    """How many times the server was started again after its first start."""
    why: str | None = None
    """Why the last restart happened, or why the server cannot start (``failed``)."""
    since: float = 0.0
    """When ``state`` last changed (seconds since the epoch)."""
    url: str | None = None
    """Where the server listens (the same across restarts)."""


def read_supervisor(redis_dir: Path) -> SupervisorState | None:
    """The supervisor's last word, or None when there is none (or it is unreadable)."""
    try:
        return SupervisorState.model_validate_json((redis_dir / STATE_FILE).read_text())
    except (OSError, ValidationError):
        return None


@dataclass
class Backoff:
    """The wait before each restart: ``initial`` doubling to ``cap``, back to ``initial``
    once the server stayed up ``stable_after`` seconds (a crash an hour later is news, not
    a crash loop)."""

    initial: float = 0.2
    cap: float = 5.0
    stable_after: float = 10.0
    _next: float = field(default=0.0, repr=False)

    def delay(self, uptime: float) -> float:
        """The wait before the next start, after a server that ran ``uptime`` seconds."""
        if self._next == 0.0 or uptime >= self.stable_after:
            self._next = self.initial
        delay, self._next = self._next, min(self.cap, self._next * 2)
        return delay


def describe_exit(returncode: int) -> str:
    """``Popen.returncode`` in words: "was killed by SIGKILL", "exited with code 1"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


class Supervisor:
    """One ``redis-server`` child, restarted until this process is told to stop."""

    def __init__(
        self,
        redis_dir: Path,
        *,
        port: int | None,
        durability: Durability,
        binary: str | None,
        max_failures: int = 6,
        ready_timeout: float = 120.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.redis_dir = redis_dir
        self.port = port
        self.durability = durability
        self.binary = binary
        self.max_failures = max_failures
        self.ready_timeout = ready_timeout
        self.backoff = backoff or Backoff()
        self.server: EmbeddedRedis | None = None
        self.url = EmbeddedRedis(redis_dir, port=port, binary=binary).url
        self.stopping = False
        self.restarts = 0
        self.last_why: str | None = None

    # ---- what it says -------------------------------------------------------------------
    def log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with open(self.redis_dir / LOG_FILE, "a") as out:
            out.write(f"{stamp} [{os.getpid()}] {line}\n")

    def record(self, state: Phase, redis_pid: int | None = None, why: str | None = None) -> None:
        body = SupervisorState(
            pid=os.getpid(),
            redis_pid=redis_pid,
            state=state,
            restarts=self.restarts,
            why=why,
            since=time.time(),
            url=self.url,
        )
        tmp = self.redis_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(body.model_dump_json())
        os.replace(tmp, self.redis_dir / STATE_FILE)

    # ---- stopping -----------------------------------------------------------------------
    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self._stop_child()

    def _stop_child(self) -> None:
        process = self.server.process if self.server else None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
                os.kill(process.pid, signal.SIGCONT)  # a stopped server must see it

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _wanted_durability(self) -> Durability:
        try:
            return Durability((self.redis_dir / DURABILITY_FILE).read_text().strip())
        except (OSError, ValueError):
            return self.durability

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        other = _running_server(self.redis_dir)
        if other is not None:
            why = f"a redis-server (pid {other}) already serves {self.redis_dir}"
            self.log(f"not starting: {why}")
            self.record("failed", why=why)
            return 1
        self.record("starting")
        failures = 0
        while not self.stopping:
            self.server = EmbeddedRedis(
                self.redis_dir,
                port=self.port,
                durability=self._wanted_durability(),
                binary=self.binary,
            )
            started = time.monotonic()
            try:
                self.server.start(timeout=self.ready_timeout)
            except (RedisStartError, OSError) as exc:
                if self.stopping:
                    break
                failures += 1
                why = f"redis-server cannot start: {exc}"
                if failures >= self.max_failures:
                    self.log(f"{why}; gave up after {failures} tries (fix it, then `kh up`)")
                    self.record("failed", why=why)
                    return 1
                delay = self.backoff.delay(0.0)
                self.restarts += 1
                self.last_why = why
                self.log(f"{why}; trying again in {delay:.1f}s (restart {self.restarts})")
                self.record("restarting", why=why)
                self._sleep(delay)
                continue
            if self.stopping:  # told to stop while it was starting
                self._stop_child()
                break
            failures = 0
            pid = self.server.pid
            self.log(f"redis-server pid {pid} ready on {self.server.url}")
            self.record("running", redis_pid=pid, why=self.last_why)
            assert self.server.process is not None
            returncode = self.server.process.wait()
            if self.stopping:
                break
            delay = self.backoff.delay(time.monotonic() - started)
            self.restarts += 1
            why = f"redis-server pid {pid} {describe_exit(returncode)}"
            self.last_why = why
            self.log(f"{why}; restarting from its AOF in {delay:.1f}s (restart {self.restarts})")
            self.record("restarting", why=why)
            self._sleep(delay)
        self._finish()
        return 0

    def _finish(self) -> None:
        process = self.server.process if self.server else None
        if process is not None:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                self.log("redis-server did not stop in 30s: killed")
        self.log("stopped")
        self.record("stopped")


def _running_server(redis_dir: Path) -> int | None:
    """A ``redis-server`` still serving this data dir (its pidfile names a live one): a
    second would share the AOF, which must never happen."""
    from . import procs

    try:
        pid = int((redis_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    found = procs.proc(pid)
    if found is None or found.comm != "redis-server":
        return None
    try:  # the pid may have been reused by another data dir's server: ours runs in ``--dir``
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    return pid if cwd == str(redis_dir.resolve()) else None


def want_durability(redis_dir: Path, durability: Durability) -> None:
    """The ``appendfsync`` every later (re)start of the server uses (``kh up`` sets it on the
    running server too)."""
    redis_dir.mkdir(parents=True, exist_ok=True)
    (redis_dir / DURABILITY_FILE).write_text(durability.value)


def launch(
    redis_dir: Path,
    *,
    port: int | None,
    durability: Durability,
    binary: str,
    env: dict[str, str],
    timeout: float = 120.0,
    max_failures: int = 6,
) -> SupervisorState:
    """Start a detached supervisor and wait until its server answers (``kh up``)."""
    want_durability(redis_dir, durability)
    command = [sys.executable, "-m", MODULE, "--dir", str(redis_dir), "--binary", binary]
    command += ["--durability", durability.value, "--max-failures", str(max_failures)]
    if port is not None:
        command += ["--port", str(port)]
    with open(redis_dir / LOG_FILE, "ab") as log:  # a traceback lands beside its log lines
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    url = EmbeddedRedis(redis_dir, port=port, binary=binary).url
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_supervisor(redis_dir)
        mine = state is not None and state.pid == process.pid
        if process.poll() is not None:
            why = state.why if mine and state is not None and state.why else _tail(redis_dir)
            raise RedisStartError(f"the Redis supervisor exited: {why}")
        if mine and state is not None and state.state == "running":
            if server_probe(url, timeout=1) is None:
                return state
        time.sleep(0.05)
    raise RedisStartError(f"Redis did not get ready in {timeout:.0f}s: {_tail(redis_dir)}")


def _tail(redis_dir: Path, lines: int = 3) -> str:
    try:
        text = (redis_dir / LOG_FILE).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return " | ".join(text[-lines:]) or "no output"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="Redis's data dir (the AOF)")
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: socket)")
    parser.add_argument("--durability", default=Durability.EVERYSEC.value)
    parser.add_argument("--binary", default=None, help="the redis-server to run")
    parser.add_argument("--max-failures", type=int, default=6)
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    supervisor = Supervisor(
        args.dir.resolve(),
        port=args.port,
        durability=Durability(args.durability),
        binary=args.binary,
        max_failures=args.max_failures,
        ready_timeout=args.ready_timeout,
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
