"""The session shards' commands: what a caller may ask of a ``session-<uuid>`` stream's owner.

Each command is a frozen value built once by its caller (the gateway, the scheduler, an
agent, the reaper, the liveness monitor, the shard's own reactions), carrying its command id
and the session it is routed by. The router sends it to the owning shard unchanged (and
again, unchanged, when the shard's actor restarts), the Ray shell passes it to
``SessionShard.handle``, and the handler registered there for its type decides. The type
parameter of :class:`ShardCommand` is what ``handle`` returns for it, so
``await client.handle(DestroySession(...))`` is a ``list[AnyPayload]`` to mypy.

A batch (:class:`CreateSessions`, :class:`DestroyManyIfIdle`, :class:`NoteActivities`)
carries a tuple of single-session commands, each with its own id; the router splits it by
owning shard and puts the replies back in order.

Adding a session command is one class here and one ``@_handle.register`` method on
:class:`~actors.sessions.shard.SessionShard`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import ConfigDict, Field, model_validator

from actors.domain.session import ClusterMode, SessionType, session_id_for
from actors.domain.session_aggregate import KernelReport, SessionAggregate
from actors.domain.slots import ResourceSlot
from events.catalogue import AnyPayload, SessionFailure, SessionSchedulingFailed, SessionSuccess
from events.catalogue.reasons import KernelLifecycleEventReason

from . import Command

__all__ = [
    "AgentGone",
    "CreateSession",
    "CreateSessions",
    "Decided",
    "DestroyIfIdle",
    "DestroyManyIfIdle",
    "DestroySession",
    "NoteActivities",
    "NoteActivity",
    "PrepareSession",
    "RecordBatchResult",
    "ReportKernel",
    "ReportKernels",
    "RestartFailed",
    "RestartSession",
    "SchedulingFailed",
    "SessionBatch",
    "SessionClient",
    "SessionCommand",
    "ShardCommand",
    "StartFailed",
    "WarnIdle",
    "WarnIdleMany",
]

R = TypeVar("R")
C = TypeVar("C", bound="SessionCommand[Any]")

Decided = list[AnyPayload]
"""What a session's decision appended (nothing: refused quietly, or a retry of a command
that already took effect)."""


class ShardCommand(Command, Generic[R]):
    """Anything a session shard handles; ``R`` is what handling it returns."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    verb: ClassVar[str] = ""
    """The command's name in the shard's metrics (``kernelhub_session_commands_total``)."""


class SessionCommand(ShardCommand[R], Generic[R]):
    """A command for one session, routed to the shard that owns ``session_id``."""

    routed_by: ClassVar[str | None] = None
    """A field holding an event payload whose session this command is for (then
    ``session_id`` may be left out: it is that payload's)."""

    session_id: uuid.UUID

    @model_validator(mode="before")
    @classmethod
    def _session_of_payload(cls, data: Any) -> Any:
        if not cls.routed_by or not isinstance(data, dict):
            return data
        routed = getattr(data.get(cls.routed_by), "session_id", None)
        if data.get("session_id") is None:
            return {**data, "session_id": routed}
        if routed is not None and routed != data["session_id"]:
            raise ValueError(f"session_id is not the {cls.routed_by}'s session")
        return data


class SessionBatch(ShardCommand[list[R]], Generic[C, R]):
    """Several single-session commands at once (each its own id, possibly for sessions of
    different shards: the router sends each shard its share); one result per item, in
    order."""

    items: tuple[C, ...]


# ---- from users (the gateway, ``kh session``) ----------------------------------------------
class CreateSession(SessionCommand[uuid.UUID]):
    """Enqueue a session (validated first: nothing invalid reaches the log). Its session id,
    unless given, derives from the command id (:func:`~actors.domain.session.session_id_for`),
    so the router knows the owning shard and a retry finds its first attempt."""

    verb: ClassVar[str] = "create"

    session_id: uuid.UUID = Field(default_factory=lambda data: session_id_for(data["command_id"]))
    name: str
    access_key: str
    scaling_group: str
    image: str
    requested: tuple[ResourceSlot, ...]
    cluster_size: int = 1
    cluster_mode: ClusterMode = ClusterMode.SINGLE_NODE
    session_type: SessionType = SessionType.INTERACTIVE
    startup_command: str | None = None
    starts_at: datetime | None = None
    max_containers_per_session: int = 0
    dependencies: tuple[uuid.UUID, ...] = ()
    domain: str = "default"
    user_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    preopen_ports: tuple[int, ...] | None = None
    architecture: str = "x86_64"
    agents: tuple[str, ...] = ()
    """Superadmin ``agent_list``: the agent of each kernel, in order (empty: the scheduler
    chooses)."""
    environ: dict[str, str] | None = None
    bootstrap_script: str | None = None
    resource_opts: dict[str, int] | None = None
    tag: str | None = None
    callback_url: str | None = None
    exec_timeout_s: float | None = None
    mounts: tuple[dict[str, str], ...] = ()
    """The virtual folders to mount, resolved by the gateway (``VFolderMountSpec`` shape:
    ``actors.gateway.mounts``)."""


class CreateSessions(SessionBatch[CreateSession, uuid.UUID]):
    """Enqueue several sessions in one atomic ``append_multi`` per owning shard: a burst of
    submissions costs one round trip per shard, and each shard enqueues all or none."""

    verb: ClassVar[str] = "create_many"


class DestroySession(SessionCommand[Decided]):
    """Destroy a session (cancel it while pending, terminate its kernels once placed).
    Its dependants are the router's to expand (``ShardRouter.destroy_dependants``)."""

    verb: ClassVar[str] = "destroy"

    forced: bool = False
    reason: KernelLifecycleEventReason | None = None
    """One of 23.03's reasons: the kernels' end events carry it, and a reason they cannot
    carry would leave the session TERMINATING for ever (refused here, at the command)."""

    def for_dependant(self, dependant: uuid.UUID) -> DestroySession:
        """The same destroy for a session that depends on this one (``recursive``), its id
        derived from this command's so that a retry repeats none."""
        return self.model_copy(
            update={
                "session_id": dependant,
                "command_id": uuid.uuid5(self.command_id, f"dependant/{dependant}"),
            }
        )


class RestartSession(SessionCommand[Decided]):
    """Restart a RUNNING session's kernels in place (their agents do the work)."""

    verb: ClassVar[str] = "restart"


# ---- the shard's own reactions ---------------------------------------------------------------
class PrepareSession(SessionCommand[Decided]):
    """A scheduled session goes to PREPARING (the shard's reaction to ``session_scheduled``)."""

    verb: ClassVar[str] = "prepare"


# ---- from agents -----------------------------------------------------------------------------
class ReportKernel(SessionCommand[Decided]):
    """A kernel's progress, from its agent (routed by the report's session)."""

    verb: ClassVar[str] = "report"

    routed_by: ClassVar[str | None] = "report"

    report: KernelReport


class ReportKernels(SessionBatch[ReportKernel, Decided]):
    """Several kernel reports in one call, decided in item order, each on its own (its own
    id and append): a kernel its backend starts at once is reported creating and started
    in one hop where two calls were made."""

    verb: ClassVar[str] = "report"


class StartFailed(SessionCommand[Decided]):
    """An agent could not start the session's kernels (``error``: what it saw)."""

    verb: ClassVar[str] = "start_failed"

    error: dict[str, Any] | None = None


class RestartFailed(SessionCommand[Decided]):
    """An agent could not restart the session's kernels."""

    verb: ClassVar[str] = "restart_failed"

    msg: str


class RecordBatchResult(SessionCommand[Decided]):
    """A batch session's main kernel exited: its result, from the agent."""

    verb: ClassVar[str] = "batch_result"

    routed_by: ClassVar[str | None] = "result"

    result: SessionSuccess | SessionFailure


# ---- from the scheduler and the liveness monitor ---------------------------------------------
class SchedulingFailed(SessionCommand[Decided]):
    """The scheduler's pass could not place the session (appended when it changes)."""

    verb: ClassVar[str] = "scheduling_failed"

    routed_by: ClassVar[str | None] = "failure"

    failure: SessionSchedulingFailed


class AgentGone(SessionCommand[Decided]):
    """A lost agent's ``terminate_after`` ran out (see ``decide_agent_gone``)."""

    verb: ClassVar[str] = "agent_gone"

    agent_id: str


# ---- from the reaper -------------------------------------------------------------------------
class DestroyIfIdle(SessionCommand[Decided]):
    """The reaper's destroy, re-checked by the shard: for ``idle-timeout``, a session touched
    after ``judged_access`` (the last access the reaper judged on) is left alone; lifetime
    and utilization reclaims go ahead. ``evidence`` is recorded on ``session_terminating``."""

    verb: ClassVar[str] = "destroy_if_idle"

    reason: str
    judged_access: float | None = None
    evidence: dict[str, Any] | None = None


class DestroyManyIfIdle(SessionBatch[DestroyIfIdle, Decided]):
    """Several :class:`DestroyIfIdle`: the latest accesses in one read, the destroys in one
    ``append_multi`` per shard."""

    verb: ClassVar[str] = "destroy_if_idle"


class NoteActivity(SessionCommand[Decided]):
    """The reaper's coalesced activity note: one ``session_activity`` for a running session
    used (last at ``last_access``) since its last note."""

    verb: ClassVar[str] = "note_activity"

    last_access: float


class NoteActivities(SessionBatch[NoteActivity, Decided]):
    """Several :class:`NoteActivity` in one ``append_multi`` per shard."""

    verb: ClassVar[str] = "note_activity"


class WarnIdle(SessionCommand[Decided]):
    """The reaper's warning: ``checker`` reclaims the session at ``deadline`` (Redis time)
    unless something changes; one ``session_idle_warning`` per checker and deadline."""

    verb: ClassVar[str] = "warn_idle"

    checker: Literal["network_timeout", "session_lifetime"]
    reason: Literal["idle-timeout", "idle-session-lifetime"]
    deadline: float = Field(ge=0, le=1e11)
    remaining: float = Field(ge=0, le=1e10)
    last_access: float | None = Field(default=None, ge=0, le=1e11)


class WarnIdleMany(SessionBatch[WarnIdle, Decided]):
    """Several :class:`WarnIdle` in one ``append_multi`` per shard."""

    verb: ClassVar[str] = "warn_idle"


class SessionClient(Protocol):
    """What a caller needs of the session shards: the shard itself in one process
    (``SessionShard``), the router to their actors on Ray (``ShardRouter``)."""

    async def handle(self, command: ShardCommand[R]) -> R:
        """Deliver ``command`` to the shard that owns its session (each item's, for a
        batch); a retry of the same value has one effect."""
        ...

    async def get(self, session_id: uuid.UUID) -> SessionAggregate:
        """The session folded from its stream, up to date when the call was made."""
        ...

    async def load(self, session_id: uuid.UUID) -> SessionAggregate:
        """The session freshly folded from its stream: a copy of the caller's own, which the
        shard never changes afterwards (an agent keeps it while it starts kernels)."""
        ...
