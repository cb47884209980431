"""The reaper's pass over 10,000 live sessions with 1% of them idle past their deadline.

Setup (untimed): 10,000 RUNNING sessions in the log and the read model, each with a last
access (telemetry) and a check time in ``<p>:idle:due``; 1% have been idle for twice the
network timeout and are due now. ``idle_pass_ms_10k``: from the reaper's Redis ``TIME`` read
until its 100 conditional destroys have been carried out by the session shard (stricter
than "submitted"), median of the rounds, each round on fresh deadlines. The baseline
``scan_ms_10k`` reads every session's state and last access with pipelined reads on the
same client and computes the same expired set, as a checker without deadlines would;
``ratio = scan_ms_10k / idle_pass_ms_10k``. Target: ``idle_pass_ms_10k <= 50``.

    .venv/bin/python bench/idle.py [--sessions 10000] [--expired 0.01] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.domain.commands.sessions import CreateSession, CreateSessions
from actors.domain.idle import IdleConfig
from actors.domain.slots import ResourceSlot
from actors.idle.reaper import Reaper
from actors.sessions.shard import SessionShard, session_stream
from bench._baselines import machine, redis_version_at
from events import RedisEventStore, StreamBatch, events_for_command
from events.catalogue import (
    KernelPlacement,
    KernelStarted,
    SessionPreparing,
    SessionScheduled,
    SessionStarted,
)
from kernelhub.logging import configure_logging
from kernelhub.testing import temporary_redis
from projections.models import default_projections
from projections.runtime import Projector

TARGET_MS = 50
THRESHOLD_S = 600
CHUNK = 200
NETWORK = {"network_timeout": {"threshold": f"{THRESHOLD_S}s"}}
CONFIG = IdleConfig.parse({"enabled": "network_timeout", "checkers": NETWORK})


async def running_sessions(store: RedisEventStore, shard: SessionShard, count: int) -> list[str]:
    """``count`` RUNNING sessions, appended the way the write side would have."""
    ids: list[str] = []
    request = ResourceSlot(cpu=1, mem=2**30)
    for first in range(0, count, CHUNK):
        batch = CreateSessions(
            items=[
                CreateSession(
                    name=f"s{n}",
                    access_key=f"AK{n % 10}",
                    scaling_group="default",
                    image="kernelhub/python:3.11",
                    requested=[request],
                )
                for n in range(first, min(first + CHUNK, count))
            ]
        )
        sids = await shard.handle(batch)
        progress = []
        for sid in sids:
            kernel = uuid.uuid5(sid, "kernel-0")
            payloads = [
                SessionScheduled(
                    session_id=sid,
                    creation_id="c",
                    scaling_group="default",
                    placements=[KernelPlacement(kernel_id=kernel, agent_id="i-0")],
                ),
                SessionPreparing(session_id=sid, creation_id="c"),
                KernelStarted(kernel_id=kernel, session_id=sid),
                SessionStarted(session_id=sid, creation_id="c"),
            ]
            progress.append(
                StreamBatch(session_stream(sid), events_for_command(uuid.uuid4(), payloads), 1)
            )
        await store.append_multi(progress)
        ids += [str(s) for s in sids]
    await Projector(store, default_projections()).catch_up()
    return ids


async def arm(store: RedisEventStore, sids: list[str], expired: int, now: float) -> None:
    """Fresh deadlines: the first ``expired`` sessions idle for 2x the timeout and due now,
    the others touched a minute ago and due in nine minutes."""
    pipe = store.redis.pipeline(transaction=False)
    for n, sid in enumerate(sids):
        idle = n < expired
        access = now - 2 * THRESHOLD_S if idle else now - 60
        pipe.set(store.keys.idle_access(sid), repr(access))
        pipe.zadd(store.keys.idle_due, {sid: now - 1 if idle else access + THRESHOLD_S})
    await pipe.execute()


async def scan(store: RedisEventStore, sids: list[str]) -> tuple[float, set[str]]:
    """The baseline: every session's state and last access, pipelined, then the expired set."""
    active = (await store.redis.get(store.keys.projection_active("sessions"))).decode()
    records_key = f"{store.keys.projection_generation('sessions', int(active))}:r:session"
    started = time.perf_counter()
    seconds, micros = await store.redis.time()
    now = seconds + micros / 1e6
    pipe = store.redis.pipeline(transaction=False)
    for first in range(0, len(sids), 1000):
        pipe.hmget(records_key, sids[first : first + 1000])
    pipe.mget([store.keys.idle_access(s) for s in sids])
    replies = await pipe.execute()
    records = [json.loads(r) for chunk in replies[:-1] for r in chunk]
    expired = {
        r["id"]
        for r, access in zip(records, replies[-1], strict=True)
        if r["status"] == "RUNNING" and access and now - float(access) > THRESHOLD_S
    }
    return (time.perf_counter() - started) * 1000, expired


async def one_round(
    store: RedisEventStore, reaper: Reaper, sids: list[str], expired: int
) -> tuple[float, float, int]:
    seconds, micros = await store.redis.time()
    await arm(store, sids[: len(sids)], expired, seconds + micros / 1e6)
    scan_ms, wanted = await scan(store, sids)
    started = time.perf_counter()
    reclaimed = await reaper.run_once()
    pass_ms = (time.perf_counter() - started) * 1000
    assert {s for s, _ in reclaimed} == wanted, "the reaper and the scan disagree"
    return pass_ms, scan_ms, len(reclaimed)


async def run(sessions: int, fraction: float, rounds: int) -> dict[str, object]:
    with temporary_redis() as server:
        store = RedisEventStore.from_url(server.url)
        shard = SessionShard(store)
        sids = await running_sessions(store, shard, sessions * rounds)
        reaper = Reaper(store, shard, CONFIG)
        expired = max(1, int(sessions * fraction))
        passes, scans = [], []
        for r in range(rounds):  # each round its own sessions: the reclaimed ones are gone
            mine = sids[r * sessions : (r + 1) * sessions]
            await store.redis.delete(store.keys.idle_due)
            pass_ms, scan_ms, reclaimed = await one_round(store, reaper, mine, expired)
            passes.append(pass_ms)
            scans.append(scan_ms)
        await store.close()
        ours, baseline = statistics.median(passes), statistics.median(scans)
        return {
            "bench": "idle",
            "sessions": sessions,
            "expired": expired,
            "rounds": rounds,
            "idle_pass_ms_10k": round(ours, 2),
            "scan_ms_10k": round(baseline, 2),
            "ratio": round(baseline / ours, 2),
            "target_met": ours <= TARGET_MS,
            "reclaimed_per_round": reclaimed,
            "machine": machine(redis_version_at(server.url)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--expired", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("ERROR", json=False)
    print(json.dumps(asyncio.run(run(args.sessions, args.expired, args.rounds)), sort_keys=True))


if __name__ == "__main__":
    main()
