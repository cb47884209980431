"""Start-time estimates, pure: the real pass run forward in simulated time over expected
run times (learned, or from limits), and when an estimate is worth recording again."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest

from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import AgentInfo
from actors.domain.scheduling.estimate import (
    DEFAULT_RUN_S,
    Estimate,
    Expected,
    RunTimes,
    estimate_starts,
    moved,
)
from actors.domain.scheduling.ledger import Ledger
from actors.domain.scheduling.plugins import ExistingSession
from actors.domain.session import SessionSpec
from actors.domain.statuses import SessionStatus

from .domain_builders import agent, context, make_session, pending, slots

pytestmark = pytest.mark.unit


def holding(node: AgentInfo, *running: SessionSpec) -> Ledger:
    """A ledger of ``node`` with each of ``running`` holding its request there."""
    ledger = Ledger({node.agent_id: node.capacity})
    for session in running:
        ledger.reserve(
            session.session_id,
            [(session.kernels[0].kernel_id, node.agent_id, session.requested_slots)],
        )
    return ledger


def after_calls(calls: int) -> Callable[[], bool]:
    """A deadline that comes after it was asked ``calls`` times."""
    asked = 0

    def deadline() -> bool:
        nonlocal asked
        asked += 1
        return asked > calls

    return deadline


def test_run_times_come_from_the_closest_history_then_the_limit_then_a_default() -> None:
    book = RunTimes()
    assert book.expected("AK1", "py", None) == Expected(
        DEFAULT_RUN_S / 4, DEFAULT_RUN_S, 4 * DEFAULT_RUN_S, "default"
    )
    assert book.expected("AK1", "py", 600).basis == "limit"
    for seconds in (100, 200, 300, 400, 500):
        book.add("AK2", "py", seconds)
    mine = book.expected("AK2", "py", None)
    assert (mine.basis, mine.low, mine.mid, mine.high) == ("history", 200, 300, 400)
    other = book.expected("AK1", "py", None)  # the image's history when the owner has none
    assert other.mid == 300 and other.basis == "history"
    capped = book.expected("AK2", "py", 250)  # never past the lifetime the policy allows
    assert capped.mid == 250 and capped.high == 250
    book.add("AK2", "py", float("nan"))  # nonsense is not learned
    assert book.expected("AK2", "py", None).mid == 300


def test_the_queue_is_estimated_behind_what_runs_and_what_goes_first() -> None:
    node = agent("i-a", cpu=4)
    running = make_session(request=slots(cpu=4))
    ledger = holding(node, running)
    first, second = make_session(request=slots(cpu=4)), make_session(request=slots(cpu=4))
    second = dataclasses.replace(second, created_at=first.created_at + timedelta(seconds=1))
    ctx = context()
    expected = {
        running.session_id: Expected(30, 60, 90, "history"),
        first.session_id: Expected(100, 200, 300, "history"),
        second.session_id: Expected(100, 200, 300, "history"),
    }
    found = estimate_starts(
        group=ScalingGroup("default"),
        pending=pending(first, second),
        existing=[ExistingSession(running, SessionStatus.RUNNING, running.requested_slots)],
        agents=[node],
        ledger=ledger,
        ctx=ctx,
        elapsed_s={running.session_id: 10},
        expected=expected,
    )
    assert found[first.session_id].at == ctx.now + timedelta(seconds=50)
    assert found[second.session_id].at == ctx.now + timedelta(seconds=250)
    assert found[second.session_id].earliest == ctx.now + timedelta(seconds=20 + 100)
    assert found[second.session_id].latest == ctx.now + timedelta(seconds=80 + 300)
    assert found[first.session_id].basis == "history"
    assert ledger.free("i-a") == node.capacity - running.requested_slots  # left as it was


def test_a_session_no_agent_can_hold_has_no_start_and_one_not_reached_no_estimate() -> None:
    node = agent("i-a", cpu=4)
    huge = make_session(request=slots(cpu=64))
    found = estimate_starts(
        group=ScalingGroup("default"),
        pending=pending(huge),
        existing=[],
        agents=[node],
        ledger=Ledger({"i-a": node.capacity}),
        ctx=context(),
        elapsed_s={},
        expected={},
    )
    assert found[huge.session_id] == Estimate(None, None, None, "default")
    cut = estimate_starts(
        group=ScalingGroup("default"),
        pending=pending(huge),
        existing=[],
        agents=[node],
        ledger=Ledger({"i-a": node.capacity}),
        ctx=context(),
        elapsed_s={},
        expected={},
        deadline=lambda: True,
    )
    assert cut == {}


def test_an_estimate_is_recorded_again_only_when_it_moved_enough() -> None:
    now = context().now
    old = Estimate(now + timedelta(seconds=600), None, None, "history")
    assert moved(None, old, now)
    assert not moved(old, Estimate(now + timedelta(seconds=650), None, None, "history"), now)
    assert moved(old, Estimate(now + timedelta(seconds=900), None, None, "history"), now)
    assert moved(old, Estimate(None, None, None, "history"), now)


def test_kaplan_meier_counts_the_runs_still_going_and_conditions_on_the_run_so_far() -> None:
    from actors.domain.scheduling.estimate import km_quartiles

    # ended at 10, 20, 30; two still running at 100: survival 0.8, 0.6, 0.4 and no lower
    assert km_quartiles([10, 20, 30], [100, 100]) == (20, 30, None)
    assert km_quartiles([10, 20, 30], []) == (10, 20, 30)  # nothing running: plain quartiles
    assert km_quartiles([10, 20, 30], [100, 100], after=25) == (30, None, None)
    book = RunTimes()
    for seconds in (10, 20, 30):
        book.add("AK1", "py", seconds)
    # a session already past every ended run is expected to run as long again
    far = book.expected("AK1", "py", None, ran_s=500, running=[500])
    assert (far.low, far.mid, far.high) == (1000, 1000, 1000)


def test_estimates_are_judged_against_a_replay_of_a_loaded_trace() -> None:
    from pathlib import Path

    from actors.domain.whatif import Policy, simulate
    from actors.domain.whatif.eta import judge_estimates
    from kernelhub.traces import import_trace
    from kernelhub.whatif_cli import parse_agents

    head = Path(__file__).parent / "data" / "alibaba-gpu-v2023-head"
    workload = import_trace("alibaba-gpu-v2023", head, None)
    loaded = workload.model_copy(update={"agents": parse_agents("scale:0.005", workload)})
    replay = simulate(loaded, Policy("fifo", "concentrated"), samples=0)
    judged = judge_estimates(loaded, replay, sample=5)
    waited = [o for o in replay.outcomes if (o.wait_s or 0) >= 60]
    assert len(judged) == min(5, len(waited)) > 0
    assert all(j.waited_s >= 60 for j in judged)
    assert all(j.estimated_wait_s is not None and j.estimated_wait_s >= 0 for j in judged)


def test_the_estimate_itself_is_run_first_and_the_interval_only_with_time_left() -> None:
    node = agent("i-a", cpu=4)
    running = make_session(request=slots(cpu=4))
    ledger = holding(node, running)
    waiting = make_session(request=slots(cpu=4))
    after_the_first_run = after_calls(3)  # the mid run checks once before and once per step

    found = estimate_starts(
        group=ScalingGroup("default"),
        pending=pending(waiting),
        existing=[ExistingSession(running, SessionStatus.RUNNING, running.requested_slots)],
        agents=[node],
        ledger=ledger,
        ctx=context(),
        elapsed_s={running.session_id: 0},
        expected={running.session_id: Expected(10, 60, 90, "history")},
        deadline=after_the_first_run,
    )
    estimate = found[waiting.session_id]
    assert estimate.at == context().now + timedelta(seconds=60)
    assert estimate.earliest == estimate.latest == estimate.at  # no time for the interval


def test_the_expected_run_is_the_mean_so_skewed_runs_add_up_to_a_long_wait() -> None:
    book = RunTimes()
    for seconds in (10, 10, 10, 10, 1000):
        book.add("AK1", "py", seconds)
    skewed = book.expected("AK1", "py", None)
    assert (skewed.low, skewed.high) == (10, 10)  # the quartiles: most runs are short
    assert skewed.mid == pytest.approx(208)  # a queue of five waits about 5 x 208 s


def test_a_queue_deeper_than_the_forward_steps_is_reached_to_its_last_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from actors.domain.scheduling import estimate

    MAX_STEPS = 100  # fewer steps than the real bound, so that a queue of 300 is deeper
    monkeypatch.setattr(estimate, "MAX_STEPS", MAX_STEPS)
    node = agent("i-a", cpu=10)  # ten run side by side: each step releases several
    running = [make_session(request=slots(cpu=1)) for _ in range(10)]
    ledger = holding(node, *running)
    first = make_session(request=slots(cpu=1))
    queue = [
        dataclasses.replace(
            make_session(request=slots(cpu=1)), created_at=first.created_at + timedelta(seconds=n)
        )
        for n in range(3 * MAX_STEPS)
    ]
    ctx = context()
    expected = {s.session_id: Expected(10, 10, 10, "history") for s in [*running, *queue]}
    found = estimate_starts(
        group=ScalingGroup("default"),
        pending=pending(*queue),
        existing=[ExistingSession(r, SessionStatus.RUNNING, r.requested_slots) for r in running],
        agents=[node],
        ledger=ledger,
        ctx=ctx,
        elapsed_s={r.session_id: n * 0.5 for n, r in enumerate(running)},  # ends apart
        expected=expected,
    )
    last = found[queue[-1].session_id].at
    assert last is not None  # 100 passes reach the 300th in line (one end a pass would not)
    # 300 runs of 10 s, ten at a time: the last starts after 29 rounds (less the head
    # start of the first ten, 0 to 4.5 s); walking three ends a pass makes each start a
    # little late, and the lateness adds up along the queue: within a tenth
    assert 285.5 <= (last - ctx.now).total_seconds() <= 1.1 * 290


def test_a_wait_behind_independent_runs_is_the_first_of_them_to_end_not_their_mean() -> None:
    """Half the runs take 10 s, half 1,000 s. A session waits for either of two running
    sessions to end: three times in four one of them is short, so it starts in about 10 s.
    Expecting each run at its mean (505 s, what the estimator did before it drew runs)
    foresaw a start eight minutes later than it most likely is."""
    book = RunTimes()
    for seconds in [10.0] * 20 + [1000.0] * 20:
        book.add("AK1", "py", seconds)
    node = agent("i-a", cpu=4)
    # fixed ids (each session's draws are ordered by its id): in five of the sixteen runs
    # both draw a long run (four in sixteen, expected), in eleven at least one a short one
    running = [
        dataclasses.replace(make_session(request=slots(cpu=2)), session_id=uuid.UUID(int=n))
        for n in (1, 2)
    ]
    ledger = holding(node, *running)
    waiting = make_session(request=slots(cpu=2))
    expected = book.expectations(
        [(r.session_id, "AK1", "py", "", None, 0.0) for r in running]
        + [(waiting.session_id, "AK1", "py", "", None, None)]
    )
    assert all(len(e.draws) == 16 for e in expected.values())
    ctx = context()
    found = estimate_starts(
        group=ScalingGroup("default"),
        pending=pending(waiting),
        existing=[ExistingSession(r, SessionStatus.RUNNING, r.requested_slots) for r in running],
        agents=[node],
        ledger=ledger,
        ctx=ctx,
        elapsed_s={r.session_id: 0.0 for r in running},
        expected=expected,
    )
    estimate = found[waiting.session_id]
    assert estimate.at == ctx.now + timedelta(seconds=10)
    assert estimate.earliest == ctx.now + timedelta(seconds=10)
    assert estimate.latest == ctx.now + timedelta(seconds=1000)  # both long: one time in four


def test_draws_take_one_run_from_each_slice_in_an_order_of_the_sessions_own() -> None:
    from actors.domain.scheduling.estimate import draw_levels

    first, again, other = draw_levels(1), draw_levels(1), draw_levels(2)
    assert first == again  # an estimate does not jitter from one round to the next
    assert sorted(first) == sorted(other) == [(i + 0.5) / 16 for i in range(16)]
    assert first != other  # two sessions' runs are drawn independently


def test_a_run_longer_than_its_history_is_drawn_from_a_tail_as_long_as_it_ran() -> None:
    from actors.domain.scheduling.estimate import curve_draws, km_curve

    curve = km_curve([10, 20, 30], [])
    assert curve_draws(curve, 0.0, [0.1, 0.5, 0.9]) == [10, 20, 30]
    # past every ended run: half the draws at least twice the run so far, a tenth ten times
    beyond = sorted(curve_draws(curve, 500.0, [(i + 0.5) / 10 for i in range(10)]))
    assert beyond[0] > 500 and beyond[4] < 1000 < beyond[5]
    assert beyond[-1] == pytest.approx(10_000)


def test_the_shape_of_a_request_tells_its_runs_apart_from_the_same_owners_others() -> None:
    from actors.domain.scheduling.estimate import shape_of

    notebook = make_session(request=slots(cpu=2, cuda_shares=1))
    training = make_session(request=slots(cpu=8, cuda_shares=8), size=2)
    assert shape_of(notebook) == "1x cuda.shares=1"
    assert shape_of(training) == "2x cuda.shares=8"
    book = RunTimes()
    for _ in range(10):
        book.add("AK1", "py", 86_400.0, shape_of(notebook))  # kept open for a day
        book.add("AK1", "py", 600.0, shape_of(training))  # a ten-minute job
    assert book.expected("AK1", "py", None, shape=shape_of(training)).mid == 600
    assert book.expected("AK1", "py", None, shape=shape_of(notebook)).mid == 86_400
    # a shape never seen is judged by the owner's runs with the image, all shapes together
    assert book.expected("AK1", "py", None, shape="1x").basis == "history"
    assert book.pool("AK1", "py", "1x") == ("owner", "AK1", "py")


def test_services_up_for_months_do_not_make_every_new_session_look_like_one() -> None:
    """Ten-minute jobs end all day; five services have run for a month. Whenever one looks,
    the services are running (they are always there to be seen), so counting them beside
    the last runs that ended would give each new session one chance in three of being a
    service. Only sessions that started within the history's window count: the services
    did not."""
    book = RunTimes()
    for n in range(10):
        book.add("AK1", "py", 600.0, "", ended_at=100_000.0 + 600 * n)
    services = [30 * 86_400.0] * 5
    sessions = [(uuid.uuid4(), "AK1", "py", "", None, ran) for ran in services]
    newcomer = uuid.uuid4()
    expected = book.expectations(
        [*sessions, (newcomer, "AK1", "py", "", None, None)], now=110_000.0
    )
    assert sum(d > 600 for d in expected[newcomer].draws) <= 2  # the tail: one in ten
    # the services themselves are still expected to run on: as long again, or so
    assert all(min(expected[s[0]].draws) > 30 * 86_400.0 for s in sessions)


def test_a_few_ended_runs_leave_a_chance_of_a_longer_one() -> None:
    book = RunTimes()
    for seconds in (10, 20, 30):
        book.add("AK1", "py", seconds)
    draws = book.expected("AK1", "py", None).draws
    assert 3 <= sum(d > 30 for d in draws) <= 5  # one chance in four: four of sixteen
    assert max(draws) <= 30 * 16  # the tail starts where the runs end


def test_with_time_for_one_forward_run_the_estimate_is_the_expected_runs() -> None:
    """The live scheduler has a quarter of a second a round: the run over the expected run
    times goes first, so a round cut short after it still says what the mean says, and
    the draws are added only when at least half of them could be run."""
    book = RunTimes()
    for seconds in [10.0] * 20 + [1000.0] * 20:
        book.add("AK1", "py", seconds)
    node = agent("i-a", cpu=2)
    running = make_session(request=slots(cpu=2))
    ledger = holding(node, running)
    waiting = make_session(request=slots(cpu=2))
    expected = book.expectations(
        [
            (running.session_id, "AK1", "py", "", None, 0.0),
            (waiting.session_id, "AK1", "py", "", None, None),
        ]
    )
    after_the_first_run = after_calls(3)  # checked before each run and at each of its steps

    ctx = context()
    found = estimate_starts(
        group=ScalingGroup("default"),
        pending=pending(waiting),
        existing=[ExistingSession(running, SessionStatus.RUNNING, running.requested_slots)],
        agents=[node],
        ledger=ledger,
        ctx=ctx,
        elapsed_s={running.session_id: 0.0},
        expected=expected,
        deadline=after_the_first_run,
    )
    mean = expected[running.session_id].mid
    assert 480 < mean < 530  # between the two kinds of run, nearer the long one's half
    assert found[waiting.session_id].at == ctx.now + timedelta(seconds=mean)


def test_a_shape_is_short_whatever_amount_the_log_holds() -> None:
    from decimal import Decimal

    from actors.domain.scheduling.estimate import shape_of
    from actors.domain.slots import ResourceSlot

    session = make_session(request=slots(cpu=1, cuda_shares=1))
    for amount, shape in [
        ("1E+999999", "1x"),  # from before the gateway bounded requests: left out
        ("0", "1x"),  # nothing asked for: as a slot not asked for
        ("0.50", "1x cuda.shares=0.5"),
        ("10", "1x cuda.shares=10"),
    ]:
        kernel = dataclasses.replace(
            session.kernels[0],
            requested_slots=ResourceSlot({"cpu": "1", "cuda.shares": Decimal(amount)}),
        )
        assert shape_of(dataclasses.replace(session, kernels=(kernel,))) == shape


def test_histories_are_forgotten_by_when_they_last_grew_and_keep_their_window() -> None:
    from actors.domain.scheduling import estimate

    book = RunTimes()
    busy = ("shape", "AK1", "py", "1x")
    book.add("AK1", "py", 60.0, "1x", ended_at=1000.0)
    for n in range(estimate.MAX_POOLS):  # many histories, each grown once
        book.add(f"AK-{n}", "other", 60.0, "1x", ended_at=2000.0)
        if n % 1000 == 0:  # the busy one keeps growing
            book.add("AK1", "py", 60.0, "1x", ended_at=2000.0 + n)
    assert len(book.runs) <= estimate.MAX_POOLS
    assert busy in book.runs and ("group",) in book.runs
    assert ("shape", "AK-0", "other", "1x") not in book.runs  # grew longest ago
    assert all(len(book.runs[p]) == len(book.ended_at[p]) for p in book.runs)
    book.add("AK1", "py", 60.0, "1x")  # an end without a time: the window is unknown again
    ended, going = book.cohort(busy, [10.0, 1e6], now=5000.0)
    assert len(ended) == len(book.runs[busy]) and going == [10.0, 1e6]


def test_a_keypair_that_may_run_one_session_at_a_time_is_estimated_one_after_another() -> None:
    """The forward run keeps the keypair's usage as sessions start and end: the first in
    line starts when the running one ends, the second when the first does, though the
    agent has room for all three at once."""
    from actors.domain.predicates import QuotaPolicy

    node = agent("i-a", cpu=16)
    running = make_session(request=slots(cpu=1))
    ledger = holding(node, running)
    first = make_session(request=slots(cpu=1))
    second = dataclasses.replace(
        make_session(request=slots(cpu=1)), created_at=first.created_at + timedelta(seconds=1)
    )
    ctx = context(policies={"AK1": QuotaPolicy(max_concurrent_sessions=1)})
    found = estimate_starts(
        group=ScalingGroup("default"),
        pending=pending(first, second),
        existing=[ExistingSession(running, SessionStatus.RUNNING, running.requested_slots)],
        agents=[node],
        ledger=ledger,
        ctx=ctx,
        elapsed_s={running.session_id: 0.0},
        expected={
            running.session_id: Expected(60, 60, 60, "history"),
            first.session_id: Expected(100, 100, 100, "history"),
            second.session_id: Expected(100, 100, 100, "history"),
        },
    )
    assert found[first.session_id].at == ctx.now + timedelta(seconds=60)
    assert found[second.session_id].at == ctx.now + timedelta(seconds=160)
