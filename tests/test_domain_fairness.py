"""Fairness under load (pure): 23.03's max-based DRF next to the ``drf_share: sum`` deviation,
and strict FIFO's rule that a large head session is never overtaken, so never starved."""

from __future__ import annotations

from decimal import Decimal

import pytest

from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import AgentInfo, ExistingSession, PassResult, schedule_pass
from actors.domain.statuses import SessionStatus

from .domain_builders import G, agent, context, make_session, pending, slots

pytestmark = pytest.mark.unit

CAPACITY = slots(16, 64 * G)
SESSION = slots(1, 4 * G)  # 1/16 of the cpu, 1/16 of the memory: a share of 0.0625


def submit(heavy: int, light: int) -> list:  # type: ignore[type-arg]
    """The heavy keypair submits first and ten times more (all sessions the same size)."""
    sessions = [make_session("AK-heavy", request=SESSION) for _ in range(heavy)]
    sessions += [make_session("AK-light", request=SESSION) for _ in range(light)]
    return pending(*sessions)


def drf_pass(queue: list, config: dict[str, str]) -> PassResult:  # type: ignore[type-arg]
    group = ScalingGroup("default", scheduler="drf", scheduler_config=config)
    return schedule_pass(
        group=group, pending=queue, existing=[], agents=[agent("a1", 16, 64 * G)], ctx=context()
    )


def shares(queue: list, result: PassResult) -> dict[str, Decimal]:  # type: ignore[type-arg]
    owner = {p.spec.session_id: p.spec.access_key for p in queue}
    counts = {"AK-heavy": 0, "AK-light": 0}
    for decision in result.decisions:
        counts[owner[decision.session_id]] += 1
    return {key: SESSION.dominant_share(CAPACITY) * n for key, n in counts.items()}


def test_upstream_max_drf_lets_the_heavy_submitter_take_the_cluster() -> None:
    queue = submit(heavy=100, light=10)
    result = drf_pass(queue, {})
    placed = shares(queue, result)
    # both keypairs still have sessions waiting, yet the heavy one holds 15/16 of the cluster
    assert placed == {"AK-heavy": Decimal("0.9375"), "AK-light": Decimal("0.0625")}


def test_sum_drf_keeps_two_keypairs_within_one_session_of_each_other() -> None:
    queue = submit(heavy=100, light=10)
    result = drf_pass(queue, {"drf_share": "sum"})
    placed = shares(queue, result)
    assert len(result.decisions) == 16  # the cluster is full, both still have pending sessions
    assert abs(placed["AK-heavy"] - placed["AK-light"]) <= SESSION.dominant_share(CAPACITY)


def test_sum_drf_counts_what_is_already_running() -> None:
    running = [make_session("AK-heavy", request=SESSION) for _ in range(6)]
    existing = [ExistingSession(s, SessionStatus.RUNNING, s.requested_slots) for s in running]
    queue = submit(heavy=10, light=10)
    group = ScalingGroup("default", scheduler="drf", scheduler_config={"drf_share": "sum"})
    result = schedule_pass(
        group=group,
        pending=queue,
        existing=existing,
        agents=[AgentInfo("a1", CAPACITY, occupied=slots(6, 24 * G))],
        ctx=context(),
    )
    placed = shares(queue, result)
    heavy_total = placed["AK-heavy"] + 6 * SESSION.dominant_share(CAPACITY)
    assert placed["AK-light"] == Decimal("0.5")  # light catches up to the heavy one's 8/16
    assert heavy_total == Decimal("0.5")


def test_an_unknown_share_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="drf_share"):
        drf_pass(submit(1, 1), {"drf_share": "median"})


def test_strict_fifo_never_lets_younger_sessions_overtake_a_large_head() -> None:
    """The rule: with ``num_retries_to_skip = 0`` the oldest pending session that fits no
    agent stops the pass, so capacity freed later goes to it first, and it is placed as soon
    as one agent has room for it. (With ``num_retries_to_skip = k`` a head that failed k
    times steps aside, which trades that guarantee for throughput.)"""
    large = make_session("AK1", request=slots(8, 8 * G))
    small = [make_session("AK2", request=slots(1, G)) for _ in range(6)]
    group = ScalingGroup("default", scheduler="fifo")
    busy = AgentInfo("a1", CAPACITY, occupied=slots(10, 10 * G))  # 6 cpu free: the head needs 8
    first = schedule_pass(
        group=group, pending=pending(large, *small), existing=[], agents=[busy], ctx=context()
    )
    assert first.decisions == [] and [f.session_id for f in first.failures] == [large.session_id]
    freed = AgentInfo("a1", CAPACITY, occupied=slots(4, 4 * G))  # work ended: 12 cpu free
    second = schedule_pass(
        group=group, pending=pending(large, *small), existing=[], agents=[freed], ctx=context()
    )
    assert second.decisions[0].session_id == large.session_id
    assert len(second.decisions) == 5  # then the small ones, as many as still fit (4 cpu)

    skipping = ScalingGroup(
        "default", scheduler="fifo", scheduler_config={"num_retries_to_skip": 1}
    )
    retried = pending(large, *small, retries=1)  # the head already failed once: it steps aside
    third = schedule_pass(
        group=skipping, pending=retried, existing=[], agents=[busy], ctx=context()
    )
    assert large.session_id not in [d.session_id for d in third.decisions]
    assert len(third.decisions) == 6
