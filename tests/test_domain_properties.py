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


def build(agent_specs: list, session_specs: list) -> tuple[list[AgentInfo], list[PendingSession]]:  # type: ignore[type-arg]
    agents = [
        AgentInfo(f"a{i:02d}", ResourceSlot({"cpu": cpu, "mem": mem * G, "cuda.device": gpu}))
        for i, (cpu, mem, gpu) in enumerate(agent_specs)
    ]
    sessions = []
    for n, (key, cpu, mem, gpu, size, multi) in enumerate(session_specs):
        request = ResourceSlot({"cpu": cpu, "mem": mem * G, "cuda.device": gpu})
        spec = SessionSpec(
            session_id=uuid.UUID(int=n + 1),
            name=f"s{n}",
            access_key=f"AK{key}",
            kernels=expand_cluster(
                size, [request], kernel_ids=[uuid.UUID(int=1000 * (n + 1) + i) for i in range(size)]
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
