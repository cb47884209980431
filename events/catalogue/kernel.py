"""Kernel lifecycle events (Backend.AI ``kernel_*``), written to the owning session's stream.

Field names and defaults follow 23.03's ``KernelCreationEventArgs`` and
``KernelTerminationEventArgs``; ``kernel_pull_progress`` is telemetry, not a log event.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from ._base import EventPayload, JsonObject
from .reasons import KernelLifecycleEventReason

__all__ = [
    "KernelCancelled",
    "KernelCreating",
    "KernelPreparing",
    "KernelPulling",
    "KernelStarted",
    "KernelTerminated",
    "KernelTerminating",
]


class _KernelCreationArgs(EventPayload):
    kernel_id: UUID
    session_id: UUID
    reason: str = ""
    creation_info: JsonObject = Field(default_factory=dict)


class KernelPreparing(_KernelCreationArgs):
    type: Literal["kernel_preparing"] = "kernel_preparing"


class KernelPulling(_KernelCreationArgs):
    """Only when the image has to be pulled; ``reason`` is the image's canonical name."""

    type: Literal["kernel_pulling"] = "kernel_pulling"


class KernelCreating(_KernelCreationArgs):
    type: Literal["kernel_creating"] = "kernel_creating"


class KernelStarted(_KernelCreationArgs):
    """``creation_info`` is the KernelCreationResult (string ids, ports, container id)."""

    type: Literal["kernel_started"] = "kernel_started"


class KernelCancelled(_KernelCreationArgs):
    type: Literal["kernel_cancelled"] = "kernel_cancelled"


class _KernelTerminationArgs(EventPayload):
    kernel_id: UUID
    session_id: UUID
    reason: KernelLifecycleEventReason = KernelLifecycleEventReason.UNKNOWN
    exit_code: int = -1


class KernelTerminating(_KernelTerminationArgs):
    type: Literal["kernel_terminating"] = "kernel_terminating"


class KernelTerminated(_KernelTerminationArgs):
    type: Literal["kernel_terminated"] = "kernel_terminated"
