"""The write side as Ray actors: the lifecycle through actor calls, and actors killed on
purpose (the scheduler mid-enqueue, a session shard mid-start)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.slots import ResourceSlot
from actors.hosts import Installation, start_actors
from events import RedisEventStore
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import eventually

from .test_lifecycle_fault import fold_ledger_checking

pytestmark = [pytest.mark.ray, pytest.mark.redis]
G = 2**30
AGENTS = [("i-r1", {"cpu": 8, "mem": 16 * G}), ("i-r2", {"cpu": 8, "mem": 16 * G})]
TINY = ResourceSlot(cpu="0.05", mem=G // 16)


@pytest.fixture
def actors(
    ray_local: None, redis_server: EmbeddedRedis, store: RedisEventStore
) -> Iterator[Installation]:

    namespace = f"t-{uuid.uuid4().hex[:8]}"
    installation = start_actors(
        redis_server.url,
        namespace=namespace,
        safety_tick_s=0.3,
        heartbeat_interval_s=0.5,
        lost_timeout_s=5.0,
        shards=2,
        agents=AGENTS,
    )
    try:
        yield installation
    finally:
        installation.kill()


async def status(actors: Installation, sid: uuid.UUID) -> str:
    from ray.exceptions import ActorUnavailableError, RayActorError

    try:
        return await actors.router(None).actor_for(sid).status.remote(sid)  # type: ignore[no-any-return,arg-type]
    except (ActorUnavailableError, RayActorError):
        return "(restarting)"


async def wait_for(actors: Installation, sid: uuid.UUID, wanted: str) -> None:
    async def reached() -> bool:
        return await status(actors, sid) == wanted

    await eventually(reached, timeout=30, message=wanted)


def options(n: int = 0) -> Installation:
    from actors.domain.slots import ResourceSlot

    return {
        "name": f"r{n}",
        "access_key": "AK1",
        "scaling_group": "default",
        "image": "kernelhub/python:3.11",
        "requested": [ResourceSlot(cpu="0.1", mem=G // 8)],
    }


async def test_a_session_lives_and_ends_through_the_actors(
    actors: Installation, store: RedisEventStore
) -> None:
    router = actors.router(store)
    sid = await router.handle(CreateSession(**options()))
    assert await router.wait(sid, 30) == "RUNNING"
    await router.handle(DestroySession(session_id=sid))
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
    actors: Installation, store: RedisEventStore
) -> None:
    import ray

    router = actors.router(store)
    sessions = []
    for n in range(200):
        sessions.append(await router.handle(CreateSession(**{**options(n), "requested": [TINY]})))
        if n == 100:
            ray.kill(actors.scheduler, no_restart=False)  # Ray restarts it; it rebuilds
    # nobody calls the restarted scheduler: it rebuilds from the log and resumes by itself

    async def all_running() -> bool:
        states = await asyncio.gather(*(status(actors, s) for s in sessions))
        return all(s == "RUNNING" for s in states)

    await eventually(all_running, timeout=60, message="all RUNNING")
    for sid in sessions:
        types = [e.type for e in await store.read_stream(f"session-{sid}")]
        assert types.count("session_scheduled") == 1
    await fold_ledger_checking(store, AGENTS)  # never over-allocated, anywhere in history


async def test_a_shard_killed_mid_start_still_ends_running_or_cancelled(
    actors: Installation, store: RedisEventStore
) -> None:
    import ray

    router = actors.router(store)
    sid = await router.handle(CreateSession(**options()))
    ray.kill(router.actor_for(sid), no_restart=False)  # it restarts and resumes by itself

    async def settled() -> bool:
        return await status(actors, sid) in ("RUNNING", "CANCELLED")

    await eventually(settled, timeout=30, message="RUNNING or CANCELLED")


async def test_a_stack_that_fails_to_start_leaves_no_actor_behind(
    ray_local: None, redis_server: EmbeddedRedis, store: RedisEventStore
) -> None:
    """One actor failing in its constructor (tenancy cannot create its master key) fails
    ``start_actors``, and the actors it did start are killed: none keeps following the
    log into the next test's streams (a CI failure of an earlier stop)."""
    import ray
    from ray.exceptions import RayActorError

    namespace = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RayActorError) as failed:  # its traceback holds the actors' handles,
        start_actors(
            redis_server.url,
            namespace=namespace,
            agents=AGENTS[:1],
            master_key_path="/proc/no-such-dir/master.key",
        )
    assert failed.traceback  # as a failed fixture's report does: Ray's GC would not kill them

    def gone() -> bool:
        for name in ("projector", "sessions:0", "scheduler:default", "reaper", "agents-sim:0"):
            try:
                ray.get_actor(name, namespace=namespace)
                return False
            except ValueError:
                continue
        return True

    await eventually(gone, timeout=30, message="every started actor killed")
