"""Predicates in 23.03's order (``manager/scheduler/predicates.py``; B5 in docs/upstream.md)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from actors.domain.predicates import Occupancy, QuotaPolicy, check_predicates
from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import schedule_pass
from actors.domain.session import KernelRole, SessionResult, SessionType
from actors.domain.slots import DefaultForUnspecified

from .domain_builders import T0, G, agent, context, make_session, pending, slots

pytestmark = pytest.mark.unit

ORDER = [
    "reserved_time",
    "dependencies",
    "concurrency",
    "keypair_resource_limit",
    "user_group_resource_limit",
    "domain_resource_limit",
]


def failed(results: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {r.name: r.message for r in results if not r.passed}


def test_all_pass_in_spec_order() -> None:
    results = check_predicates(make_session(), context())
    assert [r.name for r in results] == ORDER
    assert all(r.passed for r in results)


def test_reserved_time_blocks_a_batch_session_before_its_start() -> None:
    later = make_session(session_type=SessionType.BATCH, starts_at=T0 + timedelta(minutes=30))
    assert failed(check_predicates(later, context(now=T0))) == {
        "reserved_time": "Before start time"
    }
    assert failed(check_predicates(later, context(now=T0 + timedelta(minutes=30)))) == {}


def test_dependencies_wait_for_success_and_a_failure_keeps_blocking() -> None:
    parent = make_session()
    child = make_session(dependencies=(parent.session_id,))
    for result in (SessionResult.UNDEFINED, SessionResult.FAILURE):
        ctx = context(dependencies={parent.session_id: (parent.name, result)})
        message = failed(check_predicates(child, ctx))["dependencies"]
        assert message == (
            "Waiting dependency sessions to finish as success. "
            f"({parent.name} ({parent.session_id}))"
        )
    ctx = context(dependencies={parent.session_id: (parent.name, SessionResult.SUCCESS)})
    assert failed(check_predicates(child, ctx)) == {}


def test_concurrency_limit_and_zero_means_unlimited() -> None:
    running = [make_session("AK1"), make_session("AK1")]
    occupancy = Occupancy.of(running)
    third = make_session("AK1")
    limited = context(policies={"AK1": QuotaPolicy(max_concurrent_sessions=2)}, occupancy=occupancy)
    assert failed(check_predicates(third, limited)) == {
        "concurrency": "You cannot run more than 2 concurrent sessions"
    }
    unlimited = context(
        policies={"AK1": QuotaPolicy(max_concurrent_sessions=0)}, occupancy=occupancy
    )
    assert failed(check_predicates(third, unlimited)) == {}


def test_system_sessions_use_the_sftp_limit_and_skip_quotas() -> None:
    """B5: private sessions neither count against user quotas nor are held by them."""
    policy = QuotaPolicy(
        max_concurrent_sessions=1,
        max_concurrent_sftp_sessions=1,
        total_resource_slots={"cpu": 0},
        default_for_unspecified=DefaultForUnspecified.LIMITED,
    )
    occupancy = Occupancy.of([make_session("AK1")])  # one user session already runs
    sftp = make_session("AK1", role=KernelRole.SYSTEM)
    ctx = context(policies={"AK1": policy}, occupancy=occupancy)
    results = check_predicates(sftp, ctx)
    assert [r.name for r in results] == ["reserved_time", "dependencies", "concurrency"]
    assert all(r.passed for r in results)
    occupancy.add(sftp)
    assert occupancy.sessions["AK1"] == 1 and occupancy.sftp_sessions["AK1"] == 1
    assert failed(check_predicates(make_session("AK1", role=KernelRole.SYSTEM), ctx)) == {
        "concurrency": "You cannot run more than 1 concurrent sessions"
    }


def test_keypair_quota_limited_vs_unlimited_defaults() -> None:
    occupancy = Occupancy.of([make_session("AK1", request=slots(3, 4 * G))])
    request = make_session("AK1", request=slots(2, 1 * G))
    limited = QuotaPolicy(
        total_resource_slots={"cpu": "4", "mem": "16g"},
        default_for_unspecified=DefaultForUnspecified.LIMITED,
    )
    message = failed(
        check_predicates(request, context(policies={"AK1": limited}, occupancy=occupancy))
    )
    assert message == {
        "keypair_resource_limit": (
            "Your keypair resource quota is exceeded. (cpu=4 cuda.device=0 mem=16g)"
        )
    }
    unlimited = QuotaPolicy(
        total_resource_slots={"mem": "16g"}, default_for_unspecified=DefaultForUnspecified.UNLIMITED
    )
    assert (
        failed(check_predicates(request, context(policies={"AK1": unlimited}, occupancy=occupancy)))
        == {}
    )


def test_limited_default_refuses_an_unlisted_accelerator() -> None:
    policy = QuotaPolicy(
        total_resource_slots={"cpu": "8", "mem": "16g"},
        default_for_unspecified=DefaultForUnspecified.LIMITED,
    )
    gpu = make_session("AK1", request=slots(1, G, cuda_device=1))
    assert "keypair_resource_limit" in failed(
        check_predicates(gpu, context(policies={"AK1": policy}))
    )


def test_unknown_slot_types_are_ignored_by_quotas() -> None:
    policy = QuotaPolicy(
        total_resource_slots={"cpu": "8", "mem": "16g"},
        default_for_unspecified=DefaultForUnspecified.LIMITED,
    )
    odd = make_session("AK1", request=slots(1, G, tpu_device=5))
    assert failed(check_predicates(odd, context(policies={"AK1": policy}))) == {}


def test_group_and_domain_quotas_are_unlimited_unless_listed() -> None:
    mine, other = uuid.uuid4(), uuid.uuid4()
    occupancy = Occupancy.of([make_session("AK2", request=slots(6), domain="lab", project=other)])
    request = make_session("AK1", request=slots(4), domain="lab", project=mine)
    ctx = context(
        occupancy=occupancy,
        domain_limits={"lab": {"cpu": "8"}},
        project_limits={other: {"mem": "1g"}, mine: {"cpu": "4"}},
    )
    assert failed(check_predicates(request, ctx)) == {
        "domain_resource_limit": (
            "Your domain resource quota is exceeded. (cpu=8 cuda.device=Infinity mem=Infinity)"
        )
    }
    ctx.project_limits = {mine: {"cpu": "3"}}
    assert set(failed(check_predicates(request, ctx))) == {
        "user_group_resource_limit",
        "domain_resource_limit",
    }


def test_a_failed_attempt_records_lists_and_leaks_no_concurrency() -> None:
    """Item 7: the session stays pending, is reported with its lists, and - concurrency being
    derived from state - a later predicate's failure leaves nothing to roll back."""
    policy = QuotaPolicy(max_concurrent_sessions=1, total_resource_slots={"cpu": "2"})
    big = make_session("AK1", request=slots(4))
    small = make_session("AK1", request=slots(1))
    ctx = context(policies={"AK1": policy})
    result = schedule_pass(
        group=ScalingGroup("default"),
        pending=pending(big, small),
        existing=[],
        agents=[agent("a1")],
        ctx=ctx,
    )
    (failure,) = result.failures
    assert failure.session_id == big.session_id
    assert failure.status_info == "predicate-checks-failed"
    assert [name for name, _ in failure.failed_predicates] == ["keypair_resource_limit"]
    assert failure.passed_predicates == (
        "reserved_time",
        "dependencies",
        "concurrency",
        "user_group_resource_limit",
        "domain_resource_limit",
    )
    assert [d.session_id for d in result.decisions] == [small.session_id]
