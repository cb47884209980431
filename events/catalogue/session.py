"""Session lifecycle events (Backend.AI ``session_*``), written to ``session-<uuid>`` streams."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints

from ._base import EventPayload, JsonObject, Record, RequestedSlots, Short, added_later
from .reasons import KernelLifecycleEventReason

__all__ = [
    "KernelCreationSpec",
    "KernelPlacement",
    "SessionCancelled",
    "SessionCreationSpec",
    "SessionEnqueued",
    "SessionFailure",
    "SessionPreparing",
    "SessionScheduled",
    "SessionStarted",
    "SessionSuccess",
    "SessionTerminated",
    "SessionTerminating",
    "VFolderMountSpec",
]


class _SessionCreationArgs(EventPayload):
    session_id: UUID
    creation_id: str
    reason: str = ""


MAX_KERNELS = 1024
MAX_ENV = 1024
MAX_ENV_NAME = 1024
MAX_ENV_VALUE = 64 * 2**10
MAX_CALLBACK_URL = 8192
MAX_STARTUP_COMMAND = 2**20
"""The log's own bounds on a session's creation (the gateway's are far tighter: 64 kernels,
a 64 KiB startup command); a tenant's request can never make this event unbounded."""


MAX_MOUNTS = 64
"""The log's bound on a session's folder mounts (the gateway allows 16)."""
_Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class VFolderMountSpec(Record):
    """One virtual folder a session's kernels mount: 23.03's ``VFolderMount`` JSON
    (``vfid`` is ``str(VFolderID)`` without a quota scope: the folder id's hex), resolved
    and checked by the gateway (``actors.gateway.mounts``) when the session was created.
    The agent checks it again before binding anything (``actors.agents.vfolder_mounts``)."""

    name: Short
    vfid: _Hex
    vfsubpath: Literal["."] = "."
    """kernelhub mounts whole folders only (a subpath would follow the tenant's links)."""
    host_path: Short
    """``<volume root>/<vfid>`` on the storage host, as the gateway resolved it."""
    kernel_path: Short
    mount_perm: Literal["ro", "rw", "wd"]
    usage_mode: Literal["general", "model", "data"] = "general"


class KernelCreationSpec(Record):
    """One kernel of a new session, as the creation request resolved it."""

    kernel_id: UUID
    cluster_role: Short = "main"
    cluster_idx: int = 1
    local_rank: int = 0
    cluster_hostname: Short = "main1"
    role: Short = "COMPUTE"
    image: Short = ""
    architecture: Short = "x86_64"
    requested_slots: RequestedSlots
    agent: Short | None = None
    """Pre-assigned agent (superadmin ``agent_list``)."""


class SessionCreationSpec(Record):
    """kernelhub: everything about a new session that the read side and the scheduler need."""

    name: Short
    access_key: Short
    user_id: UUID | None = None
    project_id: UUID | None = None
    domain: Short = "default"
    session_type: Literal["interactive", "batch", "inference"] = "interactive"
    image: Short = ""
    architecture: Short = "x86_64"
    cluster_mode: Literal["single-node", "multi-node"] = "single-node"
    cluster_size: int = Field(default=1, ge=1, le=MAX_KERNELS)
    scaling_group: Short
    kernels: list[KernelCreationSpec] = Field(max_length=MAX_KERNELS)
    dependencies: list[UUID] = Field(default=[], max_length=MAX_KERNELS)
    starts_at: datetime | None = None
    startup_command: Annotated[str, StringConstraints(max_length=MAX_STARTUP_COMMAND)] | None = None
    preopen_ports: list[int] | None = Field(
        default=None, max_length=MAX_KERNELS, exclude_if=lambda v: v is None
    )
    """Ports the kernel's apps may listen on, reachable through the app tunnel."""
    environ: (
        Annotated[
            dict[
                Annotated[str, StringConstraints(max_length=MAX_ENV_NAME)],
                Annotated[str, StringConstraints(max_length=MAX_ENV_VALUE)],
            ],
            Field(max_length=MAX_ENV),
        ]
        | None
    ) = added_later()
    """The user's ``environ`` (``-e K=V``), beside the ``BACKENDAI_*`` variables (which it
    may not name: the gateway refuses those)."""
    bootstrap_script: Annotated[str, StringConstraints(max_length=MAX_STARTUP_COMMAND)] | None = (
        added_later()
    )
    """Run once in each kernel before it is RUNNING; a failing script ends the session."""
    resource_opts: dict[Short, int] | None = added_later()
    """Per-kernel options beside the slots, resolved: ``{"shmem": bytes}``."""
    tag: Short | None = added_later()
    callback_url: Annotated[str, StringConstraints(max_length=MAX_CALLBACK_URL)] | None = (
        added_later()
    )
    """Where the session's status changes are POSTed (by the callback follower, from the
    log; the write side never waits on it)."""
    exec_timeout_s: float | None = Field(default=None, ge=0, exclude_if=lambda v: v is None)
    """The longest one execution may run (the keypair policy's or the image's limit);
    ``None`` or 0: none."""
    mounts: Annotated[list[VFolderMountSpec], Field(max_length=MAX_MOUNTS)] | None = added_later()
    """The virtual folders every kernel of the session mounts (``config.mounts``)."""


class KernelPlacement(Record):
    kernel_id: UUID
    agent_id: str
    agent_addr: str | None = None


class SessionEnqueued(_SessionCreationArgs):
    type: Literal["session_enqueued"] = "session_enqueued"
    spec: SessionCreationSpec | None = added_later()


class SessionScheduled(_SessionCreationArgs):
    type: Literal["session_scheduled"] = "session_scheduled"
    scaling_group: str | None = added_later()
    placements: list[KernelPlacement] | None = added_later()
    pass_id: UUID | None = added_later()
    """The scheduling pass that decided it (its ``scheduling_pass`` on the group's ledger)."""


AgentIds = Annotated[list[Short], Field(max_length=MAX_KERNELS)]
"""The agents a session's kernels were placed on, on the events that agents act on: a host
skips a session none of its agents holds without reading the session's stream."""


class SessionPreparing(_SessionCreationArgs):
    type: Literal["session_preparing"] = "session_preparing"
    agents: AgentIds | None = added_later()


class SessionCancelled(_SessionCreationArgs):
    type: Literal["session_cancelled"] = "session_cancelled"
    error: JsonObject | None = added_later()
    """What went wrong (``status_data.error``), when an agent failed to start it."""


class SessionStarted(_SessionCreationArgs):
    type: Literal["session_started"] = "session_started"


class _SessionTerminationArgs(EventPayload):
    session_id: UUID
    reason: str = ""


class SessionTerminating(_SessionTerminationArgs):
    type: Literal["session_terminating"] = "session_terminating"
    agents: AgentIds | None = added_later()
    idle: JsonObject | None = added_later()
    """For a reclaim by the reaper, its evidence: the checker that fired, every checker's
    report, the last access judged on and when it judged (Redis time)."""


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
