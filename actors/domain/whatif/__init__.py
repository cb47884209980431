"""What-if: recorded demand replayed through the real scheduler in simulated time
(docs/whatif.md). Pure: sources of workloads (a log, a public trace) are
:mod:`kernelhub.traces`'s."""

from .measures import Fragmentation, accelerator_slot, demand_mix, recorded, summarize
from .simulate import JobOutcome, Policy, Sample, SimResult, job_session_id, simulate
from .workload import FORMAT, Workload, WorkloadAgent, WorkloadJob

__all__ = [
    "FORMAT",
    "Fragmentation",
    "JobOutcome",
    "Policy",
    "Sample",
    "SimResult",
    "Workload",
    "WorkloadAgent",
    "WorkloadJob",
    "accelerator_slot",
    "demand_mix",
    "job_session_id",
    "recorded",
    "simulate",
    "summarize",
]
