"""Session and kernel statuses, their groups and transition maps (Backend.AI 23.03's
``manager/models/session.py`` and ``manager/models/kernel.py``; docs/upstream.md).

The integer values are upstream's ordinals: the scheduler sorts managed sessions by
``(status.value, created_at)``, so they are behaviour, not decoration. Note the odd order:
a *session* is PULLING (9) before PREPARING (10), a *kernel* PREPARING (10) before PULLING (21).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

__all__ = [
    "AGENT_RESOURCE_OCCUPYING_KERNEL_STATUSES",
    "AGENT_RESOURCE_OCCUPYING_SESSION_STATUSES",
    "DEAD_KERNEL_STATUSES",
    "DEAD_SESSION_STATUSES",
    "FOLLOWING_SESSION_STATUSES",
    "KERNEL_SESSION_STATUS_MAPPING",
    "KERNEL_STATUS_TRANSITION_MAP",
    "LEADING_SESSION_STATUSES",
    "LIVE_KERNEL_STATUSES",
    "RESOURCE_USAGE_KERNEL_STATUSES",
    "SESSION_KERNEL_STATUS_MAPPING",
    "SESSION_STATUS_TRANSITION_MAP",
    "USER_RESOURCE_OCCUPYING_KERNEL_STATUSES",
    "USER_RESOURCE_OCCUPYING_SESSION_STATUSES",
    "AgentStatus",
    "KernelStatus",
    "SessionStatus",
    "kernel_transition_allowed",
    "session_transition_allowed",
]


class SessionStatus(enum.Enum):
    PENDING = 0
    SCHEDULED = 5
    PULLING = 9
    PREPARING = 10
    RUNNING = 30
    RESTARTING = 31
    RUNNING_DEGRADED = 32
    TERMINATING = 40
    TERMINATED = 41
    ERROR = 42
    CANCELLED = 43


class KernelStatus(enum.Enum):
    """Kernels have BUILDING/RESIZING/SUSPENDED, and no RUNNING_DEGRADED."""

    PENDING = 0
    SCHEDULED = 5
    PREPARING = 10
    BUILDING = 20
    PULLING = 21
    RUNNING = 30
    RESTARTING = 31
    RESIZING = 32
    SUSPENDED = 33
    TERMINATING = 40
    TERMINATED = 41
    ERROR = 42
    CANCELLED = 43


class AgentStatus(enum.Enum):
    ALIVE = 0
    LOST = 1
    RESTARTING = 2
    TERMINATED = 3


S, K = SessionStatus, KernelStatus

DEAD_SESSION_STATUSES = frozenset({S.CANCELLED, S.TERMINATED})
DEAD_KERNEL_STATUSES = frozenset({K.CANCELLED, K.TERMINATED})

AGENT_RESOURCE_OCCUPYING_SESSION_STATUSES = frozenset(S) - {S.TERMINATED, S.PENDING, S.CANCELLED}
AGENT_RESOURCE_OCCUPYING_KERNEL_STATUSES = frozenset(K) - {K.TERMINATED, K.PENDING, K.CANCELLED}
"""ERROR and TERMINATING still hold their agent's slots: the container may still be there."""

USER_RESOURCE_OCCUPYING_SESSION_STATUSES = frozenset(S) - {
    S.TERMINATING,
    S.TERMINATED,
    S.PENDING,
    S.CANCELLED,
}
USER_RESOURCE_OCCUPYING_KERNEL_STATUSES = frozenset(K) - {
    K.TERMINATING,
    K.TERMINATED,
    K.PENDING,
    K.CANCELLED,
}
"""What counts against keypair/group/domain quotas and the concurrency limit."""

RESOURCE_USAGE_KERNEL_STATUSES = frozenset({K.TERMINATED, K.RUNNING})
LIVE_KERNEL_STATUSES = frozenset({K.RUNNING})
"""Idle checks only look at these."""

FOLLOWING_SESSION_STATUSES = frozenset({S.RUNNING, S.TERMINATED})
"""A session reaches these only when every sibling kernel agrees."""
LEADING_SESSION_STATUSES = frozenset(S) - FOLLOWING_SESSION_STATUSES
"""For these, the main kernel's status decides at once."""


E = TypeVar("E", bound=enum.Enum)


def _all_but(universe: type[E], *excluded: E) -> frozenset[E]:
    return frozenset(universe) - set(excluded)


KERNEL_STATUS_TRANSITION_MAP: Mapping[KernelStatus, frozenset[KernelStatus]] = {
    K.PENDING: _all_but(K, K.PENDING, K.TERMINATED),
    K.SCHEDULED: _all_but(K, K.SCHEDULED, K.PENDING, K.TERMINATED),
    **{
        s: _all_but(K, s, K.PENDING, K.SCHEDULED, K.TERMINATED)
        for s in (K.PREPARING, K.BUILDING, K.PULLING, K.RESTARTING, K.RESIZING, K.SUSPENDED)
    },
    K.RUNNING: frozenset({K.RESTARTING, K.RESIZING, K.TERMINATING, K.TERMINATED, K.ERROR}),
    K.TERMINATING: frozenset({K.TERMINATED, K.ERROR}),
    K.TERMINATED: frozenset(),
    K.ERROR: frozenset(),
    K.CANCELLED: frozenset(),
}
"""Guards ordinary kernel updates. Termination (``mark_kernel_terminated``) bypasses it on
purpose, as upstream: it is a separate, idempotent path (see ``kernel_terminated``)."""

SESSION_STATUS_TRANSITION_MAP: Mapping[SessionStatus, frozenset[SessionStatus]] = {
    S.PENDING: _all_but(S, S.PENDING, S.TERMINATED),
    S.SCHEDULED: _all_but(S, S.SCHEDULED, S.PENDING, S.TERMINATED, S.CANCELLED),
    S.PULLING: _all_but(
        S, S.PULLING, S.PENDING, S.SCHEDULED, S.TERMINATING, S.TERMINATED, S.CANCELLED
    ),
    S.PREPARING: _all_but(S, S.PREPARING, S.PENDING, S.SCHEDULED, S.TERMINATED, S.CANCELLED),
    S.RUNNING: frozenset({S.RESTARTING, S.TERMINATING, S.TERMINATED, S.ERROR}),
    S.RESTARTING: _all_but(S, S.RESTARTING, S.PENDING, S.SCHEDULED, S.TERMINATED, S.CANCELLED),
    S.RUNNING_DEGRADED: _all_but(S, S.PENDING, S.SCHEDULED, S.TERMINATED, S.CANCELLED),
    S.TERMINATING: frozenset({S.TERMINATED, S.ERROR}),
    S.TERMINATED: frozenset(),
    S.ERROR: frozenset(),
    S.CANCELLED: frozenset(),
}
"""Quirks kept: RUNNING -> RUNNING_DEGRADED is refused (although ``determine_session_status``
can compute it); PULLING -> TERMINATING is refused ("cannot destroy a PULLING session");
RUNNING_DEGRADED -> RUNNING_DEGRADED is allowed."""

KERNEL_SESSION_STATUS_MAPPING: Mapping[KernelStatus, SessionStatus] = {
    K.PENDING: S.PENDING,
    K.SCHEDULED: S.SCHEDULED,
    K.PREPARING: S.PREPARING,
    K.BUILDING: S.PREPARING,
    K.PULLING: S.PULLING,
    K.RUNNING: S.RUNNING,
    K.RESTARTING: S.RESTARTING,
    K.RESIZING: S.RUNNING,
    K.SUSPENDED: S.ERROR,
    K.TERMINATING: S.TERMINATING,
    K.TERMINATED: S.TERMINATED,
    K.ERROR: S.ERROR,
    K.CANCELLED: S.CANCELLED,
}

SESSION_KERNEL_STATUS_MAPPING: Mapping[SessionStatus, KernelStatus] = {
    s: K[s.name] for s in S if s.name in K.__members__
}
"""The inverse for the ten names both enums share (no RUNNING_DEGRADED)."""


def kernel_transition_allowed(current: KernelStatus, new: KernelStatus) -> bool:
    return new in KERNEL_STATUS_TRANSITION_MAP[current]


def session_transition_allowed(current: SessionStatus, new: SessionStatus) -> bool:
    return new in SESSION_STATUS_TRANSITION_MAP[current]
