"""Destroy rules by status (23.03's ``destroy_session``; B9 in docs/upstream.md)."""

from __future__ import annotations

import uuid

import pytest

from actors.domain.destroy import KernelView, plan_destroy
from actors.domain.errors import GenericForbidden
from actors.domain.statuses import KernelStatus, SessionStatus

pytestmark = pytest.mark.unit
S, K = SessionStatus, KernelStatus
SID = uuid.uuid4()


def kernels(*statuses: KernelStatus) -> list[KernelView]:
    return [
        KernelView(uuid.uuid4(), s, "main" if i == 0 else "sub") for i, s in enumerate(statuses)
    ]


def types(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.type for e in plan.events]


def test_pending_is_cancelled_with_its_creation_id() -> None:
    """B9: the cancel event carries the session's creation id, so a waiting create wakes."""
    plan = plan_destroy(SID, "creation-42", S.PENDING, kernels(K.PENDING, K.PENDING))
    assert plan.session_status is S.CANCELLED
    assert types(plan) == ["kernel_cancelled", "kernel_cancelled", "session_cancelled"]
    assert plan.events[-1].creation_id == "creation-42"  # type: ignore[union-attr]
    assert plan.reason == "user-requested"


def test_pulling_is_forbidden_even_when_forced() -> None:
    for forced in (False, True):
        with pytest.raises(GenericForbidden, match="pulling"):
            plan_destroy(SID, "c", S.PULLING, kernels(K.PULLING), forced=forced)


@pytest.mark.parametrize("status", [S.SCHEDULED, S.PREPARING, S.TERMINATING, S.ERROR])
def test_only_forced_for_transitional_statuses(status: SessionStatus) -> None:
    with pytest.raises(GenericForbidden, match="unless forced"):
        plan_destroy(SID, "c", status, kernels(K.PREPARING))


def test_forced_kills_go_straight_to_terminated() -> None:
    plan = plan_destroy(SID, "c", S.PREPARING, kernels(K.PREPARING, K.RUNNING), forced=True)
    assert plan.session_status is S.TERMINATING
    assert types(plan) == ["session_terminating", "kernel_terminated", "kernel_terminating"]
    assert list(plan.kernel_statuses.values()) == [K.TERMINATED, K.TERMINATING]
    assert plan.reason == "force-terminated"


def test_running_sessions_go_through_terminating_with_the_reason() -> None:
    plan = plan_destroy(
        SID,
        "c",
        S.RUNNING_DEGRADED,
        kernels(K.RUNNING, K.ERROR, K.TERMINATED),
        reason="idle-timeout",
    )
    assert types(plan) == ["session_terminating", "kernel_terminating", "kernel_terminating"]
    assert {e.reason for e in plan.events} == {"idle-timeout"}  # type: ignore[union-attr]


def test_ended_sessions_need_nothing() -> None:
    plan = plan_destroy(SID, "c", S.TERMINATED, kernels(K.TERMINATED))
    assert plan.session_status is None and plan.events == []


def test_pending_timeout_cancels_the_kernels_too() -> None:
    """B4: upstream's pending-timeout update failed and never touched the kernels."""
    plan = plan_destroy(
        SID, "c", S.PENDING, kernels(K.PENDING, K.PENDING), reason="pending-timeout"
    )
    assert plan.session_status is S.CANCELLED
    assert set(plan.kernel_statuses.values()) == {K.CANCELLED}
    assert [(e.type, e.reason) for e in plan.events] == [  # type: ignore[union-attr]
        ("kernel_cancelled", "pending-timeout"),
        ("kernel_cancelled", "pending-timeout"),
        ("session_cancelled", "pending-timeout"),
    ]


def test_terminating_names_the_agents_of_the_kernels_and_none_past_the_bound() -> None:
    """Hosts skip a session their agents are not named on; an agent id longer than the log
    bounds a name (registration does not bound it) names none, so every host reads the
    stream, and the session still ends (a name past the bound failed the event before)."""
    running = [
        KernelView(uuid.uuid4(), K.RUNNING, "main", "i-b"),
        KernelView(uuid.uuid4(), K.RUNNING, "sub", "i-a"),
        KernelView(uuid.uuid4(), K.RUNNING, "sub", "i-b"),
    ]
    plan = plan_destroy(SID, "c", S.RUNNING, running)
    assert plan.events[0].agents == ["i-a", "i-b"]  # type: ignore[union-attr]
    long_named = [KernelView(uuid.uuid4(), K.RUNNING, "main", "i-" + "x" * 2000)]
    plan = plan_destroy(SID, "c", S.RUNNING, long_named)
    assert plan.session_status is S.TERMINATING
    assert plan.events[0].type == "session_terminating"
    assert plan.events[0].agents is None  # type: ignore[union-attr]
