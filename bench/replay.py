"""Replay speed and live lag of the projections.

1. Generate at least ``--events`` events of a realistic session mix through the store (not
   timed). 2. Time a full rebuild of all projections (one read of the log) against a raw
   XRANGE + JSON decode of the same log, interleaved, median of the rounds. 3. Run the live
   projector in its own process while events are appended through the store at
   ``--rate`` events/s for ``--seconds``; lag = commit time of the batch holding an event
   minus the event's stream-ID time, p99. Last line: one JSON object.

The raw read decodes with the read path's JSON parser (msgspec, ``events.codec.parse_json``);
``ratio_vs_from_json`` compares with the same read decoded by pydantic-core's ``from_json``
(the read path's parser, and the baseline's, before issue 33), for figures over time.

Where a rebuild's time goes: ``rebuild_stage_us_per_event`` splits the timed rebuilds by
stage (``read``: waiting for the log; ``decode``; ``fold:<projection>``; ``write:<projection>``:
encoding and bulk-writing the generation; ``catch_up:<projection>``; clock reads per page, so
they cost nothing measurable), and ``cost_us_by_type`` gives, for each event type, its count
and the CPU microseconds per event of decoding it and of each projection's fold (one untimed
pass, each event timed on its own; ``skipped``: events no projection reads, not decoded).

    .venv/bin/python bench/replay.py [--events 200000] [--rate 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._baselines import machine, raw_read_decode
from events import RedisEventStore, StoredEvent
from events.codec import parse_json
from kernelhub.logging import configure_logging
from kernelhub.testing import temporary_redis
from kernelhub.workload import Workload, append_steps
from projections.base import WorkingSet
from projections.models import default_projections
from projections.runtime import Projector, unread_types

TARGETS = {"ratio": 0.3, "rebuild_events_per_s": 30_000}
LAG_TARGET_MS = 200
EVENTS_PER_SESSION = 17  # about, for the default workload mix


async def generate(store: RedisEventStore, events: int, seed: int) -> int:
    sessions = max(1, events // EVENTS_PER_SESSION)
    total = 0
    while total < events:
        total += await append_steps(
            store, Workload(sessions=sessions, agents=200, seed=seed).steps()
        )
        seed += 1
    return total


def _live_projector(url: str, lags: Any, ready: Any, stop: Any) -> None:
    """Child process: the live projector, recording each event's commit lag."""

    async def main() -> None:
        configure_logging("WARNING")
        store = RedisEventStore.from_url(url)

        def on_commit(name: str, events: Any, committed_at: float) -> None:
            if name == "sessions":
                now_ms = committed_at * 1000
                lags.extend([now_ms - e.position_ms for e in events])

        projector = Projector(store, default_projections(), on_commit=on_commit, block_ms=100)
        await projector.load()
        await projector.catch_up()
        ready.set()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, lambda: (stop.wait(), loop.call_soon_threadsafe(stopping.set)))
        await projector.run(stopping)
        await store.close()

    asyncio.run(main())


async def cost_by_type(store: RedisEventStore) -> dict[str, dict[str, float]]:
    """Per event type: count, and microseconds per event to decode and to fold in each
    projection (every event timed on its own, in a pass of its own)."""
    projections = default_projections()
    working = {p.name: WorkingSet(complete=True) for p in projections}
    codec, clock = store.codec, time.perf_counter_ns
    unread = codec.stored_tails(unread_types(projections))
    totals: dict[str, dict[str, float]] = {}
    after = "0-0"
    while entries := await store.read_raw(after, 5000):
        after = entries[-1][0]
        for position, fields in entries:
            if fields[b"e"].endswith(unread):
                skipped = codec.decode_stored(position, fields).type  # to name it: untimed
                row = totals.setdefault(skipped, {"count": 0, "skipped": 0})
                row["count"] += 1
                row["skipped"] += 1
                continue
            started = clock()
            event: StoredEvent = codec.decode_stored(position, fields)
            row = totals.setdefault(event.type, {"count": 0})
            row["count"] += 1
            row["decode"] = row.get("decode", 0) + clock() - started
            for projection in projections:
                if projection.types is not None and event.type not in projection.types:
                    continue
                started = clock()
                projection.apply(event, working[projection.name])
                row[projection.name] = row.get(projection.name, 0) + clock() - started
    return {
        kind: {
            k: (v if k in ("count", "skipped") else round(v / row["count"] / 1000, 2))
            for k, v in row.items()
        }
        for kind, row in sorted(totals.items(), key=lambda item: -item[1]["count"])
    }


async def live_lag(url: str, rate: int, seconds: float, seed: int) -> tuple[float, int]:
    manager = mp.Manager()
    lags, ready, stop = manager.list(), manager.Event(), manager.Event()
    child = mp.get_context("spawn").Process(target=_live_projector, args=(url, lags, ready, stop))
    child.start()
    await asyncio.get_running_loop().run_in_executor(None, ready.wait)
    store = RedisEventStore.from_url(url)
    steps = Workload(sessions=rate * int(seconds), agents=50, seed=seed).steps()
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        step = next(steps)
        sent += await append_steps(store, [step])
        ahead = sent / rate - (time.monotonic() - start)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await asyncio.sleep(1.0)  # let the last batch commit
    stop.set()
    child.join(30)
    await store.close()
    values = sorted(lags)
    manager.shutdown()
    if not values:
        return float("nan"), sent
    return values[min(len(values) - 1, int(len(values) * 0.99))], sent


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with temporary_redis() as server:
        store = RedisEventStore.from_url(server.url)
        events = await generate(store, args.events, args.seed)
        rebuild_rates, raw_rates, from_json_rates = [], [], []
        projector = Projector(store, default_projections())
        costs: dict[str, float] = {}
        projector.costs = costs
        for round_ in range(args.rounds):
            order = ["ours", "raw"] if round_ % 2 == 0 else ["raw", "ours"]
            for who in order:
                start = time.perf_counter()
                if who == "ours":
                    await projector.rebuild_many(list(projector.projections))
                    await projector.wait_cleanup()
                    rebuild_rates.append(events / (time.perf_counter() - start))
                else:
                    count = await raw_read_decode(store.redis, store.keys.log, parse=parse_json)
                    raw_rates.append(count / (time.perf_counter() - start))
                    start = time.perf_counter()
                    count = await raw_read_decode(store.redis, store.keys.log)
                    from_json_rates.append(count / (time.perf_counter() - start))
        by_type = await cost_by_type(store)
        redis_version = (await store.redis.info("server"))["redis_version"]
        await store.redis.flushall()
        await store.close()
        p99, live_events = await live_lag(server.url, args.rate, args.seconds, args.seed + 1000)
    rebuild = round(statistics.median(rebuild_rates))
    raw = round(statistics.median(raw_rates))
    out: dict[str, Any] = {
        "bench": "replay",
        "events": events,
        "rounds": args.rounds,
        "rebuild_events_per_s": rebuild,
        "raw_read_events_per_s": raw,
        "ratio": round(rebuild / raw, 3),
        "raw_read_from_json_events_per_s": round(statistics.median(from_json_rates)),
        "ratio_vs_from_json": round(rebuild / statistics.median(from_json_rates), 3),
        "live_lag_ms": round(p99, 1),
        "live_events": live_events,
        "live_rate_per_s": args.rate,
        "rebuild_stage_us_per_event": {
            stage: round(seconds / events / args.rounds * 1e6, 2)
            for stage, seconds in sorted(costs.items())
        },
        "cost_us_by_type": by_type,
    }
    out["targets_met"] = (
        all(out[k] >= v for k, v in TARGETS.items()) and out["live_lag_ms"] <= LAG_TARGET_MS
    )
    out["machine"] = machine(redis_version)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    configure_logging("WARNING")
    print(json.dumps(asyncio.run(run(args)), sort_keys=True))


if __name__ == "__main__":
    main()
