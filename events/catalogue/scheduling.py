"""What the scheduler records about its own reasoning: the inputs of each pass that decided
something (``kh replay decisions`` runs the policy on them again) and the start times it
expects for the sessions still waiting (``estimatedStartAt``).

Neither has an upstream counterpart: Backend.AI keeps neither. Everything here is bounded
(a pass with more than the log records per pass says so instead of writing megabytes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from ._base import EventPayload, JsonObject, Record, Short, Slots, added_later

__all__ = [
    "AgentAt",
    "DemandCount",
    "DependencyResult",
    "FairUsageAt",
    "HolderStatus",
    "OwnerLimits",
    "SchedulingPass",
    "StartEstimate",
    "StartsEstimated",
]

MAX_PASS_SESSIONS = 2000
"""Pending sessions (and each other per-session list) a pass event records; a pass that
saw more records none of them and is named unreplayable (``recorded: false``)."""
MAX_PASS_AGENTS = 10_000
MAX_PASS_OWNERS = 1000
MAX_DEMAND_TYPES = 1000
MAX_FAIR_USAGE = 4000
"""Users and projects a ``fair_share`` pass records the decayed usage of."""
MAX_ESTIMATES = 1000
"""Estimates one ``starts_estimated`` event carries (a longer queue: several events)."""


class AgentAt(Record):
    """An agent as the pass saw it: its stream's version (its registration and status then)."""

    agent_id: Short
    version: int = Field(ge=0)


class OwnerLimits(Record):
    access_key: Short
    project_id: UUID | None = None
    domain: Short = ""
    limits: JsonObject | None = None
    """What the tenancy read model said (resource policy, domain and project slots)."""


class DependencyResult(Record):
    session_id: UUID
    name: Short
    result: Short


class HolderStatus(Record):
    """A session holding slots whose status was other than running-like (TERMINATING)."""

    session_id: UUID
    status: Short


class DemandCount(Record):
    slots: Slots
    count: int = Field(ge=1, le=MAX_DEMAND_TYPES)


class FairUsageAt(Record):
    """One user's (access key) or project's decayed usage as a ``fair_share`` pass saw it."""

    kind: Literal["user", "project"]
    name: Short
    usage: float = Field(ge=0, le=1e30)


class SchedulingPass(EventPayload):
    """The inputs of a scheduling pass that placed sessions (stream ``pass-<group>``),
    appended with its first reservation (one ``append_multi``: the record and the decisions
    land together or not at all, the record first). What the log holds anyway is named,
    not copied: the ledger (at ``ledger_version``), the sessions' specs (their
    ``session_enqueued``), the agents (their stream versions, listed when they changed
    since the ``chain``'s last pass). What only the scheduler's memory held is copied:
    the pending set, retries, round-robin's turn, the demand mix, the limits read through
    a cache."""

    type: Literal["scheduling_pass"] = "scheduling_pass"
    pass_id: UUID
    chain: UUID
    """The scheduler instance: ``agents`` is relative to the chain's previous pass."""
    scaling_group: Short
    position: Short
    """The log position the pass's read models had reached."""
    ledger_version: int = Field(ge=0)
    """The group's ledger stream version the pass planned on (its decisions follow it)."""
    now: datetime
    scheduler: Short
    scheduler_config: JsonObject = Field(default_factory=dict)
    agent_selector: Short | None = None
    pending_timeout: float = Field(default=0.0, ge=0)
    recorded: bool = True
    """False: the pass saw more than the lists below may hold; replay names it, no more."""
    pending: list[UUID] = Field(default_factory=list, max_length=MAX_PASS_SESSIONS)
    skipping: list[UUID] = Field(default_factory=list, max_length=MAX_PASS_SESSIONS)
    """Pending sessions that had failed ``num_retries_to_skip`` times (FIFO lets others by)."""
    holders: list[HolderStatus] = Field(default_factory=list, max_length=MAX_PASS_SESSIONS)
    absent: list[UUID] = Field(default_factory=list, max_length=MAX_PASS_SESSIONS)
    """Sessions the ledger held that the pass did not count (seen ended, not yet released)."""
    round_robin_last: Short | None = None
    agents: list[AgentAt] = Field(default_factory=list, max_length=MAX_PASS_AGENTS)
    agents_full: bool = False
    """``agents`` lists every agent (the chain's first pass), not only those that changed."""
    owners: list[OwnerLimits] = Field(default_factory=list, max_length=MAX_PASS_OWNERS)
    dependencies: list[DependencyResult] = Field(default_factory=list, max_length=MAX_PASS_SESSIONS)
    demand: list[DemandCount] | None = Field(default=None, max_length=MAX_DEMAND_TYPES)
    decisions: int = Field(ge=0)
    """How many sessions it placed (a replay that places another number disagrees)."""
    fair_usage: Annotated[list[FairUsageAt], Field(max_length=MAX_FAIR_USAGE)] | None = (
        added_later()
    )
    """``fair_share``: the decayed usage it ranked by (read through the sessions read model),
    and when (``fair_usage_at``, Redis time, s)."""
    fair_usage_at: float | None = added_later()


class StartEstimate(Record):
    session_id: UUID
    at: datetime | None
    """When it is expected to be placed (None: not within what the scheduler can foresee)."""
    earliest: datetime | None = None
    latest: datetime | None = None
    basis: Literal["history", "limit", "default"] = "default"
    """Where the run times it assumed came from (see docs/whatif.md)."""


class StartsEstimated(EventPayload):
    """Start-time estimates for pending sessions (stream ``estimate-<group>``), appended
    when a session is first estimated and when its estimate moves."""

    type: Literal["starts_estimated"] = "starts_estimated"
    scaling_group: Short
    estimates: list[StartEstimate] = Field(max_length=MAX_ESTIMATES)
