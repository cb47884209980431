"""A batch's exec timeout survives an agent restart (issue 28 review, M4), and a kernel's
status reply the agent cannot read is a failed start, never a crash (L5).

Before the fix the watchdog of a batch command lived in the agent process that sent it; an
agent that adopted the kernel after a restart waited for the command without a deadline, so
a batch past its ``exec_timeout_s`` held its slots until it ended on its own. The adopting
agent now waits what is left of the timeout, counted from the kernel's RUNNING time in the
log, and ends the session ``task-timeout`` (exit code -2) as the lost agent would have.

The end-to-end test runs real kernel processes (process backend) on a real Redis.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actors.agents.agent import (
    BATCH_TIMEOUT_EXIT_CODE,
    Agent,
    BootstrapFailed,
    bootstrap_failure,
    resumed_batch_wait,
)
from actors.agents.backends.process import ProcessBackend
from actors.domain.commands.sessions import CreateSession
from actors.domain.session import SessionType
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from events import RedisEventStore
from kernelhub.testing import eventually
from tests.agent_hooks import HookedAgent

G = 2**30
NOW = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.unit
def test_a_resumed_batch_waits_what_is_left_of_its_exec_timeout() -> None:
    started = _iso(NOW - timedelta(seconds=4))
    assert resumed_batch_wait(10.0, started, NOW) == pytest.approx(6.0)
    assert resumed_batch_wait(3.0, started, NOW) == 0.0  # already past: ends at once
    assert resumed_batch_wait(None, started, NOW) is None  # no timeout: no limit
    assert resumed_batch_wait(0.0, started, NOW) is None
    # no recorded start (or an unreadable one): the whole timeout, late rather than never
    assert resumed_batch_wait(10.0, None, NOW) == 10.0
    assert resumed_batch_wait(10.0, "not a time", NOW) == 10.0


@pytest.mark.unit
@pytest.mark.parametrize("exit_code", ["Infinity", "-Infinity", "1e400", "2147483648", "NaN"])
def test_an_exit_code_no_process_has_is_a_failed_start_saying_the_report_was_unreadable(
    exit_code: str,
) -> None:
    # the reply is written inside the kernel, where the tenant's bootstrap runs
    status = json.loads('{"bootstrap": {"exit_code": ' + exit_code + ', "timed_out": false}}')
    failed = bootstrap_failure(status, 5)
    assert isinstance(failed, BootstrapFailed)
    assert failed.tail == "the runner's report of it was unreadable"


@pytest.fixture
async def cluster(store: RedisEventStore, tmp_path: Path) -> AsyncIterator[LocalCluster]:
    local = LocalCluster(
        store,
        [("i-p1", {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.3,
        backend=lambda agent_id: ProcessBackend(tmp_path / agent_id),
        heartbeat_interval_s=0.3,
        lost_timeout_s=1.0,
        terminate_lost_after_s=1.0,
        agent_class=HookedAgent,
    )
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


@pytest.mark.redis
@pytest.mark.timeout(120)
async def test_a_batch_adopted_after_an_agent_restart_still_ends_task_timeout(
    cluster: LocalCluster, store: RedisEventStore, tmp_path: Path
) -> None:
    sid = await cluster.shard.handle(
        CreateSession(
            name="long-batch",
            access_key="AK1",
            scaling_group="default",
            image="kernelhub/python:3.11",
            requested=[ResourceSlot(cpu=1, mem=G // 4)],
            session_type=SessionType.BATCH,
            startup_command="sleep 120",
            exec_timeout_s=6.0,
        )
    )

    async def status() -> str:
        return (await cluster.shard.get(sid)).status.name

    async def running() -> bool:
        return await status() == "RUNNING"

    await eventually(running, timeout=30, message="batch RUNNING")
    # the agent restarts while the command runs: its watchdog is gone with it
    old = cluster.agents["i-p1"]
    await old.drain()
    new = Agent(
        cluster.store,
        cluster.shard,
        "i-p1",
        old.capacity,
        backend=ProcessBackend(tmp_path / "i-p1"),
        stop_grace_s=0.5,
    )
    cluster.agents["i-p1"] = new
    await new.register()
    await new.reconcile()

    async def ended() -> bool:
        return await status() == "TERMINATED"

    # well before the command's own end (120 s): at its exec timeout
    await eventually(ended, timeout=30, message="batch ended at its exec timeout")
    outcome = [
        e.data for e in await store.read_stream(f"session-{sid}") if e.type == "session_failure"
    ]
    assert [(o.reason, o.exit_code) for o in outcome] == [  # type: ignore[union-attr]
        ("task-timeout", BATCH_TIMEOUT_EXIT_CODE)
    ]
