"""Kill the projector process between writing and acknowledging: nothing doubled, nothing lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from events import Durability, RedisEventStore
from kernelhub.testing import eventually, temporary_redis
from kernelhub.workload import Workload, append_steps
from projections.inspect import dump_generation
from projections.models import default_projections
from projections.runtime import Projector

pytestmark = [pytest.mark.redis, pytest.mark.fault]


def run_projector(url: str, failpoint: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KH_REDIS_URL": url, "KH_LOG_LEVEL": "ERROR"}
    env.pop("KH_FAILPOINT", None)
    if failpoint:
        env["KH_FAILPOINT"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "kernelhub.cli", "projections", "run", "--exit-when-idle"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_sigkill_before_and_after_commit_then_resume(
    store: RedisEventStore, redis_server: Any
) -> None:
    await append_steps(store, Workload(sessions=300, agents=4, seed=11, stop_after=0.8).steps())
    # batches are 1000 events, each committed once per projection (sessions, then agents):
    # the first run dies before its 3rd commit, the second after its 3rd, both mid-log
    assert await store.log_length() > 2500
    killed = run_projector(redis_server.url, "projector.before_commit:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    killed = run_projector(redis_server.url, "projector.after_commit:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = run_projector(redis_server.url, None)
    assert finished.returncode == 0, finished.stderr

    projector = Projector(store, default_projections())
    await projector.load()
    for name, state in projector.states.items():
        assert state.checkpoint == await store.head(), name
        live = await dump_generation(
            store.redis, store.keys.projection_generation(name, state.generation)
        )
        generation = await projector.rebuild(name)
        rebuilt = await dump_generation(
            store.redis, store.keys.projection_generation(name, generation)
        )
        assert rebuilt == live, f"{name}: the resumed projection differs from a clean fold"
    await projector.wait_cleanup()


async def test_a_redis_outage_is_waited_out_not_a_halt() -> None:
    """Redis killed under a running projector and started again: the projector keeps
    going, reaches the head, and folds exactly what a clean rebuild does."""
    with temporary_redis(Durability.ALWAYS) as server:
        store = RedisEventStore.from_url(server.url)
        steps = list(Workload(sessions=120, agents=3, seed=5).steps())
        half = len(steps) // 2
        await append_steps(store, steps[:half])
        projector = Projector(store, default_projections(), block_ms=100)
        stop = asyncio.Event()
        running = asyncio.create_task(projector.run(stop))

        async def at_head() -> bool:
            head = await store.head()
            states = projector.states.values()
            return bool(states) and all(s.checkpoint == head for s in states)

        await eventually(at_head, timeout=30, message="caught up before the outage")
        server.kill()
        await asyncio.sleep(0.5)  # the projector meets the outage (blocked read, then retries)
        assert not running.done()
        server.restart()
        await append_steps(store, steps[half:])
        await eventually(at_head, timeout=30, message="caught up after the outage")
        assert all(s.running for s in projector.states.values())
        stop.set()
        await asyncio.wait_for(running, 10)
        for name, state in projector.states.items():
            live = await dump_generation(
                store.redis, store.keys.projection_generation(name, state.generation)
            )
            rebuilt = await dump_generation(
                store.redis, store.keys.projection_generation(name, await projector.rebuild(name))
            )
            assert rebuilt == live, name
        await projector.wait_cleanup()
        await store.close()
