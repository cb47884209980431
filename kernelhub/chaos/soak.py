"""The soak: the chaos workload without faults for a long while, memory sampled all along.

What it reports: each actor's and Redis's RSS growth per hour after a warm-up (a leak shows
as a steady slope; the target is under 50 MB/h per actor at steady load), and what the log
costs per session (Redis ``used_memory`` and the AOF's size, grown per session created).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from events import RedisEventStore

from .checker import check
from .client import GatewayClient
from .driver import settle
from .faults import FaultInjector
from .memory import RssSeries
from .record import ClientRecord
from .stack import ChaosStack, redis_pid
from .workload import Workload, WorkloadSpec

__all__ = ["SoakConfig", "run_soak"]


@dataclass(frozen=True)
class SoakConfig:
    seconds: float = 1800.0
    sample_every_s: float = 10.0
    warmup_s: float | None = None
    """Samples before this are not fitted (default: a fifth of the run, at most 5 min)."""
    seed: int | None = None
    workload: WorkloadSpec = field(default_factory=lambda: WorkloadSpec(probe_interval_s=30.0))
    """Few direct appends: they would count in the log's bytes per session."""


async def run_soak(config: SoakConfig) -> dict[str, Any]:
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"soak: seed {seed}", file=sys.stderr, flush=True)
    stack = await asyncio.to_thread(ChaosStack.up)
    try:
        return await _soak(config, seed, stack)
    finally:
        await asyncio.to_thread(stack.down)


async def _soak(config: SoakConfig, seed: int, stack: ChaosStack) -> dict[str, Any]:
    record = ClientRecord()
    client = GatewayClient(stack.endpoint, stack.access_key, stack.secret_key, record)
    store = RedisEventStore.from_url(stack.redis_url)
    workload = Workload(
        client, record, config.workload, ledger=stack.ledger, redis_url=stack.redis_url, seed=seed
    )
    finder = FaultInjector(stack)  # only its view of the actors' pids
    series = RssSeries()
    aof = stack.data_dir / "redis" / "appendonlydir"
    memory_before = await store.used_memory()
    aof_before = _size(aof)
    stop = asyncio.Event()
    started = time.monotonic()
    work = asyncio.create_task(workload.run(stop))
    pids: dict[str, int] = {}
    try:
        while time.monotonic() - started < config.seconds:
            at = time.monotonic() - started
            with contextlib.suppress(Exception):  # the state API busy: the last pids serve
                pids = await asyncio.to_thread(finder.actors)
            for name, pid in pids.items():
                series.add(name, pid, at)
            server = redis_pid(stack.redis_url)
            if server is not None:
                series.add("redis-server", server, at)
            await asyncio.sleep(config.sample_every_s)
    finally:
        stop.set()
        await asyncio.wait_for(work, 300)
    elapsed = time.monotonic() - started
    memory_after = await store.used_memory()
    aof_after = _size(aof)
    await settle(store, 60)
    verdict = await check(store, record, stack.ledger, projections=False)
    sessions = len(record.acked_creates())
    warmup = config.warmup_s if config.warmup_s is not None else min(300.0, elapsed / 5)
    growth = series.growth_mb_per_h(warmup)
    actors = {k: v for k, v in growth.items() if k != "redis-server"}
    fitted = [v for v in actors.values() if v is not None]
    info = await store.server_info()
    await client.aclose()
    await store.close()
    return {
        "seed": seed,
        "seconds": round(elapsed, 1),
        "sessions": sessions,
        "executions": verdict.executions_checked,
        "rss_growth_mb_per_h": actors,
        "redis_rss_growth_mb_per_h": growth.get("redis-server"),
        "max_actor_growth_mb_per_h": max(fitted, default=None),
        "rss_mb": series.last_mb(),
        "log_bytes_per_session": round((memory_after - memory_before) / sessions, 1)
        if sessions
        else None,
        "aof_bytes_per_session": round((aof_after - aof_before) / sessions, 1)
        if sessions
        else None,
        "events": verdict.events,
        "checker_ok": verdict.ok,
        "findings": verdict.summary()["by_rule"],
        "warmup_s": round(warmup, 1),
        "samples": sum(len(v) for v in series.samples.values()),
        "redis_version": str(info.get("redis_version")),
    }


def _size(directory: Any) -> int:
    try:
        return sum(p.stat().st_size for p in directory.iterdir())
    except OSError:
        return 0
