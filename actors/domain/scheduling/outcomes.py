"""What a scheduling pass appends for its outcomes, and the command ids that make each
append idempotent.

A placement is one ``append_multi``: the reservation on the group's ledger and
``session_scheduled`` on the session's stream, under command ids derived from the session
and the stream version the decision was made at (a retry of the same decision is the same
command). A failure is reported to the session's shard as ``session_scheduling_failed``.
The scheduler also follows the statuses of the sessions holding slots (:func:`status_after`).
"""

from __future__ import annotations

import uuid

from events.catalogue import (
    Allocation,
    AllocReserved,
    AnyPayload,
    KernelPlacement,
    PredicateFailure,
    SessionScheduled,
    SessionSchedulingFailed,
    SessionStatusChanged,
)

from ..statuses import SessionStatus
from .ledger import Reservation
from .schedule import FailedAttempt

__all__ = [
    "failure_report",
    "placement_events",
    "scheduled_command_id",
    "session_command_id",
    "status_after",
]


def scheduled_command_id(session_id: uuid.UUID, version: int) -> uuid.UUID:
    """The command id of a placement decided at the session stream's ``version``."""
    return uuid.uuid5(session_id, f"scheduled@{version}")


def session_command_id(scheduled: uuid.UUID) -> uuid.UUID:
    """The command id of a placement's ``session_scheduled`` (its session-stream part)."""
    return uuid.uuid5(scheduled, "session")


def placement_events(
    reservation: Reservation,
    scaling_group: str,
    creation_id: str,
    *,
    pass_id: uuid.UUID | None = None,
) -> tuple[AllocReserved, SessionScheduled]:
    """A placement as the log records it: the ledger's reservation (with each agent's free
    capacity at decision time) and the session's ``session_scheduled`` (naming the pass)."""
    reserved = AllocReserved(
        session_id=reservation.session_id,
        scaling_group=scaling_group,
        allocations=[
            Allocation(
                kernel_id=a.kernel_id,
                agent_id=a.agent_id,
                slots=dict(a.slots),
                free_before=dict(a.free_before),
            )
            for a in reservation.allocations
        ],
    )
    scheduled = SessionScheduled(
        session_id=reservation.session_id,
        creation_id=creation_id,
        reason="scheduled",
        scaling_group=scaling_group,
        placements=[
            KernelPlacement(kernel_id=a.kernel_id, agent_id=a.agent_id)
            for a in reservation.allocations
        ],
        pass_id=pass_id,
    )
    return reserved, scheduled


def failure_report(failure: FailedAttempt, retries: int) -> SessionSchedulingFailed:
    """A failed attempt as its session's ``session_scheduling_failed``."""
    return SessionSchedulingFailed(
        session_id=failure.session_id,
        status_info=failure.status_info,
        retries=retries,
        failed_predicates=[PredicateFailure(name=n, msg=m) for n, m in failure.failed_predicates],
        passed_predicates=list(failure.passed_predicates),
        msg=failure.msg,
    )


_STATUS_AFTER = {
    "session_started": SessionStatus.RUNNING,
    "session_terminating": SessionStatus.TERMINATING,
    "session_terminated": SessionStatus.TERMINATED,
    "session_cancelled": SessionStatus.CANCELLED,
}


def status_after(payload: AnyPayload) -> SessionStatus | None:
    """A session's status after one of its events (``None``: the event does not say)."""
    if isinstance(payload, SessionStatusChanged):
        return SessionStatus[payload.status]
    return _STATUS_AFTER.get(payload.type)
