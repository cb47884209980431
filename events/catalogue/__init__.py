"""The event catalogue: every kind of fact kernelhub's log may hold.

Names and fields are Backend.AI 23.03's (``ai.backend.common.events``), so people who know
Backend.AI read our log without a glossary. Only *state* events are log events. These upstream
events are deliberately **not** in the catalogue:

* commands — ``do_schedule``, ``do_prepare``, ``do_scale``, ``do_idle_check``,
  ``do_terminate_session``, ``do_sync_kernel_logs``: in kernelhub they are Ray actor calls
  carrying a ``command_id``; their *effects* are events.
* telemetry — ``agent_heartbeat``, ``kernel_pull_progress``, ``execution_started``,
  ``execution_finished``, ``execution_timeout``, ``execution_cancelled``,
  ``bgtask_updated``: high-rate samples live in TTL'd telemetry keys; what is derived from
  them and matters (an agent lost, a session idle since T) becomes an event.

kernelhub's own events (``events.catalogue.kernelhub``) say what upstream keeps in rows:
agent registration, ledger reservations, scheduling attempts, status changes without an
upstream event.

Adding an event: define a payload class with a ``Literal`` ``type`` in the module of its
aggregate, add it to ``_PAYLOAD_CLASSES`` below, add a file to ``tests/fixtures/events/``.
Changing one: add optional fields only; anything else bumps ``SCHEMA_VERSION`` and registers
an upcaster (``events.upcasting``).
"""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args

from pydantic import Field, TypeAdapter

from ..secrets import REDACTED, is_secret_field
from ._base import EventPayload, JsonObject, Slots
from .agent import AgentError, AgentStarted, AgentTerminated
from .audit import LogCheckpointed
from .bgtask import BgtaskCancelled, BgtaskDone, BgtaskFailed
from .endpoint import (
    EndpointCreated,
    EndpointDestroyed,
    EndpointDestroying,
    EndpointRouteAdded,
    EndpointRouteRemoved,
    EndpointRouteStatusChanged,
    EndpointScaled,
    EndpointTokenIssued,
    EndpointTrafficRatioChanged,
)
from .kernel import (
    KernelCancelled,
    KernelCreating,
    KernelPreparing,
    KernelPulling,
    KernelStarted,
    KernelTerminated,
    KernelTerminating,
)
from .kernelhub import (
    AgentRegistered,
    Allocation,
    AllocReleased,
    AllocReserved,
    AllocSettled,
    PredicateFailure,
    SessionActivity,
    SessionIdleWarning,
    SessionSchedulingFailed,
    SessionStatusChanged,
)
from .reasons import KernelLifecycleEventReason, LogSeverity
from .scheduling import SchedulingPass, StartsEstimated
from .session import (
    KernelCreationSpec,
    KernelPlacement,
    SessionCancelled,
    SessionCreationSpec,
    SessionEnqueued,
    SessionFailure,
    SessionPreparing,
    SessionScheduled,
    SessionStarted,
    SessionSuccess,
    SessionTerminated,
    SessionTerminating,
)
from .tenancy import (
    DomainCreated,
    DomainPurged,
    DomainUpdated,
    ImageAliasRemoved,
    ImageAliasSet,
    ImageRegistered,
    KeypairDeleted,
    KeypairIssued,
    KeypairPolicyDeleted,
    KeypairPolicySet,
    KeypairUpdated,
    ManagerStatusSet,
    ProjectCreated,
    ProjectMemberAdded,
    ProjectMemberRemoved,
    ProjectPurged,
    ProjectUpdated,
    ResourcePresetDeleted,
    ResourcePresetSet,
    ScalingGroupAssociated,
    ScalingGroupDeleted,
    ScalingGroupDissociated,
    ScalingGroupSet,
    UserCreated,
    UserPurged,
    UserUpdated,
)
from .vfolder import (
    VFolderCreated,
    VFolderInvitationAnswered,
    VFolderInvited,
    VFolderPurged,
    VFolderRenamed,
    VFolderRestored,
    VFolderShared,
    VFolderTrashed,
    VFolderUnshared,
    VFolderUpdated,
)

AnyPayload = Annotated[
    Union[  # noqa: UP007 - a discriminated union reads best spelled out
        AgentStarted,
        AgentTerminated,
        AgentError,
        KernelPreparing,
        KernelPulling,
        KernelCreating,
        KernelStarted,
        KernelCancelled,
        KernelTerminating,
        KernelTerminated,
        SessionEnqueued,
        SessionScheduled,
        SessionPreparing,
        SessionCancelled,
        SessionStarted,
        SessionTerminating,
        SessionTerminated,
        SessionSuccess,
        SessionFailure,
        BgtaskDone,
        BgtaskCancelled,
        BgtaskFailed,
        SessionStatusChanged,
        SessionSchedulingFailed,
        SessionActivity,
        SessionIdleWarning,
        AgentRegistered,
        AllocReserved,
        AllocSettled,
        AllocReleased,
        SchedulingPass,
        StartsEstimated,
        LogCheckpointed,
        DomainCreated,
        DomainUpdated,
        ProjectCreated,
        ProjectUpdated,
        ProjectMemberAdded,
        ProjectMemberRemoved,
        UserCreated,
        UserUpdated,
        KeypairIssued,
        KeypairUpdated,
        KeypairPolicySet,
        ResourcePresetSet,
        ManagerStatusSet,
        ScalingGroupSet,
        ScalingGroupAssociated,
        ScalingGroupDissociated,
        ImageRegistered,
        ImageAliasSet,
        DomainPurged,
        ProjectPurged,
        UserPurged,
        KeypairDeleted,
        KeypairPolicyDeleted,
        ResourcePresetDeleted,
        ScalingGroupDeleted,
        ImageAliasRemoved,
        VFolderCreated,
        VFolderRenamed,
        VFolderUpdated,
        VFolderTrashed,
        VFolderRestored,
        VFolderPurged,
        VFolderInvited,
        VFolderInvitationAnswered,
        VFolderShared,
        VFolderUnshared,
        EndpointCreated,
        EndpointScaled,
        EndpointRouteAdded,
        EndpointRouteStatusChanged,
        EndpointRouteRemoved,
        EndpointTrafficRatioChanged,
        EndpointTokenIssued,
        EndpointDestroying,
        EndpointDestroyed,
    ],
    Field(discriminator="type"),
]
"""Any payload of the catalogue, told apart by its ``type``."""

_PAYLOAD_CLASSES: tuple[type[EventPayload], ...] = get_args(get_args(AnyPayload)[0])

PAYLOAD_TYPES: dict[str, type[EventPayload]] = {
    cls.model_fields["type"].default: cls for cls in _PAYLOAD_CLASSES
}
"""Event name -> payload class, for every type in the catalogue."""

PAYLOAD_ADAPTER: TypeAdapter[AnyPayload] = TypeAdapter(AnyPayload)

SECRET_FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(
        f for f, info in cls.model_fields.items() if is_secret_field(info.json_schema_extra)
    )
    for name, cls in PAYLOAD_TYPES.items()
}
"""Event type -> the data fields that hold ciphertext."""


def redact(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with every secret field replaced by ``***`` (for tail, show and export)."""
    secret = SECRET_FIELDS.get(event_type)
    if not secret:
        return data
    return {k: (REDACTED if k in secret else v) for k, v in data.items()}


__all__ = [
    "PAYLOAD_ADAPTER",
    "PAYLOAD_TYPES",
    "AgentError",
    "AgentRegistered",
    "AgentStarted",
    "AgentTerminated",
    "AllocReleased",
    "AllocReserved",
    "AllocSettled",
    "Allocation",
    "AnyPayload",
    "BgtaskCancelled",
    "BgtaskDone",
    "BgtaskFailed",
    "DomainCreated",
    "DomainPurged",
    "DomainUpdated",
    "EndpointCreated",
    "EndpointDestroyed",
    "EndpointDestroying",
    "EndpointRouteAdded",
    "EndpointRouteRemoved",
    "EndpointRouteStatusChanged",
    "EndpointScaled",
    "EndpointTokenIssued",
    "EndpointTrafficRatioChanged",
    "EventPayload",
    "ImageAliasRemoved",
    "ImageAliasSet",
    "ImageRegistered",
    "JsonObject",
    "KernelCancelled",
    "KernelCreating",
    "KernelCreationSpec",
    "KernelLifecycleEventReason",
    "KernelPlacement",
    "KernelPreparing",
    "KernelPulling",
    "KernelStarted",
    "KernelTerminated",
    "KernelTerminating",
    "KeypairDeleted",
    "KeypairIssued",
    "KeypairPolicyDeleted",
    "KeypairPolicySet",
    "KeypairUpdated",
    "LogCheckpointed",
    "LogSeverity",
    "ManagerStatusSet",
    "PredicateFailure",
    "ProjectCreated",
    "ProjectMemberAdded",
    "ProjectMemberRemoved",
    "ProjectPurged",
    "ProjectUpdated",
    "ResourcePresetDeleted",
    "ResourcePresetSet",
    "ScalingGroupAssociated",
    "ScalingGroupDeleted",
    "ScalingGroupDissociated",
    "ScalingGroupSet",
    "SchedulingPass",
    "SessionActivity",
    "SessionCancelled",
    "SessionCreationSpec",
    "SessionEnqueued",
    "SessionFailure",
    "SessionIdleWarning",
    "SessionPreparing",
    "SessionScheduled",
    "SessionSchedulingFailed",
    "SessionStarted",
    "SessionStatusChanged",
    "SessionSuccess",
    "SessionTerminated",
    "SessionTerminating",
    "Slots",
    "StartsEstimated",
    "UserCreated",
    "UserPurged",
    "UserUpdated",
    "VFolderCreated",
    "VFolderInvitationAnswered",
    "VFolderInvited",
    "VFolderPurged",
    "VFolderRenamed",
    "VFolderRestored",
    "VFolderShared",
    "VFolderTrashed",
    "VFolderUnshared",
    "VFolderUpdated",
    "redact",
]
