"""Statuses, groups and transition maps exactly as 23.03's
``manager/models/session.py`` and ``manager/models/kernel.py`` (docs/upstream.md)."""

from __future__ import annotations

import itertools

import pytest

from actors.domain.lifecycle import transit_kernel_status
from actors.domain.statuses import (
    AGENT_RESOURCE_OCCUPYING_KERNEL_STATUSES,
    KERNEL_SESSION_STATUS_MAPPING,
    USER_RESOURCE_OCCUPYING_KERNEL_STATUSES,
    KernelStatus,
    SessionStatus,
    kernel_transition_allowed,
    session_transition_allowed,
)

pytestmark = pytest.mark.unit
S, K = SessionStatus, KernelStatus


def test_ordinals_are_upstreams() -> None:
    assert {s.name: s.value for s in S} == {
        "PENDING": 0,
        "SCHEDULED": 5,
        "PULLING": 9,
        "PREPARING": 10,
        "RUNNING": 30,
        "RESTARTING": 31,
        "RUNNING_DEGRADED": 32,
        "TERMINATING": 40,
        "TERMINATED": 41,
        "ERROR": 42,
        "CANCELLED": 43,
    }
    assert {k.name: k.value for k in K} == {
        "PENDING": 0,
        "SCHEDULED": 5,
        "PREPARING": 10,
        "BUILDING": 20,
        "PULLING": 21,
        "RUNNING": 30,
        "RESTARTING": 31,
        "RESIZING": 32,
        "SUSPENDED": 33,
        "TERMINATING": 40,
        "TERMINATED": 41,
        "ERROR": 42,
        "CANCELLED": 43,
    }
    assert "RUNNING_DEGRADED" not in K.__members__


# The spec's tables, restated as "forbidden targets" so the test does not copy the code.
KERNEL_FORBIDDEN = {
    K.PENDING: {K.PENDING, K.TERMINATED},
    K.SCHEDULED: {K.SCHEDULED, K.PENDING, K.TERMINATED},
    **{
        s: {s, K.PENDING, K.SCHEDULED, K.TERMINATED}
        for s in (K.PREPARING, K.BUILDING, K.PULLING, K.RESTARTING, K.RESIZING, K.SUSPENDED)
    },
    K.RUNNING: set(K) - {K.RESTARTING, K.RESIZING, K.TERMINATING, K.TERMINATED, K.ERROR},
    K.TERMINATING: set(K) - {K.TERMINATED, K.ERROR},
    K.TERMINATED: set(K),
    K.ERROR: set(K),
    K.CANCELLED: set(K),
}
SESSION_FORBIDDEN = {
    S.PENDING: {S.PENDING, S.TERMINATED},
    S.SCHEDULED: {S.SCHEDULED, S.PENDING, S.TERMINATED, S.CANCELLED},
    S.PULLING: {S.PULLING, S.PENDING, S.SCHEDULED, S.TERMINATING, S.TERMINATED, S.CANCELLED},
    S.PREPARING: {S.PREPARING, S.PENDING, S.SCHEDULED, S.TERMINATED, S.CANCELLED},
    S.RUNNING: set(S) - {S.RESTARTING, S.TERMINATING, S.TERMINATED, S.ERROR},
    S.RESTARTING: {S.RESTARTING, S.PENDING, S.SCHEDULED, S.TERMINATED, S.CANCELLED},
    S.RUNNING_DEGRADED: {S.PENDING, S.SCHEDULED, S.TERMINATED, S.CANCELLED},
    S.TERMINATING: set(S) - {S.TERMINATED, S.ERROR},
    S.TERMINATED: set(S),
    S.ERROR: set(S),
    S.CANCELLED: set(S),
}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(K, K)))
def test_every_kernel_transition_pair(current: KernelStatus, new: KernelStatus) -> None:
    assert kernel_transition_allowed(current, new) == (new not in KERNEL_FORBIDDEN[current])


@pytest.mark.parametrize(("current", "new"), list(itertools.product(S, S)))
def test_every_session_transition_pair(current: SessionStatus, new: SessionStatus) -> None:
    assert session_transition_allowed(current, new) == (new not in SESSION_FORBIDDEN[current])


def test_named_quirks_of_the_session_map() -> None:
    assert not session_transition_allowed(S.RUNNING, S.RUNNING_DEGRADED)
    assert not session_transition_allowed(S.PULLING, S.TERMINATING)
    assert session_transition_allowed(S.RUNNING_DEGRADED, S.RUNNING_DEGRADED)
    assert not session_transition_allowed(S.PREPARING, S.TERMINATED)


def test_kernel_termination_never_goes_through_the_map() -> None:
    with pytest.raises(ValueError, match="kernel_accepts_termination"):
        transit_kernel_status(K.RUNNING, K.TERMINATED)
    assert not transit_kernel_status(K.RUNNING, K.PREPARING)  # B3: a step backwards is refused


def test_groups() -> None:
    assert K.ERROR in AGENT_RESOURCE_OCCUPYING_KERNEL_STATUSES
    assert K.TERMINATING in AGENT_RESOURCE_OCCUPYING_KERNEL_STATUSES
    assert K.TERMINATING not in USER_RESOURCE_OCCUPYING_KERNEL_STATUSES
    assert K.PENDING not in AGENT_RESOURCE_OCCUPYING_KERNEL_STATUSES
    assert KERNEL_SESSION_STATUS_MAPPING[K.SUSPENDED] is S.ERROR
    assert KERNEL_SESSION_STATUS_MAPPING[K.BUILDING] is S.PREPARING
    assert KERNEL_SESSION_STATUS_MAPPING[K.RESIZING] is S.RUNNING
