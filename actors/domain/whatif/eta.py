"""How good would start-time estimates have been? Judged on a replay.

A replay says when each job really started (under its policy). For a job that waited, the
cluster as it stood at its arrival is rebuilt from the same replay (what ran where, for how
long already; what waited), and the live scheduler's estimator
(:func:`~actors.domain.scheduling.estimate.estimate_starts`) is asked when it would start,
knowing only what the scheduler would have known then: the run times of the jobs that had
ended (per owner, as :class:`~actors.domain.scheduling.estimate.RunTimes` learns them), not
the future arrivals. ``bench/whatif.py`` reports the error.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from dataclasses import dataclass
from datetime import timedelta

from ..predicates import Occupancy, PredicateContext
from ..scaling_groups import ScalingGroup
from ..scheduling import AgentInfo, ExistingSession, PendingSession
from ..scheduling.estimate import RunTimes, estimate_starts, shape_of
from ..scheduling.ledger import Ledger
from ..slots import ResourceSlot
from ..statuses import SessionStatus
from .simulate import EPOCH, JobOutcome, SimResult, job_session_id, job_spec
from .workload import Workload

__all__ = ["EtaSample", "judge_estimates"]


@dataclass(frozen=True, slots=True)
class EtaSample:
    job_id: str
    waited_s: float
    estimated_wait_s: float | None
    """None: the estimator foresaw no start."""

    @property
    def error_s(self) -> float | None:
        if self.estimated_wait_s is None:
            return None
        return abs(self.estimated_wait_s - self.waited_s)


def judge_estimates(
    workload: Workload, result: SimResult, *, min_wait_s: float = 60.0, sample: int = 200
) -> list[EtaSample]:
    """Estimates at arrival for up to ``sample`` jobs (evenly spread) that waited at least
    ``min_wait_s`` in ``result``, each beside the wait the replay gave it."""
    policy = result.policy
    group = ScalingGroup(
        "default",
        scheduler=policy.scheduler,
        scheduler_config=dict(policy.config),
        agent_selector=policy.selector,
    )
    agents = [
        AgentInfo(a.agent_id, ResourceSlot(a.capacity), architecture=a.architecture)
        for a in workload.agents
    ]
    started = [o for o in result.outcomes if o.start_s is not None]
    waited = [o for o in started if (o.wait_s or 0.0) >= min_wait_s]
    if sample and len(waited) > sample:
        step = len(waited) / sample
        waited = [waited[int(i * step)] for i in range(sample)]
    ended = sorted(
        (o for o in started if o.end_s is not None and o.job.run_s is not None),
        key=lambda o: o.end_s or 0.0,
    )
    ends = [o.end_s or 0.0 for o in ended]
    shapes = {o.job.job_id: shape_of(job_spec(o.job)) for o in ended}
    return [
        _judge_one(
            workload, result, group, agents, ended[: bisect_right(ends, o.job.arrival_s)], o, shapes
        )
        for o in waited
    ]


def _judge_one(
    workload: Workload,
    result: SimResult,
    group: ScalingGroup,
    agents: list[AgentInfo],
    history: list[JobOutcome],
    target: JobOutcome,
    shapes: dict[str, str],
) -> EtaSample:
    t = target.job.arrival_s
    book = RunTimes()
    for done in history[-5000:]:
        book.add(done.job.owner, "", done.job.run_s or 0.0, shapes[done.job.job_id], done.end_s)
    ledger = Ledger({a.agent_id: a.capacity for a in agents})
    existing: list[ExistingSession] = []
    pending: list[PendingSession] = []
    elapsed: dict[uuid.UUID, float] = {}
    for outcome in result.outcomes:
        job = outcome.job
        if job.arrival_s > t:
            continue
        start, end = outcome.start_s, outcome.end_s
        if start is not None and start <= t and (end is None or end > t):
            spec = job_spec(job)
            ledger.reserve(
                spec.session_id,
                [
                    (kernel.kernel_id, agent_id, kernel.requested_slots)
                    for kernel, agent_id in zip(spec.kernels, outcome.agents, strict=True)
                ],
            )
            existing.append(ExistingSession(spec, SessionStatus.RUNNING, spec.requested_slots))
            elapsed[spec.session_id] = t - start
        elif start is None or start > t:
            pending.append(PendingSession(job_spec(job)))
    expected = book.expectations(
        [
            (
                e.spec.session_id,
                e.spec.access_key,
                "",
                shape_of(e.spec),
                None,
                elapsed[e.spec.session_id],
            )
            for e in existing
        ]
        + [
            (p.spec.session_id, p.spec.access_key, "", shape_of(p.spec), None, None)
            for p in pending
        ],
        now=t,
    )
    ctx = PredicateContext(
        now=EPOCH + timedelta(seconds=t),
        known_slot_types=workload.slot_types,
        occupancy=Occupancy(),
    )
    found = estimate_starts(
        group=group,
        pending=pending,
        existing=existing,
        agents=agents,
        ledger=ledger,
        ctx=ctx,
        elapsed_s=elapsed,
        expected=expected,
    )
    estimate = found.get(job_session_id(target.job.job_id))
    at = (
        None if estimate is None or estimate.at is None else (estimate.at - ctx.now).total_seconds()
    )
    return EtaSample(target.job.job_id, target.wait_s or 0.0, at)
