"""What-if: recorded demand replayed through the real scheduler (docs/whatif.md).

Pure replays on hand-made workloads (what a user of the figures relies on: nothing runs on
more than an agent has, a strict FIFO head holds the queue, the reduced ``existing`` DRF
sees decides as the full one does), the measures' definitions, and the Alibaba importer on
the trace's first 500 tasks (tests/data: the real rows)."""

from __future__ import annotations

import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.scheduling import AgentInfo
from actors.domain.scheduling.ledger import Ledger
from actors.domain.slots import ResourceSlot
from actors.domain.whatif import (
    Fragmentation,
    Policy,
    Workload,
    WorkloadAgent,
    WorkloadJob,
    accelerator_slot,
    demand_mix,
    recorded,
    simulate,
    summarize,
)
from actors.domain.whatif.measures import jain, percentile
from kernelhub.traces import TraceError, import_trace

pytestmark = pytest.mark.unit

TRACE_HEAD = Path(__file__).parent / "data" / "alibaba-gpu-v2023-head"
G = 2**30


def agent(agent_id: str, cpu: int = 8, gpus: int = 0) -> WorkloadAgent:
    capacity: dict[str, Decimal] = {"cpu": Decimal(cpu), "mem": Decimal(64 * G)}
    if gpus:
        capacity["cuda.shares"] = Decimal(gpus)
    return WorkloadAgent(agent_id=agent_id, capacity=capacity)


def job(
    job_id: str, at: float, cpu: float, run: float | None, gpus: float = 0, owner: str = "u1"
) -> WorkloadJob:
    requested = {"cpu": Decimal(str(cpu)), "mem": Decimal(G)}
    if gpus:
        requested["cuda.shares"] = Decimal(str(gpus))
    return WorkloadJob(job_id=job_id, arrival_s=at, requested=requested, run_s=run, owner=owner)


def workload(agents: list[WorkloadAgent], jobs: list[WorkloadJob], span: float = 0) -> Workload:
    slot_types = {"cpu": "count", "mem": "bytes"}
    if any("cuda.shares" in a.capacity for a in agents):
        slot_types["cuda.shares"] = "count"
    return Workload.model_validate(
        {"agents": agents, "jobs": jobs, "span_s": span, "slot_types": slot_types}
    )


def by_id(result: object) -> dict[str, object]:
    return {o.job.job_id: o for o in result.outcomes}  # type: ignore[attr-defined]


class TestReplay:
    def test_a_job_waits_for_room_and_starts_when_another_ends(self) -> None:
        w = workload([agent("a1", cpu=4)], [job("j1", 0, 3, run=100), job("j2", 10, 2, run=50)])
        outcomes = by_id(simulate(w, Policy("fifo"), horizon_s=1000))
        assert (outcomes["j1"].start_s, outcomes["j1"].end_s) == (0, 100)  # type: ignore[attr-defined]
        assert outcomes["j2"].wait_s == 90 and outcomes["j2"].end_s == 150  # type: ignore[attr-defined]

    def test_a_strict_fifo_head_holds_the_queue_a_skipping_one_does_not(self) -> None:
        jobs = [job("small0", 0, 3, run=100), job("big", 1, 4, run=10), job("small", 2, 1, run=10)]
        w = workload([agent("a1", cpu=4)], jobs)
        strict = by_id(simulate(w, Policy("fifo"), horizon_s=1000))
        assert strict["small"].start_s == 110  # type: ignore[attr-defined]  # behind big (100)
        skipping = by_id(
            simulate(w, Policy("fifo", config={"num_retries_to_skip": 1}), horizon_s=1000)
        )
        assert skipping["small"].start_s == 2  # type: ignore[attr-defined]

    def test_the_selector_decides_where_sessions_go(self) -> None:
        jobs = [job(f"j{n}", n, 1, run=50) for n in range(4)]
        w = workload([agent("a1"), agent("a2")], jobs, span=100)
        packed = by_id(simulate(w, Policy("fifo", "concentrated")))
        spread = by_id(simulate(w, Policy("fifo", "dispersed")))
        assert {o.agents for o in packed.values()} == {("a1",)}  # type: ignore[attr-defined]
        assert {o.agents for o in spread.values()} == {("a1",), ("a2",)}  # type: ignore[attr-defined]

    def test_censored_jobs_run_until_the_horizon(self) -> None:
        running = job("r", 0, 8, run=5).model_copy(update={"censored": True})
        w = workload([agent("a1")], [running, job("after", 1, 1, run=1)], span=500)
        outcomes = by_id(simulate(w, Policy("fifo")))
        assert outcomes["r"].end_s == 500  # type: ignore[attr-defined]
        assert outcomes["after"].start_s is None  # type: ignore[attr-defined]

    def test_a_dependency_must_end_first(self) -> None:
        first = job("first", 0, 1, run=30)
        second = job("second", 1, 1, run=5).model_copy(update={"dependencies": ("first",)})
        outcomes = by_id(
            simulate(workload([agent("a1")], [first, second]), Policy("fifo"), horizon_s=100)
        )
        assert outcomes["second"].start_s == 30  # type: ignore[attr-defined]

    @settings(max_examples=25, deadline=None)
    @given(
        seed=st.integers(0, 10_000),
        policy=st.sampled_from(
            [
                Policy("fifo"),
                Policy("fifo", "dispersed"),
                Policy("drf"),
                Policy("mof"),
                Policy("lifo"),
            ]
        ),
    )
    def test_nothing_ever_runs_on_more_than_an_agent_has(self, seed: int, policy: Policy) -> None:
        rng = random.Random(seed)
        agents = [agent(f"a{n}", cpu=rng.choice([4, 8]), gpus=rng.choice([0, 2])) for n in range(3)]
        jobs = [
            job(
                f"j{n}",
                rng.uniform(0, 100),
                rng.choice([1, 2, 3]),
                rng.uniform(1, 50),
                gpus=rng.choice([0, 0.5, 1]),
                owner=rng.choice(["u1", "u2"]),
            )
            for n in range(30)
        ]
        result = simulate(workload(agents, jobs), policy, horizon_s=10_000)
        capacity = {a.agent_id: a.capacity for a in agents}
        for agent_id, cap in capacity.items():
            changes: list[tuple[float, int, ResourceSlot]] = []
            for o in result.outcomes:
                if o.agents == (agent_id,):
                    slots = ResourceSlot(o.job.requested)
                    changes += [(o.start_s, 1, slots), (o.end_s, 0, slots)]
            in_use = ResourceSlot()
            for _, starts, slots in sorted(changes, key=lambda c: (c[0], c[1])):
                in_use = in_use + slots if starts else in_use - slots
                assert in_use <= ResourceSlot(cap)
        for o in result.outcomes:  # and everything some agent can hold ran in the end
            if any(ResourceSlot(o.job.requested) <= ResourceSlot(c) for c in capacity.values()):
                assert o.start_s is not None, o

    @pytest.mark.parametrize("config", [{}, {"drf_share": "sum"}])
    def test_drf_decides_the_same_from_each_owners_deciding_sessions(
        self, config: dict[str, str]
    ) -> None:
        rng = random.Random(7)
        agents = [agent(f"a{n}", cpu=8, gpus=2) for n in range(3)]
        jobs = [
            job(
                f"j{n}",
                rng.uniform(0, 200),
                rng.choice([1, 2, 4]),
                rng.uniform(5, 80),
                gpus=rng.choice([0, 0.5, 1]),
                owner=rng.choice(["u1", "u2", "u3"]),
            )
            for n in range(80)
        ]
        w = workload(agents, jobs)
        reduced = simulate(w, Policy("drf", config=config), horizon_s=5000)
        exact = simulate(w, Policy("drf", config=config), horizon_s=5000, exact_existing=True)
        assert [(o.start_s, o.agents) for o in reduced.outcomes] == [
            (o.start_s, o.agents) for o in exact.outcomes
        ]
        assert sum(1 for o in exact.outcomes if o.wait_s) > 10  # the queue mattered


class TestMeasures:
    def test_percentiles_and_jain(self) -> None:
        assert percentile([5, 1, 3, 2, 4], 50) == 3
        assert percentile([1, 2, 3, 4], 99) == 4
        assert percentile([], 50) is None
        assert jain([1, 1, 1]) == 1
        assert jain([1, 0, 0, 0]) == 0.25

    def test_fragmentation_counts_free_gpus_the_mix_cannot_use(self) -> None:
        # slots in name order: cpu, cuda.shares, mem
        mix = [((4.0, 1.0, 1.0), 0.5), ((1.0, 0.5, 1.0), 0.5)]
        frag = Fragmentation(mix, accelerator_index=1)
        assert frag([(8.0, 2.0, 64.0)]) == 0  # both fit
        assert frag([(0.0, 2.0, 64.0)]) == 2  # no cpu: both GPUs are stranded
        assert frag([(2.0, 0.7, 64.0)]) == pytest.approx(0.35)  # only the small one fits
        assert frag([(8.0, 0.0, 64.0)] * 3) == 0  # no free GPU, nothing stranded

    def test_a_replays_figures_come_with_what_happened(self) -> None:
        jobs = [job("j1", 0, 3, run=100, gpus=1), job("j2", 10, 2, run=50, gpus=1)]
        jobs = [j.model_copy(update={"observed_wait_s": 5.0}) for j in jobs]
        w = workload([agent("a1", cpu=4, gpus=2)], jobs, span=1000)
        acc = accelerator_slot(w)
        names = sorted(w.slot_types)
        probe = Fragmentation(demand_mix(w.jobs, names, acc or ""), names.index(acc or ""))
        figures = summarize(simulate(w, Policy("fifo"), fragmentation=probe), acc)
        assert acc == "cuda.shares"
        assert figures["wait_p99_s"] == 90 and figures["started"] == 2
        assert 0 < figures["gpu_alloc_pct"] < 100
        assert recorded(w)["wait_p99_s"] == 5.0


class TestLedgerRecord:
    def test_the_agents_a_ledger_changed_are_named_since_a_cursor(self) -> None:
        ledger = Ledger()
        for name in ("a1", "a2", "a3"):
            ledger.set_capacity(name, ResourceSlot(cpu=4))
        _, cursor = ledger.touched_since(0)
        import uuid

        session, kernel = uuid.uuid4(), uuid.uuid4()
        ledger.reserve(session, [(kernel, "a2", ResourceSlot(cpu=1))])
        touched, cursor = ledger.touched_since(cursor)
        assert touched == {"a2"}
        assert ledger.release_session(session) == [kernel]
        assert ledger.touched_since(cursor)[0] == {"a2"}
        assert ledger.occupied["a2"] == ResourceSlot(cpu=0)


class TestAlibabaImport:
    def test_the_first_500_tasks_become_sessions_on_the_traces_nodes(self) -> None:
        w = import_trace("alibaba-gpu-v2023", TRACE_HEAD)
        assert len(w.agents) == 1523 and len(w.jobs) == 500
        node = next(a for a in w.agents if a.agent_id == "openb-node-0000")
        assert node.capacity == {"cpu": 32, "mem": 256 * G}
        gpus = sum(a.capacity.get("cuda.shares", 0) for a in w.agents)
        assert gpus == 6212
        first = w.jobs[0]  # openb-pod-0000: 12 cores, 16 GiB, one whole GPU, LS
        assert first.job_id == "openb-pod-0000"
        assert first.requested == {"cpu": 12, "mem": 16 * G, "cuda.shares": 1}
        # Deleted while Running, months before the record ends: it ran, and ended.
        assert (first.owner, first.session_type, first.censored) == ("LS", "interactive", False)
        assert first.run_s == 12537496
        shared = next(j for j in w.jobs if j.job_id == "openb-pod-0001")
        assert shared.requested["cuda.shares"] == Decimal("0.46")
        assert shared.run_s == 12902960 - 427061
        assert shared.censored  # deleted when the record ends: still running then
        withdrawn = [j for j in w.jobs if j.observed_wait_s is None]
        assert withdrawn and all(j.run_s is None and not j.censored for j in withdrawn)
        assert sum(j.censored for j in w.jobs) < len(w.jobs) // 10
        assert w.span_s >= max(j.arrival_s for j in w.jobs)
        per_owner: dict[str, int] = defaultdict(int)
        for j in w.jobs:
            per_owner[j.owner] += 1
        assert set(per_owner) <= {"LS", "BE", "Burstable", "Guaranteed"}

    def test_a_limit_reads_only_the_first_tasks(self) -> None:
        assert len(import_trace("alibaba-gpu-v2023", TRACE_HEAD, 20).jobs) == 20

    def test_a_bad_row_is_named_by_file_line_and_column(self, tmp_path: Path) -> None:
        for name in ("openb_node_list_all_node.csv", "openb_pod_list_default.csv"):
            (tmp_path / name).write_text((TRACE_HEAD / name).read_text())
        pods = tmp_path / "openb_pod_list_default.csv"
        lines = pods.read_text().splitlines()
        lines[3] = lines[3].replace(",12000,", ",-12000,", 1)
        pods.write_text("\n".join(lines) + "\n")
        with pytest.raises(TraceError, match=r"openb_pod_list_default.csv:4: cpu_milli"):
            import_trace("alibaba-gpu-v2023", tmp_path)
        with pytest.raises(TraceError, match="unknown trace format"):
            import_trace("slurm", tmp_path)
        with pytest.raises(TraceError, match="not found"):
            import_trace("alibaba-gpu-v2023", tmp_path / "nowhere")


class TestFragmentationSelector:
    """The ``fragmentation`` selector (after FGD): the choice that strands least."""

    def run(self, selector: str, agents: list, requests: list[ResourceSlot]) -> list[str]:  # type: ignore[type-arg]
        from actors.domain.predicates import Occupancy, PredicateContext
        from actors.domain.scaling_groups import ScalingGroup
        from actors.domain.scheduling import schedule_pass
        from actors.domain.slots import SlotType

        from .domain_builders import T0, make_session, pending

        known = {"cpu": SlotType.COUNT, "mem": SlotType.BYTES, "cuda.shares": SlotType.COUNT}
        ctx = PredicateContext(now=T0, known_slot_types=known, occupancy=Occupancy())
        sessions = [make_session(request=r) for r in requests]
        result = schedule_pass(
            group=ScalingGroup("g", agent_selector=selector),
            pending=pending(*sessions),
            existing=[],
            agents=agents,
            ctx=ctx,
        )
        by_session = {d.session_id: d.reservation.allocations[0].agent_id for d in result.decisions}
        return [by_session.get(s.session_id, "-") for s in sessions]

    def test_a_half_gpu_fills_a_half_used_gpu_rather_than_splitting_a_whole_one(self) -> None:
        half = ResourceSlot({"cpu": 1, "mem": G, "cuda.shares": "0.5"})
        whole = ResourceSlot({"cpu": 1, "mem": G, "cuda.shares": 1})
        agents = [
            AgentInfo("a-roomy", ResourceSlot({"cpu": 16, "mem": 64 * G, "cuda.shares": "0.5"})),
            AgentInfo("b-tight", ResourceSlot({"cpu": 8, "mem": 64 * G, "cuda.shares": 1})),
        ]
        # concentrated compares cpu first: the half GPU goes to b, and the whole one that
        # follows fits nowhere; fragmentation keeps b's GPU whole for it
        assert self.run("concentrated", agents, [half, whole]) == ["b-tight", "-"]
        assert self.run("fragmentation", agents, [half, whole]) == ["a-roomy", "b-tight"]

    def test_a_request_no_agent_could_hold_fails_alone_not_the_pass(self) -> None:
        """The log may hold a request from before requests were bounded (a NaN): it is its
        session's failure, as with every other selector, and the mix leaves it out."""
        from decimal import Decimal

        agents = [AgentInfo("a1", ResourceSlot({"cpu": 8, "mem": 64 * G, "cuda.shares": 1}))]
        broken = ResourceSlot({"cpu": Decimal("NaN"), "mem": G, "cuda.shares": 1})
        fine = ResourceSlot({"cpu": 1, "mem": G, "cuda.shares": "0.5"})
        assert self.run("fragmentation", agents, [broken, fine]) == ["-", "a1"]

    def test_the_mix_counts_only_what_it_cannot_fit(self) -> None:
        from actors.domain.scheduling.fragmentation import DemandMix

        # units: (cpu, gpu) with gpu at index 1
        mix = DemandMix([(1, 2), (1, 2), (4, 1), (1, 0)], accelerators=[1])
        assert [c for _, c in mix.types] == [2, 1]  # a cpu-only request is no type
        assert mix.fragmented((8, 2)) == 0
        assert mix.fragmented((2, 2)) == pytest.approx(2 / 3)  # only (4, 1) does not fit
        assert mix.fragmented((8, 1)) == pytest.approx(2 / 3)  # (1, 2) does not fit
        assert mix.fragmented((0, 0)) == 0
