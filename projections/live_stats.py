"""Kernels' live statistics as 23.03's GraphQL gives them (``ComputeContainer.live_stat`` and
``last_stat``), from the telemetry agents keep beside the log: each heartbeat's stats
(``<p>:stat:<kernel>``, :mod:`actors.agents.telemetry`, kept a minute) and the utilization
samples (``<p>:idle:util:<kernel>``, kept an hour, what the idle checker reads).

The shape is 23.03's ``MetricValue`` per metric, every number a string:
``{"current", "capacity", "pct", "unit_hint", "stats.min", "stats.max", "stats.avg"}``:

- ``cpu_used``: CPU time used, ``msec``;
- ``cpu_util``: percent of one core (``capacity`` is the allocated cores times 100, ``pct``
  the share of the allocation), with min/max/avg over the kept samples;
- ``mem``: resident bytes, ``capacity`` the allocated memory, ``pct`` the share;
- ``io_read``/``io_write``: bytes (where the backend measures them);
- every other sampled metric (a device's ``cuda_util``, ``cuda_mem``, ...): ``percent``.

Reading is pure but for :func:`read_kernel_stats` (``store.telemetry.kernels_measured``: two
``MGET``s in one round trip).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from events import RedisEventStore

__all__ = ["KernelTelemetry", "metric_values", "read_kernel_stats"]

_TICKS = os.sysconf("SC_CLK_TCK")

KernelTelemetry = tuple[dict[str, Any] | None, dict[str, list[float]] | None]
"""A kernel's last heartbeat stats and its utilization series (each ``None``: none kept)."""


async def read_kernel_stats(
    store: RedisEventStore, kernel_ids: Sequence[str]
) -> dict[str, KernelTelemetry]:
    """What telemetry keeps of each kernel, in one round trip."""
    measured = await store.telemetry.kernels_measured(kernel_ids)
    return {
        kernel_id: (_json(raw_stats), _json(raw_series))
        for kernel_id, (raw_stats, raw_series) in zip(kernel_ids, measured, strict=True)
    }


def _json(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _text(value: Decimal | float | int | None, places: int = 2) -> str | None:
    if value is None:
        return None
    number = Decimal(str(value)).quantize(Decimal(1).scaleb(-places))
    return format(number.normalize(), "f") if number == number.to_integral() else str(number)


def _metric(
    current: Decimal | float | int,
    unit: str,
    capacity: Decimal | float | int | None = None,
    pct: Decimal | float | int | None = None,
    series: Sequence[float] | None = None,
    scale: Decimal = Decimal(1),
) -> dict[str, str | None]:
    value: dict[str, str | None] = {
        "current": _text(current),
        "capacity": _text(capacity),
        "pct": _text(pct),
        "unit_hint": unit,
    }
    if series:
        scaled = [Decimal(str(v)) * scale for v in series]
        value["stats.min"] = _text(min(scaled))
        value["stats.max"] = _text(max(scaled))
        value["stats.avg"] = _text(sum(scaled) / len(scaled))
    return value


def metric_values(
    telemetry: KernelTelemetry, allocated: Mapping[str, Any]
) -> dict[str, dict[str, str | None]] | None:
    """A kernel's ``live_stat`` (a dict to JSON-encode) from what telemetry keeps of it and
    what it was allocated; ``None`` when nothing is kept."""
    stats, series = telemetry
    stats, series = stats or {}, series or {}
    if not stats and not series:
        return None
    cores = _number(allocated.get("cpu")) or Decimal(0)
    memory = _number(allocated.get("mem")) or Decimal(0)
    pct = stats.get("pct")
    direct: dict[str, Any] = pct if isinstance(pct, dict) else {}
    values: dict[str, dict[str, str | None]] = {}
    used_ns = _number(stats.get("cpu_used_ns"))
    ticks = _number(stats.get("cpu_ticks"))
    if used_ns is not None:
        values["cpu_used"] = _metric(used_ns / 1_000_000, "msec")
    elif ticks is not None:
        values["cpu_used"] = _metric(ticks * 1000 / _TICKS, "msec")
    cpu_series = series.get("cpu_util") or []
    cpu_pct = _number(direct.get("cpu_util")) if "cpu_util" in direct else None
    if cpu_pct is None and cpu_series:
        cpu_pct = _number(cpu_series[-1])
    if cpu_pct is not None:
        values["cpu_util"] = _metric(
            cpu_pct * cores,
            "percent",
            capacity=cores * 100,
            pct=cpu_pct,
            series=cpu_series,
            scale=cores,
        )
    rss = _number(stats.get("rss_bytes"))
    capacity = memory or _number(stats.get("mem_limit_bytes")) or Decimal(0)
    mem_pct = _number(direct.get("mem")) if "mem" in direct else None
    if mem_pct is not None and capacity and not rss:  # a backend that knows only the share
        rss = capacity * mem_pct / 100
    if rss is not None:
        share = mem_pct if mem_pct is not None else (rss * 100 / capacity if capacity else None)
        values["mem"] = _metric(rss, "bytes", capacity=capacity or None, pct=share)
    for key, metric in (("io_read_bytes", "io_read"), ("io_write_bytes", "io_write")):
        amount = _number(stats.get(key))
        if amount is not None:
            values[metric] = _metric(amount, "bytes")
    for metric in sorted(set(series) | set(direct)):
        if metric in ("cpu_util", "mem") or metric in values:
            continue
        samples = series.get(metric) or []
        latest = _number(direct.get(metric)) if metric in direct else None
        if latest is None and samples:
            latest = _number(samples[-1])
        if latest is not None:
            values[metric] = _metric(latest, "percent", capacity=100, pct=latest, series=samples)
    return values or None
