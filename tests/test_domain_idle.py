"""The idle and lifetime checkers' judgment (pure; 23.03's ``manager/idle.py``, docs/idle.md)."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from actors.domain.idle import (
    IDLE_TIMEOUT_VALUE,
    IdleConfig,
    SessionFacts,
    activity_note_id,
    calculate_remaining_time,
    idle_reclaim_id,
    idle_warning_id,
    judge,
    network_timeout,
    review,
    session_lifetime,
    utilization,
    utilization_idle,
)

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0  # session created (Redis time, s)
NETWORK = IdleConfig.parse(
    {"enabled": "network_timeout", "checkers": {"network_timeout": {"threshold": "10m"}}}
)


def facts(**changes: object) -> SessionFacts:
    base = SessionFacts(
        session_id="s1",
        session_type="interactive",
        created_at=T0,
        occupied_slots={"cpu": 1, "mem": 2**30},
        last_access=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# ---- 19: network timeout ---------------------------------------------------------------------
def test_network_remaining_time_and_expiry_at_the_boundary() -> None:
    fresh = network_timeout(facts(), NETWORK, now=T0 + 60)
    assert fresh.alive and fresh.remaining == 540 and fresh.remaining_time_type == "expire_after"
    exact = network_timeout(facts(), NETWORK, now=T0 + 600)
    assert exact.alive and exact.remaining == IDLE_TIMEOUT_VALUE  # remaining 0: still alive
    late = network_timeout(facts(), NETWORK, now=T0 + 600.5)
    assert not late.alive and late.remaining == IDLE_TIMEOUT_VALUE and late.reason == "idle-timeout"


def test_activity_pushes_the_deadline() -> None:
    assert not network_timeout(facts(), NETWORK, now=T0 + 700).alive
    assert network_timeout(facts(last_access=T0 + 650), NETWORK, now=T0 + 700).alive


def test_open_apps_batch_sessions_and_an_unset_timer_are_never_idle() -> None:
    later = T0 + 10_000
    assert network_timeout(facts(active_app_connections=1), NETWORK, later).alive
    assert network_timeout(facts(session_type="batch"), NETWORK, later).alive
    assert network_timeout(facts(last_access=None), NETWORK, later).alive
    assert network_timeout(facts(last_access=0), NETWORK, later).alive  # "0": app streaming


def test_the_policy_idle_timeout_overrides_and_zero_disables() -> None:
    assert not network_timeout(facts(policy_idle_timeout=60), NETWORK, T0 + 61).alive
    assert network_timeout(facts(policy_idle_timeout=0), NETWORK, T0 + 10**6).alive
    assert not network_timeout(facts(policy_idle_timeout=-1), NETWORK, T0 + 601).alive


def test_the_new_user_grace_period_delays_the_baseline() -> None:
    config = IdleConfig.parse(
        {
            "enabled": "network_timeout",
            "checkers": {"user_grace_period": {"user_initial_grace_period": "1h"}},
        }
    )
    young_user = facts(user_created_at=T0)
    assert calculate_remaining_time(T0 + 700, T0, 600, T0 + 3600) == 3500
    assert network_timeout(young_user, config, T0 + 700).alive
    assert not network_timeout(young_user, config, T0 + 4201).alive


# ---- 20: session lifetime --------------------------------------------------------------------
def test_lifetime_kills_strictly_after_created_plus_lifetime() -> None:
    policy = facts(policy_max_session_lifetime=3600)
    assert session_lifetime(policy, NETWORK, T0 + 3599).alive
    at = session_lifetime(policy, NETWORK, T0 + 3600)
    assert not at.alive and at.reason == "idle-session-lifetime"  # `>`, not `>=`
    assert session_lifetime(facts(), NETWORK, T0 + 10**7).alive  # 0 = unlimited


# ---- 21: utilization -------------------------------------------------------------------------
UTIL = IdleConfig.parse(
    {
        "enabled": "utilization",
        "checkers": {
            "utilization": {
                "time-window": "60s",
                "initial-grace-period": "30s",
                "resource-thresholds": {
                    "cpu_util": {"average": 30},
                    "mem": {"average": 30},
                    "cuda_util": {"average": 10},
                },
            }
        },
    }
)
WINDOW = 4  # 60 s / 15 s


def sampled(cpu: float, mem: float, n: int = WINDOW, **more: list[float]) -> SessionFacts:
    return facts(utilization_series={"cpu_util": [cpu] * n, "mem": [mem] * n, **more})


def test_no_decision_during_the_grace_period_or_before_the_window_is_full() -> None:
    idle = sampled(0, 0)
    in_grace = utilization(idle, UTIL, T0 + 30)
    assert in_grace.alive and in_grace.remaining_time_type == "grace_period"
    assert utilization(sampled(0, 0, n=WINDOW - 1), UTIL, T0 + 120).alive  # not enough data
    verdict = utilization(idle, UTIL, T0 + 120)
    assert not verdict.alive and verdict.reason == "idle-utilization"
    resources = {"cpu_util": (0.0, 30.0), "mem": (0.0, 30.0)}
    assert verdict.extra == {"thresholds_check_operator": "and", "resources": resources}


def test_and_means_idle_only_when_every_metric_is_under() -> None:
    assert utilization(sampled(50, 0), UTIL, T0 + 120).alive  # the cpu is busy: alive
    assert not utilization(sampled(10, 10), UTIL, T0 + 120).alive


def test_or_means_idle_when_any_metric_is_under() -> None:
    settings = {**UTIL.utilization.model_dump(by_alias=True), "thresholds-check-operator": "or"}
    config = IdleConfig.parse({"enabled": "utilization", "checkers": {"utilization": settings}})
    assert not utilization(sampled(50, 0), config, T0 + 120).alive  # the memory idles: gone
    assert utilization(sampled(50, 50), config, T0 + 120).alive
    assert utilization_idle({"a": 1, "b": 50}, {"a": 30, "b": 30}, "or")
    assert not utilization_idle({"a": 1, "b": 50}, {"a": 30, "b": 30}, "and")


def test_an_unallocated_gpu_is_not_judged() -> None:
    with_gpu = replace(
        sampled(50, 50, cuda_util=[0.0] * WINDOW),
        occupied_slots={"cpu": 1, "mem": 2**30, "cuda.shares": 1},
    )
    assert utilization(with_gpu, UTIL, T0 + 120).alive  # and: cpu/mem busy keep it alive
    without = sampled(50, 50, cuda_util=[0.0] * WINDOW)
    verdict = utilization(without, UTIL, T0 + 120)
    assert verdict.extra is not None and "cuda_util" not in verdict.extra["resources"]


def test_no_thresholds_never_kill() -> None:
    config = IdleConfig.parse(
        {
            "enabled": "utilization",
            "checkers": {"utilization": {"time-window": "60s", "initial-grace-period": "0s"}},
        }
    )
    assert utilization(sampled(0, 0), config, T0 + 120).alive


# ---- 22: one termination per session, inference exempt, the report --------------------------
ALL = IdleConfig.parse(
    {
        "enabled": "network_timeout, utilization",
        "checkers": {
            "network_timeout": {"threshold": "10m"},
            "utilization": UTIL.utilization.model_dump(by_alias=True),
        },
    }
)


def test_one_reason_even_when_several_checkers_fire_and_every_checker_reports() -> None:
    gone = replace(sampled(0, 0), policy_max_session_lifetime=60)
    reason, reports = judge(gone, ALL, T0 + 3600)
    assert reason == "idle-session-lifetime"  # the first in registration order
    assert set(reports) == {"session_lifetime", "network_timeout", "utilization"}
    assert all(r["remaining"] == IDLE_TIMEOUT_VALUE for r in reports.values())
    assert reports["utilization"]["remaining_time_type"] == "grace_period"


def test_inference_sessions_are_never_checked() -> None:
    assert judge(replace(sampled(0, 0), session_type="inference"), ALL, T0 + 10**6) == (None, {})


def test_batch_sessions_are_exempt_from_the_network_checker_only() -> None:
    batch = replace(sampled(0, 0), session_type="batch")
    reason, _ = judge(batch, ALL, T0 + 3600)
    assert reason == "idle-utilization"


def test_a_session_with_no_policy_and_no_checker_is_never_reclaimed() -> None:
    assert judge(facts(), IdleConfig.parse({}), T0 + 10**7)[0] is None


# ---- 23: configuration compatibility ---------------------------------------------------------
def test_the_old_timeout_name_is_taken_loudly() -> None:
    old = IdleConfig.parse(
        {"enabled": " timeout ,utilization, bogus", "checkers": {"timeout": {"threshold": "5m"}}}
    )
    assert old.enabled == ("network_timeout", "utilization")
    assert old.network_threshold == 300
    assert any("'timeout' is now 'network_timeout'" in w for w in old.warnings)
    assert any("bogus" in w for w in old.warnings)


# ---- the reaper's review of one running session ------------------------------------------------
def test_a_review_reclaims_with_its_evidence() -> None:
    seen = review(facts(), NETWORK, T0 + 601, running_since=T0, noted=None)
    assert seen.reclaim == "idle-timeout" and seen.next_check is None and seen.note is None
    assert seen.evidence == {
        "checker": "network_timeout",
        "reports": seen.reports,
        "last_access": T0,
        "judged_at": T0 + 601,
    }


def test_a_review_looks_again_when_a_verdict_could_change() -> None:
    seen = review(facts(last_access=T0 + 100), NETWORK, T0 + 200, running_since=T0, noted=None)
    assert seen.reclaim is None and seen.next_check == T0 + 200 + 500  # the deadline
    assert (
        review(facts(), IdleConfig.parse({}), T0, running_since=T0, noted=None).next_check is None
    )
    every_interval = review(sampled(50, 50), ALL, T0 + 10, running_since=T0, noted=None)
    assert every_interval.next_check is not None and every_interval.next_check <= T0 + 10 + 15


def test_a_review_notes_activity_after_the_start_and_the_last_note_only() -> None:
    used = facts(last_access=T0 + 100)
    assert review(used, NETWORK, T0 + 200, running_since=T0, noted=None).note == T0 + 100
    assert review(used, NETWORK, T0 + 200, running_since=T0 + 100, noted=None).note is None
    assert review(used, NETWORK, T0 + 200, running_since=T0, noted=T0 + 100).note is None
    unmeasured = IdleConfig.parse({})  # the network timer is off: nothing to explain
    assert review(used, unmeasured, T0 + 200, running_since=T0, noted=None).note is None


def test_reaper_command_ids_are_derived_as_the_log_already_records_them() -> None:
    sid = uuid.UUID(int=3)
    assert idle_reclaim_id(sid, "idle-timeout") == uuid.uuid5(sid, "idle/idle-timeout")
    assert activity_note_id(sid, 1.5) == uuid.uuid5(sid, "activity@1.5")


# ---- warnings before a reclaim (kernelhub's) ---------------------------------------------------
WARNED = IdleConfig.parse(
    {
        "enabled": "network_timeout",
        "warning-lead": "2m",
        "checkers": {"network_timeout": {"threshold": "10m"}},
    }
)


def test_the_warning_lead_is_read_and_bounded() -> None:
    assert WARNED.warning_lead == 120 and NETWORK.warning_lead == 0
    with pytest.raises(ValueError, match="warning_lead"):
        IdleConfig.parse({"warning-lead": "30d"})


def test_a_review_warns_within_the_lead_and_looks_again_when_the_lead_begins() -> None:
    early = review(facts(), WARNED, T0 + 400, running_since=T0, noted=None)
    assert early.warning is None
    assert early.next_check == T0 + 480  # the deadline (T0 + 600) less the lead
    due = review(facts(), WARNED, T0 + 500, running_since=T0, noted=None)
    assert due.warning is not None and due.reclaim is None
    assert (due.warning.checker, due.warning.reason) == ("network_timeout", "idle-timeout")
    assert (due.warning.deadline, due.warning.remaining) == (T0 + 600, 100)
    assert due.next_check == T0 + 600  # then the deadline itself
    # the same deadline, seen again later: the same warning (one command id for both)
    again = review(facts(), WARNED, T0 + 550.123, running_since=T0, noted=None)
    assert again.warning is not None and again.warning.deadline == due.warning.deadline
    # activity moves the deadline: no warning until the new lead begins
    used = review(facts(last_access=T0 + 500), WARNED, T0 + 500, running_since=T0, noted=None)
    assert used.warning is None and used.next_check == T0 + 980
    # without a lead, nothing is ever warned
    assert review(facts(), NETWORK, T0 + 590, running_since=T0, noted=None).warning is None


def test_the_soonest_reclaim_is_the_one_warned_of() -> None:
    lifetime_first = facts(policy_max_session_lifetime=560)  # lifetime ends before the timer
    seen = review(lifetime_first, WARNED, T0 + 500, running_since=T0, noted=None)
    assert seen.warning is not None and seen.warning.checker == "session_lifetime"
    assert (seen.warning.reason, seen.warning.deadline) == ("idle-session-lifetime", T0 + 560)
    # utilization has no deadline to warn of: a session it judges alone is never warned
    only_util = IdleConfig.parse({"enabled": "utilization", "warning-lead": "1h"})
    assert review(sampled(0, 0), only_util, T0 + 400, running_since=T0, noted=None).warning is None


def test_a_warning_is_appended_once_per_deadline_while_the_session_runs() -> None:
    from actors.domain.session_aggregate import SessionAggregate
    from actors.domain.statuses import SessionStatus
    from events.catalogue import SessionIdleWarning

    sid = uuid.UUID(int=9)
    aggregate = SessionAggregate(session_id=sid)
    warning = SessionIdleWarning(
        session_id=sid, checker="network_timeout", reason="idle-timeout", deadline=5, remaining=2
    )
    assert aggregate.decide_idle_warning(warning) == []  # not running
    aggregate.status = SessionStatus.RUNNING
    assert aggregate.decide_idle_warning(warning) == [warning]
    aggregate.apply(warning, 9)
    assert aggregate.decide_idle_warning(warning) == []  # told already
    later = warning.model_copy(update={"deadline": 9.0})
    assert aggregate.decide_idle_warning(later) == [later]  # a new deadline: told again
    assert idle_warning_id(sid, "network_timeout", 5.0) == uuid.uuid5(
        sid, "idle-warning/network_timeout@5.0"
    )


def test_a_lead_as_long_as_the_timer_is_refused_and_utilization_keeps_its_pace() -> None:
    with pytest.raises(ValueError, match="shorter than the network_timeout threshold"):
        IdleConfig.parse(
            {
                "enabled": "network_timeout",
                "warning-lead": "10m",
                "checkers": {"network_timeout": {"threshold": "5m"}},
            }
        )
    with pytest.raises(ValueError, match="warning-lead must be a duration"):
        IdleConfig.parse({"warning-lead": True})
    sampled_too = IdleConfig.parse(
        {
            "enabled": "network_timeout,utilization",
            "warning-lead": "14s",
            "checkers": {"network_timeout": {"threshold": "10m"}},
        }
    )
    seen = review(facts(), sampled_too, T0 + 10, running_since=T0, noted=None)
    assert seen.next_check is not None and seen.next_check >= T0 + 10 + 14  # not 1 s


def test_activity_withdraws_a_network_warning_but_not_a_lifetime_one() -> None:
    """The sessions read model: a later ``session_activity`` clears an idle-timeout
    warning (the deadline moved) and leaves a lifetime one (it does not move)."""
    from events import NewEvent, default_codec
    from events.catalogue import SessionActivity, SessionIdleWarning
    from projections.models.sessions import _on_activity, _on_idle_warning

    sid = uuid.UUID(int=11)

    def stored(payload: object, ms: int) -> object:
        fields = {
            "s": f"session-{sid}",
            "v": "1",
            "e": default_codec.encode(NewEvent(data=payload)),
        }  # type: ignore[arg-type]
        return default_codec.decode_stored(f"{ms}-0", fields)

    for checker, reason, kept in (
        ("network_timeout", "idle-timeout", False),
        ("session_lifetime", "idle-session-lifetime", True),
    ):
        record: dict[str, object] = {}
        warning = SessionIdleWarning(
            session_id=sid,
            checker=checker,
            reason=reason,
            deadline=T0 + 60,
            remaining=30,  # type: ignore[arg-type]
        )
        _on_idle_warning(record, stored(warning, int(T0 * 1000)))  # type: ignore[arg-type]
        _on_activity(
            record,
            stored(SessionActivity(session_id=sid, last_access=T0 + 5), int(T0 * 1000) + 6000),
        )  # type: ignore[arg-type]
        assert ("idle_warning" in record) is kept, checker
