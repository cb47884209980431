"""CPU time by component during a benchmark phase, read from ``/proc`` (Linux).

A saturated pipeline is explained by where its CPU goes, not by its wall time: each Ray
actor's process is titled ``ray::<Class>`` (``ray::<Class>.<method>`` while it runs a
call), so the seconds of every process alive at both readings are summed per class; Redis
and the benchmark's own process are counted too. Processes that start or end in between
are missed, which is fine for actors that live for the whole phase.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_by_component", "cpu_snapshot"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _component(title: str, pid: int) -> str | None:
    if pid == os.getpid():
        return "bench-driver"
    program = title.split(" ", 1)[0].rsplit("/", 1)[-1]
    if title.startswith("ray::"):
        name = title[len("ray::") :].split(".", 1)[0].split(" ", 1)[0]
        return "ray-system" if name in ("DashboardAgent", "IDLE") else name
    if program.startswith("redis-server"):
        return "redis"
    if any(part in title for part in ("gcs_server", "raylet", "dashboard", "log_monitor")):
        return "ray-system"
    return None


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """pid -> (component, CPU seconds so far) for the processes a benchmark cares about."""
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        component = _component(title.strip(), int(entry.name))
        if component is None:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry.name)] = (component, (int(fields[11]) + int(fields[12])) / _TICK)
    return found


def cpu_by_component(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per component, largest first."""
    spent: dict[str, float] = {}
    for pid, (component, seconds) in after.items():
        if pid in before:
            spent[component] = spent.get(component, 0.0) + seconds - before[pid][1]
    return dict(sorted(spent.items(), key=lambda item: -item[1]))
