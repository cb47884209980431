"""Scheduling at scale, end to end on Ray: 10,000 pending sessions onto 1,000 simulated
agents, then an open-loop arrival stream, against the pure policy on the same input.

1. **Queue**: a fresh Redis and installation (``agents-sim`` hosts, two session shards), the
   scheduler paused; 10,000 sessions from 10 keypairs without quotas (1 cpu / 1g each) are
   enqueued through the shard router in batches (``enqueue_per_s``); once the read models
   hold them, the scheduler is resumed and timed from that trigger (Redis time) until the
   10,000th ``alloc_reserved`` (appended atomically with its ``session_scheduled``) is in
   the log: ``ours_per_s``.
2. **Open loop**: a fresh, empty installation; sessions arrive at ``--rate`` per second for
   ``--seconds`` whatever happens; enqueue-to-scheduled latency from the log positions of
   each session's ``session_enqueued`` and ``session_scheduled`` (both Redis time):
   ``open_loop_p99_ms``. Where the CPU went meanwhile, per actor class, Redis and this
   driver: ``open_loop_cpu_ms_per_session`` (at ``rate`` per second on ``nproc`` cores the
   budget is ``1000 * nproc / rate`` ms per session, all components together), and their
   sum, ``cpu_ms_per_session`` (target <= 7).
3. **Baseline**: ``bench/policy.py``'s pure pass on the same queue and agents
   (``policy_only_per_s``); ``ratio = ours_per_s / policy_only_per_s``.

Targets on a 2-core machine: ``ours_per_s >= 500``, ``open_loop_p99_ms <= 250``.

    .venv/bin/python bench/schedule.py [--sessions 10000] [--agents 1000] [--rate 200]
                                       [--seconds 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from actors.domain.commands.sessions import CreateSession, CreateSessions
from actors.domain.slots import ResourceSlot
from actors.hosts import Installation, start_actors
from bench._baselines import machine, redis_version_at
from bench._cpu import cpu_by_component, cpu_snapshot
from bench._ray import local_ray
from bench.policy import one_round
from events import RedisEventStore, position_key
from kernelhub.logging import configure_logging
from kernelhub.testing import temporary_redis

TARGET_PER_S = 500
TARGET_P99_MS = 250
ENQUEUE_BATCH = 100
REQUEST = ResourceSlot(cpu=1, mem=2**30)


def install(url: str, agents: int) -> Installation:
    return start_actors(
        url,
        namespace=f"bench-{uuid.uuid4().hex[:8]}",
        backend="sim",
        shards=2,
        agents=[(f"i-{n:05d}", {"cpu": 16, "mem": 64 * 2**30}) for n in range(agents)],
        sim_hosts=2 if agents > 1 else 1,
        safety_tick_s=5.0,
        heartbeat_interval_s=20.0,
        lost_timeout_s=600.0,
        reconcile_interval_s=3600.0,
    )


def request(n: int) -> dict[str, Any]:
    return {
        "name": f"s{n}",
        "access_key": f"AK{n % 10}",
        "scaling_group": "default",
        "image": "kernelhub/python:3.11",
        "requested": [REQUEST],
    }


async def redis_ms(store: RedisEventStore) -> float:
    seconds, micros = await store.redis.time()
    return seconds * 1000 + micros / 1000


async def projected(store: RedisEventStore, timeout: float = 120.0) -> None:
    """Until the sessions read model has folded everything appended so far."""
    head = position_key(await store.head())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = await store.redis.hget(store.keys.projection_status("sessions"), "checkpoint")
        if raw and position_key(raw.decode()) >= head:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the projector did not catch up")


async def reserved_positions(store: RedisEventStore, want: int, timeout: float) -> list[float]:
    """Log times (ms) of the first ``want`` ``alloc_reserved`` entries of the ledger,
    reading only what is new each time (the ledger's index, not the whole log)."""
    stamps: list[float] = []
    seen = 0
    deadline = time.monotonic() + timeout
    while len(stamps) < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(stamps)} of {want} sessions were scheduled")
        version = await store.stream_version("alloc-default")
        if version > seen:
            for event in await store.read_stream("alloc-default", seen + 1, version):
                if event.type == "alloc_reserved":
                    stamps.append(float(event.position_ms))
            seen = version
        else:
            await asyncio.sleep(0.05)
    return stamps[:want]


async def queue_round(url: str, sessions: int, agents: int) -> dict[str, float]:

    installation = install(url, agents)
    store = RedisEventStore.from_url(url)
    try:
        await installation.scheduler.set_paused.remote(True)
        router = installation.router(store)
        started = time.perf_counter()
        for first in range(0, sessions, ENQUEUE_BATCH):
            batch = [
                CreateSession(**request(n))
                for n in range(first, min(first + ENQUEUE_BATCH, sessions))
            ]
            await router.handle(CreateSessions(items=batch))
        enqueue_s = time.perf_counter() - started
        await projected(store)
        trigger = await redis_ms(store)
        await installation.scheduler.set_paused.remote(False)
        stamps = await reserved_positions(store, sessions, timeout=600)
        return {
            "enqueue_per_s": sessions / enqueue_s,
            "ours_per_s": sessions / max((stamps[-1] - trigger) / 1000, 1e-3),
        }
    finally:
        await store.close()
        installation.kill()


async def open_loop(url: str, agents: int, rate: float, seconds: float) -> dict[str, Any]:

    installation = install(url, agents)
    store = RedisEventStore.from_url(url)
    try:
        router = installation.router(store)
        count = int(rate * seconds)
        cpu_before = cpu_snapshot()
        loop = asyncio.get_running_loop()
        begin = loop.time()
        tasks = []
        for n in range(count):  # open loop: arrivals do not wait for earlier ones
            delay = begin + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(router.handle(CreateSession(**request(n)))))
        sids = await asyncio.gather(*tasks)
        await reserved_positions(store, count, timeout=120)
        spent = cpu_by_component(cpu_before, cpu_snapshot())
        latencies = []
        for sid in sids:
            events = await store.read_stream(f"session-{sid}", 1, 2)
            latencies.append(events[1].position_ms - events[0].position_ms)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return {
            "open_loop_sessions": count,
            "open_loop_p50_ms": latencies[len(latencies) // 2],
            "open_loop_p99_ms": p99,
            "open_loop_cpu_ms_per_session": {
                name: round(seconds * 1000 / count, 2) for name, seconds in spent.items()
            },
            # every component together, the driver included (it stands for the gateway)
            "cpu_ms_per_session": round(sum(spent.values()) * 1000 / count, 2),
        }
    finally:
        await store.close()
        installation.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("ERROR", json=False)
    rounds: list[dict[str, float]] = []
    redis_version = ""
    policy: list[float] = []
    with local_ray():
        for _ in range(args.rounds):  # interleaved: ours, then the baseline, per round
            with temporary_redis() as server:
                rounds.append(asyncio.run(queue_round(server.url, args.sessions, args.agents)))
                redis_version = redis_version_at(server.url)
            placed, elapsed = one_round(args.sessions, args.agents)
            policy.append(placed / elapsed)
        with temporary_redis() as server:
            latency = asyncio.run(open_loop(server.url, args.agents, args.rate, args.seconds))
    ours = statistics.median(r["ours_per_s"] for r in rounds)
    policy_only = statistics.median(policy)
    figures = {
        "bench": "schedule",
        "sessions": args.sessions,
        "agents": args.agents,
        "rounds": args.rounds,
        "enqueue_per_s": round(statistics.median(r["enqueue_per_s"] for r in rounds)),
        "ours_per_s": round(ours),
        "policy_only_per_s": round(policy_only),
        "ratio": round(ours / policy_only, 3),
        "open_loop_rate": args.rate,
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in latency.items()},
        "targets_met": ours >= TARGET_PER_S and latency["open_loop_p99_ms"] <= TARGET_P99_MS,
        "machine": machine(redis_version),
    }
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
