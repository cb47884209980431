"""The write side as Ray actors: the lifecycle through actor calls, and actors killed on
purpose (the scheduler mid-enqueue, a session shard mid-start)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from actors.ray_actors import start_actors
from events import RedisEventStore
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import eventually

pytestmark = [pytest.mark.ray, pytest.mark.redis]
G = 2**30


@pytest.fixture
def actors(
    ray_local: None, redis_server: EmbeddedRedis, store: RedisEventStore
) -> Iterator[dict[str, Any]]:
    import ray

    namespace = f"t-{uuid.uuid4().hex[:8]}"
    handles = start_actors(
        redis_server.url,
        namespace=namespace,
        safety_tick_s=0.3,
        heartbeat_interval_s=0.5,
        lost_timeout_s=5.0,
        agents=[("i-r1", {"cpu": 8, "mem": 16 * G}), ("i-r2", {"cpu": 8, "mem": 16 * G})],
    )
    try:
        yield handles
    finally:
        for handle in handles.values():
            ray.kill(handle, no_restart=True)


async def status(actors: dict[str, Any], sid: str) -> str:
    from ray.exceptions import ActorUnavailableError, RayActorError

    try:
        return await actors["sessions"].status.remote(sid)  # type: ignore[no-any-return]
    except (ActorUnavailableError, RayActorError):
        return "(restarting)"


async def wait_for(actors: dict[str, Any], sid: str, wanted: str) -> None:
    async def reached() -> bool:
        return await status(actors, sid) == wanted

    await eventually(reached, timeout=30, message=wanted)


def options(n: int = 0) -> dict[str, Any]:
    from actors.domain.slots import ResourceSlot

    return {
        "name": f"r{n}",
        "access_key": "AK1",
        "scaling_group": "default",
        "image": "kernelhub/python:3.11",
        "requested": [ResourceSlot(cpu="0.1", mem=G // 8)],
    }


async def test_a_session_lives_and_ends_through_the_actors(
    actors: dict[str, Any], store: RedisEventStore
) -> None:
    sid = await actors["sessions"].create.remote(**options())
    await wait_for(actors, sid, "RUNNING")
    await actors["sessions"].destroy.remote(sid)
    await wait_for(actors, sid, "TERMINATED")
    assert [e.type for e in await store.read_stream(f"session-{sid}")] == [
        "session_enqueued",
        "session_scheduled",
        "session_preparing",
        "kernel_creating",
        "kernel_started",
        "session_started",
        "session_terminating",
        "kernel_terminating",
        "kernel_terminated",
        "session_terminated",
    ]


async def test_the_scheduler_killed_mid_enqueue_loses_and_doubles_nothing(
    actors: dict[str, Any], store: RedisEventStore
) -> None:
    import ray

    sessions = []
    for n in range(60):
        sessions.append(await actors["sessions"].create.remote(**options(n)))
        if n == 30:
            ray.kill(
                actors["scheduler"], no_restart=False
            )  # Ray restarts it; it rebuilds from the log
    # nobody calls the restarted scheduler: it rebuilds from the log and resumes by itself

    async def all_running() -> bool:
        states = await asyncio.gather(*(status(actors, s) for s in sessions))
        return all(s == "RUNNING" for s in states)

    await eventually(all_running, timeout=60, message="all RUNNING")
    for sid in sessions:
        types = [e.type for e in await store.read_stream(f"session-{sid}")]
        assert types.count("session_scheduled") == 1


async def test_a_shard_killed_mid_start_still_ends_running_or_cancelled(
    actors: dict[str, Any], store: RedisEventStore
) -> None:
    import ray

    sid = await actors["sessions"].create.remote(**options())
    ray.kill(actors["sessions"], no_restart=False)  # it restarts and resumes by itself

    async def settled() -> bool:
        return await status(actors, sid) in ("RUNNING", "CANCELLED")

    await eventually(settled, timeout=30, message="RUNNING or CANCELLED")
