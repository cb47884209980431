"""What runs on this machine, read from ``/proc``: enough to find the embedded stack's own
processes again when its record is stale or lost (``kh status``, ``kh up``, ``kh down``).

A pid alone is not proof: after a crash or a reboot it may name an unrelated process. So
each finder checks what the process is (its executable name, its command line, its Unix
session) before kernelhub signals it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Proc",
    "alive",
    "proc",
    "scan",
    "session_members",
    "terminate",
]

_PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    """One live process as ``/proc`` shows it (zombies are never returned)."""

    pid: int
    ppid: int
    sid: int
    state: str
    """``R``/``S``/``D``... running or sleeping, ``T`` stopped (SIGSTOP), ``t`` traced."""
    comm: str
    cmdline: str
    """The arguments joined with spaces (a program may rewrite it, as redis-server does)."""

    @property
    def stopped(self) -> bool:
        return self.state in ("T", "t")

    def fd_target(self, fd: int) -> str | None:
        """Where its file descriptor ``fd`` points (None: unreadable or closed)."""
        try:
            return os.readlink(_PROC / str(self.pid) / "fd" / str(fd))
        except OSError:
            return None

    def environ_has(self, entry: str) -> bool:
        """Whether ``NAME=value`` is in the environment it started with."""
        try:
            raw = (_PROC / str(self.pid) / "environ").read_bytes()
        except OSError:
            return False
        return entry.encode() in raw.split(b"\0")


def proc(pid: int) -> Proc | None:
    """The process ``pid``, or None when it is gone or a zombie."""
    base = _PROC / str(pid)
    try:
        stat = (base / "stat").read_text()
        raw = (base / "cmdline").read_bytes()
    except OSError:
        return None
    head, _, rest = stat.rpartition(")")
    fields = rest.split()
    if len(fields) < 4 or fields[0] in ("Z", "X"):
        return None
    comm = head.partition("(")[2]
    cmdline = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return Proc(pid, int(fields[1]), int(fields[3]), fields[0], comm, cmdline)


def scan() -> Iterator[Proc]:
    """Every live process of this user in this pid namespace (but this one).

    Only those: a container's processes show in the host's ``/proc`` too, with whatever
    command line and environment its tenant gave them, and a tenant must not be able to
    pass one off as part of the stack (to be signalled by ``kh down``, or to make ``kh up``
    believe a dead supervisor still runs)."""
    own = os.getpid()
    try:
        namespace: str | None = _pid_namespace("self")
    except OSError:  # no namespaces to read (an unusual /proc): the uid check stands alone
        namespace = None
    uid = os.getuid()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            if namespace is not None and _pid_namespace(entry.name) != namespace:
                continue
        except OSError:
            continue
        found = proc(int(entry.name))
        if found is not None:
            yield found


def _pid_namespace(pid: str) -> str:
    """The pid namespace ``pid`` lives in (``pid:[inode]``)."""
    return os.readlink(_PROC / pid / "ns" / "pid")


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    return proc(pid) is not None


def session_members(sids: Iterable[int]) -> list[Proc]:
    """The live processes of these Unix sessions (a detached Ray head and everything it
    started: GCS, raylet, dashboard, workers, even once the head itself is gone)."""
    wanted = set(sids)
    return [p for p in scan() if p.sid in wanted] if wanted else []


def terminate(pids: Iterable[int], timeout: float) -> list[int]:
    """SIGTERM (and SIGCONT, so a stopped process gets it), then SIGKILL what is still there
    after ``timeout``; returns the pids that needed SIGKILL."""
    pending = {pid for pid in pids if alive(pid)}
    for pid in pending:
        _signal(pid, signal.SIGTERM)
        _signal(pid, signal.SIGCONT)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = {pid for pid in pending if alive(pid)}
        if pending:
            time.sleep(0.05)
    for pid in pending:
        _signal(pid, signal.SIGKILL)
    return sorted(pending)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
