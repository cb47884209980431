"""The whole session lifecycle on the write side (shard + scheduler + simulated agents),
driven by the log, against a real Redis; the exact event sequences asserted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.agents.agent import dispatch
from actors.agents.backends.base import KernelLaunch
from actors.agents.backends.sim import SimBackend
from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.commands.tenancy import SetScalingGroup
from actors.domain.session import ClusterMode, SessionType
from actors.domain.session_aggregate import SessionAggregate
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from actors.sessions.shard import SessionShard
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.catalogue import AllocReserved
from events.secrets import SecretBox
from kernelhub.testing import eventually
from projections.queries import ReadModels
from tests.agent_hooks import HookedAgent, hooked

pytestmark = pytest.mark.redis
G = 2**30
SMALL = ResourceSlot(cpu=1, mem=G)


@pytest.fixture
async def cluster(store: RedisEventStore) -> AsyncIterator[LocalCluster]:
    local = LocalCluster(
        store,
        [("i-a", {"cpu": 8, "mem": 16 * G}), ("i-b", {"cpu": 8, "mem": 16 * G})],
        safety_tick_s=0.5,
        agent_class=HookedAgent,
    )
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


async def types_of(store: RedisEventStore, stream: str) -> list[str]:
    return [e.type for e in await store.read_stream(stream)]


async def wait_status(cluster: LocalCluster, session_id: uuid.UUID, status: str) -> None:
    async def reached() -> bool:
        return (await cluster.shard.get(session_id)).status.name == status

    await eventually(reached, timeout=20, message=f"session {status}")


async def create(cluster: LocalCluster, **kwargs: object) -> uuid.UUID:
    options: dict[str, object] = {
        "name": "s",
        "access_key": "AK1",
        "scaling_group": "default",
        "image": "kernelhub/python:3.11",
        "requested": [SMALL],
    }
    options.update(kwargs)
    return await cluster.shard.handle(CreateSession(**options))


async def test_single_kernel_session_from_enqueue_to_termination(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid = await create(cluster)
    await wait_status(cluster, sid, "RUNNING")
    await cluster.shard.handle(DestroySession(session_id=sid))
    await wait_status(cluster, sid, "TERMINATED")
    assert await types_of(store, f"session-{sid}") == [
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

    async def released() -> bool:
        ledger = await types_of(store, "alloc-default")
        return ledger == ["alloc_reserved", "alloc_released"]  # nothing to settle: as reserved

    await eventually(released, timeout=10, message="hold released")
    occupied = cluster.scheduler.ledger.occupied.values()
    assert all(v == 0 for slots in occupied for v in slots.values())


@pytest.mark.parametrize("mode", [ClusterMode.SINGLE_NODE, ClusterMode.MULTI_NODE])
async def test_a_cluster_starts_and_ends_exactly_once(
    cluster: LocalCluster, store: RedisEventStore, mode: ClusterMode
) -> None:
    size = 3 if mode is ClusterMode.SINGLE_NODE else 2
    sid = await create(cluster, cluster_size=size, cluster_mode=mode)
    await wait_status(cluster, sid, "RUNNING")
    session = await cluster.shard.get(sid)
    agents = {k.agent for k in session.kernels.values()}
    assert len(agents) == (1 if mode is ClusterMode.SINGLE_NODE else size)
    await cluster.shard.handle(DestroySession(session_id=sid))
    await wait_status(cluster, sid, "TERMINATED")
    events = await types_of(store, f"session-{sid}")
    assert events.count("session_started") == 1
    assert events.index("session_started") > max(
        i for i, t in enumerate(events) if t == "kernel_started"
    )
    assert events.count("session_terminated") == 1
    assert events[-1] == "session_terminated"
    assert events.count("kernel_terminated") == size


@pytest.mark.parametrize(("exit_code", "result"), [(0, "success"), (3, "failure")])
async def test_batch_sessions_report_their_result_then_finish(
    store: RedisEventStore, exit_code: int, result: str
) -> None:
    local = LocalCluster(store, safety_tick_s=0.5, batch_exit_code=exit_code)
    await local.start()
    try:
        sid = await create(local, session_type=SessionType.BATCH, startup_command="python main.py")
        await wait_status(local, sid, "TERMINATED")
        session = await local.shard.get(sid)
        assert session.result == result
        events = await store.read_stream(f"session-{sid}")
        outcome = [e for e in events if e.type in ("session_success", "session_failure")]
        assert len(outcome) == 1
        assert outcome[0].data.exit_code == exit_code  # type: ignore[union-attr]
        assert outcome[0].data.reason == ("task-done" if exit_code == 0 else "task-failed")  # type: ignore[union-attr]
        terminating = next(e for e in events if e.type == "session_terminating")
        assert terminating.data.reason == "task-finished"  # type: ignore[union-attr]
    finally:
        await local.stop()


async def test_destroying_a_pending_session_cancels_it(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    huge = await create(cluster, requested=[ResourceSlot(cpu=64, mem=G)])
    await eventually(
        lambda: _has(store, huge, "session_scheduling_failed"), timeout=10, message="tried"
    )
    await cluster.shard.handle(DestroySession(session_id=huge))
    await wait_status(cluster, huge, "CANCELLED")
    events = await store.read_stream(f"session-{huge}")
    assert [e.type for e in events] == [
        "session_enqueued",
        "session_scheduling_failed",
        "kernel_cancelled",
        "session_cancelled",
    ]
    enqueued, cancelled = events[0], events[-1]
    assert cancelled.data.creation_id == enqueued.data.creation_id  # type: ignore[union-attr]


async def test_a_scheduling_failure_is_recorded_once(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    huge = await create(cluster, requested=[ResourceSlot(cpu=64, mem=G)])
    for _ in range(3):
        await cluster.scheduler.run_pass()
    failures = [
        e
        for e in await store.read_stream(f"session-{huge}")
        if e.type == "session_scheduling_failed"
    ]
    assert len(failures) == 1
    assert failures[0].data.status_info == "no-available-instances"  # type: ignore[union-attr]
    assert cluster.scheduler.retries[huge] >= 3


async def test_an_agent_error_cancels_the_session_and_frees_its_slots(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    for agent_id in cluster.agents:
        hooked(cluster, agent_id).fail_next_start = True
    sid = await create(cluster)
    await wait_status(cluster, sid, "CANCELLED")
    events = await store.read_stream(f"session-{sid}")
    assert events[-1].type == "session_cancelled"
    assert events[-1].data.reason == "failed-to-start"  # type: ignore[union-attr]

    async def released() -> bool:
        return (await types_of(store, "alloc-default")) == ["alloc_reserved", "alloc_released"]

    await eventually(released, timeout=10, message="slots released")


async def _has(store: RedisEventStore, sid: uuid.UUID, event_type: str) -> bool:
    return any(e.type == event_type for e in await store.read_stream(f"session-{sid}"))


async def test_pending_timeout_cancels_the_session_and_its_kernels(
    cluster: LocalCluster, store: RedisEventStore, tmp_path: Path
) -> None:
    """Item 6 and B4: after ``pending_timeout`` the session and its kernels are CANCELLED."""
    tenancy = await TenancyService(store, SecretBox.from_file(tmp_path / "k", create=True)).load()
    await tenancy.handle(SetScalingGroup(name="default", pending_timeout=1.0))
    stuck = await create(cluster, cluster_size=2, requested=[ResourceSlot(cpu=64, mem=G)])
    await wait_status(cluster, stuck, "CANCELLED")
    events = await store.read_stream(f"session-{stuck}")
    cancels = [e for e in events if e.type in ("kernel_cancelled", "session_cancelled")]
    assert [e.type for e in cancels] == [
        "kernel_cancelled",
        "kernel_cancelled",
        "session_cancelled",
    ]
    assert {e.data.reason for e in cancels} == {"pending-timeout"}  # type: ignore[union-attr]
    waited_ms = events[-1].position_ms - events[0].position_ms
    assert waited_ms >= 1000


class FrugalBackend(SimBackend):
    """An agent that allocates less memory than was reserved, and says so."""

    async def start(self, launch: KernelLaunch) -> dict[str, object]:
        info = await super().start(launch)
        return {**info, "occupied_slots": {"cpu": "1", "mem": str(G // 2)}}


async def test_an_allocation_other_than_reserved_is_settled(store: RedisEventStore) -> None:
    local = LocalCluster(
        store,
        [("i-f", {"cpu": 8, "mem": 16 * G})],
        safety_tick_s=0.5,
        backend=lambda _: FrugalBackend(),
    )
    await local.start()
    try:
        sid = await create(local)
        await wait_status(local, sid, "RUNNING")

        async def settled() -> bool:
            return await types_of(store, "alloc-default") == ["alloc_reserved", "alloc_settled"]

        await eventually(settled, message="settled to the actual allocation")

        async def folded() -> bool:
            # the scheduler folds what it appended one read of its stream later
            return local.scheduler.ledger.occupied["i-f"] == ResourceSlot(cpu=1, mem=G // 2)

        await eventually(folded, message="the scheduler's ledger holds the actual allocation")

        async def projected() -> bool:
            agent = await ReadModels(store).agent("i-f")
            return agent is not None and agent["occupied_slots"] == {"cpu": "1", "mem": str(G // 2)}

        await eventually(projected, message="the agents read model follows")
    finally:
        await local.stop()


async def test_an_image_to_pull_shows_pulling_once_per_agent(store: RedisEventStore) -> None:
    """The simulated backend's pull delay exercises PULLING (B15): the session shows it
    while its kernel's image is fetched; the next session on that agent finds it cached."""
    backend = SimBackend(pull_delay=0.3)
    local = LocalCluster(
        store, [("i-pull", {"cpu": 8, "mem": 16 * G})], safety_tick_s=0.5, backend=lambda _: backend
    )
    await local.start()
    try:
        first = await create(local)
        await wait_status(local, first, "PULLING")
        await wait_status(local, first, "RUNNING")
        assert (await types_of(store, f"session-{first}"))[3:6] == [
            "kernel_pulling",
            "kernel_creating",
            "kernel_started",
        ]
        pulled = next(
            e for e in await store.read_stream(f"session-{first}") if e.type == "kernel_pulling"
        )
        assert pulled.data.reason == "kernelhub/python:3.11"  # type: ignore[union-attr]
        second = await create(local, name="s2")
        await wait_status(local, second, "RUNNING")
        assert "kernel_pulling" not in await types_of(store, f"session-{second}")
        history = (await ReadModels(store).session(str(first)) or {})["status_history"]
        assert history["PREPARING"] <= history["PULLING"] <= history["RUNNING"]
    finally:
        await local.stop()


async def test_a_kernel_started_at_once_is_reported_in_one_call_and_a_slow_one_twice(
    store: RedisEventStore,
) -> None:
    """Creating and started reach the shard in one ``ReportKernels`` when the backend starts
    at once (the same events, each decided on its own); a slow start is told first, so the
    log says the kernel is being created while it starts."""
    from actors.domain.commands.sessions import ReportKernel, ReportKernels

    slow = SimBackend(start_delay=1.5)
    local = LocalCluster(
        store,
        [("i-fast", {"cpu": 2, "mem": 4 * G}), ("i-slow", {"cpu": 1, "mem": 2 * G})],
        safety_tick_s=0.5,
        backend=lambda agent_id: slow if agent_id == "i-slow" else SimBackend(),
    )
    calls: list[str] = []
    handle = local.shard.handle

    async def counted(command: object) -> object:
        if isinstance(command, ReportKernel | ReportKernels):
            calls.append(type(command).__name__)
        return await handle(command)  # type: ignore[arg-type]

    local.shard.handle = counted  # type: ignore[method-assign]
    await local.start()
    try:
        fast = await create(local, requested=[ResourceSlot(cpu=2, mem=G)])
        await wait_status(local, fast, "RUNNING")
        assert calls == ["ReportKernels"]
        sid = await create(local)

        async def creating() -> bool:
            types = await types_of(store, f"session-{sid}")
            return "kernel_creating" in types and "kernel_started" not in types

        await eventually(creating, timeout=20, message="kernel_creating logged while it starts")
        await wait_status(local, sid, "RUNNING")
        assert calls == ["ReportKernels", "ReportKernel", "ReportKernel"]
        for session in (fast, sid):
            assert (await types_of(store, f"session-{session}"))[3:6] == [
                "kernel_creating",
                "kernel_started",
                "session_started",
            ]
    finally:
        await local.stop()


async def test_round_robin_takes_turns_across_passes(
    store: RedisEventStore, tmp_path: Path
) -> None:
    """A round-robin group hands each new session to the next agent in turn, also when
    every session is placed by a pass of its own (the scheduler carries the turn from pass
    to pass; each pass started again from the first agent before)."""
    from projections.tenancy_queries import TenancyLookups

    agents = [(f"i-{n}", {"cpu": 8, "mem": 16 * G}) for n in "abc"]
    local = await LocalCluster(store, agents, safety_tick_s=0.5).start()
    try:
        tenancy = await TenancyService(
            store, SecretBox.from_file(tmp_path / "k", create=True)
        ).load()
        await tenancy.handle(SetScalingGroup(name="default", agent_selector="round-robin"))
        lookups = TenancyLookups(store)

        async def projected() -> bool:
            group = await lookups.scaling_group("default")
            return (group or {}).get("agent_selector") == "round-robin"

        await eventually(projected, timeout=20, message="the group projected")
        for n in range(6):
            await wait_status(local, await create(local, name=f"rr{n}"), "RUNNING")
        chosen = [
            e.data.allocations[0].agent_id  # type: ignore[union-attr]
            for e in await store.read_stream("alloc-default")
            if isinstance(e.data, AllocReserved)
        ]
        assert chosen == ["i-a", "i-b", "i-c", "i-a", "i-b", "i-c"], chosen
    finally:
        await local.stop()


class CountingShard(SessionShard):
    """The real shard, counting the sessions agents load from it."""

    loads: list[uuid.UUID]

    async def load(self, session_id: uuid.UUID) -> SessionAggregate:
        self.loads.append(session_id)
        return await super().load(session_id)


async def test_a_host_skips_the_sessions_of_agents_it_does_not_hold(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    """``session_preparing`` and ``session_terminating`` name the agents of the session's
    kernels: a host none of whose agents is named reads nothing of the session (before, every
    host folded every session's stream twice), and a named host still acts."""
    sid = await create(cluster, cluster_size=2, cluster_mode=ClusterMode.MULTI_NODE)
    await wait_status(cluster, sid, "RUNNING")
    await cluster.shard.handle(DestroySession(session_id=sid))
    await wait_status(cluster, sid, "TERMINATED")
    acted = [
        e
        for e in await store.read_stream(f"session-{sid}")
        if e.type in ("session_preparing", "session_terminating")
    ]
    assert [e.data.agents for e in acted] == [["i-a", "i-b"]] * 2  # type: ignore[union-attr]

    shard = CountingShard(store)
    shard.loads = []
    others = {"i-z": cluster.agents["i-a"]}
    for event in acted:
        await dispatch(shard, others, event)
    assert shard.loads == []
    named = {"i-b": cluster.agents["i-b"]}
    await dispatch(shard, named, acted[1])  # the terminating one: a no-op once ended
    assert shard.loads == [sid]
