"""A scheduling pass as the log records it, and the same pass run again from that record.

The scheduler appends one ``scheduling_pass`` with the first reservation of every pass that
placed sessions (:func:`record_pass`); ``kh replay decisions`` rebuilds the pass's inputs
from it and from the log, and runs the policy again (:func:`replay_pass`). The two halves
live together so that what is recorded and what a replay reads cannot drift apart.

What the log already holds is named, not copied: the ledger is the group's stream before
the record, each session's request is its ``session_enqueued``, each agent is its stream at
a version. What lived only in the scheduler's memory is copied: which sessions were pending,
which had failed often enough for FIFO to let others by, which holders were not running,
round-robin's turn, the demand mix of the ``fragmentation`` selector, the owners' limits
(read through a one-second cache) and the dependencies' results.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from events.catalogue import SchedulingPass
from events.catalogue.scheduling import (
    MAX_DEMAND_TYPES,
    MAX_FAIR_USAGE,
    MAX_PASS_AGENTS,
    MAX_PASS_OWNERS,
    MAX_PASS_SESSIONS,
    AgentAt,
    DemandCount,
    DependencyResult,
    FairUsageAt,
    HolderStatus,
    OwnerLimits,
)

from ..limits import quota_policy
from ..predicates import PredicateContext
from ..scaling_groups import ScalingGroup
from ..session import SessionResult, SessionSpec
from ..slots import ResourceSlot
from ..statuses import SessionStatus
from .fairshare import FairUsage
from .fragmentation import demand_mix
from .ledger import Ledger
from .plugins import ExistingSession, PendingSession
from .schedule import AgentInfo, PassResult, known_slot_types, occupancy_of, schedule_pass

__all__ = ["OwnerKey", "PassInputs", "record_pass", "replay_pass", "skip_threshold"]

OwnerKey = tuple[str, uuid.UUID | None, str]
"""(access key, project, domain): whose limits a pass read."""


def skip_threshold(group: ScalingGroup) -> int:
    """The failed attempts after which FIFO lets others by (0: strict, retries unread)."""
    if group.scheduler != "fifo":
        return 0
    return int(group.scheduler_config.get("num_retries_to_skip", 0) or 0)


@dataclass(frozen=True)
class PassInputs:
    """What :func:`record_pass` copies out of a pass (the scheduler's side)."""

    pass_id: uuid.UUID
    chain: uuid.UUID
    position: str
    group: ScalingGroup
    pending: Sequence[PendingSession]
    existing: Sequence[ExistingSession]
    absent: Sequence[uuid.UUID]
    """Sessions the ledger held that the pass did not count (seen ended, not released)."""
    ledger_version: int
    ctx: PredicateContext
    owners: Mapping[OwnerKey, dict[str, Any] | None]
    agents_changed: Mapping[str, int]
    agents_full: bool
    round_robin_last: str | None
    recent_demand: Sequence[Mapping[str, Decimal]] | None
    decisions: int
    fair_usage: FairUsage | None = None


def record_pass(inputs: PassInputs) -> SchedulingPass:
    """The ``scheduling_pass`` of a pass; ``recorded=False`` (lists left empty) when the pass
    saw more than an event may hold."""
    group, ctx = inputs.group, inputs.ctx
    threshold = skip_threshold(group)
    pending = [p.spec.session_id for p in inputs.pending]
    skipping = [p.spec.session_id for p in inputs.pending if threshold and p.retries >= threshold]
    holders = [
        HolderStatus(session_id=e.spec.session_id, status=e.status.name)
        for e in inputs.existing
        if e.status is not SessionStatus.RUNNING
    ]
    absent = list(inputs.absent)
    dependencies = [
        DependencyResult(session_id=sid, name=name[:1024], result=result.value)
        for sid, (name, result) in ctx.dependencies.items()
    ]
    owners = [
        OwnerLimits(access_key=ak, project_id=project, domain=domain, limits=limits)
        for (ak, project, domain), limits in inputs.owners.items()
    ]
    demand = None if inputs.recent_demand is None else _demand_counts(inputs.recent_demand)
    fair = _fair_usage(inputs.fair_usage)
    fits = (
        max(len(pending), len(holders), len(absent), len(dependencies)) <= MAX_PASS_SESSIONS
        and len(inputs.agents_changed) <= MAX_PASS_AGENTS
        and len(owners) <= MAX_PASS_OWNERS
        and (demand is None or len(demand) <= MAX_DEMAND_TYPES)
        and (fair is None or len(fair) <= MAX_FAIR_USAGE)
    )
    common: dict[str, Any] = {
        "pass_id": inputs.pass_id,
        "chain": inputs.chain,
        "scaling_group": group.name,
        "position": inputs.position,
        "ledger_version": inputs.ledger_version,
        "now": ctx.now,
        "scheduler": group.scheduler,
        "scheduler_config": dict(group.scheduler_config),
        "agent_selector": group.agent_selector,
        "pending_timeout": group.pending_timeout,
        "round_robin_last": inputs.round_robin_last,
        "decisions": inputs.decisions,
    }
    if not fits:
        return SchedulingPass(**common, recorded=False)
    return SchedulingPass(
        **common,
        pending=pending,
        skipping=skipping,
        holders=holders,
        absent=absent,
        agents=[AgentAt(agent_id=a, version=v) for a, v in inputs.agents_changed.items()],
        agents_full=inputs.agents_full,
        owners=owners,
        dependencies=dependencies,
        demand=demand,
        fair_usage=fair,
        fair_usage_at=inputs.fair_usage.at_s if inputs.fair_usage is not None else None,
    )


def _fair_usage(usage: FairUsage | None) -> list[FairUsageAt] | None:
    if usage is None:
        return None
    return [
        *(FairUsageAt(kind="user", name=n, usage=u) for n, u in sorted(usage.users.items())),
        *(FairUsageAt(kind="project", name=n, usage=u) for n, u in sorted(usage.projects.items())),
    ]


def _demand_counts(requests: Sequence[Mapping[str, Decimal]]) -> list[DemandCount]:
    """Requests counted by kind, in the order each kind first came (the mix breaks ties
    between equally common kinds by that order)."""
    counts: dict[tuple[tuple[str, Decimal], ...], int] = {}
    for request in requests:
        key = tuple(sorted(request.items()))
        counts[key] = counts.get(key, 0) + 1
    return [DemandCount(slots=dict(k), count=c) for k, c in counts.items()]


def replay_pass(
    record: SchedulingPass,
    *,
    specs: Mapping[uuid.UUID, SessionSpec],
    agents: Sequence[AgentInfo],
    ledger: Ledger,
) -> PassResult:
    """Run the recorded pass's policy again on its inputs: ``specs`` of every pending and
    holding session, the group's ``agents`` as the pass saw them and the ``ledger`` before
    the pass's first reservation (changed in place). ``KeyError``: a session the log does
    not have."""
    group = ScalingGroup(
        record.scaling_group,
        scheduler=record.scheduler,
        pending_timeout=record.pending_timeout,
        scheduler_config=dict(record.scheduler_config),
        agent_selector=record.agent_selector,
    )
    threshold = skip_threshold(group)
    skipping = set(record.skipping)
    pending = [
        PendingSession(specs[sid], threshold if sid in skipping else 0) for sid in record.pending
    ]
    statuses = {h.session_id: SessionStatus[h.status] for h in record.holders}
    absent = set(record.absent)
    existing = [
        ExistingSession(specs[sid], statuses.get(sid, SessionStatus.RUNNING), held)
        for sid, held in ledger.occupying_by_session().items()
        if sid not in absent
    ]
    known = known_slot_types(agents)
    policies, projects, domains = {}, {}, {}
    for owner in record.owners:
        if owner.limits:
            policies[owner.access_key] = quota_policy(owner.limits["policy"])  # type: ignore[arg-type]
            projects[owner.project_id] = owner.limits["project_slots"]
            domains[owner.domain] = owner.limits["domain_slots"]
    ctx = PredicateContext(
        now=record.now,
        known_slot_types=known,
        occupancy=occupancy_of(existing),
        keypair_policies=policies,
        project_limits=projects,  # type: ignore[arg-type]
        domain_limits=domains,  # type: ignore[arg-type]
        dependencies={d.session_id: (d.name, SessionResult(d.result)) for d in record.dependencies},
    )
    demand = None
    if record.demand is not None:
        requests = [ResourceSlot(d.slots) for d in record.demand for _ in range(d.count)]
        demand = demand_mix(requests, known)
    usage = None
    if record.fair_usage is not None:
        usage = FairUsage(
            {u.name: u.usage for u in record.fair_usage if u.kind == "user"},
            {u.name: u.usage for u in record.fair_usage if u.kind == "project"},
            record.fair_usage_at or 0.0,
        )
    return schedule_pass(
        group=group,
        pending=pending,
        existing=existing,
        agents=agents,
        ctx=ctx,
        ledger=ledger,
        round_robin_last=record.round_robin_last,
        demand=demand,
        usage=usage,
    )
