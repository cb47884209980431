"""Scheduler plugins, agent selection and placement (23.03's ``manager/scheduler/``;
docs/scheduling.md; B5, B8 in docs/upstream.md)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal

import pytest

from actors.domain.predicates import Occupancy, QuotaPolicy
from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import (
    AgentInfo,
    ExistingSession,
    PassResult,
    make_plugin,
    occupancy_of,
    schedule_pass,
)
from actors.domain.scheduling.ledger import Ledger
from actors.domain.session import ClusterMode, KernelRole
from actors.domain.slots import ResourceSlot
from actors.domain.statuses import USER_RESOURCE_OCCUPYING_SESSION_STATUSES, SessionStatus

from .domain_builders import G, agent, context, make_session, pending, slots

pytestmark = pytest.mark.unit


def run(
    sessions: list,  # type: ignore[type-arg]
    agents: list[AgentInfo],
    *,
    scheduler: str = "fifo",
    config: dict | None = None,  # type: ignore[type-arg]
    existing: list[ExistingSession] | None = None,
    selector: str | None = None,
    pending_timeout: float = 0,
    policies: dict[str, QuotaPolicy] | None = None,
) -> PassResult:
    group = ScalingGroup(
        "default",
        scheduler=scheduler,
        scheduler_config=config or {},
        agent_selector=selector,
        pending_timeout=pending_timeout,
    )
    return schedule_pass(
        group=group,
        pending=sessions,
        existing=existing or [],
        agents=agents,
        ctx=context(policies=policies),
    )


def placed(result: PassResult) -> list[tuple[str, list[str]]]:
    return [
        (str(d.session_id), [a.agent_id for a in d.reservation.allocations])
        for d in result.decisions
    ]


class TestPendingTimeout:
    def test_sessions_pending_too_long_are_cancelled_not_scheduled(self) -> None:
        # the context's clock is T0 + 1 day
        recent = make_session(age_s=-3600 * 23)  # created T0 + 23 h: pending for 1 h
        stale = make_session()  # created around T0: pending for a day
        result = run(pending(recent, stale), [agent("a1")], pending_timeout=7200)
        assert [(c.session_id, c.reason) for c in result.cancellations] == [
            (stale.session_id, "pending-timeout")
        ]
        assert [d.session_id for d in result.decisions] == [recent.session_id]

    def test_zero_means_never(self) -> None:
        result = run(pending(make_session(age_s=10**7)), [agent("a1")], pending_timeout=0)
        assert not result.cancellations and len(result.decisions) == 1


class TestPlugins:
    def test_fifo_picks_the_oldest_and_strict_fifo_blocks_on_its_head(self) -> None:
        big, small = make_session(request=slots(12)), make_session(request=slots(1))
        busy = AgentInfo("a1", slots(16, 64 * G), occupied=slots(8, G))  # big fits once freed
        result = run(pending(big, small), [busy])
        assert not result.decisions
        assert [(f.session_id, f.status_info) for f in result.failures] == [
            (big.session_id, "no-available-instances")
        ]
        assert "Could not find a contiguous resource region" in (result.failures[0].msg or "")

    def test_strict_fifo_moves_past_a_head_no_agent_could_ever_hold(self) -> None:
        huge, small = make_session(request=slots(32)), make_session(request=slots(1))
        result = run(pending(huge, small), [agent("a1")])  # 32 cpu: more than a1 has at all
        assert [d.session_id for d in result.decisions] == [small.session_id]
        assert [f.session_id for f in result.failures] == [huge.session_id]

    def test_fifo_num_retries_to_skip_lets_others_pass_a_stuck_head(self) -> None:
        big, small = make_session(request=slots(32)), make_session(request=slots(1))
        sessions = [*pending(big, retries=3), *pending(small)]
        result = run(sessions, [agent("a1")], config={"num_retries_to_skip": 2})
        assert [d.session_id for d in result.decisions] == [small.session_id]
        # the head is tried too (last), and fails without blocking anyone
        assert [f.session_id for f in result.failures] == [big.session_id]

    def test_other_plugins_do_not_block_on_the_head(self) -> None:
        big, small = make_session(request=slots(32)), make_session(request=slots(1))
        result = run(pending(big, small), [agent("a1")], scheduler="mof")
        assert [d.session_id for d in result.decisions] == [small.session_id]

    def test_lifo_picks_the_newest(self) -> None:
        first, second = make_session(request=slots(10)), make_session(request=slots(10))
        result = run(pending(first, second), [agent("a1")], scheduler="lifo")
        assert [d.session_id for d in result.decisions] == [second.session_id]

    def test_drf_picks_the_keypair_with_the_lowest_dominant_share(self) -> None:
        heavy = make_session("AK-heavy", request=slots(8, 8 * G))  # 50% cpu share
        light = make_session("AK-light", request=slots(1, 32 * G))  # 50% mem share, 6% cpu
        existing = [
            ExistingSession(heavy, SessionStatus.RUNNING, heavy.requested_slots),
            ExistingSession(light, SessionStatus.RUNNING, slots(1, 2 * G)),
        ]
        a = make_session("AK-heavy", request=slots(1))  # older
        b = make_session("AK-light", request=slots(1))
        result = run(pending(a, b), [agent("a1", 16, 64 * G)], scheduler="drf", existing=existing)
        assert [d.session_id for d in result.decisions] == [b.session_id, a.session_id]

    def test_drf_share_is_the_max_over_sessions_not_the_sum(self) -> None:
        plugin = make_plugin("drf")
        many = [make_session("AK1", request=slots(2)) for _ in range(4)]  # sum 8/16, max 2/16
        one = make_session("AK2", request=slots(4))  # 4/16
        plugin.begin(
            slots(16, 64 * G),
            [ExistingSession(s, SessionStatus.RUNNING, s.requested_slots) for s in [*many, one]],
        )
        pick = plugin.pick_session(pending(make_session("AK2"), make_session("AK1")))
        assert pick == 1  # AK1's share (0.125) is lower than AK2's (0.25)

    def test_mof_picks_the_least_occupied_agent(self) -> None:
        busy = AgentInfo("a1", slots(16, 64 * G), occupied=slots(8, 8 * G))
        idle = AgentInfo("a2", slots(16, 64 * G), occupied=slots(2, 2 * G))
        result = run(pending(make_session()), [busy, idle], scheduler="mof")
        assert placed(result)[0][1] == ["a2"]

    def test_fifo_prefers_agents_without_unrequested_accelerators(self) -> None:
        gpu = agent("a-gpu", 64, 256 * G, cuda_device=4)
        cpu = agent("b-cpu", 8, 32 * G)
        result = run(pending(make_session()), [gpu, cpu])
        assert placed(result)[0][1] == ["b-cpu"]
        wants_gpu = make_session(request=slots(1, G, cuda_device=1))
        assert placed(run(pending(wants_gpu), [gpu, cpu]))[0][1] == ["a-gpu"]

    def test_fifo_prefers_the_biggest_agent_and_ties_go_to_the_smallest_id(self) -> None:
        agents = [agent("c", 16), agent("a", 16), agent("b", 32)]
        assert placed(run(pending(make_session()), agents))[0][1] == ["b"]
        agents = [agent("c", 16), agent("a", 16)]
        assert placed(run(pending(make_session()), agents))[0][1] == ["a"]

    def test_unknown_plugin(self) -> None:
        with pytest.raises(ValueError, match="unknown scheduler 'nope'"):
            make_plugin("nope")


class TestSelectors:
    """kernelhub extension (Backend.AI 23.09): concentrated / dispersed."""

    def test_concentrated_packs_and_dispersed_spreads(self) -> None:
        agents = [agent("a", 16), AgentInfo("b", slots(16, 64 * G), occupied=slots(12, 4 * G))]
        assert placed(run(pending(make_session()), agents, selector="concentrated"))[0][1] == ["b"]
        assert placed(run(pending(make_session()), agents, selector="dispersed"))[0][1] == ["a"]

    def test_round_robin_takes_turns_across_passes(self) -> None:
        agents = [agent("a"), agent("b"), agent("c")]
        group = ScalingGroup("default", agent_selector="round-robin")
        first = schedule_pass(
            group=group,
            pending=pending(make_session(), make_session()),
            existing=[],
            agents=agents,
            ctx=context(),
        )
        assert [p[1] for p in placed(first)] == [["a"], ["b"]]
        second = schedule_pass(
            group=group,
            pending=pending(make_session(), make_session()),
            existing=[],
            agents=agents,
            ctx=context(),
            round_robin_last=first.round_robin_last,
        )
        assert [p[1] for p in placed(second)] == [["c"], ["a"]]


class TestPlacement:
    def test_a_session_the_ledger_already_holds_is_not_placed_again(self) -> None:
        """The pending list comes from a read model that may lag the ledger: a session the
        ledger reserved already is skipped, not re-reserved (which raised and failed the
        whole pass)."""
        group = ScalingGroup("default")
        sessions = pending(make_session(), make_session())
        agents = [agent("a")]
        ledger = Ledger()
        ledger.set_capacity("a", agents[0].capacity)
        first = schedule_pass(
            group=group,
            pending=sessions[:1],
            existing=[],
            agents=agents,
            ctx=context(),
            ledger=ledger,
        )
        assert len(first.decisions) == 1
        second = schedule_pass(
            group=group, pending=sessions, existing=[], agents=agents, ctx=context(), ledger=ledger
        )
        assert [d.session_id for d in second.decisions] == [sessions[1].spec.session_id]

    def test_architecture_mismatch_is_no_available_instances(self) -> None:
        arm = make_session(architecture="aarch64")
        result = run(pending(arm), [agent("a1")])
        (failure,) = result.failures
        assert failure.status_info == "no-available-instances"
        assert "compatible with the image architecture (aarch64)" in (failure.msg or "")

    def test_single_node_cluster_lands_on_one_agent_with_the_total(self) -> None:
        session = make_session(size=3, request=slots(4, 4 * G))
        result = run(pending(session), [agent("a1", 8), agent("a2", 16)])
        (decision,) = result.decisions
        assert {a.agent_id for a in decision.reservation.allocations} == {"a2"}
        assert len(decision.reservation.allocations) == 3

    def test_multi_node_places_kernels_on_distinct_agents(self) -> None:
        """B8: no manual agent list needed."""
        session = make_session(size=2, mode=ClusterMode.MULTI_NODE, request=slots(2))
        result = run(pending(session), [agent("a1"), agent("a2"), agent("a3")])
        (decision,) = result.decisions
        hosts = [a.agent_id for a in decision.reservation.allocations]
        assert len(set(hosts)) == 2

    def test_multi_node_rolls_back_every_reservation_if_one_kernel_fails(self) -> None:
        session = make_session(size=3, mode=ClusterMode.MULTI_NODE, request=slots(8))
        small = make_session(request=slots(16))
        agents = [agent("a1"), agent("a2")]
        result = run(
            [*pending(session), *pending(small)], agents, config={"num_retries_to_skip": 1}
        )
        assert [f.session_id for f in result.failures] == [session.session_id]
        # nothing of the failed trial remains: a full-agent session still fits
        assert [d.session_id for d in result.decisions] == [small.session_id]

    def test_designated_agent(self) -> None:
        session = make_session(agents=("a2",))
        assert placed(run(pending(session), [agent("a1", 64), agent("a2")]))[0][1] == ["a2"]
        too_big = make_session(agents=("a2",), request=slots(32))
        result = run(pending(too_big), [agent("a1", 64), agent("a2")])
        assert "designated agent a2" in (result.failures[0].msg or "")

    def test_unschedulable_and_dead_agents_are_never_chosen(self) -> None:
        agents = [
            replace(agent("a1", 64), schedulable=False),
            replace(agent("a2", 64), alive=False),
        ]
        result = run(pending(make_session()), agents)
        assert not result.decisions and result.failures[0].status_info == "no-available-instances"

    def test_private_session_failing_predicates_is_cancelled_at_once(self) -> None:
        """B5."""
        sftp = make_session("AK1", role=KernelRole.SYSTEM)
        running = make_session("AK1", role=KernelRole.SYSTEM)
        existing = [ExistingSession(running, SessionStatus.RUNNING, running.requested_slots)]
        group = ScalingGroup("default")
        ctx = context(policies={"AK1": QuotaPolicy(max_concurrent_sftp_sessions=1)})
        ctx.occupancy = occupancy_of(existing)
        result = schedule_pass(
            group=group, pending=pending(sftp), existing=existing, agents=[agent("a1")], ctx=ctx
        )
        assert [c.session_id for c in result.cancellations] == [sftp.session_id]


class TestOccupancy:
    def test_the_summed_occupancy_is_the_one_added_session_by_session(self) -> None:
        """``occupancy_of`` sums per owner at once; it must equal ``Occupancy.add`` one
        session at a time (keypairs, projects, domains, counts, private sessions, statuses
        that do not occupy)."""
        project_a, project_b = uuid.uuid4(), uuid.uuid4()
        existing = []
        for n in range(60):
            role = KernelRole.SYSTEM if n % 11 == 0 else KernelRole.COMPUTE
            spec = make_session(
                f"AK{n % 4}",
                project=(project_a, project_b, None)[n % 3],
                domain=("default", "lab")[n % 2],
                role=role,
            )
            status = (SessionStatus.RUNNING, SessionStatus.PREPARING, SessionStatus.TERMINATED)[
                n % 3 if n % 7 == 0 else 0
            ]
            existing.append(ExistingSession(spec, status, slots(cpu=0.5 + n % 3, mem=n * G)))
        expected = Occupancy()
        for session in existing:
            if session.status in USER_RESOURCE_OCCUPYING_SESSION_STATUSES:
                expected.add(session.spec, session.occupying)
        got = occupancy_of(existing)
        for field in ("keypair", "project", "domain", "sessions", "sftp_sessions"):
            assert dict(getattr(got, field)) == dict(getattr(expected, field)), field
        assert got.keypair["AK1"]["cpu"] > 0 and got.sftp_sessions

    def test_a_total_is_the_sum_of_its_parts(self) -> None:
        parts = [slots(cpu=0.25), slots(cpu=1, mem=G, cuda_device=1), {"mem": Decimal(3)}]
        assert ResourceSlot.total(parts) == parts[0] + parts[1] + ResourceSlot(parts[2])
        assert list(ResourceSlot.total(parts)) == ["cpu", "cuda.device", "mem"]
        assert ResourceSlot.total([]) == ResourceSlot()


def test_an_index_kept_for_long_stays_small_and_picks_as_a_fresh_one() -> None:
    """An index kept across passes gathers a stale heap entry per change; it is compacted
    (bounded by about twice its agents), and every pick still equals a fresh index's, also
    for agents that left as exhausted and came back."""
    import random

    from actors.domain.scheduling import AgentIndex, AgentState, selection_key
    from actors.domain.slots import INTRINSIC_SLOTS, SlotLayout

    layout = SlotLayout(INTRINSIC_SLOTS)
    width = len(layout.names)
    capacity = tuple(8 if name == "cpu" else 8 * G if name == "mem" else 0 for name in layout.names)

    def states(occupied: dict[str, list[int]]) -> list[AgentState]:
        return [AgentState(a, "x86_64", capacity, list(occupied[a])) for a in sorted(occupied)]

    occupied = {f"a{n}": [0] * width for n in range(5)}
    kept = AgentIndex(states(occupied), layout, selection_key("least-occupied"))
    request = tuple(1 if name == "cpu" else G if name == "mem" else 0 for name in layout.names)
    rng = random.Random(7)
    for _ in range(2000):
        fresh = AgentIndex(states(occupied), layout, selection_key("least-occupied"))
        want, got = fresh.pick(request), kept.pick(request)
        assert (want and want.agent_id) == (got and got.agent_id)
        if got is not None and rng.random() < 0.6:
            kept.reserve(got, request)
            occupied[got.agent_id] = list(got.occupied)
        else:  # kernels end here and there: the ledger says so, the kept index is told
            busy = [a for a, used in occupied.items() if any(used)]
            for name in rng.choices(busy, k=20) if busy else []:
                occupied[name] = [
                    max(0, u - r) for u, r in zip(occupied[name], request, strict=True)
                ]
                kept.update(name, tuple(occupied[name]))
        for group in kept.groups.values():
            assert len(group.heap) <= 2 * len(group.version) + 65


def test_the_largest_key_picks_from_its_tree_what_the_heap_picked() -> None:
    """``largest`` ranks agents by capacity alone, so its index keeps them in a fixed order
    with a tree of what each run of them has free (the heap popped past full big agents
    at its top on every pick). Over random requests, exclusions, reservations and ends,
    each pick equals the heap's: the first by capacity, then id, that fits."""
    import random

    from actors.domain.scheduling import AgentIndex, AgentState, selection_key
    from actors.domain.scheduling.agents import _Group, _SortedGroup, largest_first
    from actors.domain.slots import INTRINSIC_SLOTS, SlotLayout, SlotType

    layout = SlotLayout({**INTRINSIC_SLOTS, "cuda.device": SlotType.COUNT})
    rng = random.Random(11)
    sizes = [(8, 32, 0), (16, 64, 4), (32, 128, 8), (16, 64, 4)]  # equal capacities: ids decide

    def capacity(cpu: int, mem: int, gpu: int) -> tuple[int, ...]:
        amounts = {"cpu": cpu, "mem": mem * G, "cuda.device": gpu}
        return tuple(amounts.get(name, 0) for name in layout.names)

    agents = {f"i-{n:03}": capacity(*rng.choice(sizes)) for n in range(60)}

    def states() -> list[AgentState]:
        return [AgentState(a, "x86_64", c) for a, c in sorted(agents.items())]

    tree = AgentIndex(states(), layout, selection_key("largest"))
    heap = AgentIndex(states(), layout, lambda a: largest_first(a))  # same order, a heap
    assert all(isinstance(g, _SortedGroup) for g in tree.groups.values())
    assert all(isinstance(g, _Group) for g in heap.groups.values())
    placed = 0
    for _ in range(3000):
        request = capacity(rng.choice([1, 2, 4, 8]), rng.choice([1, 4, 16]), rng.choice([0, 0, 1]))
        exclude = frozenset(rng.sample(sorted(agents), k=rng.choice([0, 0, 3])))
        want, got = heap.pick(request, exclude=exclude), tree.pick(request, exclude=exclude)
        assert (want and want.agent_id) == (got and got.agent_id)
        if got is not None and want is not None and rng.random() < 0.7:
            tree.reserve(got, request)
            heap.reserve(want, request)
            placed += 1
        else:  # some end: both are told the ledger's occupancy
            for name in rng.sample(sorted(agents), k=5):
                freed = tuple(
                    rng.randint(0, used) for used in tree.agents[name].occupied
                )  # part of what it holds
                left = tuple(u - f for u, f in zip(tree.agents[name].occupied, freed, strict=True))
                tree.update(name, left)
                heap.update(name, left)
    assert placed > 500  # the cluster filled and emptied, many times over
    for group in tree.groups.values():  # and the tree says what a fresh one would
        assert isinstance(group, _SortedGroup)
        fresh = _SortedGroup(group.order, group.key, tree._exhausted)
        assert fresh._tree == group._tree
