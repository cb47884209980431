"""Properties of a scheduling pass over random clusters and queues."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import (
    AgentInfo,
    DRFScheduler,
    ExistingSession,
    Ledger,
    PendingSession,
    schedule_pass,
)
from actors.domain.session import ClusterMode, SessionSpec, expand_cluster
from actors.domain.slots import ResourceSlot
from actors.domain.statuses import SessionStatus

from .domain_builders import T0, G, context

pytestmark = pytest.mark.unit

agents_strategy = st.lists(
    st.tuples(st.integers(1, 16), st.integers(1, 64), st.integers(0, 2)), min_size=1, max_size=8
)
sessions_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),  # keypair
        st.integers(1, 8),  # cpu
        st.integers(1, 16),  # mem GiB
        st.integers(0, 1),  # gpu
        st.integers(1, 3),  # cluster size
        st.booleans(),  # multi-node
    ),
    max_size=25,
)


def build(
    agent_specs: list,  # type: ignore[type-arg]
    session_specs: list,  # type: ignore[type-arg]
    first: int = 0,
) -> tuple[list[AgentInfo], list[PendingSession]]:
    agents = [
        AgentInfo(f"a{i:02d}", ResourceSlot({"cpu": cpu, "mem": mem * G, "cuda.device": gpu}))
        for i, (cpu, mem, gpu) in enumerate(agent_specs)
    ]
    sessions = []
    for n, (key, cpu, mem, gpu, size, multi) in enumerate(session_specs):
        request = ResourceSlot({"cpu": cpu, "mem": mem * G, "cuda.device": gpu})
        spec = SessionSpec(
            session_id=uuid.UUID(int=first + n + 1),
            name=f"s{n}",
            access_key=f"AK{key}",
            kernels=expand_cluster(
                size,
                [request],
                kernel_ids=[uuid.UUID(int=1000 * (first + n + 1) + i) for i in range(size)],
            ),
            created_at=T0 + timedelta(seconds=n),
            cluster_mode=ClusterMode.MULTI_NODE if multi else ClusterMode.SINGLE_NODE,
        )
        sessions.append(PendingSession(spec))
    return agents, sessions


@given(agents_strategy, sessions_strategy, st.sampled_from(["fifo", "lifo", "drf", "mof"]))
def test_no_agent_is_over_allocated_and_the_ledger_stays_non_negative(
    agent_specs: list,
    session_specs: list,
    scheduler: str,  # type: ignore[type-arg]
) -> None:
    agents, sessions = build(agent_specs, session_specs)
    book = Ledger({a.agent_id: a.capacity for a in agents})
    group = ScalingGroup(
        "g",
        scheduler=scheduler,
        scheduler_config={"num_retries_to_skip": 1} if scheduler == "fifo" else {},
    )
    result = schedule_pass(
        group=group, pending=sessions, existing=[], agents=agents, ctx=context(), ledger=book
    )
    for a in agents:
        assert book.occupied[a.agent_id] <= a.capacity
        assert all(v >= 0 for v in book.occupied[a.agent_id].values())
    decided = {d.session_id for d in result.decisions}
    assert len(decided) == len(result.decisions)
    by_id = {s.spec.session_id: s.spec for s in sessions}
    for decision in result.decisions:
        spec = by_id[decision.session_id]
        hosts = [a.agent_id for a in decision.reservation.allocations]
        assert len(hosts) == spec.cluster_size
        if spec.cluster_mode is ClusterMode.MULTI_NODE:
            assert len(set(hosts)) == len(hosts)
        else:
            assert len(set(hosts)) == 1
        assert decision.reservation.fitted()
    assert decided.isdisjoint(f.session_id for f in result.failures)


@given(agents_strategy, sessions_strategy, st.sampled_from(["fifo", "lifo", "drf", "mof"]))
def test_the_same_input_gives_the_same_decisions(
    agent_specs: list,
    session_specs: list,
    scheduler: str,  # type: ignore[type-arg]
) -> None:
    def once() -> list[tuple[uuid.UUID, list[tuple[uuid.UUID, str]]]]:
        agents, sessions = build(agent_specs, session_specs)
        result = schedule_pass(
            group=ScalingGroup("g", scheduler=scheduler),
            pending=sessions,
            existing=[],
            agents=agents,
            ctx=context(),
        )
        return [
            (d.session_id, [(a.kernel_id, a.agent_id) for a in d.reservation.allocations])
            for d in result.decisions
        ]

    assert once() == once()


@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(1, 8)), min_size=1, max_size=12),
    st.lists(st.integers(0, 4), min_size=1, max_size=10),
)
def test_drf_always_picks_a_keypair_with_the_lowest_dominant_share(
    running: list[tuple[int, int]], waiting: list[int]
) -> None:
    capacity = ResourceSlot(cpu=64, mem=64 * G)
    existing = []
    for n, (key, cpu) in enumerate(running):
        spec = SessionSpec(
            uuid.UUID(int=n + 1),
            f"r{n}",
            f"AK{key}",
            expand_cluster(1, [ResourceSlot(cpu=cpu, mem=G)]),
            T0,
        )
        existing.append(ExistingSession(spec, SessionStatus.RUNNING, spec.requested_slots))
    queue = [
        PendingSession(
            SessionSpec(
                uuid.UUID(int=10_000 + n),
                f"p{n}",
                f"AK{key}",
                expand_cluster(1, [ResourceSlot(cpu=1, mem=G)]),
                T0 + timedelta(seconds=n),
            )
        )
        for n, key in enumerate(waiting)
    ]
    plugin = DRFScheduler()
    plugin.begin(capacity, existing)
    shares: dict[str, Decimal] = {}
    for e in existing:
        share = max(Decimal(e.occupying["cpu"]) / 64, Decimal(e.occupying["mem"]) / (64 * G))
        shares[e.spec.access_key] = max(shares.get(e.spec.access_key, Decimal(0)), share)
    picked = plugin.pick_session(queue)
    assert picked is not None
    lowest = min(shares.get(p.spec.access_key, Decimal(0)) for p in queue)
    assert shares.get(queue[picked].spec.access_key, Decimal(0)) == lowest


@given(
    agents_strategy,
    st.lists(
        st.tuples(
            sessions_strategy,
            st.sets(st.integers(0, 24), max_size=10),  # sessions of earlier passes to end
            st.integers(0, 3),  # 0: nothing; 1: resize an agent; 2: drop one; 3: add one
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(["fifo", "lifo", "drf", "mof"]),
    st.sampled_from([None, "concentrated", "dispersed", "round-robin", "fragmentation"]),
)
def test_an_index_kept_across_passes_decides_as_one_built_for_each(
    agent_specs: list,  # type: ignore[type-arg]
    passes: list,  # type: ignore[type-arg]
    scheduler: str,
    selector: str | None,
) -> None:
    """The scheduler keeps its agent index from pass to pass and updates only the agents
    whose occupancy changed: every pass must decide exactly what a freshly built index
    would, through reservations, releases, resized, dropped and added agents."""
    from actors.domain.scheduling.kept_index import KeptIndex

    agents, _ = build(agent_specs, [])
    group = ScalingGroup(
        "g",
        scheduler=scheduler,
        agent_selector=selector,
        scheduler_config={"num_retries_to_skip": 1} if scheduler == "fifo" else {},
    )
    kept_ledger = Ledger({a.agent_id: a.capacity for a in agents})
    fresh_ledger = Ledger({a.agent_id: a.capacity for a in agents})
    kept, last_kept, last_fresh = KeptIndex(), None, None
    placed: list[uuid.UUID] = []
    frozen = tuple(agents)  # the same tuple until the agents change: the kept candidates
    for step, (session_specs, ending, change) in enumerate(passes):
        _, sessions = build(agent_specs, session_specs, first=(step + 1) * 1000)
        decided = []
        for ledger, index, last in (
            (kept_ledger, kept, last_kept),
            (fresh_ledger, None, last_fresh),
        ):
            result = schedule_pass(
                group=group,
                pending=sessions,
                existing=[],
                agents=frozen,
                ctx=context(),
                ledger=ledger,
                round_robin_last=last,
                kept=index,
            )
            if index is None:
                last_fresh = result.round_robin_last
            else:
                last_kept = result.round_robin_last
            decided.append(
                [
                    (d.session_id, [(a.kernel_id, a.agent_id) for a in d.reservation.allocations])
                    for d in result.decisions
                ]
            )
        assert decided[0] == decided[1], step
        placed.extend(session_id for session_id, _ in decided[0])
        for n in sorted(ending):
            if n < len(placed):
                kept_ledger.release_session(placed[n])
                fresh_ledger.release_session(placed[n])
        if change == 1:  # an agent resized: a new capacity, as its registration says
            a = agents[0]
            agents[0] = AgentInfo(a.agent_id, a.capacity + ResourceSlot({"cpu": 1}))
            for ledger in (kept_ledger, fresh_ledger):
                ledger.set_capacity(a.agent_id, agents[0].capacity)
        elif change == 2 and len(agents) > 1:
            agents.pop()
        elif change == 3:
            new = AgentInfo(f"b{step:02d}", ResourceSlot({"cpu": 4, "mem": 8 * G}))
            agents.append(new)
            for ledger in (kept_ledger, fresh_ledger):
                ledger.set_capacity(new.agent_id, new.capacity)
        if change:
            frozen = tuple(agents)
    for ledger in (kept_ledger, fresh_ledger):
        for a in agents:
            assert all(v >= 0 for v in ledger.occupied[a.agent_id].values())
    assert kept_ledger.holds() == fresh_ledger.holds()
