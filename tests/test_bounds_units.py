"""Issue 26, attacks 3, 6 and 7 at the domain's level (pure, no services): every requested
slot bounded before it can become an event, unknown slots refused by name, and a scheduling
pass that one bad session cannot stop."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.domain.bounds import (
    COUNT_MAX,
    CPU_MAX,
    CPU_MIN,
    MEM_MAX,
    MEM_MIN,
    bound_of,
    known_slot_types,
    requested_slots,
)
from actors.domain.errors import InvalidAPIParameters
from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import schedule_pass
from actors.domain.slots import ResourceSlot

from .domain_builders import G, agent, context, make_session, pending, slots

pytestmark = [pytest.mark.unit, pytest.mark.hostile]

KNOWN = known_slot_types(["cuda.device", "cuda.mem"])
IMAGE_MIN = {"cpu": "1", "mem": "256m"}
M = 2**20


def refusal(resources: Any, minimum: dict[str, Any] | None = None) -> InvalidAPIParameters:
    with pytest.raises(InvalidAPIParameters) as caught:
        requested_slots(resources, IMAGE_MIN if minimum is None else minimum, KNOWN)
    return caught.value


@pytest.mark.parametrize(
    ("resources", "field", "words"),
    [
        ({"mem": "0"}, "resources.mem", "at least 16m"),
        ({"mem": 0}, "resources.mem", "at least"),
        ({"cpu": "0"}, "resources.cpu", "at least 0.01"),
        ({"cpu": 0}, "resources.cpu", "at least"),
        ({"cpu": "-1"}, "resources.cpu", "negative"),
        ({"mem": "-1g"}, "resources.mem", "invalid"),
        ({"cpu": "NaN"}, "resources.cpu", "finite"),
        ({"cpu": "sNaN"}, "resources.cpu", "finite"),
        ({"cpu": "Infinity"}, "resources.cpu", "finite"),
        ({"cpu": float("inf")}, "resources.cpu", "finite"),
        ({"cpu": float("nan")}, "resources.cpu", "finite"),
        ({"mem": "inf"}, "resources.mem", "invalid"),
        ({"cpu": "1e100000000"}, "resources.cpu", "out of range"),
        ({"mem": "1e100000000"}, "resources.mem", "invalid"),
        ({"cpu": 10**200}, "resources.cpu", "too large"),
        ({"cpu": "9" * 33}, "resources.cpu", "at most 32 characters"),
        ({"cpu": "2000"}, "resources.cpu", "at most 1024"),
        ({"mem": "65t"}, "resources.mem", "at most 64t"),
        ({"cuda.device": "70000"}, "resources.cuda.device", "at most 65536"),
        ({"cpu": "1.0005"}, "resources.cpu", "multiple of 0.001"),
        ({"cpu": "1e-40"}, "resources.cpu", "out of range"),
        ({"cpu": "1_000"}, "resources.cpu", "invalid"),
        ({"cpu": True}, "resources.cpu", "not bool"),
        ({"cpu": [1]}, "resources.cpu", "not list"),
        ({"cpu": {"a": 1}}, "resources.cpu", "not dict"),
        ({"mem": "128m"}, "resources.mem", "smaller than the minimum required by the image"),
        ({"cpu": "0.5"}, "resources.cpu", "(cpu 0.5 < 1)"),
        ({"rocm.device": 1}, "resources.rocm.device", "unknown resource slot 'rocm.device'"),
        ({"CPU": 1}, "resources", "invalid resource slot name"),
        ({"x" * 100: 1}, "resources", "invalid resource slot name"),
        ({f"s{i}": 0 for i in range(17)}, "resources", "at most 16"),
        ([1, 2], "resources", "must be an object"),
    ],
)
def test_hostile_slot_values_are_refused_naming_the_field(
    resources: Any, field: str, words: str
) -> None:
    error = refusal(resources)
    assert words in error.msg
    assert list(error.data) == [field]  # type: ignore[attr-defined]
    assert len(error.msg) < 300  # never an echo of what was sent


def test_a_request_gets_the_image_minimum_and_defaults_for_what_it_leaves_out() -> None:
    assert requested_slots(None, IMAGE_MIN, KNOWN) == ResourceSlot(cpu=1, mem=256 * M)
    assert requested_slots({}, {}, KNOWN) == ResourceSlot(cpu=1, mem=G)
    got = requested_slots({"cpu": "2.5", "mem": "1.5g", "cuda.device": "0.5"}, IMAGE_MIN, KNOWN)
    assert got == ResourceSlot({"cpu": "2.5", "mem": 3 * G // 2, "cuda.device": "0.5"})
    assert requested_slots({"mem": 1073741824.0}, IMAGE_MIN, KNOWN)["mem"] == G


def test_a_zero_or_null_slot_nobody_offers_is_dropped_not_refused() -> None:
    got = requested_slots({"rocm.device": 0, "cuda.device": None}, IMAGE_MIN, KNOWN)
    assert set(got) == {"cpu", "mem"}


def test_an_image_minimum_below_the_floor_is_raised_to_it_and_a_bad_label_refused() -> None:
    assert requested_slots(None, {"cpu": "0.001", "mem": "1m"}, KNOWN) == ResourceSlot(
        cpu=CPU_MIN, mem=MEM_MIN
    )
    assert "invalid minimum" in refusal(None, {"cpu": "1e100000000"}).msg
    assert "no agent in this cluster offers" in refusal(None, {"rocm.device": "1"}).msg


def test_the_bounds_are_documented_figures() -> None:
    assert (CPU_MIN, CPU_MAX) == (Decimal("0.01"), 1024)
    assert (MEM_MIN, MEM_MAX) == (16 * M, 2**46)
    assert bound_of("cuda.device", KNOWN["cuda.device"]).high == COUNT_MAX
    assert bound_of("cuda.mem", KNOWN["cuda.mem"]).high == MEM_MAX


_numbers = st.one_of(
    st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=60),
    st.from_regex(
        r"-?[0-9]{0,40}(\.[0-9]{0,40})?([eE][+-]?[0-9]{1,12})?[kmgtpKMGTP]?", fullmatch=True
    ),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
)


@given(
    st.dictionaries(
        st.sampled_from(["cpu", "mem", "cuda.device", "rocm.device", "Bad!"]), _numbers, max_size=5
    )
)
def test_whatever_is_asked_the_answer_is_a_refusal_or_small_bounded_slots(
    resources: dict[str, Any],
) -> None:
    try:
        got = requested_slots(resources, IMAGE_MIN, KNOWN)
    except InvalidAPIParameters as error:
        assert len(error.msg) < 300
        return
    assert len(got.to_canonical_json()) < 200
    assert CPU_MIN <= got["cpu"] <= CPU_MAX and MEM_MIN <= got["mem"] <= MEM_MAX
    assert got["cpu"] >= 1 and got["mem"] >= 256 * M  # never below the image's minimum
    assert all(v.is_finite() and v >= 0 for v in got.values())
    assert set(got) <= set(KNOWN)


# ---- the pass: one session never stops the others ---------------------------------------------
def _pass(*sessions: Any, scheduler: str = "fifo") -> Any:
    return schedule_pass(
        group=ScalingGroup("default", scheduler=scheduler),
        pending=pending(*sessions),
        existing=[],
        agents=[agent("a1")],
        ctx=context(),
    )


def test_a_slot_no_agent_of_the_group_offers_keeps_that_session_pending_with_a_reason() -> None:
    """Attack 7: ``rocm.device`` (no agent has it) used to make the pass raise, every pass,
    so nobody in the group was scheduled again. Strict FIFO: the head is the bad one."""
    odd = make_session(request=slots(1, G, rocm_device=1))
    normal = make_session(request=slots(1))
    result = _pass(odd, normal)
    assert [d.session_id for d in result.decisions] == [normal.session_id]
    (failure,) = result.failures
    assert failure.session_id == odd.session_id
    assert failure.status_info == "no-available-instances"
    assert "rocm.device" in (failure.msg or "")


def test_a_session_that_raises_is_skipped_and_the_pass_goes_on() -> None:
    """Two sessions claiming the same kernel id: the ledger refuses the second's hold with
    an error the pass never expected. It is recorded as that session's failure."""
    first = make_session(request=slots(1))
    clash = make_session(request=slots(1))
    clash = dataclasses.replace(
        clash,
        kernels=(dataclasses.replace(clash.kernels[0], kernel_id=first.kernels[0].kernel_id),),
    )
    last = make_session(request=slots(1))
    result = _pass(first, clash, last)
    assert [d.session_id for d in result.decisions] == [first.session_id, last.session_id]
    (failure,) = result.failures
    assert (failure.session_id, failure.status_info) == (clash.session_id, "scheduler-error")
    assert "already holds a reservation" in (failure.msg or "") and len(failure.msg or "") <= 500
    assert [k for k, *_ in _holds(result)] == [
        first.kernels[0].kernel_id,
        last.kernels[0].kernel_id,
    ]


def _holds(result: Any) -> list[tuple[uuid.UUID, str]]:
    return [(a.kernel_id, a.agent_id) for d in result.decisions for a in d.reservation.allocations]


def test_an_impossible_amount_already_in_the_log_is_skipped_without_computing_with_it() -> None:
    """A session enqueued before the gateway bounded requests: ``cpu = 1e900000`` would be
    a 900,000-digit integer in the pass's unit conversion, for every pass."""
    poisoned = make_session(request=ResourceSlot(cpu=Decimal("1e900000"), mem=G))
    normal = make_session(request=slots(1))
    result = _pass(poisoned, normal)
    assert [d.session_id for d in result.decisions] == [normal.session_id]
    assert "impossible amount" in (result.failures[0].msg or "")


def test_strict_fifo_is_not_blocked_by_a_head_bigger_than_any_agent() -> None:
    """A tenant asking for 1000 cores (within the request bounds, beyond every agent) at the
    head of a strict FIFO group would otherwise stop everyone behind it, forever."""
    huge = make_session(request=slots(1000))
    normal = make_session(request=slots(1))
    result = _pass(huge, normal)
    assert [d.session_id for d in result.decisions] == [normal.session_id]
    assert [f.session_id for f in result.failures] == [huge.session_id]
