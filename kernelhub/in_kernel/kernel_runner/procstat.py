"""Process-table snapshots and OOM forensics (kernel 23.3.8): every couple of seconds the
runner remembers which processes its kernel has; when the agent reports an OOM kill, the
processes that vanished since are written to the kernel log with their ancestry, so users
learn *what* the kernel lost."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, NamedTuple

log = logging.getLogger("kernelhub.runner")

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class ProcStat(NamedTuple):
    pid: int
    name: str
    cmdline: str
    status: str
    ppid: int
    session: int
    started_s: float
    """Seconds after boot."""
    vsize: int
    """Bytes."""
    rss: int
    """Bytes."""


def read_proc(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            stat = stat_file.read()
        with open(f"/proc/{pid}/cmdline", "rb") as cmd_file:
            cmdline = cmd_file.read().replace(b"\0", b" ").strip().decode("utf-8", "replace")
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcStat(
        pid=pid,
        name=name,
        cmdline=cmdline or "[" + name + "]",
        status=fields[0],
        ppid=int(fields[1]),
        session=int(fields[3]),
        started_s=int(fields[19]) / _CLOCK_TICKS,
        vsize=int(fields[20]),
        rss=int(fields[21]) * _PAGE,
    )


def scan_proc_stats(session: int | None = None) -> dict[int, ProcStat]:
    """Every process (of one session, when given: the kernel's on a shared host)."""
    found: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = read_proc(int(entry))
        if stat is not None and (session is None or stat.session == session):
            found[stat.pid] = stat
    return found


def _uptime() -> float:
    try:
        with open("/proc/uptime") as uptime:
            return float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return time.monotonic()


def describe(stat: ProcStat, now_s: float) -> str:
    age = max(0.0, now_s - stat.started_s)
    return (
        f"{stat.pid} (running for {age:.0f}s, vm: {stat.vsize / 2**20:.1f}m, "
        f"rss: {stat.rss / 2**20:.1f}m): {stat.cmdline}"
    )


def process_chain(victim: int, known: dict[int, ProcStat], now_s: float) -> str:
    """The victim's ancestry from its root down to it, one indented line per process.
    Ages count from boot (``/proc/uptime``), not from the runner's monotonic clock."""
    chain: list[ProcStat] = []
    pid = victim
    while pid in known and len(chain) < 64:
        chain.append(known[pid])
        pid = known[pid].ppid
    lines = []
    for depth, stat in enumerate(reversed(chain)):
        prefix = "" if depth == 0 else "  " * depth + "└─ "
        lines.append(prefix + describe(stat, now_s))
    return "\n".join(lines)


class ProcessMonitor:
    """Keeps the last two snapshots, one every ``interval_s``."""

    def __init__(
        self,
        interval_s: float = 2.0,
        polls: int = 30,
        poll_interval_s: float = 0.5,
        session: int | None = None,
        report: Callable[[str], None] = log.warning,
    ) -> None:
        self.interval_s = interval_s
        self.polls = polls
        self.poll_interval_s = poll_interval_s
        self.session = session
        self.report = report
        self.history: list[dict[int, ProcStat]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="procmon", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            snapshot = scan_proc_stats(self.session)
            with self._lock:
                self.history = ([*self.history, snapshot])[-2:]
            self._stop.wait(self.interval_s)

    def on_event(self, event: dict[str, object]) -> None:
        """An agent-notified event; ``oom`` dumps what the kernel lost."""
        kind = event.get("type")
        if kind == "oom":
            self.log_oom()
        else:
            log.info("Agent-notified event: %r", event)

    def log_oom(self) -> None:
        with self._lock:
            previous: dict[int, ProcStat] = {}
            for snapshot in self.history:
                for pid, stat in snapshot.items():
                    seen = previous.get(pid)
                    # a zombie (killed, not yet reaped) has lost its command line and
                    # memory: the earlier view of the same process says what it was
                    if stat.status == "Z" and seen and seen.started_s == stat.started_s:
                        continue
                    previous[pid] = stat
        for _ in range(self.polls):
            vanished = [pid for pid, stat in previous.items() if _gone(pid, stat)]
            if vanished:
                now_s = _uptime()
                for pid in sorted(vanished):
                    self.report("OOM-killed process:\n" + process_chain(pid, previous, now_s))
                return
            time.sleep(self.poll_interval_s)
        self.report("failed to get the information of oom-killed processes")


def _gone(pid: int, seen: ProcStat) -> bool:
    """The process exited (a reused pid with another start time is another process)."""
    now = read_proc(pid)
    return now is None or now.started_s != seen.started_s or now.status == "Z"
