"""Append throughput of the event store against raw XADD on the same Redis.

ours_single: sequential ``append()`` calls, one ready-made event each, correct expected
version. ours_batch: ``append_multi`` calls of 100 events over 10 streams. Baselines: one raw
XADD per round trip; pipelines of 100 XADDs of the same bytes. Rounds are interleaved (the
order alternates) and each figure is the median of the rounds. Last line: one JSON object.

    .venv/bin/python bench/append.py [--single 5000] [--batches 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._baselines import Fields, machine, raw_xadd_pipelined, raw_xadd_single
from events import NewEvent, RedisEventStore, StreamBatch, default_codec
from events.catalogue import SessionEnqueued
from kernelhub.testing import temporary_redis

BATCH = 100
STREAMS_PER_BATCH = 10
PER_STREAM = BATCH // STREAMS_PER_BATCH
TARGETS = {
    "ratio_single": 0.5,
    "ratio_batch": 0.4,
    "ours_single_per_s": 2000,
    "ours_batch_per_s": 10000,
}

Runner = Callable[[], Awaitable[None]]


def make_events(n: int) -> list[NewEvent]:
    sid = uuid.uuid4()
    payloads = [SessionEnqueued(session_id=sid, creation_id=f"bench-{i}") for i in range(n)]
    return [NewEvent(data=p) for p in payloads]


def raw_entries(events: list[NewEvent], streams: int) -> list[Fields]:
    """The same bytes our store writes, for the baseline to XADD."""
    return [
        {"s": f"session-b{i % streams}", "v": i + 1, "e": default_codec.encode(e)}
        for i, e in enumerate(events)
    ]


def single_pair(store: RedisEventStore, n: int) -> tuple[Runner, Runner]:
    events = make_events(n)
    entries = raw_entries(events, 1)

    async def ours() -> None:
        for version, event in enumerate(events):
            await store.append("session-bench", [event], version)

    async def raw() -> None:
        await raw_xadd_single(store.redis, "bench:raw", entries)

    return ours, raw


def batch_pair(store: RedisEventStore, batches: int) -> tuple[Runner, Runner]:
    events = make_events(batches * BATCH)
    entries = raw_entries(events, STREAMS_PER_BATCH)

    async def ours() -> None:
        for b in range(batches):
            chunk = events[b * BATCH : (b + 1) * BATCH]
            await store.append_multi(
                StreamBatch(
                    f"session-b{s}", chunk[s * PER_STREAM : (s + 1) * PER_STREAM], b * PER_STREAM
                )
                for s in range(STREAMS_PER_BATCH)
            )

    async def raw() -> None:
        await raw_xadd_pipelined(store.redis, "bench:rawb", entries, BATCH)

    return ours, raw


async def rate(fn: Runner, count: int) -> float:
    start = time.perf_counter()
    await fn()
    return count / (time.perf_counter() - start)


async def measure(
    store: RedisEventStore, single: int, batches: int, rounds: int
) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        await store.redis.flushall()
        for kind, (ours, raw), count in (
            ("single", single_pair(store, single), single),
            ("batch", batch_pair(store, batches), batches * BATCH),
        ):
            order = [("ours", ours), ("raw", raw)]
            for who, fn in order if r % 2 == 0 else reversed(order):
                samples.setdefault(f"{who}_{kind}_per_s", []).append(await rate(fn, count))
    return {key: round(statistics.median(values)) for key, values in samples.items()}


async def run(single: int, batches: int, rounds: int, url: str | None) -> dict[str, object]:
    if url:
        store = RedisEventStore.from_url(url, prefix="khbench")
        figures = await measure(store, single, batches, rounds)
        redis_version = (await store.redis.info("server"))["redis_version"]
        await store.close()
    else:
        with temporary_redis() as server:
            store = RedisEventStore.from_url(server.url)
            figures = await measure(store, single, batches, rounds)
            redis_version = (await store.redis.info("server"))["redis_version"]
            await store.close()
    out: dict[str, object] = {
        "bench": "append",
        "single_events": single,
        "batch_events": batches * BATCH,
        "rounds": rounds,
        **figures,
        "ratio_single": round(figures["ours_single_per_s"] / figures["raw_single_per_s"], 3),
        "ratio_batch": round(figures["ours_batch_per_s"] / figures["raw_batch_per_s"], 3),
    }
    out["targets_met"] = all(float(out[k]) >= v for k, v in TARGETS.items())  # type: ignore[arg-type]
    out["machine"] = machine(redis_version)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--single", type=int, default=5000, help="events in the single test")
    parser.add_argument("--batches", type=int, default=200, help="append_multi calls of 100")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="an existing Redis (default: a temporary embedded one)")
    args = parser.parse_args()
    result = asyncio.run(run(args.single, args.batches, args.rounds, args.url))
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
