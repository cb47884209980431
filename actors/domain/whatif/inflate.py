"""Workload inflation: the loaded benchmark of an agent selector (Weng et al., ATC'23).

A trace replayed at its own timing may never fill its cluster (the Alibaba GPU trace peaks
at 66 of 6,212 GPUs in use), and then every selector places the same way. The FGD paper
judges placement differently: tasks drawn from the trace's mix of requests arrive one after
another and never leave, and each one that no agent can hold is turned away, until what
arrived asks for the whole cluster. Every selector sees the same arrivals at the same
instants, so at any instant they face the same load; what differs is how much of it they
could place and how many free accelerators they left that the mix cannot use.

:func:`inflate` builds that workload; :func:`~actors.domain.whatif.simulate` replays it
with ``patience=1`` (a task that fails its pass is withdrawn, not queued).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate

from .workload import MAX_JOBS, Workload, WorkloadJob

__all__ = ["MAX_DEMAND", "arrived_demand", "inflate"]

MAX_DEMAND = 10.0
"""At most ten clusters' worth of requests (the draw stops at ``MAX_JOBS`` anyway)."""


def inflate(
    workload: Workload, accelerator: str, *, demand: float = 1.0, seed: int = 0
) -> Workload:
    """Tasks drawn (with replacement, from ``seed``) from ``workload``'s jobs, one a second,
    never ending, until their ``accelerator`` requests add up to ``demand`` times the
    agents' (CPU-only tasks are drawn too: they take the CPU that strands GPUs). Owners,
    types and requests are the drawn jobs'; multi-kernel jobs keep their size."""
    if not 0 < demand <= MAX_DEMAND:
        raise ValueError(f"demand {demand}: a share of the cluster in (0, {MAX_DEMAND:g}]")
    capacity = float(workload.capacity().get(accelerator, 0))
    pool = [j for j in workload.jobs if j.requested]
    if capacity <= 0 or not any(float(j.requested.get(accelerator, 0)) > 0 for j in pool):
        raise ValueError(f"no agent or no job has {accelerator!r}: nothing to inflate")
    draw = random.Random(seed)
    jobs: list[WorkloadJob] = []
    asked = 0.0
    while asked < demand * capacity and len(jobs) < MAX_JOBS:
        job = draw.choice(pool)
        asked += float(job.requested.get(accelerator, 0)) * job.cluster_size
        jobs.append(
            WorkloadJob(
                job_id=f"inflated-{len(jobs)}",
                arrival_s=float(len(jobs)),
                owner=job.owner,
                group=job.group,
                session_type=job.session_type,
                requested=job.requested,
                cluster_size=job.cluster_size,
                multi_node=job.multi_node,
                censored=True,
            )
        )
    return Workload(
        source=f"{workload.source} inflated to {demand:g} of its {accelerator} (seed {seed})",
        span_s=float(len(jobs)),
        slot_types=workload.slot_types,
        agents=workload.agents,
        jobs=jobs,
    )


def arrived_demand(workload: Workload, accelerator: str) -> Callable[[float], float]:
    """The share of the agents' ``accelerator`` asked for by the jobs arrived by a time."""
    capacity = float(workload.capacity().get(accelerator, 0)) or 1.0
    times = [j.arrival_s for j in workload.jobs]
    asked = list(
        accumulate(float(j.requested.get(accelerator, 0)) * j.cluster_size for j in workload.jobs)
    )

    def at(t: float) -> float:
        arrived = bisect_right(times, t)
        return asked[arrived - 1] / capacity if arrived else 0.0

    return at
