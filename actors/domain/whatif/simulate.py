"""Recorded demand replayed through the real scheduler, in simulated time.

The pass is :func:`~actors.domain.scheduling.schedule_pass` itself, with the ledger, the
occupancy and the agent index (:class:`~actors.domain.scheduling.KeptIndex`) carried from
pass to pass as the scheduler actor carries them: what-if answers "what would *kernelhub*
have done", not what a model of it would. No Ray, no Redis, no clock: time jumps from one
arrival or departure to the next, and a pass runs after each instant that changed
something (the actor's pass per wake-up, without the wake-up latency: a lower bound on
queueing delay that every policy shares).

A started job runs for its recorded run time; one the record left running (``censored``)
runs until the horizon. Jobs that depend on others wait until those ended (a recorded end
counts as success: a trace does not say more).
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..predicates import Occupancy, PredicateContext
from ..scaling_groups import ScalingGroup
from ..scheduling import AgentInfo, ExistingSession, KeptIndex, PendingSession, schedule_pass
from ..scheduling.fairshare import DecayingUsage, FairShareConfig
from ..scheduling.fragmentation import DemandMix, demand_mix
from ..scheduling.ledger import Ledger
from ..session import ClusterMode, SessionResult, SessionSpec, SessionType, expand_cluster
from ..slots import ResourceSlot
from ..statuses import SessionStatus
from .workload import Workload, WorkloadJob

__all__ = ["JobOutcome", "Policy", "Sample", "SimResult", "job_session_id", "job_spec", "simulate"]

RECENT_DEMAND = 1000
"""Arrivals the ``fragmentation`` selector's expected mix is made of (the latest ones)."""
MIX_EVERY = 100
"""Arrivals between two rebuilds of that mix."""

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""Simulated time zero (any instant would do: nothing reads the real clock)."""
_IDS = uuid.UUID("6f1d3c1e-8a51-4c3e-9a3f-2f8f5b6c7d10")


@dataclass(frozen=True, slots=True)
class Policy:
    """What a replay varies: the group's scheduler, its agent selector, its config."""

    scheduler: str = "fifo"
    selector: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.scheduler}/{self.selector or 'default'}"


@dataclass(slots=True)
class JobOutcome:
    job: WorkloadJob
    start_s: float | None = None
    end_s: float | None = None
    agents: tuple[str, ...] = ()
    reason: str | None = None
    """Why it was last left pending (``no-available-instances``, a failed predicate)."""

    @property
    def wait_s(self) -> float | None:
        return None if self.start_s is None else self.start_s - self.job.arrival_s


@dataclass(frozen=True, slots=True)
class Sample:
    """The cluster at one instant: what is allocated (per slot), how many wait, and how
    many accelerators are free but of no use to the expected mix of requests."""

    t: float
    allocated: Mapping[str, float]
    pending: int
    fragmented: float


@dataclass
class SimResult:
    policy: Policy
    outcomes: list[JobOutcome]
    samples: list[Sample]
    capacity: Mapping[str, float]
    horizon_s: float
    passes: int = 0
    pending_reasons: dict[str, int] = field(default_factory=dict)
    """Failed attempts by reason, over the whole replay."""
    left_out: int = 0
    """Jobs that ended in the record without ever being placed (not replayed)."""
    patience: int | None = None
    withdrawn: int = 0
    """Jobs turned away after ``patience`` failed passes (never started)."""
    peak_allocated: dict[str, float] = field(default_factory=dict)
    """The most allocated at once, per slot type (after a pass)."""


FragmentationProbe = Callable[[Sequence[tuple[float, ...]]], float]
"""Free slots of every agent (in the workload's slot order) -> fragmented accelerators."""


def job_session_id(job_id: str) -> uuid.UUID:
    return uuid.uuid5(_IDS, job_id)


def job_spec(job: WorkloadJob) -> SessionSpec:
    session_id = job_session_id(job.job_id)
    kernels = expand_cluster(
        job.cluster_size,
        [ResourceSlot(job.requested)],
        kernel_ids=[uuid.uuid5(session_id, str(i)) for i in range(job.cluster_size)],
    )
    kind = SessionType(job.session_type)
    return SessionSpec(
        session_id=session_id,
        name=job.job_id[:64],
        access_key=job.owner,
        kernels=kernels,
        created_at=EPOCH + timedelta(seconds=job.arrival_s),
        session_type=kind,
        cluster_mode=ClusterMode.MULTI_NODE if job.multi_node else ClusterMode.SINGLE_NODE,
        dependencies=tuple(job_session_id(d) for d in job.dependencies),
        startup_command="run" if kind is SessionType.BATCH else None,
        creation_id=job.job_id[:64],
    )


class _Cluster:
    """Per-agent free slots as floats, kept beside the ledger for the measures (reading
    Decimals out of the ledger for every agent at every sample would be the replay's cost)."""

    def __init__(self, workload: Workload, names: Sequence[str]) -> None:
        self.names = list(names)
        self.free = {
            a.agent_id: [float(a.capacity.get(n, 0)) for n in names] for a in workload.agents
        }
        self.allocated = dict.fromkeys(names, 0.0)

    def take(self, agent_id: str, slots: Mapping[str, Any], sign: float) -> None:
        free = self.free[agent_id]
        for i, name in enumerate(self.names):
            amount = float(slots.get(name, 0)) * sign
            free[i] -= amount
            self.allocated[name] += amount


class _Holders:
    """The running sessions as a pass's ``existing`` argument. The plugins read it only
    through each owner's share (DRF: the largest dominant share of an owner's sessions, or
    their sum with ``drf_share: sum``), so a replay passes the sessions that decide each
    owner's share, not thousands (``exact``: all of them, to check that they agree)."""

    def __init__(self, capacity: ResourceSlot, summed: bool, exact: bool) -> None:
        self.capacity = capacity
        self.summed = summed
        self.exact = exact
        self.running: dict[uuid.UUID, ExistingSession] = {}
        self._largest: dict[str, list[tuple[Any, int, uuid.UUID]]] = {}
        self._sums: dict[str, tuple[ExistingSession, int]] = {}
        self._sequence = 0

    def add(self, session: ExistingSession) -> None:
        self.running[session.spec.session_id] = session
        owner = session.spec.access_key
        if self.summed:
            held, count = self._sums.get(owner, (None, 0))
            total = session.occupying + (held.occupying if held else ResourceSlot())
            self._sums[owner] = (ExistingSession(session.spec, session.status, total), count + 1)
        else:
            self._sequence += 1
            share = session.occupying.dominant_share(self.capacity)
            entry = (-share, self._sequence, session.spec.session_id)
            heapq.heappush(self._largest.setdefault(owner, []), entry)

    def remove(self, session_id: uuid.UUID) -> ExistingSession:
        session = self.running.pop(session_id)
        owner = session.spec.access_key
        if self.summed:
            held, count = self._sums[owner]
            if count == 1:
                del self._sums[owner]
            else:
                total = held.occupying - session.occupying
                self._sums[owner] = (ExistingSession(held.spec, held.status, total), count - 1)
        return session

    def existing(self) -> list[ExistingSession]:
        if self.exact:
            return list(self.running.values())
        if self.summed:
            return [held for held, _ in self._sums.values()]
        chosen = []
        for heap in self._largest.values():
            while heap and heap[0][2] not in self.running:
                heapq.heappop(heap)  # ended: dropped when it reaches the top
            if heap:
                chosen.append(self.running[heap[0][2]])
        return chosen


def _project(spec: SessionSpec) -> str | None:
    return str(spec.project_id) if spec.project_id else None


def _default_horizon(workload: Workload) -> float:
    """The record's span; when unknown (0), until every job could have ended."""
    if workload.span_s > 0:
        return workload.span_s
    last = workload.jobs[-1].arrival_s if workload.jobs else 0.0
    longest = max((j.run_s or 0.0 for j in workload.jobs), default=0.0)
    return last + longest + 1.0


def simulate(
    workload: Workload,
    policy: Policy,
    *,
    horizon_s: float | None = None,
    samples: int = 500,
    fragmentation: FragmentationProbe | None = None,
    exact_existing: bool = False,
    patience: int | None = None,
) -> SimResult:
    """Replay ``workload`` under ``policy`` until ``horizon_s`` (default: the record's span;
    when unknown, until every job could have ended). ``samples`` evenly spaced instants are
    measured (allocation, queue, and ``fragmentation`` when given). With ``patience``, a job
    that failed that many passes is withdrawn (the inflation benchmark turns away what
    does not fit, :mod:`.inflate`); without, it waits as a session does."""
    if patience is not None and patience < 1:
        raise ValueError(f"patience {patience}: at least one pass")
    horizon = horizon_s if horizon_s is not None else _default_horizon(workload)
    group = ScalingGroup(
        "default",
        scheduler=policy.scheduler,
        scheduler_config=dict(policy.config),
        agent_selector=policy.selector,
    )
    agents = tuple(  # a tuple: the kept index keeps its candidates from pass to pass
        AgentInfo(a.agent_id, ResourceSlot(a.capacity), architecture=a.architecture)
        for a in workload.agents
    )
    ledger = Ledger()
    for agent in agents:
        ledger.set_capacity(agent.agent_id, agent.capacity)
    kept = KeptIndex()
    names = sorted(workload.slot_types)
    cluster = _Cluster(workload, names)
    capacity = {n: sum(f[i] for f in cluster.free.values()) for i, n in enumerate(names)}
    occupancy = Occupancy()
    dependencies: dict[uuid.UUID, tuple[str, SessionResult]] = {
        job_session_id(j.job_id): (j.job_id[:64], SessionResult.UNDEFINED) for j in workload.jobs
    }
    # a job that ended without ever being placed (failed, cancelled) says nothing of how
    # long it would run: left out, as the log's own workload leaves cancelled ones out
    jobs = [j for j in workload.jobs if j.run_s is not None or j.censored]
    outcomes = {job_session_id(j.job_id): JobOutcome(j) for j in jobs}
    specs: dict[uuid.UUID, SessionSpec] = {}
    pending: dict[uuid.UUID, PendingSession] = {}
    holders = _Holders(workload.capacity(), policy.config.get("drf_share") == "sum", exact_existing)
    held: dict[uuid.UUID, list[tuple[str, ResourceSlot]]] = {}
    departures: list[tuple[float, int, uuid.UUID]] = []
    result = SimResult(policy, list(outcomes.values()), [], capacity, horizon)
    result.left_out = len(workload.jobs) - len(jobs)
    result.patience = patience
    sample_times = [horizon * (i + 0.5) / samples for i in range(samples)] if samples else []
    next_sample = 0
    arrivals = jobs
    next_arrival = 0
    sequence = 0
    # fair_share ranks by decayed usage: the replay's own, kept as its jobs start and end
    fair = (
        DecayingUsage(FairShareConfig.from_config(policy.config))
        if policy.scheduler == "fair_share"
        else None
    )
    judges_fragmentation = policy.selector == "fragmentation"
    mix: DemandMix | None = None
    mixed_at = -MIX_EVERY

    def measure_until(t: float) -> None:
        nonlocal next_sample
        while next_sample < len(sample_times) and sample_times[next_sample] < t:
            frag = fragmentation(list(map(tuple, cluster.free.values()))) if fragmentation else 0.0
            result.samples.append(
                Sample(sample_times[next_sample], dict(cluster.allocated), len(pending), frag)
            )
            next_sample += 1

    while True:
        t_arrival = arrivals[next_arrival].arrival_s if next_arrival < len(arrivals) else None
        t_departure = departures[0][0] if departures else None
        candidates = [t for t in (t_arrival, t_departure) if t is not None and t <= horizon]
        if not candidates:
            break
        now = min(candidates)
        measure_until(now)
        if fair is not None:
            fair.advance(now)
        while departures and departures[0][0] <= now:
            _, _, session_id = heapq.heappop(departures)
            ended = holders.remove(session_id)
            if fair is not None:
                fair.held(ended.spec.access_key, _project(ended.spec), ended.occupying, -1.0)
            ledger.release_session(session_id)
            occupancy.remove(ended.spec)
            outcome = outcomes[session_id]
            outcome.end_s = now
            for agent_id, slots in held.pop(session_id):
                cluster.take(agent_id, slots, -1.0)
            dependencies[session_id] = (dependencies[session_id][0], SessionResult.SUCCESS)
        while next_arrival < len(arrivals) and arrivals[next_arrival].arrival_s <= now:
            job = arrivals[next_arrival]
            next_arrival += 1
            spec = specs[job_session_id(job.job_id)] = job_spec(job)
            pending[spec.session_id] = PendingSession(spec)
        if not pending or now >= horizon:
            continue  # what ends at the horizon ends; nothing starts there
        if judges_fragmentation and next_arrival - mixed_at >= MIX_EVERY:
            recent = arrivals[max(0, next_arrival - RECENT_DEMAND) : next_arrival]
            mix = demand_mix((ResourceSlot(j.requested) for j in recent), workload.slot_types)
            mixed_at = next_arrival
        ctx = PredicateContext(
            now=EPOCH + timedelta(seconds=now),
            known_slot_types=workload.slot_types,
            occupancy=occupancy,
            dependencies=dependencies,
        )
        passed = schedule_pass(
            group=group,
            pending=list(pending.values()),
            existing=holders.existing(),
            agents=agents,
            ctx=ctx,
            ledger=ledger,
            kept=kept,
            demand=mix,
            usage=fair.usage() if fair is not None else None,
        )
        result.passes += 1
        for decision in passed.decisions:
            session_id = decision.session_id
            spec = pending.pop(session_id).spec
            outcome = outcomes[session_id]
            outcome.start_s = now
            outcome.agents = tuple(a.agent_id for a in decision.reservation.allocations)
            held[session_id] = [(a.agent_id, a.slots) for a in decision.reservation.allocations]
            for agent_id, slots in held[session_id]:
                cluster.take(agent_id, slots, 1.0)
            holders.add(ExistingSession(spec, SessionStatus.RUNNING, spec.requested_slots))
            if fair is not None:
                fair.held(spec.access_key, _project(spec), spec.requested_slots, 1.0)
            job = outcome.job
            end = horizon if job.censored or job.run_s is None else now + job.run_s
            sequence += 1
            heapq.heappush(departures, (max(end, now), sequence, session_id))
        if passed.decisions:
            peak = result.peak_allocated
            for name, amount in cluster.allocated.items():
                if amount > peak.get(name, 0.0):
                    peak[name] = amount
        for failure in passed.failures:
            reason = failure.failed_predicates[0][0] if failure.failed_predicates else None
            reason = reason or failure.status_info
            outcomes[failure.session_id].reason = reason
            result.pending_reasons[reason] = result.pending_reasons.get(reason, 0) + 1
            entry = pending.get(failure.session_id)
            if entry is None:
                continue
            if patience is not None and entry.retries + 1 >= patience:
                del pending[failure.session_id]
                result.withdrawn += 1
            else:
                pending[failure.session_id] = PendingSession(entry.spec, entry.retries + 1)
        for cancelled in passed.cancellations:
            pending.pop(cancelled.session_id, None)
            outcomes[cancelled.session_id].reason = cancelled.reason
    measure_until(float("inf"))
    return result
