"""What destroying a session does, by its status and its kernels' (23.03's ``destroy_session``).

Returns the events to append; the session shard appends them as one decision. Kernels that
need the agent to stop a container are left TERMINATING; the agent's ``kernel_terminated``
report finishes them (and ``transit_session_status`` the session).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from events.catalogue import (
    AnyPayload,
    KernelCancelled,
    KernelLifecycleEventReason,
    KernelTerminated,
    KernelTerminating,
    SessionCancelled,
    SessionTerminating,
)
from events.catalogue._base import MAX_SHORT

from .errors import GenericForbidden
from .lifecycle import DEFAULT_ROLE
from .statuses import DEAD_SESSION_STATUSES, KernelStatus, SessionStatus

__all__ = ["DestroyPlan", "KernelView", "plan_destroy"]

_ONLY_FORCED_SESSION = frozenset(
    {
        SessionStatus.SCHEDULED,
        SessionStatus.PREPARING,
        SessionStatus.TERMINATING,
        SessionStatus.ERROR,
    }
)
_FORCED_STRAIGHT_TO_TERMINATED = frozenset(
    {KernelStatus.SCHEDULED, KernelStatus.PREPARING, KernelStatus.TERMINATING, KernelStatus.ERROR}
)


def named_agents(agents: Iterable[str | None]) -> list[str] | None:
    """The agents to name on an event agents act on (``session_preparing``,
    ``session_terminating``), or ``None`` when an id is past the log's bound (registration
    does not bound it): hosts then read the session's stream, as they do for events written
    before the field existed."""
    named = sorted({agent for agent in agents if agent})
    return None if any(len(agent) > MAX_SHORT for agent in named) else named


@dataclass(frozen=True, slots=True)
class KernelView:
    kernel_id: uuid.UUID
    status: KernelStatus
    cluster_role: str = DEFAULT_ROLE
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class DestroyPlan:
    session_status: SessionStatus | None
    """The session's new status; ``None`` when it had ended already (nothing to do)."""
    kernel_statuses: dict[uuid.UUID, KernelStatus]
    events: list[AnyPayload]
    reason: str


def plan_destroy(
    session_id: uuid.UUID,
    creation_id: str,
    status: SessionStatus,
    kernels: Sequence[KernelView],
    *,
    forced: bool = False,
    reason: str | None = None,
) -> DestroyPlan:
    why = reason or (
        KernelLifecycleEventReason.FORCE_TERMINATED
        if forced
        else KernelLifecycleEventReason.USER_REQUESTED
    )
    if status in DEAD_SESSION_STATUSES:
        return DestroyPlan(None, {}, [], why)
    if status is SessionStatus.PULLING or any(k.status is KernelStatus.PULLING for k in kernels):
        raise GenericForbidden("Cannot destroy sessions in pulling status")
    if status in _ONLY_FORCED_SESSION and not forced:
        raise GenericForbidden(
            f"Cannot destroy sessions in {status.name.lower()} status unless forced"
        )

    events: list[AnyPayload] = []
    kernel_statuses: dict[uuid.UUID, KernelStatus] = {}
    if status is SessionStatus.PENDING:
        for kernel in kernels:
            kernel_statuses[kernel.kernel_id] = KernelStatus.CANCELLED
            events.append(
                KernelCancelled(kernel_id=kernel.kernel_id, session_id=session_id, reason=why)
            )
        # B9 (docs/upstream.md): the creation id comes from the session itself, so a waiting
        # create call wakes up
        events.append(SessionCancelled(session_id=session_id, creation_id=creation_id, reason=why))
        return DestroyPlan(SessionStatus.CANCELLED, kernel_statuses, events, why)

    agents = named_agents(k.agent for k in kernels)
    events.append(SessionTerminating(session_id=session_id, reason=why, agents=agents))
    termination_reason = (
        KernelLifecycleEventReason.from_value(why) or KernelLifecycleEventReason.UNKNOWN
    )
    for kernel in kernels:
        if kernel.status in (KernelStatus.TERMINATED, KernelStatus.CANCELLED):
            continue
        if forced and kernel.status in _FORCED_STRAIGHT_TO_TERMINATED:
            kernel_statuses[kernel.kernel_id] = KernelStatus.TERMINATED
            events.append(
                KernelTerminated(
                    kernel_id=kernel.kernel_id, session_id=session_id, reason=termination_reason
                )
            )
        else:
            kernel_statuses[kernel.kernel_id] = KernelStatus.TERMINATING
            events.append(
                KernelTerminating(
                    kernel_id=kernel.kernel_id, session_id=session_id, reason=termination_reason
                )
            )
    return DestroyPlan(SessionStatus.TERMINATING, kernel_statuses, events, why)
