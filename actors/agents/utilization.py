"""Utilization samples of an agent's kernels (telemetry for the idle checker).

Every sample interval the agent turns each running kernel's live stats into percentages of
what the kernel was allocated — ``cpu_util`` from the CPU time used since the last sample
over the allocated cores, ``mem`` from resident memory over the allocated memory, and
``cuda_util``/``cuda_mem`` (``<key>_util``/``<key>_mem``) from the devices it holds — and keeps
the recent ones in ``<p>:idle:util:<kernel>``. The reaper judges a session on the window it
needs (``actors/domain/idle.utilization``); the samples never become events.
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from collections.abc import Mapping
from decimal import Decimal

__all__ = ["KEEP_SAMPLES", "UtilizationSampler"]

KEEP_SAMPLES = 240
"""An hour of samples at 23.03's 15 s: longer than any sensible window."""
_TICKS = os.sysconf("SC_CLK_TCK")


class UtilizationSampler:
    def __init__(self) -> None:
        self._last: dict[uuid.UUID, tuple[float, int]] = {}
        self.series: dict[uuid.UUID, dict[str, deque[float]]] = {}

    def forget(self, kernel_id: uuid.UUID) -> None:
        self._last.pop(kernel_id, None)
        self.series.pop(kernel_id, None)

    def sample(
        self,
        kernel_id: uuid.UUID,
        stats: Mapping[str, object],
        slots: Mapping[str, Decimal],
        now: float,
    ) -> dict[str, list[float]] | None:
        """Add one sample; the kernel's series, or ``None`` when there is nothing to show
        yet (the first CPU reading only sets the baseline)."""
        direct = stats.get("pct")
        values: dict[str, float] = {}
        if isinstance(direct, Mapping):  # a backend that knows its percentages (sim)
            values = {str(k): float(v) for k, v in direct.items()}
        else:
            ticks = int(stats.get("cpu_ticks", 0))  # type: ignore[call-overload]
            rss = int(stats.get("rss_bytes", 0))  # type: ignore[call-overload]
            previous = self._last.get(kernel_id)
            self._last[kernel_id] = (now, ticks)
            cpus = float(slots.get("cpu", 0))
            if previous is not None and now > previous[0] and cpus > 0:
                used = (ticks - previous[1]) / _TICKS
                values["cpu_util"] = max(0.0, 100.0 * used / ((now - previous[0]) * cpus))
            memory = float(slots.get("mem", 0))
            if memory > 0 and previous is not None:
                values["mem"] = 100.0 * rss / memory
        if not values:
            return None
        self.extend(kernel_id, values)
        return self.of(kernel_id)

    def extend(self, kernel_id: uuid.UUID, values: Mapping[str, float]) -> None:
        """Add metrics measured elsewhere to this sample (its devices' utilization)."""
        series = self.series.setdefault(kernel_id, {})
        for metric, value in values.items():
            series.setdefault(metric, deque(maxlen=KEEP_SAMPLES)).append(round(value, 3))

    def latest(self, kernel_id: uuid.UUID, metric: str) -> float:
        samples = self.series.get(kernel_id, {}).get(metric)
        return samples[-1] if samples else 0.0

    def of(self, kernel_id: uuid.UUID) -> dict[str, list[float]]:
        return {metric: list(samples) for metric, samples in self.series.get(kernel_id, {}).items()}
