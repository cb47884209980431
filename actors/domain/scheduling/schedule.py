"""One scheduling pass over one scaling group (23.03's ``_schedule_in_sgroup`` in
``manager/scheduler/dispatcher.py``; docs/scheduling.md), as a pure function.

Input: the group, its pending sessions (oldest first), the sessions holding resources, the
candidate agents with their ledger occupancy, and the predicate context. Output: decisions
(each with its ledger reservation), attempts that failed (with the ``status_info`` and
predicate lists to record), and cancellations (pending timeout, private sessions that fail
predicates). The caller turns these into events; nothing here reads a clock or a database.

Deliberate deviation (docs/deviations.md, "scheduler head-of-line" and "strict FIFO and an
impossible head"): a session that fits no agent does not abort the group's pass; the next
session is tried. Strict FIFO (``num_retries_to_skip = 0``) still blocks on its head, which
is the point of strict FIFO, but only while the head could fit once room is made: a session
that no agent of the group could ever hold (a slot none of them offers, more than any one
has) never blocks the others.

One session never stops the pass: whatever goes wrong while trying it (a slot the
group does not know, an impossible amount already in the log, a bug) is recorded as its
failure (``scheduler-error`` or ``no-available-instances`` with a message naming the
problem; it stays PENDING) and the pass goes on with the next.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from events import KernelLifecycleEventReason

from ..bounds import bound_of
from ..predicates import Occupancy, PredicateContext, check_predicates
from ..scaling_groups import ScalingGroup
from ..session import ClusterMode, SessionSpec
from ..slots import INTRINSIC_SLOTS, ResourceSlot, SlotLayout, SlotType
from ..statuses import USER_RESOURCE_OCCUPYING_SESSION_STATUSES
from .agents import AgentIndex, AgentState
from .fairshare import FairUsage
from .fragmentation import DemandMix, demand_mix
from .kept_index import KeptIndex
from .ledger import Ledger, Reservation
from .plugins import (
    ExistingSession,
    FairShareScheduler,
    PendingSession,
    SchedulerPlugin,
    make_plugin,
)

__all__ = [
    "AgentInfo",
    "Cancellation",
    "Decision",
    "FailedAttempt",
    "PassResult",
    "occupancy_of",
    "schedule_pass",
]


@dataclass(frozen=True, slots=True)
class AgentInfo:
    agent_id: str
    capacity: ResourceSlot
    occupied: ResourceSlot = field(default_factory=ResourceSlot)
    architecture: str = "x86_64"
    schedulable: bool = True
    alive: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    session_id: uuid.UUID
    reservation: Reservation
    passed_predicates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    session_id: uuid.UUID
    status_info: str
    """``predicate-checks-failed`` or ``no-available-instances``."""
    failed_predicates: tuple[tuple[str, str], ...] = ()
    passed_predicates: tuple[str, ...] = ()
    msg: str | None = None


@dataclass(frozen=True, slots=True)
class Cancellation:
    session_id: uuid.UUID
    reason: str


@dataclass
class PassResult:
    decisions: list[Decision] = field(default_factory=list)
    failures: list[FailedAttempt] = field(default_factory=list)
    cancellations: list[Cancellation] = field(default_factory=list)
    round_robin_last: str | None = None
    """With the round-robin selector: the agent chosen last, for the next pass to continue."""


def _expired(session: SessionSpec, group: ScalingGroup, now: datetime) -> bool:
    timeout = group.pending_timeout
    return timeout > 0 and (now - session.created_at).total_seconds() >= timeout


def schedule_pass(
    *,
    group: ScalingGroup,
    pending: Sequence[PendingSession],
    existing: Sequence[ExistingSession],
    agents: Sequence[AgentInfo],
    ctx: PredicateContext,
    ledger: Ledger | None = None,
    round_robin_last: str | None = None,
    kept: KeptIndex | None = None,
    demand: DemandMix | None = None,
    usage: FairUsage | None = None,
) -> PassResult:
    """Place what can be placed now. ``ctx.occupancy`` and ``ledger`` are updated in place
    as sessions are placed (a new ``Ledger`` is built from ``agents`` when none is given).
    ``kept``: the caller's index from earlier passes over the same ``ledger``, brought up to
    date rather than rebuilt (it is updated in place by the pass). ``demand``: the requests
    the ``fragmentation`` selector expects (:func:`.fragmentation.demand_mix`); without it,
    the pending sessions' own. ``usage``: the decayed usage the ``fair_share`` policy ranks
    by (:mod:`.fairshare`; none: nobody used anything, oldest first)."""
    result = PassResult()
    if kept is None:
        kept = KeptIndex()
    candidates = kept.candidates(agents)
    layout = SlotLayout(ctx.known_slot_types)
    if ledger is None:
        ledger = Ledger()
        for agent in candidates:
            ledger.set_capacity(agent.agent_id, agent.capacity)
            ledger.occupied[agent.agent_id] = agent.occupied
    plugin = make_plugin(group.scheduler, group.scheduler_config)
    if isinstance(plugin, FairShareScheduler) and usage is not None:
        plugin.usage = usage
    round_robin = group.agent_selector == "round-robin"
    key = plugin.agent_key if round_robin else group.agent_selector or plugin.agent_key
    if group.agent_selector == "fragmentation" and demand is None:
        demand = demand_mix(
            (k.requested_slots for p in pending for k in p.spec.kernels), ctx.known_slot_types
        )
    elif group.agent_selector != "fragmentation":
        demand = None
    index = kept.index_for(
        candidates,
        ledger,
        layout,
        key,
        prefer_fewer_extras=plugin.prefer_fewer_extras and group.agent_selector is None,
        round_robin=round_robin,
        last_chosen=round_robin_last,
        demand=demand,
    )
    plugin.begin(layout.from_units(index.total_capacity()), existing)

    queue: list[PendingSession] = []
    holder = ledger.holder
    times_out = group.pending_timeout > 0
    # a UUID orders as its str does (fixed-width hex), without making a string per session
    for session in sorted(pending, key=lambda p: (p.spec.created_at, p.spec.session_id)):
        if any(holder(k.kernel_id) is not None for k in session.spec.kernels):
            continue  # already reserved: the pending list (a read model) is behind the ledger
        if times_out and _expired(session.spec, group, ctx.now):
            result.cancellations.append(
                Cancellation(session.spec.session_id, KernelLifecycleEventReason.PENDING_TIMEOUT)
            )
        else:
            queue.append(session)

    while queue:
        picked = plugin.pick_session(queue)
        if picked is None:
            break
        spec = queue.pop(picked).spec
        try:
            blocks = _attempt(spec, ctx, index, layout, group, ledger, plugin, result)
        except Exception as exc:  # one session's trouble is its own: the pass goes on
            ledger.release_session(spec.session_id)  # nothing half-reserved stays behind
            kept.forget()  # nor in an index kept for the next pass
            result.failures.append(
                FailedAttempt(
                    spec.session_id,
                    "scheduler-error",
                    msg=_error_text(spec, exc),
                )
            )
            continue
        if blocks and plugin.blocks_on_head:
            break
    result.round_robin_last = index.last_chosen
    return result


MAX_MESSAGE = 500
"""Characters of a failure message: it becomes an event (appended only when it changes)."""


def _error_text(spec: SessionSpec, exc: Exception) -> str:
    text = f"could not schedule session {spec.session_id}: {type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_MESSAGE else f"{text[: MAX_MESSAGE - 3]}..."


def _attempt(
    spec: SessionSpec,
    ctx: PredicateContext,
    index: AgentIndex,
    layout: SlotLayout,
    group: ScalingGroup,
    ledger: Ledger,
    plugin: SchedulerPlugin,
    result: PassResult,
) -> bool:
    """Try one session: a decision, or a failure (or cancellation) in ``result``. True when
    the failure is one a strict FIFO head waits on (no room *now*)."""
    impossible = _impossible(spec, ctx.known_slot_types, group)
    if impossible is not None:
        result.failures.append(
            FailedAttempt(spec.session_id, "no-available-instances", msg=impossible)
        )
        return False
    checks = check_predicates(spec, ctx)
    passed = tuple(c.name for c in checks if c.passed)
    failed = tuple((c.name, c.message or "") for c in checks if not c.passed)
    if failed:
        result.failures.append(
            FailedAttempt(spec.session_id, "predicate-checks-failed", failed, passed)
        )
        # B5 (docs/upstream.md): private sessions do not wait; they are cancelled at once
        if spec.is_private:
            result.cancellations.append(
                Cancellation(spec.session_id, KernelLifecycleEventReason.PENDING_TIMEOUT)
            )
        return False
    placements, problem = _place(spec, index, layout, group)
    if placements is None:
        result.failures.append(
            FailedAttempt(spec.session_id, "no-available-instances", (), passed, problem)
        )
        return _could_fit(spec, index, layout)
    reservation = ledger.reserve(spec.session_id, placements)
    for allocation in reservation.allocations:
        index.reserve(index.agents[allocation.agent_id], layout.to_units(allocation.slots))
    ctx.occupancy.add(spec)
    plugin.on_scheduled(spec)
    result.decisions.append(Decision(spec.session_id, reservation, passed))
    return False


def _impossible(
    spec: SessionSpec, known: Mapping[str, SlotType], group: ScalingGroup
) -> str | None:
    """Why no agent of the group could ever hold the session, judged from its request
    alone: a slot none of them offers, or an amount past any bound (the log may hold one
    from before the gateway bounded requests). Checked before anything computes with it."""
    for kernel in spec.kernels:
        for name, value in kernel.requested_slots.items():
            if value.is_finite() and value == 0:
                continue
            if name not in known:
                return (
                    f"no agent in resource group {group.name!r} offers resource slot {name[:64]!r}"
                )
            if not value.is_finite() or value < 0 or value > bound_of(name, known[name]).high:
                return f"resource slot {name!r} asks for an impossible amount"
    return None


def _could_fit(spec: SessionSpec, index: AgentIndex, layout: SlotLayout) -> bool:
    """Whether the session (single-node) or each of its kernels (multi-node) would fit some
    agent of its architecture were that agent empty: if not, waiting for room cannot help,
    and even strict FIFO moves past it (a tenant asking for more than any agent has must
    not stop the group)."""
    if spec.cluster_mode is ClusterMode.SINGLE_NODE:
        wanted = [(spec.main_kernel.architecture, spec.requested_slots)]
    else:
        wanted = [(k.architecture, k.requested_slots) for k in spec.kernels]
    for architecture, slots in wanted:
        request = layout.to_units(slots)
        if not any(
            agent.architecture == architecture
            and all(r <= c for r, c in zip(request, agent.capacity, strict=True))
            for agent in index.agents.values()
        ):
            return False
    return True


def _place(
    spec: SessionSpec, index: AgentIndex, layout: SlotLayout, group: ScalingGroup
) -> tuple[list[tuple[uuid.UUID, str, ResourceSlot]] | None, str | None]:
    """Choose agents without reserving; ``(None, message)`` when the session fits nowhere."""
    architectures = {k.architecture for k in spec.kernels}
    if spec.cluster_mode is ClusterMode.SINGLE_NODE:
        if len(architectures) > 1:
            return None, "All kernels of a single-node session must have the same architecture"
        (arch,) = architectures
        if arch not in index.architectures:
            return None, f"No agents found to be compatible with the image architecture ({arch})"
        request = layout.to_units(spec.requested_slots)
        designated = spec.main_kernel.agent
        if designated is not None:
            agent = index.agents.get(designated)
            if agent is None or agent.architecture != arch or not agent.fits(request):
                return None, f"The designated agent {designated} cannot host the session"
        else:
            agent = index.pick(request, architecture=arch)
        if agent is None:
            return None, (
                "Could not find a contiguous resource region in any agent big enough to host "
                f"the session (id: {spec.session_id}, resource group: {group.name})"
            )
        return [(k.kernel_id, agent.agent_id, k.requested_slots) for k in spec.kernels], None

    # multi-node: one agent per kernel, all distinct; roll back the trial if any kernel fails
    chosen: list[tuple[uuid.UUID, str, ResourceSlot]] = []
    trial: list[tuple[AgentState, tuple[int, ...]]] = []
    used: set[str] = set()
    message = None
    try:
        for kernel in spec.kernels:
            request = layout.to_units(kernel.requested_slots)
            if kernel.agent is not None:
                agent = index.agents.get(kernel.agent)
                if agent is None or kernel.agent in used or not agent.fits(request):
                    agent = None
            else:
                agent = index.pick(
                    request, architecture=kernel.architecture, exclude=frozenset(used)
                )
            if agent is None:
                message = (
                    f"Could not find an agent for kernel {kernel.cluster_hostname} of session "
                    f"{spec.session_id} (resource group: {group.name})"
                )
                break
            index.reserve(agent, request)
            trial.append((agent, request))
            used.add(agent.agent_id)
            chosen.append((kernel.kernel_id, agent.agent_id, kernel.requested_slots))
    finally:  # the caller reserves for real; the trial is undone whatever happened
        for agent, request in trial:
            index.release(agent, request)
    return (chosen, None) if message is None else (None, message)


def known_slot_types(agents: Sequence[AgentInfo]) -> dict[str, SlotType]:
    """The slot types a pass knows: the intrinsic ones, and every slot an agent offers
    (counted, unless intrinsic)."""
    known: dict[str, SlotType] = dict(INTRINSIC_SLOTS)
    for agent in agents:
        for slot in agent.capacity:
            known.setdefault(slot, SlotType.COUNT)
    return known


def occupancy_of(existing: Sequence[ExistingSession]) -> Occupancy:
    """Usage that counts against quotas and concurrency: sessions in a user-resource-occupying
    status, with what they actually occupy. What :meth:`Occupancy.add` would build one
    session at a time, summed once per keypair, project and domain: a pass with thousands
    of running sessions would otherwise spend tens of milliseconds here."""
    occupancy = Occupancy()
    owners: dict[tuple[str, uuid.UUID | None, str], list[ResourceSlot]] = {}
    for session in existing:
        if session.status not in USER_RESOURCE_OCCUPYING_SESSION_STATUSES:
            continue
        spec = session.spec
        if spec.is_private:
            occupancy.sftp_sessions[spec.access_key] += 1
            continue
        occupancy.sessions[spec.access_key] += 1
        owners.setdefault((spec.access_key, spec.project_id, spec.domain), []).append(
            session.occupying
        )
    held = {owner: ResourceSlot.total(slots) for owner, slots in owners.items()}
    for (access_key, project_id, domain), slots in held.items():  # a few owners: + is fine
        occupancy.keypair[access_key] = occupancy.keypair[access_key] + slots
        occupancy.project[project_id] = occupancy.project[project_id] + slots
        occupancy.domain[domain] = occupancy.domain[domain] + slots
    return occupancy
