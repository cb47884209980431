"""Session creation rules (23.03's ``create_session``/``enqueue_session``) and scaling groups
(23.03's ``check_scaling_group``)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from actors.domain.errors import InvalidAPIParameters, QuotaExceeded, ScalingGroupNotFound
from actors.domain.scaling_groups import ScalingGroup, check_scaling_group
from actors.domain.session import (
    KernelRole,
    SessionType,
    expand_cluster,
    parse_duration,
    parse_starts_at,
    validate_creation,
)

from .domain_builders import T0, make_session, slots

pytestmark = pytest.mark.unit


def test_relative_and_absolute_starts_at() -> None:
    assert parse_starts_at("30m", T0) == T0 + timedelta(minutes=30)
    assert parse_starts_at("1h30m", T0) == T0 + timedelta(hours=1, minutes=30)
    assert parse_starts_at("2d", T0) == T0 + timedelta(days=2)
    assert parse_starts_at("2026-12-01T09:00:00Z", T0).isoformat() == "2026-12-01T09:00:00+00:00"
    assert parse_duration("90") == timedelta(seconds=90)
    with pytest.raises(InvalidAPIParameters, match="invalid duration"):
        parse_starts_at("soon", T0)


def test_starts_at_only_for_batch_and_batch_needs_a_command() -> None:
    with pytest.raises(InvalidAPIParameters, match="starts_at should be used only for batch"):
        validate_creation(
            session_type=SessionType.INTERACTIVE,
            starts_at="30m",
            startup_command=None,
            cluster_size=1,
            max_containers_per_session=1,
        )
    with pytest.raises(InvalidAPIParameters, match="Batch type session requires startup command"):
        validate_creation(
            session_type=SessionType.BATCH,
            starts_at=None,
            startup_command="  ",
            cluster_size=1,
            max_containers_per_session=1,
        )
    validate_creation(
        session_type=SessionType.BATCH,
        starts_at="30m",
        startup_command="python x.py",
        cluster_size=1,
        max_containers_per_session=1,
    )


def test_cluster_size_is_bounded_by_the_policy() -> None:
    with pytest.raises(QuotaExceeded, match="more than 2 containers"):
        validate_creation(
            session_type=SessionType.INTERACTIVE,
            starts_at=None,
            startup_command=None,
            cluster_size=3,
            max_containers_per_session=2,
        )


def test_cluster_expansion_names_main_and_subs() -> None:
    kernels = expand_cluster(3, [slots(2)])
    assert [(k.cluster_role, k.cluster_idx, k.local_rank, k.cluster_hostname) for k in kernels] == [
        ("main", 1, 0, "main1"),
        ("sub", 1, 1, "sub1"),
        ("sub", 2, 2, "sub2"),
    ]
    assert all(k.requested_slots == slots(2) for k in kernels)
    with pytest.raises(InvalidAPIParameters, match="2 kernel configs for a cluster_size of 3"):
        expand_cluster(3, [slots(), slots()])


def test_session_totals_and_privacy() -> None:
    session = make_session(size=3, request=slots(2, 2**30))
    assert session.requested_slots == slots(6, 3 * 2**30)
    assert session.main_kernel.cluster_hostname == "main1"
    assert not session.is_private
    assert make_session(role=KernelRole.SYSTEM).is_private


GROUPS = [
    ScalingGroup("gpu", is_public=False),
    ScalingGroup("default"),
    ScalingGroup("serving", allowed_session_types=(SessionType.INFERENCE,)),
]


def test_scaling_group_resolution() -> None:
    assert check_scaling_group(GROUPS, SessionType.INTERACTIVE, None).name == "default"
    assert check_scaling_group(GROUPS, SessionType.INFERENCE, None).name == "serving"
    assert check_scaling_group(GROUPS, SessionType.BATCH, "gpu", public_only=False).name == "gpu"
    with pytest.raises(
        ScalingGroupNotFound, match="'gpu' does not exist or you do not have access"
    ):
        check_scaling_group(GROUPS, SessionType.BATCH, "gpu")
    with pytest.raises(
        ScalingGroupNotFound,
        match=re.escape("does not accept the session type 'SessionTypes.BATCH'"),
    ):
        check_scaling_group(GROUPS, SessionType.BATCH, "serving")
    with pytest.raises(ScalingGroupNotFound, match="no scaling groups allowed"):
        check_scaling_group([], SessionType.BATCH, None)
    with pytest.raises(ScalingGroupNotFound, match="No scaling groups accept the session type"):
        check_scaling_group(GROUPS[1:2], SessionType.INFERENCE, None)
