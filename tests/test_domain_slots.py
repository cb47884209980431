"""Sizes and ResourceSlot (23.03's ``common/types.py``: ``BinarySize``, ``ResourceSlot``)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.domain.sizes import format_size, humanize_size, parse_size
from actors.domain.slots import (
    INTRINSIC_SLOTS,
    ResourceSlot,
    SlotLayout,
    SlotType,
    UnknownSlotError,
)

pytestmark = pytest.mark.unit

G = 2**30


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1g", G),
        ("1G", G),
        ("1gib", G),
        ("1_024", 1024),
        ("1.5m", 1536 * 1024),
        ("1024 bytes", 1024),
        ("512m", 512 * 2**20),
        ("2t", 2 * 2**40),
        (" 3k ", 3072),
        ("1024b", 1024),  # upstream raises here; kernelhub reads the obvious (docs/deviations.md)
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


def test_infinity_and_fractions() -> None:
    for word in ("inf", "infinite", "Infinity"):
        assert parse_size(word).is_infinite()
    with pytest.raises(ValueError, match="infinite"):
        parse_size("inf", allow_infinity=False)
    with pytest.raises(ValueError, match="Fractional bytes are not allowed"):
        parse_size("1.5")
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("1.5q")
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("1g trailing")


def test_size_formatting() -> None:
    assert humanize_size(1536 * 2**20) == "1.5 GiB"
    assert humanize_size(1) == "1 byte"
    assert humanize_size(1000) == "1000 bytes"
    assert format_size(G) == "1g"
    assert format_size(1536 * 2**20) == "1.5g"
    assert format_size(512 * 2**20) == "512m"


def test_arithmetic_is_over_the_union_of_keys_and_can_go_negative() -> None:
    a = ResourceSlot(cpu=1, mem=G)
    b = ResourceSlot({"cpu": 2, "cuda.device": 1})
    assert (a + b).to_json() == {"cpu": "3", "cuda.device": "1", "mem": str(G)}
    assert (a - b).to_json() == {"cpu": "-1", "cuda.device": "-1", "mem": str(G)}


def test_partial_order_without_mutating_operands() -> None:
    a, b = ResourceSlot(cpu=1, mem=2), ResourceSlot(cpu=2, mem=1)
    assert not a <= b and not a >= b
    c = ResourceSlot(cpu=1)
    assert c <= a and a >= c and c < a and a > c
    assert set(c) == {"cpu"}, "comparison must not add keys (upstream's sync_keys does)"
    assert ResourceSlot(cpu=1) == ResourceSlot(cpu=1, mem=0)
    assert ResourceSlot(cpu=1) != ResourceSlot(cpu=1, mem=1)


def test_eq_contains_and_contained() -> None:
    a = ResourceSlot(cpu=1, mem=2)
    assert a.eq_contains(ResourceSlot(cpu=1, gpu=0))
    assert not a.eq_contains(ResourceSlot(cpu=1, gpu=1))
    assert ResourceSlot(cpu=1, gpu=0).eq_contained(a)


def test_normalize() -> None:
    raw = ResourceSlot({"cpu": 1, "tpu": 2})
    assert raw.normalize(INTRINSIC_SLOTS).to_json() == {"cpu": "1", "mem": "0"}
    with pytest.raises(UnknownSlotError, match="tpu"):
        raw.normalize(INTRINSIC_SLOTS, ignore_unknown=False)


def test_from_user_input() -> None:
    guessed = ResourceSlot.from_user_input({"cpu": "1.5", "mem": "1g", "gpu_mem": "2g", "x": None})
    assert guessed.to_json() == {"cpu": "1.5", "gpu_mem": str(2 * G), "mem": str(G)}
    assert ResourceSlot.from_user_input({"cpu": "0.0001"})["cpu"] == 0
    typed = ResourceSlot.from_user_input(
        {"cpu": 2}, {**INTRINSIC_SLOTS, "cuda.device": SlotType.UNIQUE}
    )
    assert typed.to_json() == {"cpu": "2", "cuda.device": "0", "mem": "0"}
    with pytest.raises(UnknownSlotError, match="unit unknown for slot 'tpu'"):
        ResourceSlot.from_user_input({"tpu": 1}, INTRINSIC_SLOTS)
    with pytest.raises(ValueError, match="invalid value for slot 'mem'"):
        ResourceSlot.from_user_input({"mem": "lots"})


def test_from_policy_limited_and_unlimited() -> None:
    known = {**INTRINSIC_SLOTS, "cuda.device": SlotType.UNIQUE}
    given_slots = {"cpu": "4", "unknown.slot": "9"}
    limited = ResourceSlot.from_policy(
        {"total_resource_slots": given_slots, "default_for_unspecified": "LIMITED"}, known
    )
    unlimited = ResourceSlot.from_policy(
        {"total_resource_slots": given_slots, "default_for_unspecified": "UNLIMITED"}, known
    )
    assert limited.to_json() == {"cpu": "4", "cuda.device": "0", "mem": "0"}
    assert unlimited.to_json() == {"cpu": "4", "cuda.device": "Infinity", "mem": "Infinity"}


def test_to_json_never_uses_scientific_notation() -> None:
    slots = ResourceSlot({"mem": Decimal("1.073741824E+9"), "cpu": Decimal("1E+1")})
    assert slots.to_json() == {"cpu": "10", "mem": "1073741824"}
    assert slots.to_canonical_json() == '{"cpu":"10","mem":"1073741824"}'
    assert ResourceSlot.from_json(slots.to_json()) == slots
    assert slots.to_humanized(INTRINSIC_SLOTS) == {"cpu": "10", "mem": "1g"}


@given(st.lists(st.tuples(st.integers(0, 64_000), st.integers(0, 2**40)), min_size=1, max_size=5))
def test_integer_units_round_trip(values: list[tuple[int, int]]) -> None:
    layout = SlotLayout(INTRINSIC_SLOTS)
    for milli_cpu, mem in values:
        slots = ResourceSlot(cpu=Decimal(milli_cpu) / 1000, mem=mem)
        assert layout.from_units(layout.to_units(slots)) == slots
