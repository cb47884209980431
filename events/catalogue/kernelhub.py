"""kernelhub's own events: facts Backend.AI keeps in database rows rather than events.

Upstream updates rows in place (agent capacity, the scheduler's attempt bookkeeping, agent
``occupied_slots``); an event-sourced system has to say these things in the log. Names
follow the upstream style (``<aggregate>_<past participle>``).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from ._base import EventPayload, JsonObject, Record, Slots, added_later

__all__ = [
    "AgentRegistered",
    "AllocReleased",
    "AllocReserved",
    "AllocSettled",
    "Allocation",
    "PredicateFailure",
    "SessionActivity",
    "SessionIdleWarning",
    "SessionSchedulingFailed",
    "SessionStatusChanged",
]


class SessionStatusChanged(EventPayload):
    """A session status change that has no upstream event of its own (RESTARTING,
    RUNNING_DEGRADED, ERROR, back to RUNNING after a restart)."""

    type: Literal["session_status_changed"] = "session_status_changed"
    session_id: UUID
    status: Literal["RESTARTING", "RUNNING", "RUNNING_DEGRADED", "ERROR"]
    status_info: str = ""
    status_data: JsonObject | None = None


class SessionActivity(EventPayload):
    """A running session was used since the last such event (coalesced: activity itself is
    telemetry, touched on every execution and app connection; the reaper notes the latest
    access it judged on, at most once per judgment). Upstream keeps only a Redis key."""

    type: Literal["session_activity"] = "session_activity"
    session_id: UUID
    last_access: float
    """When the session was last used (Redis time, unix seconds)."""


class SessionIdleWarning(EventPayload):
    """An idle or lifetime checker will reclaim the session soon unless something changes
    (docs/idle.md, "Warnings"): appended once per checker and deadline, the configured lead
    time before it. Activity after it moves an idle deadline as usual (a lifetime does not
    move). Backend.AI has no such event (its request for one is open)."""

    type: Literal["session_idle_warning"] = "session_idle_warning"
    session_id: UUID
    checker: Literal["network_timeout", "session_lifetime"]
    reason: Literal["idle-timeout", "idle-session-lifetime"]
    """The reclaim's reason, as its ``session_terminating`` would say it."""
    deadline: float = Field(ge=0, le=1e11)
    """When the checker would reclaim it (Redis time, unix seconds)."""
    remaining: float = Field(ge=0, le=1e10)
    """Seconds left when the warning was judged."""
    last_access: float | None = Field(default=None, ge=0, le=1e11)
    """The last activity the judgment saw (the network timer's start)."""


class PredicateFailure(Record):
    name: str
    msg: str = ""


class SessionSchedulingFailed(EventPayload):
    """A scheduling attempt left the session PENDING. Appended only when what the user would
    see changes (the failure set or the message); retries between live in telemetry."""

    type: Literal["session_scheduling_failed"] = "session_scheduling_failed"
    session_id: UUID
    status_info: Literal["predicate-checks-failed", "no-available-instances", "scheduler-error"]
    retries: int = Field(ge=0)
    failed_predicates: list[PredicateFailure] = []
    passed_predicates: list[str] = []
    msg: str | None = None


class AgentRegistered(EventPayload):
    """An agent's registration facts, appended when it first appears and whenever they
    change (capacity, scaling group, address, ...). Heartbeats themselves are telemetry."""

    type: Literal["agent_registered"] = "agent_registered"
    agent_id: str
    scaling_group: str = "default"
    architecture: str = "x86_64"
    available_slots: Slots
    addr: str = ""
    public_host: str | None = None
    region: str | None = None
    version: str = ""
    schedulable: bool = True
    compute_plugins: JsonObject = Field(default_factory=dict)
    isolation: str | None = added_later()
    """What its backend isolates: ``container`` (docker), ``none`` (process: kernels run as
    the agent's uid on the host), ``simulated`` (sim); unset from agents predating it."""


class Allocation(Record):
    kernel_id: UUID
    agent_id: str
    slots: Slots
    free_before: Slots
    """The agent's free capacity at decision time: the ledger invariant's evidence."""


class AllocReserved(EventPayload):
    """The scheduler reserved slots for a session (stream ``alloc-<scaling group>``)."""

    type: Literal["alloc_reserved"] = "alloc_reserved"
    session_id: UUID
    scaling_group: str
    allocations: list[Allocation]


class AllocSettled(EventPayload):
    """A kernel started: its hold becomes what the agent actually allocated."""

    type: Literal["alloc_settled"] = "alloc_settled"
    session_id: UUID
    kernel_id: UUID
    agent_id: str
    actual: Slots


class AllocReleased(EventPayload):
    """A kernel ended (or its session was cancelled after scheduling): its hold is freed."""

    type: Literal["alloc_released"] = "alloc_released"
    session_id: UUID
    kernel_id: UUID
    agent_id: str
    slots: Slots
