"""The ``reaper`` actor on Ray: an idle session reclaimed by its session id, and a reaper
killed mid-way that resumes from the log and its check times."""

from __future__ import annotations

import uuid

import pytest

from actors.domain.commands.sessions import CreateSession
from actors.domain.slots import ResourceSlot
from actors.hosts import start_actors
from events import RedisEventStore
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import eventually

pytestmark = [pytest.mark.ray, pytest.mark.redis, pytest.mark.fault]
G = 2**30
IDLE = {"enabled": "network_timeout", "checkers": {"network_timeout": {"threshold": "3s"}}}


async def test_a_killed_reaper_still_reclaims_the_idle_session(
    ray_local: None, redis_server: EmbeddedRedis, store: RedisEventStore
) -> None:
    import ray

    installation = start_actors(
        redis_server.url,
        namespace=f"t-{uuid.uuid4().hex[:8]}",
        shards=2,
        idle=IDLE,
        safety_tick_s=0.5,
        heartbeat_interval_s=0.5,
        lost_timeout_s=5.0,
        agents=[("i-x", {"cpu": 4, "mem": 8 * G})],
    )
    try:
        router = installation.router(store)
        sid = await router.handle(
            CreateSession(
                name="idle",
                access_key="AK1",
                scaling_group="default",
                image="kernelhub/python:3.11",
                requested=[ResourceSlot(cpu=1, mem=G)],
            )
        )
        assert await router.wait(sid, 30) == "RUNNING"

        async def reported() -> dict | None:  # type: ignore[type-arg]
            report = await installation.reaper.report.remote(str(sid))
            return report if report.get("network_timeout", {}).get("remaining") else None

        report = await eventually(reported, message="an idle report")
        assert 0 < report["network_timeout"]["remaining"] <= 3
        ray.kill(installation.reaper, no_restart=False)  # it comes back and resumes

        async def reclaimed() -> str | None:
            last = (await store.read_stream(f"session-{sid}"))[-1]
            return str(last.data.reason) if last.type == "session_terminated" else None  # type: ignore[union-attr]

        assert await eventually(reclaimed, timeout=30, message="reclaimed") == "idle-timeout"
    finally:
        installation.kill()
