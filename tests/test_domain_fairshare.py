"""Fair share over time (pure; docs/fairshare.md): decayed usage in closed form and kept
incrementally, Slurm's factor, the ``fair_share`` policy's order (the lighter user first,
the half-life changing it), its configuration's refusals, and what-if replaying it."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import schedule_pass
from actors.domain.scheduling.fairshare import (
    DecayingUsage,
    FairShareConfig,
    UsageInterval,
    charge_rate,
    decayed,
    decayed_usage,
    fair_factors,
)
from actors.domain.scheduling.plugins import check_scheduler_config
from actors.domain.whatif import Policy, Workload, WorkloadAgent, WorkloadJob, simulate

from .domain_builders import G, agent, context, make_session, pending, slots

pytestmark = pytest.mark.unit

HOUR = 3600.0
DAY = 86400.0


def test_decayed_usage_is_the_integral_of_the_halving_charge() -> None:
    # one CPU for an hour that ended now, half-life an hour: integral of 2^(-t/h) over [0, h]
    assert decayed(1.0, 0, HOUR, HOUR, HOUR) == pytest.approx(HOUR / (2 * math.log(2)))
    # the same hour a half-life earlier is worth half
    earlier = decayed(1.0, 0, HOUR, 2 * HOUR, HOUR)
    assert earlier == pytest.approx(decayed(1.0, 0, HOUR, HOUR, HOUR) / 2)
    # still running: charged until now; a future start is nothing
    assert decayed(1.0, 0, None, HOUR, HOUR) == decayed(1.0, 0, HOUR, HOUR, HOUR)
    assert decayed(1.0, 2 * HOUR, None, HOUR, HOUR) == 0
    # numerically, over a long past
    steps = 10_000
    numeric = sum(2 ** (-(5 * DAY - (i + 0.5) * DAY / steps) / DAY) for i in range(steps))
    assert decayed(1.0, 0, DAY, 5 * DAY, DAY) == pytest.approx(numeric * DAY / steps, rel=1e-6)


def test_the_charge_weights_gpus_and_counts_memory_in_gib() -> None:
    weights = FairShareConfig().weights
    assert charge_rate({"cpu": "2", "mem": str(8 * G)}, weights) == 2 + 8 * 0.25
    assert charge_rate({"cpu": 1, "cuda.device": 1}, weights) == 11
    assert charge_rate({"cpu": 1, "tpu.device": 4}, weights) == 1  # not named: not charged


def test_kept_usage_equals_usage_folded_from_the_intervals() -> None:
    config = FairShareConfig(half_life_s=2 * HOUR)
    intervals = [
        UsageInterval("alice", "p1", 0, 3 * HOUR, {"cpu": 4}),
        UsageInterval("bob", "p1", HOUR, 1.5 * HOUR, {"cpu": 1, "cuda.device": 1}),
        UsageInterval("alice", None, 2 * HOUR, None, {"cpu": 2}),
    ]
    kept = DecayingUsage(config)
    moments = [(i.start_s, 1, i) for i in intervals]
    moments += [(i.end_s, -1, i) for i in intervals if i.end_s is not None]
    moments.sort(key=lambda m: (m[0], m[1]))
    for at, sign, interval in moments:
        kept.advance(at)
        kept.held(interval.owner, interval.project, interval.slots, float(sign))
    kept.advance(5 * HOUR)
    folded = decayed_usage(intervals, config, 5 * HOUR)
    got = kept.usage()
    assert got.users == pytest.approx(folded.users) and got.projects == pytest.approx(
        folded.projects
    )


def test_slurms_factor_one_for_no_usage_a_quarter_for_all_of_it_between_two() -> None:
    config = FairShareConfig()
    usage = decayed_usage([UsageInterval("heavy", None, 0, HOUR, {"cpu": 8})], config, HOUR)
    users, projects = fair_factors(usage, ["light", "heavy"], [])
    assert users["light"].factor == 1.0 and users["heavy"].factor == 0.25
    assert users["heavy"].usage_share == 1.0 and users["heavy"].share == 0.5
    assert projects == {}


def fair_pass(
    config: dict[str, object], intervals: list[UsageInterval], owners: list[str], now: float
) -> str:
    """One slot of room and a session waiting per owner, oldest first: whose is placed."""
    queue = pending(*(make_session(owner, request=slots(1, G)) for owner in owners))
    group = ScalingGroup("default", scheduler="fair_share", scheduler_config=config)
    usage = decayed_usage(intervals, FairShareConfig.from_config(config), now)
    result = schedule_pass(
        group=group,
        pending=queue,
        existing=[],
        agents=[agent("a1", 1, 4 * G)],
        ctx=context(),
        usage=usage,
    )
    assert len(result.decisions) == 1
    return {p.spec.session_id: p.spec.access_key for p in queue}[result.decisions[0].session_id]


HISTORY = [  # heavy ran a lot two days ago; recent ran a little just now
    UsageInterval("heavy", None, 0, 10 * HOUR, {"cpu": 16}),
    UsageInterval("recent", None, 2 * DAY - HOUR, 2 * DAY, {"cpu": 4}),
]


def test_the_user_who_used_least_goes_first_and_the_half_life_changes_who_that_is() -> None:
    assert fair_pass({}, [], ["heavy", "light"], 2 * DAY) == "heavy"  # no usage: the oldest
    assert fair_pass({}, HISTORY, ["heavy", "recent", "light"], 2 * DAY) == "light"  # never ran
    # between the two who ran: a week's half-life still weighs heavy's 160 cpu-hours most;
    # a two-hour one has decayed them away, and recent used more lately
    assert fair_pass({"half_life": "7d"}, HISTORY, ["heavy", "recent"], 2 * DAY) == "recent"
    assert fair_pass({"half_life": "2h"}, HISTORY, ["heavy", "recent"], 2 * DAY) == "heavy"
    assert fair_pass({"half_life": "2h"}, HISTORY, ["heavy", "recent"], 2 * DAY) == "heavy"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"half_life": "1s"}, "between a minute and ten years"),
        ({"half_life": "soon"}, "invalid duration 'soon'"),
        ({"half_life": float("nan")}, "between a minute"),
        ({"weights": {"cpu": -1}}, "between 0 and"),
        ({"weights": {"cpu": "lots"}}, "must be a number"),
        ({"weights": [1]}, "weights must map"),
        ({"priority": 3}, "does not read priority"),
    ],
)
def test_a_bad_fair_share_config_is_refused_naming_it(
    config: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_scheduler_config("fair_share", config)


def test_what_if_replays_fair_share_with_its_own_usage() -> None:
    """One CPU; heavy submits three hour-long jobs, light one job a little later: FIFO runs
    heavy's three first, fair share lets light in after heavy's first (heavy has used an
    hour by then, light nothing)."""
    capacity = {"cpu": Decimal(1), "mem": Decimal(8 * G)}
    jobs = [
        WorkloadJob(
            job_id=f"h{i}",
            arrival_s=i,
            owner="heavy",
            requested={"cpu": Decimal(1), "mem": Decimal(G)},
            run_s=HOUR,
        )
        for i in range(3)
    ]
    jobs.append(
        WorkloadJob(
            job_id="l0",
            arrival_s=10,
            owner="light",
            requested={"cpu": Decimal(1), "mem": Decimal(G)},
            run_s=HOUR,
        )
    )
    workload = Workload(agents=[WorkloadAgent(agent_id="a", capacity=capacity)], jobs=jobs)
    starts = {}
    for scheduler in ("fifo", "fair_share"):
        result = simulate(workload, Policy(scheduler), samples=0, horizon_s=5 * HOUR)
        starts[scheduler] = {o.job.job_id: o.start_s for o in result.outcomes}
    assert starts["fifo"]["l0"] == 3 * HOUR
    assert starts["fair_share"]["l0"] == HOUR
