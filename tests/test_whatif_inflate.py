"""The selector's loaded benchmark (docs/whatif.md, "Under load"): the FGD paper's
inflation (tasks drawn from a trace's mix arrive and never leave, what does not fit is
turned away), and the replay's ``patience`` that turns them away."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from actors.domain.whatif import Policy, Workload, WorkloadAgent, WorkloadJob, simulate, summarize
from actors.domain.whatif.inflate import arrived_demand, inflate
from kernelhub.traces import import_trace
from kernelhub.whatif_cli import parse_agents, run_whatif

pytestmark = pytest.mark.unit

TRACE_HEAD = Path(__file__).parent / "data" / "alibaba-gpu-v2023-head"
G = 2**30
SLOT_TYPES = {"cpu": "count", "mem": "bytes", "cuda.shares": "count"}


def agent(agent_id: str, gpus: int) -> WorkloadAgent:
    capacity = {"cpu": Decimal(16), "mem": Decimal(64 * G), "cuda.shares": Decimal(gpus)}
    return WorkloadAgent(agent_id=agent_id, capacity=capacity)


def job(job_id: str, at: float, gpus: float, cpu: int = 1) -> WorkloadJob:
    requested = {"cpu": Decimal(cpu), "mem": Decimal(G)}
    if gpus:
        requested["cuda.shares"] = Decimal(str(gpus))
    return WorkloadJob(job_id=job_id, arrival_s=at, requested=requested, run_s=60)


def small_cluster() -> Workload:
    return Workload.model_validate(
        {
            "agents": [agent("a", 4), agent("b", 4)],
            "jobs": [job("half", 0, 0.5), job("two", 1, 2), job("cpu-only", 2, 0, cpu=2)],
            "slot_types": SLOT_TYPES,
        }
    )


def test_inflation_draws_never_ending_tasks_until_they_ask_for_the_share() -> None:
    recorded = small_cluster()
    drawn = inflate(recorded, "cuda.shares", demand=1.0, seed=3)
    asked = [float(j.requested.get("cuda.shares", 0)) for j in drawn.jobs]
    assert sum(asked) >= 8 > sum(asked[:-1])  # stops at the first draw that reaches 8 GPUs
    assert [j.arrival_s for j in drawn.jobs] == [float(i) for i in range(len(drawn.jobs))]
    assert all(j.censored and j.run_s is None for j in drawn.jobs)
    assert {tuple(j.requested.items()) for j in drawn.jobs} <= {
        tuple(j.requested.items()) for j in recorded.jobs
    }
    assert drawn.agents == recorded.agents and drawn.span_s == len(drawn.jobs)
    # the same seed draws the same tasks; another seed, others
    again = inflate(recorded, "cuda.shares", demand=1.0, seed=3)
    assert [j.requested for j in again.jobs] == [j.requested for j in drawn.jobs]
    other = inflate(recorded, "cuda.shares", demand=3.0, seed=4)
    assert [j.requested for j in other.jobs][:10] != [j.requested for j in drawn.jobs][:10]
    at = arrived_demand(drawn, "cuda.shares")
    assert at(-1) == 0 and at(0) == asked[0] / 8 and at(len(asked)) == sum(asked) / 8


def test_inflation_refuses_what_it_cannot_draw() -> None:
    with pytest.raises(ValueError, match="share of the cluster"):
        inflate(small_cluster(), "cuda.shares", demand=0)
    with pytest.raises(ValueError, match="share of the cluster"):
        inflate(small_cluster(), "cuda.shares", demand=float("nan"))
    with pytest.raises(ValueError, match="nothing to inflate"):
        inflate(small_cluster(), "rocm.device")


def test_patience_turns_away_what_does_not_fit_instead_of_queueing_it() -> None:
    w = Workload.model_validate(
        {
            "agents": [agent("a", 4)],
            "jobs": [job("fits", 0, 3), job("too-big", 1, 2), job("small", 2, 1)],
            "span_s": 10,
            "slot_types": SLOT_TYPES,
        }
    )
    waiting = simulate(w, Policy("fifo"), horizon_s=30)
    by_id = {o.job.job_id: o for o in waiting.outcomes}
    # waiting, the head holds strict FIFO's queue until the horizon (before "fits" ends)
    assert by_id["too-big"].start_s is None and by_id["small"].start_s is None
    assert waiting.withdrawn == 0
    assert summarize(waiting, "cuda.shares")["withdrawn"] is None  # no patience: not counted
    impatient = simulate(w, Policy("fifo"), horizon_s=30, patience=1)
    by_id = {o.job.job_id: o for o in impatient.outcomes}
    assert by_id["too-big"].start_s is None and by_id["too-big"].reason == "no-available-instances"
    assert by_id["small"].start_s == 2
    assert impatient.withdrawn == 1 and summarize(impatient, "cuda.shares")["withdrawn"] == 1
    assert impatient.peak_allocated["cuda.shares"] == 4
    with pytest.raises(ValueError, match="patience"):
        simulate(w, Policy("fifo"), patience=0)


def test_under_load_the_fragmentation_selector_places_more_and_strands_fewer_gpus() -> None:
    """The trace's first 500 tasks' mix, drawn until it asks for every GPU of 76 nodes:
    the FGD-style selector fits more of it than packing or spreading, and leaves fewer free
    GPUs that the mix cannot use than packing does (docs/whatif.md has the whole trace)."""
    trace = import_trace("alibaba-gpu-v2023", TRACE_HEAD, None)
    trace = trace.model_copy(update={"agents": parse_agents("scale:0.05", trace)})
    drawn = inflate(trace, "cuda.shares", demand=1.0, seed=0)
    policies = [Policy("fifo", s) for s in ("fragmentation", "concentrated", "dispersed")]
    _, results, _ = run_whatif(drawn, policies, samples=100, patience=1)
    figures = {r.policy.selector: summarize(r, "cuda.shares") for r in results}
    new = figures["fragmentation"]
    for peer in ("concentrated", "dispersed"):
        assert new["gpu_alloc_peak_pct"] > figures[peer]["gpu_alloc_peak_pct"], figures
    assert new["frag_gpus_mean"] < figures["concentrated"]["frag_gpus_mean"], figures
    assert all(f["never_started"] == f["withdrawn"] for f in figures.values())
