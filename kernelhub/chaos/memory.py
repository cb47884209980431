"""Memory over time, for the soak: each actor's and Redis's resident set sampled from
``/proc/<pid>/status`` (``VmRSS``), and the growth per hour fitted as a least-squares slope
after a warm-up (start-up allocations, caches filling, are not a leak).

A process restarted during the soak (a new pid under the same actor name) starts a new
series; the slope is fitted over the longest one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RssSeries", "rss_kib", "slope_per_hour"]


def rss_kib(pid: int) -> int | None:
    """The process's resident set in KiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, per hour (None: fewer than 3)."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / spread
    return slope * 3600


@dataclass
class RssSeries:
    """Samples per name; each name's pid as last seen (a new pid: a new series)."""

    samples: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    """name -> (pid, seconds since start, MiB)."""

    def add(self, name: str, pid: int, at_s: float) -> None:
        kib = rss_kib(pid)
        if kib is not None:
            self.samples.setdefault(name, []).append((pid, at_s, kib / 1024))

    def growth_mb_per_h(self, warmup_s: float) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, rows in sorted(self.samples.items()):
            by_pid: dict[int, list[tuple[float, float]]] = {}
            for pid, at, mib in rows:
                if at >= warmup_s:
                    by_pid.setdefault(pid, []).append((at, mib))
            longest = max(by_pid.values(), key=len, default=[])
            slope = slope_per_hour(longest)
            out[name] = None if slope is None else round(slope, 2)
        return out

    def last_mb(self) -> dict[str, float]:
        return {name: round(rows[-1][2], 1) for name, rows in sorted(self.samples.items())}
