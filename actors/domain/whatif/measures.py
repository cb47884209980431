"""What a replay is judged by, and what the record itself says, in the same terms.

* **Queueing delay** (arrival to start) and **job completion time** (arrival to end):
  p50/p95/p99 over the jobs that started (completed). Jobs that never started within the
  horizon are counted apart (``never_started``): a percentile that ignored them would
  flatter the policy that starves them.
* **Allocation**: the mean, over evenly spaced instants, of what is allocated per slot type
  as a share of the cluster's capacity.
* **Fragmentation** (after Weng et al., ATC'23, "Beware of Fragmentation"): the free
  accelerators that the expected mix of requests cannot use, i.e. for each request type
  (weighted by how often it was asked for) the free accelerators on every agent it does not
  fit. An agent with free accelerators but no free CPU counts whole; an empty agent too
  small for an 8-GPU request counts for that request's share. Judged at agent level, as the
  scheduler sees capacity (``cuda.shares`` is a per-agent amount here and in Backend.AI).
* **Fairness per user**: each user's served share, x = run time / (wait + run time) summed
  over their jobs (a job never started adds its wait until the horizon), then Jain's index
  (1 = all equal, 1/n = one user got everything) and the smallest and largest x.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..slots import INTRINSIC_SLOTS
from .simulate import JobOutcome, SimResult
from .workload import Workload, WorkloadJob

__all__ = [
    "Fragmentation",
    "accelerator_slot",
    "demand_mix",
    "jain",
    "percentile",
    "recorded",
    "summarize",
]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def jain(values: Iterable[float]) -> float | None:
    xs = list(values)
    if not xs or not any(xs):
        return None
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def accelerator_slot(workload: Workload) -> str | None:
    """The slot type fragmentation and ``gpu_alloc_pct`` are about: the accelerator the
    agents have most of (``cuda.shares`` on the Alibaba trace)."""
    totals: dict[str, float] = {}
    for agent in workload.agents:
        for name, value in agent.capacity.items():
            if name not in INTRINSIC_SLOTS:
                totals[name] = totals.get(name, 0.0) + float(value)
    return max(totals, key=lambda n: (totals[n], n)) if totals else None


def demand_mix(
    jobs: Iterable[WorkloadJob], names: Sequence[str], accelerator: str, limit: int = 64
) -> list[tuple[tuple[float, ...], float]]:
    """The request types that ask for ``accelerator``, as (per-kernel request in ``names``
    order, share of such requests): the ``limit`` most common, which on the Alibaba trace
    cover nearly all."""
    counts: Counter[tuple[float, ...]] = Counter()
    for job in jobs:
        if float(job.requested.get(accelerator, 0)) > 0:
            counts[tuple(float(job.requested.get(n, 0)) for n in names)] += 1
    top = counts.most_common(limit)
    total = sum(c for _, c in top)
    return [(request, c / total) for request, c in top]


class Fragmentation:
    """Free accelerators the mix cannot use (see the module docstring), for a cluster
    given as each agent's free slots. Agents with the same free slots are judged once."""

    def __init__(
        self, mix: Sequence[tuple[tuple[float, ...], float]], accelerator_index: int
    ) -> None:
        self.mix = list(mix)
        self.index = accelerator_index
        self._known: dict[tuple[float, ...], float] = {}

    def __call__(self, free_by_agent: Sequence[tuple[float, ...]]) -> float:
        known = self._known
        if len(known) > 100_000:  # free vectors recur from sample to sample; bounded memo
            known.clear()
        total = 0.0
        for free, n in Counter(free_by_agent).items():
            value = known.get(free)
            if value is None:
                value = known[free] = self.of_agent(free)
            total += n * value
        return total

    def of_agent(self, free: Sequence[float]) -> float:
        gpus = free[self.index]
        if gpus <= 1e-9:
            return 0.0
        unusable = 0.0
        for request, weight in self.mix:
            if any(r > f + 1e-9 for r, f in zip(request, free, strict=True)):
                unusable += weight
        return gpus * unusable


def _share_by_user(
    pairs: Iterable[tuple[str, float, float]],
) -> dict[str, float]:
    """(owner, run, wait) -> each owner's run / (wait + run)."""
    run: dict[str, float] = {}
    spent: dict[str, float] = {}
    for owner, r, w in pairs:
        run[owner] = run.get(owner, 0.0) + r
        spent[owner] = spent.get(owner, 0.0) + r + w
    return {o: (run[o] / spent[o] if spent[o] > 0 else 1.0) for o in run}


def _delays(waits: Sequence[float], jcts: Sequence[float]) -> dict[str, float | None]:
    return {
        "wait_p50_s": percentile(waits, 50),
        "wait_p95_s": percentile(waits, 95),
        "wait_p99_s": percentile(waits, 99),
        "jct_p50_s": percentile(jcts, 50),
        "jct_p95_s": percentile(jcts, 95),
        "jct_p99_s": percentile(jcts, 99),
    }


def _fairness(shares: Mapping[str, float]) -> dict[str, float | None]:
    return {
        "fairness_jain": jain(shares.values()),
        "share_min": min(shares.values()) if shares else None,
        "share_max": max(shares.values()) if shares else None,
    }


def summarize(result: SimResult, accelerator: str | None) -> dict[str, Any]:
    """A replay's figures (JSON-ready)."""
    outcomes = result.outcomes
    started = [o for o in outcomes if o.start_s is not None]
    waits = [o.wait_s for o in started if o.wait_s is not None]
    jcts = [  # a job the record left running "ends" at the horizon: not a completion
        o.end_s - o.job.arrival_s
        for o in started
        if o.end_s is not None and not o.job.censored and o.job.run_s is not None
    ]
    shares = _share_by_user(_served(o, result.horizon_s) for o in outcomes)
    samples = result.samples
    alloc = {
        name: (
            100 * sum(s.allocated[name] for s in samples) / (len(samples) * total)
            if samples and total
            else None
        )
        for name, total in result.capacity.items()
    }
    reasons = sorted(result.pending_reasons.items(), key=lambda kv: -kv[1])[:5]
    placed = [o for o in outcomes if o.job.observed_agents is not None]
    return {
        "policy": result.policy.label,
        "jobs": len(outcomes),
        "started": len(started),
        "never_started": len(outcomes) - len(started),
        "withdrawn": result.withdrawn if result.patience is not None else None,
        "left_out": result.left_out,
        **_delays(waits, jcts),
        "alloc_pct": alloc,
        "gpu_alloc_pct": alloc.get(accelerator) if accelerator else None,
        "gpu_alloc_peak_pct": (
            100 * result.peak_allocated.get(accelerator, 0.0) / result.capacity[accelerator]
            if accelerator and result.capacity.get(accelerator)
            else None
        ),
        "frag_gpus_mean": (sum(s.fragmented for s in samples) / len(samples) if samples else None),
        "queue_mean": sum(s.pending for s in samples) / len(samples) if samples else None,
        **_fairness(shares),
        "pending_reasons": dict(reasons),
        "passes": result.passes,
        "same_placement": (
            sum(1 for o in placed if o.agents == o.job.observed_agents) if placed else None
        ),
        "recorded_placements": len(placed) if placed else None,
    }


def _served(outcome: JobOutcome, horizon: float) -> tuple[str, float, float]:
    job = outcome.job
    if outcome.start_s is None:
        return job.owner, 0.0, max(0.0, horizon - job.arrival_s)
    end = outcome.end_s if outcome.end_s is not None else horizon
    return job.owner, end - outcome.start_s, outcome.start_s - job.arrival_s


def recorded(workload: Workload) -> dict[str, Any]:
    """What happened, in :func:`summarize`'s terms where the record says (waits, completion
    times and fairness; allocation over time is the replay's to measure)."""
    started = [j for j in workload.jobs if j.observed_wait_s is not None]
    waits = [j.observed_wait_s for j in started if j.observed_wait_s is not None]
    jcts = [
        j.observed_wait_s + j.run_s
        for j in started
        if j.observed_wait_s is not None and j.run_s is not None and not j.censored
    ]
    shares = _share_by_user(
        (
            j.owner,
            j.run_s or 0.0,
            j.observed_wait_s
            if j.observed_wait_s is not None
            else max(0.0, workload.span_s - j.arrival_s),
        )
        for j in workload.jobs
    )
    return {
        "policy": "recorded",
        "jobs": len(workload.jobs),
        "started": len(started),
        "never_started": len(workload.jobs) - len(started),
        **_delays(waits, jcts),
        **_fairness(shares),
    }
