"""Start-time estimates on a live installation: the scheduler learns run times from the
sessions it saw end, estimates every pending session, the read model keeps the estimate
(``kh why``, ``GET /session`` and the SDK show it) and, once the session starts, how far
off the first one was (``kh eta --calibration``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime

import pytest

from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.slots import ResourceSlot
from actors.gateway.views import compute_session, session_info
from actors.hosts.local import LocalCluster
from events import RedisEventStore
from kernelhub.history.eta import calibration
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.sdk.models import SessionInfo
from kernelhub.testing import eventually
from projections.queries import ReadModels
from tests.khstack import kh_on_log as kh

pytestmark = [pytest.mark.redis]

G = 2**30
FULL = ResourceSlot(cpu=2, mem=G)


def create(name: str) -> CreateSession:
    return CreateSession(
        name=name,
        access_key="AK1",
        scaling_group="default",
        image="kernelhub/python:3.11",
        requested=[FULL],
    )


@pytest.mark.timeout(240)
async def test_every_pending_session_is_estimated_and_the_error_is_recorded_at_its_start(
    store: RedisEventStore, redis_server: EmbeddedRedis
) -> None:
    cluster = LocalCluster(store, [("i-a", {"cpu": 2, "mem": 4 * G})], safety_tick_s=0.3)
    await cluster.start()
    models = ReadModels(store)

    async def status(sid: uuid.UUID) -> str:
        return (await cluster.shard.get(sid)).status.name

    async def wait(sid: uuid.UUID, wanted: str) -> None:
        await eventually(lambda: _is(status, sid, wanted), timeout=30, message=wanted)

    try:
        for n in range(3):  # history: three runs of about two seconds
            sid = await cluster.shard.handle(create(f"h{n}"))
            await wait(sid, "RUNNING")
            await asyncio.sleep(2)
            await cluster.shard.handle(DestroySession(session_id=sid, forced=True))
            await wait(sid, "TERMINATED")
        assert len(cluster.scheduler.run_times.overall) == 3
        holder = await cluster.shard.handle(create("holder"))
        await wait(holder, "RUNNING")
        queued = [await cluster.shard.handle(create(f"q{n}")) for n in range(2)]

        async def estimated() -> bool:
            records = [await models.session(str(s)) for s in queued]
            return all(r and (r.get("start_estimate") or {}).get("at") for r in records)

        await eventually(estimated, timeout=30, message="every pending session estimated")
        first, second = [await models.session(str(s)) for s in queued]
        assert first and second
        assert first["status"] == second["status"] == "PENDING"
        assert first["start_estimate"]["basis"] == "history"
        at = [datetime.fromisoformat(r["start_estimate"]["at"]) for r in (first, second)]
        assert at[0] < at[1], "the second in the queue is expected after the first"
        assert (at[1] - at[0]).total_seconds() == pytest.approx(2, abs=1.5)  # one run apart

        shown = session_info(first)  # GET /session/{id}
        assert shown["estimatedStartAt"] == first["start_estimate"]["at"]
        assert len(shown["estimatedStartInterval"]) == 2 and shown["estimateBasis"] == "history"
        sdk = SessionInfo.from_graphql(  # what the SDK and kh info / kh run read
            {**compute_session(first), "id": first["id"]}
        )
        assert sdk.estimated_start_at == at[0]

        why = await asyncio.to_thread(kh, redis_server.url, "why", str(queued[0]))
        assert why.returncode == 0, why.stderr
        assert "expected to start at" in why.stdout and "from history" in why.stdout

        await cluster.shard.handle(DestroySession(session_id=holder, forced=True))
        await wait(queued[0], "RUNNING")

        async def judged() -> bool:
            record = await models.session(str(queued[0]))
            return record is not None and record.get("start_estimate_error_s") is not None

        await eventually(judged, timeout=20, message="the estimate's error recorded")
        started = await models.session(str(queued[0]))
        assert started and abs(started["start_estimate_error_s"]) < 30
        assert started["waited_s"] > 0
        assert "estimatedStartAt" not in session_info(started)  # it started: no estimate shown
        report = calibration([started], min_wait_s=0)
        assert report["judged"] == 1 and report["median_abs_error_s"] is not None
        for sid in queued:
            await cluster.shard.handle(DestroySession(session_id=sid, forced=True))
    finally:
        await cluster.stop()
    await eventually(_projected(models, queued[0]), timeout=10, message="projected")
    done = await asyncio.to_thread(
        kh, redis_server.url, "eta", "--calibration", "--min-wait", "0", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["judged"] >= 1


async def _is(status: object, sid: uuid.UUID, wanted: str) -> bool:
    return await status(sid) == wanted  # type: ignore[operator]


def _projected(models: ReadModels, sid: uuid.UUID) -> object:
    async def check() -> bool:
        record = await models.session(str(sid))
        return record is not None and record.get("start_estimate_error_s") is not None

    return check
