"""Write-side faults: a scheduler replaced mid-stream, two schedulers racing on one ledger,
retried commands. The whole log is folded afterwards to check the invariants."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from decimal import Decimal

import pytest

from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.scheduling import Ledger
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from actors.scheduling.scheduler import Scheduler
from events import RedisEventStore
from events.catalogue import AllocReleased, AllocReserved
from kernelhub.testing import eventually
from tests.agent_hooks import HookedAgent, hooked

pytestmark = [pytest.mark.redis, pytest.mark.fault]
G = 2**30
TINY = ResourceSlot(cpu=Decimal("0.05"), mem=G // 16)
AGENTS = [("i-a", {"cpu": 8, "mem": 16 * G}), ("i-b", {"cpu": 8, "mem": 16 * G})]


async def fold_ledger_checking(
    store: RedisEventStore, agents: list[tuple[str, dict[str, int]]] = AGENTS
) -> Ledger:
    """Replay the ledger stream through the domain ledger, which refuses any reservation
    that does not fit: an over-allocation anywhere in history fails here."""
    ledger = Ledger({agent: ResourceSlot(capacity) for agent, capacity in agents})
    for event in await store.read_stream("alloc-default"):
        data = event.data
        if isinstance(data, AllocReserved):
            entry = ledger.reserve(
                data.session_id,
                [(a.kernel_id, a.agent_id, ResourceSlot(a.slots)) for a in data.allocations],
            )
            assert entry.fitted()
        elif isinstance(data, AllocReleased):
            ledger.release(data.kernel_id)
    return ledger


async def scheduled_counts(store: RedisEventStore, sessions: list[uuid.UUID]) -> Counter[uuid.UUID]:
    counts: Counter[uuid.UUID] = Counter()
    for sid in sessions:
        counts[sid] = sum(
            e.type == "session_scheduled" for e in await store.read_stream(f"session-{sid}")
        )
    return counts


async def test_a_scheduler_replaced_mid_stream_schedules_each_session_once(
    store: RedisEventStore,
) -> None:
    cluster = await LocalCluster(store, AGENTS, safety_tick_s=0.2).start()
    try:
        sessions = []
        for n in range(200):
            sessions.append(
                await cluster.shard.handle(
                    CreateSession(
                        name=f"s{n}",
                        access_key=f"AK{n % 5}",
                        scaling_group="default",
                        image="kernelhub/python:3.11",
                        requested=[TINY],
                    )
                )
            )
            if n == 100:  # the scheduler "crashes": a fresh one rebuilds from the log
                cluster.scheduler = Scheduler(store, cluster.shard)

        async def all_running() -> bool:
            states = [await cluster.shard.get(s) for s in sessions]
            return all(s.status.name == "RUNNING" for s in states)

        await eventually(all_running, timeout=60, message="every session RUNNING")
    finally:
        await cluster.stop()
    counts = await scheduled_counts(store, sessions)
    assert set(counts.values()) == {1}, "a session was scheduled twice or never"
    await fold_ledger_checking(store)


async def test_two_schedulers_on_one_ledger_never_double_book(store: RedisEventStore) -> None:
    cluster = LocalCluster(store, AGENTS)  # not started: the two schedulers are driven by hand
    for agent in cluster.agents.values():
        await agent.register()
    await cluster.projector.load()
    one_cpu = [ResourceSlot(cpu=1, mem=G)]
    sessions = [
        await cluster.shard.handle(
            CreateSession(
                name=f"s{n}",
                access_key="AK1",
                scaling_group="default",
                image="kernelhub/python:3.11",
                requested=one_cpu,
            )
        )
        for n in range(24)
    ]
    await cluster.projector.catch_up()
    rivals = [
        Scheduler(store, cluster.shard, actor="scheduler:a"),
        Scheduler(store, cluster.shard, actor="scheduler:b"),
    ]
    for _ in range(6):
        await asyncio.gather(*(r.run_pass() for r in rivals))
        await cluster.projector.catch_up()
    counts = await scheduled_counts(store, sessions)
    assert sum(counts.values()) == 16  # 2 agents x 8 cpus, one cpu each
    assert set(counts.values()) <= {0, 1}
    ledger = await fold_ledger_checking(store)
    assert all(slots["cpu"] == 8 for slots in ledger.occupied.values())


async def test_retried_commands_have_one_effect(store: RedisEventStore) -> None:
    cluster = await LocalCluster(store, AGENTS, safety_tick_s=0.2).start()
    try:
        command = uuid.uuid4()
        options = {
            "name": "r",
            "access_key": "AK1",
            "scaling_group": "default",
            "image": "kernelhub/python:3.11",
            "requested": [TINY],
        }
        first = await cluster.shard.handle(CreateSession(command_id=command, **options))
        second = await cluster.shard.handle(CreateSession(command_id=command, **options))
        assert first == second

        async def running() -> bool:
            return (await cluster.shard.get(first)).status.name == "RUNNING"

        await eventually(running, timeout=20, message="RUNNING")
        destroy = uuid.uuid4()
        await cluster.shard.handle(DestroySession(session_id=first, command_id=destroy))
        retry = DestroySession(session_id=first, command_id=destroy)  # after a lost reply
        await cluster.shard.handle(retry)
        events = [e.type for e in await store.read_stream(f"session-{first}")]
        assert events.count("session_enqueued") == 1
        assert events.count("session_terminating") == 1
    finally:
        await cluster.stop()


async def test_an_agent_that_stops_heartbeating_goes_lost_and_comes_back_revived(
    store: RedisEventStore,
) -> None:
    cluster = await LocalCluster(
        store,
        AGENTS,
        safety_tick_s=0.2,
        heartbeat_interval_s=0.2,
        lost_timeout_s=1.0,
        agent_class=HookedAgent,
    ).start()
    try:
        sid = await cluster.shard.handle(
            CreateSession(
                name="l",
                access_key="AK1",
                scaling_group="default",
                image="kernelhub/python:3.11",
                requested=[TINY],
            )
        )

        async def running() -> bool:
            return (await cluster.shard.get(sid)).status.name == "RUNNING"

        await eventually(running, timeout=20, message="RUNNING")
        frozen = hooked(cluster, "i-a")
        frozen.heartbeating = False

        async def stream_types() -> list[str]:
            return [e.type for e in await store.read_stream("agent-i-a")]

        async def lost() -> bool:
            return (await stream_types())[-1:] == ["agent_terminated"]

        await eventually_changed(lost)
        last = (await store.read_stream("agent-i-a"))[-1]
        assert last.data.reason == "agent-lost"  # type: ignore[union-attr]
        assert (await cluster.shard.get(sid)).status.name == "RUNNING"  # kernels left as they are
        frozen.heartbeating = True

        async def revived() -> bool:
            return (await stream_types())[-1:] == ["agent_started"]

        await eventually_changed(revived)
        assert (await store.read_stream("agent-i-a"))[-1].data.reason == "revived"  # type: ignore[union-attr]
        assert (await stream_types()).count("agent_terminated") == 1  # no flapping
    finally:
        await cluster.stop()


async def eventually_changed(predicate: object) -> None:
    await eventually(predicate, timeout=10, message="liveness change")  # type: ignore[arg-type]
