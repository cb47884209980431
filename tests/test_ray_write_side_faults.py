"""The write side on Ray, killed: commands retried across a killed shard have one effect,
and an agent actor killed with its kernel running reports the kernel that died with it.
Each test has an installation of its own (they kill its actors); the rest of the write
side on Ray shares one, in test_ray_write_side.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.hosts import Installation, start_actors
from events import RedisEventStore
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import eventually

from .test_ray_write_side import ends_with, options, stack_options, types_of

pytestmark = [pytest.mark.ray, pytest.mark.redis]


@pytest.fixture
def stack(
    ray_local: None, redis_server: EmbeddedRedis, store: RedisEventStore, tmp_path: Path
) -> Iterator[Installation]:
    installation = start_actors(redis_server.url, **stack_options(tmp_path))
    try:
        yield installation
    finally:
        installation.kill()


async def test_commands_retried_across_a_killed_shard_have_one_effect(
    stack: Installation, store: RedisEventStore
) -> None:
    import ray

    router = stack.router(store)
    command = uuid.uuid4()
    sid = await router.handle(CreateSession(command_id=command, **options("retry")))
    ray.kill(router.actor_for(sid), no_restart=False)  # the acknowledgement may have been lost
    assert await router.handle(CreateSession(command_id=command, **options("retry"))) == sid
    assert await router.wait(sid, 30) == "RUNNING"
    destroy = uuid.uuid4()
    await router.handle(DestroySession(session_id=sid, command_id=destroy))
    ray.kill(router.actor_for(sid), no_restart=False)
    await router.handle(DestroySession(session_id=sid, command_id=destroy))
    await ends_with(store, sid, "session_terminated")
    types = await types_of(store, sid)
    assert types.count("session_enqueued") == 1 and types.count("session_terminating") == 1


async def test_a_killed_agent_reports_the_kernels_that_died_with_it(
    stack: Installation, store: RedisEventStore
) -> None:
    """Ray kills a dead worker's child processes, so a process-backend kernel ends with its
    agent's actor; the restarted agent finds the log calling it RUNNING and says it ended
    (``already-terminated``), which frees its slots. (Kernels that do survive, such as
    containers, are adopted instead: tests/test_write_side_operations.py.)"""
    import ray

    router = stack.router(store)
    sid = await router.handle(CreateSession(**options("lost-with-agent")))
    assert await router.wait(sid, 30) == "RUNNING"
    kernel = (await store.read_stream(f"session-{sid}"))[4].data
    agent_id = kernel.creation_info["agent"]  # type: ignore[union-attr]
    ray.kill(stack.agent_host(agent_id), no_restart=False)
    await ends_with(store, sid, "session_terminated", timeout=60)
    events = await store.read_stream(f"session-{sid}")
    terminated = [e.data for e in events if e.type == "kernel_terminated"]
    assert [str(t.reason) for t in terminated] == ["already-terminated"]  # type: ignore[union-attr]

    async def released() -> bool:  # the scheduler releases in reaction to the end
        ledger = [e.type for e in await store.read_stream("alloc-default")]
        return ledger.count("alloc_released") == ledger.count("alloc_reserved")

    await eventually(released, timeout=30, message="slots released")
