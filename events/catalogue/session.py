"""Session lifecycle events (Backend.AI ``session_*``), written to ``session-<uuid>`` streams."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from ._base import EventPayload
from .reasons import KernelLifecycleEventReason

__all__ = [
    "SessionCancelled",
    "SessionEnqueued",
    "SessionFailure",
    "SessionPreparing",
    "SessionScheduled",
    "SessionStarted",
    "SessionSuccess",
    "SessionTerminated",
    "SessionTerminating",
]


class _SessionCreationArgs(EventPayload):
    session_id: UUID
    creation_id: str
    reason: str = ""


class SessionEnqueued(_SessionCreationArgs):
    type: Literal["session_enqueued"] = "session_enqueued"


class SessionScheduled(_SessionCreationArgs):
    type: Literal["session_scheduled"] = "session_scheduled"


class SessionPreparing(_SessionCreationArgs):
    type: Literal["session_preparing"] = "session_preparing"


class SessionCancelled(_SessionCreationArgs):
    type: Literal["session_cancelled"] = "session_cancelled"


class SessionStarted(_SessionCreationArgs):
    type: Literal["session_started"] = "session_started"


class _SessionTerminationArgs(EventPayload):
    session_id: UUID
    reason: str = ""


class SessionTerminating(_SessionTerminationArgs):
    type: Literal["session_terminating"] = "session_terminating"


class SessionTerminated(_SessionTerminationArgs):
    type: Literal["session_terminated"] = "session_terminated"


class _SessionResultArgs(EventPayload):
    session_id: UUID
    reason: KernelLifecycleEventReason = KernelLifecycleEventReason.UNKNOWN
    exit_code: int = -1


class SessionSuccess(_SessionResultArgs):
    """A batch session's main command exited 0 (``task-done``)."""

    type: Literal["session_success"] = "session_success"


class SessionFailure(_SessionResultArgs):
    """A batch session failed: ``task-failed`` (with the exit code), or
    ``task-timeout`` / ``task-cancelled`` (exit code -2)."""

    type: Literal["session_failure"] = "session_failure"
