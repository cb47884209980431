"""Operations on running sessions and agents, on the log-driven write side (no Ray):
restart, dependencies and recursive destroy, drain, reconciliation, lost-agent policy,
kernel stats in telemetry, shard ownership."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actors.agents.agent import Agent
from actors.agents.backends.base import KernelLaunch
from actors.agents.backends.process import ProcessBackend
from actors.domain.commands.sessions import CreateSession, DestroySession, RestartSession
from actors.domain.errors import GenericForbidden, InvalidAPIParameters
from actors.domain.session import SessionType
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from actors.sessions.routing import dependants_of
from actors.sessions.shard import SessionShard, WrongShardError, shard_of
from events import RedisEventStore
from kernelhub.testing import eventually
from projections.queries import ReadModels
from tests.agent_hooks import HookedAgent, hooked

pytestmark = pytest.mark.redis
G = 2**30


def options(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "s",
        "access_key": "AK1",
        "scaling_group": "default",
        "image": "kernelhub/python:3.11",
        "requested": [ResourceSlot(cpu=1, mem=G // 4)],
    }
    base.update(extra)
    return base


@pytest.fixture
async def cluster(store: RedisEventStore, tmp_path: Path) -> AsyncIterator[LocalCluster]:
    local = LocalCluster(
        store,
        [("i-p1", {"cpu": 4, "mem": 8 * G}), ("i-p2", {"cpu": 4, "mem": 8 * G})],
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


async def status_of(cluster: LocalCluster, sid: uuid.UUID) -> str:
    return (await cluster.shard.get(sid)).status.name


async def reach(cluster: LocalCluster, sid: uuid.UUID, wanted: str, timeout: float = 20) -> None:
    async def reached() -> bool:
        return await status_of(cluster, sid) == wanted

    await eventually(reached, timeout=timeout, message=f"{sid} {wanted}")


async def types_of(store: RedisEventStore, sid: uuid.UUID) -> list[str]:
    return [e.type for e in await store.read_stream(f"session-{sid}")]


def pid_of(cluster: LocalCluster, sid: uuid.UUID, agent: str) -> int:
    backend = cluster.agents[agent].backend
    assert isinstance(backend, ProcessBackend)
    kernel_id = uuid.uuid5(sid, "kernel-0")
    return backend._procs[kernel_id].pid


async def running_session(cluster: LocalCluster) -> tuple[uuid.UUID, str]:
    """A new RUNNING session and the agent its kernel runs on."""
    sid = await cluster.shard.handle(CreateSession(**options()))
    await reach(cluster, sid, "RUNNING")
    agent = (await cluster.shard.get(sid)).kernels[uuid.uuid5(sid, "kernel-0")].agent
    assert agent is not None
    return sid, agent


async def test_restart_brings_the_kernels_back_with_new_processes(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid, agent = await running_session(cluster)
    before = pid_of(cluster, sid, agent)
    await cluster.shard.handle(RestartSession(session_id=sid))

    async def back() -> bool:
        types = await types_of(store, sid)
        return types[-1] == "session_status_changed" and types.count("kernel_started") == 2

    await eventually(back, timeout=20, message="restarted")
    assert await status_of(cluster, sid) == "RUNNING"
    assert pid_of(cluster, sid, agent) != before
    events = await store.read_stream(f"session-{sid}")
    tail = [(e.type, getattr(e.data, "status", None)) for e in events[6:]]
    assert tail == [
        ("session_status_changed", "RESTARTING"),
        ("kernel_started", None),
        ("session_status_changed", "RUNNING"),
    ]
    assert (await store.read_stream(f"session-{sid}"))[5].type == "session_started"  # only one
    record = await ReadModels(store).session(str(sid))
    assert record is not None and "RESTARTING" in record["status_history"]


async def test_restart_is_refused_unless_running(cluster: LocalCluster) -> None:
    cluster.scheduler.group_name = "nowhere"  # nothing gets scheduled: the session stays PENDING
    sid = await cluster.shard.handle(CreateSession(**options()))
    with pytest.raises(GenericForbidden):
        await cluster.shard.handle(RestartSession(session_id=sid))


async def test_an_unknown_dependency_is_refused_before_anything_is_appended(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    head = await store.head()
    with pytest.raises(InvalidAPIParameters):
        await cluster.shard.handle(CreateSession(**options(dependencies=[uuid.uuid4()])))
    assert await store.head() == head


async def test_recursive_destroy_takes_the_dependants_along(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    first = await cluster.shard.handle(CreateSession(**options(name="a")))
    await reach(cluster, first, "RUNNING")
    second = await cluster.shard.handle(CreateSession(**options(name="b", dependencies=[first])))
    third = await cluster.shard.handle(CreateSession(**options(name="c", dependencies=[second])))
    models = ReadModels(store)

    async def indexed() -> bool:
        return await dependants_of(models, first) == [second, third]

    await eventually(indexed, message="dependants indexed")
    # without recursion the dependants stay PENDING (waiting on a result that never comes)
    await cluster.shard.handle(DestroySession(session_id=first))
    await reach(cluster, first, "TERMINATED")
    assert await status_of(cluster, second) == "PENDING"
    for dependant in await dependants_of(models, first):  # what the router does, concurrently
        await cluster.shard.handle(DestroySession(session_id=dependant))
    await reach(cluster, second, "CANCELLED")
    await reach(cluster, third, "CANCELLED")


async def test_a_drained_agent_gets_nothing_new_and_stays_drained_after_a_restart(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    for agent in cluster.agents.values():
        assert await agent.set_schedulable(False)
    sid = await cluster.shard.handle(CreateSession(**options()))

    async def decided() -> list[str]:
        types = await types_of(store, sid)
        return types if {"session_scheduling_failed", "session_scheduled"} & set(types) else []

    types = await eventually(decided, message="a scheduling attempt")
    assert "session_scheduled" not in types and "session_scheduling_failed" in types
    assert await status_of(cluster, sid) == "PENDING"
    agent = cluster.agents["i-p1"]
    agent.schedulable = True  # what a fresh process would assume...
    await agent.register()  # ...until it reads its stream
    assert agent.schedulable is False
    assert await cluster.agents["i-p2"].set_schedulable(True)
    await reach(cluster, sid, "RUNNING")
    assert (await cluster.shard.get(sid)).kernels[uuid.uuid5(sid, "kernel-0")].agent == "i-p2"


async def test_reconciliation_stops_strays_and_reports_lost_kernels(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    agent = cluster.agents["i-p1"]
    for other in ("i-p2",):
        await cluster.agents[other].set_schedulable(False)
    stray = uuid.uuid4()
    await agent.backend.start(KernelLaunch(stray, uuid.uuid4(), {"mem": G // 8}))
    sid = await cluster.shard.handle(CreateSession(**options()))
    await reach(cluster, sid, "RUNNING")
    kernel_id = uuid.uuid5(sid, "kernel-0")
    assert (await agent.reconcile())["stray"] == set()  # once may be a report in flight
    assert (await agent.reconcile())["stray"] == {stray}
    assert agent.backend.running() == {kernel_id}

    # the backend loses the kernel (as after a node reboot): the log hears of it
    backend = agent.backend
    assert isinstance(backend, ProcessBackend)
    await backend.stop(kernel_id, 0.5)
    await agent.reconcile()
    assert (await agent.reconcile())["missing"] == {kernel_id}
    await reach(cluster, sid, "TERMINATED")

    async def reason() -> str | None:
        record = await ReadModels(store).kernel(str(kernel_id))
        return record["status_info"] if record and record["status"] == "TERMINATED" else None

    assert await eventually(reason, message="projected") == "already-terminated"


async def test_a_lost_agent_past_terminate_after_has_its_sessions_ended(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid, agent_id = await running_session(cluster)
    hooked(cluster, agent_id).heartbeating = False
    await reach(cluster, sid, "TERMINATED", timeout=30)
    events = await store.read_stream(f"session-{sid}")
    terminated = [e.data for e in events if e.type == "kernel_terminated"]
    assert [str(t.reason) for t in terminated] == ["agent-termination"]  # type: ignore[union-attr]
    agent_types = [e.type for e in await store.read_stream(f"agent-{agent_id}")]
    assert agent_types[-1] == "agent_terminated"  # LOST; the session went after the policy


async def test_running_kernels_publish_live_stats(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid = await cluster.shard.handle(CreateSession(**options()))
    await reach(cluster, sid, "RUNNING")
    key = store.keys.kernel_stats(str(uuid.uuid5(sid, "kernel-0")))

    async def published() -> bytes | None:
        return await store.redis.get(key)  # type: ignore[no-any-return]

    stats = json.loads(await eventually(published, message="stats"))
    assert stats["rss_bytes"] > 0 and stats["agent"] in cluster.agents
    assert 0 < await store.redis.ttl(key) <= 60


async def test_a_shard_refuses_sessions_it_does_not_own(store: RedisEventStore) -> None:
    shards = [SessionShard(store, actor=f"sessions:{k}", index=k, count=3) for k in range(3)]
    command = uuid.uuid4()
    sid = uuid.uuid5(command, "session")
    owner = shards[shard_of(sid, 3)]
    wrong = shards[(shard_of(sid, 3) + 1) % 3]
    with pytest.raises(WrongShardError):
        await wrong.handle(CreateSession(session_id=sid, command_id=command, **options()))
    assert await owner.handle(CreateSession(session_id=sid, command_id=command, **options())) == sid
    with pytest.raises(WrongShardError):
        await wrong.handle(DestroySession(session_id=sid))
    events = await store.read_stream(f"session-{sid}")
    assert [(e.type, e.actor) for e in events] == [("session_enqueued", owner.actor)]


async def replace_agent(cluster: LocalCluster, agent_id: str, root: Path) -> Agent:
    """What an agent restart looks like on a node whose kernels survived it: the old agent
    is gone (its tasks cancelled), a new one with a fresh backend takes its place."""
    old = cluster.agents[agent_id]
    await old.drain()
    new = Agent(
        cluster.store,
        cluster.shard,
        agent_id,
        old.capacity,
        backend=ProcessBackend(root / agent_id),
        stop_grace_s=0.5,
    )
    cluster.agents[agent_id] = new
    await new.register()
    return new


@pytest.mark.parametrize("batch", [False, True])
async def test_a_restarted_agent_adopts_the_kernels_that_survived_it(
    cluster: LocalCluster, store: RedisEventStore, tmp_path: Path, batch: bool
) -> None:
    await cluster.agents["i-p2"].set_schedulable(False)
    go = tmp_path / "go"  # the batch ends once the test says so, not after a guessed time
    command = f"while [ ! -e {go} ]; do sleep 0.1; done; exit 7"
    extra = {"session_type": SessionType.BATCH, "startup_command": command} if batch else {}
    sid = await cluster.shard.handle(CreateSession(**options(**extra)))
    await reach(cluster, sid, "RUNNING")
    kernel_id = uuid.uuid5(sid, "kernel-0")
    pid = pid_of(cluster, sid, "i-p1")
    agent = await replace_agent(cluster, "i-p1", tmp_path)
    assert agent.backend.running() == {kernel_id}
    for _ in range(3):
        assert await agent.reconcile() == {
            "stray": set(),
            "missing": set(),
            "stalled": set(),
            "unstopped": set(),
        }
    if batch:  # the new agent waits for the command in place of the old one
        go.touch()
        await reach(cluster, sid, "TERMINATED")
        outcome = [
            e.data for e in await store.read_stream(f"session-{sid}") if e.type == "session_failure"
        ]
        assert [o.exit_code for o in outcome] == [7]  # type: ignore[union-attr]
    else:
        await cluster.shard.handle(DestroySession(session_id=sid))
        await reach(cluster, sid, "TERMINATED")

    def stopped() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"

    await eventually(stopped, message="kernel process gone")


async def test_a_session_whose_agent_died_while_ending_it_is_ended_by_reconciliation(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    """The agent was killed after the log said ``session_terminating`` (its follower had
    recorded the event) but before it stopped the kernel and reported it: reconciliation
    stops the kernel and ends the session, where it used to stay TERMINATING for good
    (found by the chaos run, seed 1807472983)."""
    await cluster.agents["i-p2"].set_schedulable(False)
    agent = hooked(cluster, "i-p1")
    sid = await cluster.shard.handle(CreateSession(**options()))
    await reach(cluster, sid, "RUNNING")
    kernel_id = uuid.uuid5(sid, "kernel-0")
    agent.deaf_to_endings = True
    await cluster.shard.handle(DestroySession(session_id=sid))
    await reach(cluster, sid, "TERMINATING")

    async def projected_terminating() -> bool:
        record = await ReadModels(store).kernel(str(kernel_id))
        return bool(record and record["status"] == "TERMINATING")

    await eventually(projected_terminating, message="the read model has it terminating")
    assert agent.backend.running() == {kernel_id}
    assert (await agent.reconcile())["unstopped"] == set()  # once may be a stop under way
    assert (await agent.reconcile())["unstopped"] == {kernel_id}
    await reach(cluster, sid, "TERMINATED")
    await eventually(lambda: not agent.backend.running(), message="the kernel stopped")


class _OutageOnce:
    """The way to the shards, cut once when a kernel's start is reported (as a Redis
    restart cuts it): what reaches the shard is the real command, sent again or not."""

    def __init__(self, shard: Any) -> None:
        self.shard = shard
        self.cut = False

    async def handle(self, command: Any) -> Any:
        report = getattr(command, "report", None)
        if not self.cut and getattr(report, "type", "") == "kernel_started":
            self.cut = True
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return await self.shard.handle(command)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.shard, name)


async def test_a_start_report_cut_by_an_outage_is_sent_again_and_the_session_runs(
    cluster: LocalCluster,
) -> None:
    """The agent started the kernel and Redis went away as it reported it: the report waits
    the outage out (the same command), where the agent used to stop the kernel it had just
    started and the session stayed PREPARING for good (chaos seed 32)."""
    await cluster.agents["i-p2"].set_schedulable(False)
    agent = cluster.agents["i-p1"]
    cut = _OutageOnce(agent.shard)
    agent.shard = cut
    sid = await cluster.shard.handle(CreateSession(**options()))
    await reach(cluster, sid, "RUNNING")
    assert cut.cut
    assert agent.backend.running() == {uuid.uuid5(sid, "kernel-0")}
