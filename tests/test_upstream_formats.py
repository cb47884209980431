"""Upstream's formats where a client or an admin script sees them (23.03's ``common/types``):
a ``ResourceSlot`` with an unset (``None``) slot, infinities humanised with their sign, and
``BinarySize`` written in a fixed scale (``f"{size:m}"``) or refused for a spec it does not
know. Where kernelhub differs on purpose, the test says so (docs/deviations.md)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.domain.sizes import BinarySize, format_size, humanize_size, parse_size
from actors.domain.slots import ResourceSlot, SlotLayout, SlotType

from .strategies import slot_values

pytestmark = pytest.mark.unit

G, M, K = 2**30, 2**20, 2**10
TYPES = {"cpu": SlotType.COUNT, "mem": SlotType.BYTES}
SCALES = "kmgtpezy"


# ---- ResourceSlot with an unset slot ---------------------------------------------------------
def test_an_unset_slot_is_kept_and_left_out_of_json() -> None:
    slots = ResourceSlot({"cpu": None, "mem": "1024"})
    assert slots["cpu"] is None and "cpu" in slots and len(slots) == 2
    assert list(slots) == ["cpu", "mem"]
    assert slots.to_json() == {"mem": "1024"}
    assert slots.to_canonical_json() == '{"mem":"1024"}'
    assert slots.to_humanized(TYPES) == {"mem": "1k"}
    assert repr(slots) == "ResourceSlot(cpu=None, mem=1024)"
    assert ResourceSlot.from_json({"cpu": None, "mem": "1"}) == ResourceSlot(mem=1)
    assert slots.normalize(TYPES)["cpu"] is None  # known and present: kept as it is


def test_an_unset_slot_equals_only_another_unset_one() -> None:
    """Upstream compares the values of the union of keys: ``None == None``, ``None != 0``."""
    unset = ResourceSlot(cpu=None)
    assert unset == ResourceSlot(cpu=None)
    assert unset != ResourceSlot()  # the missing key counts as 0, and None is not 0
    assert unset != ResourceSlot(cpu=0)
    assert not ResourceSlot().eq_contains(unset)  # a key only in the other must be 0
    assert not unset.eq_contains(ResourceSlot(cpu=1))


@pytest.mark.parametrize(
    ("operation", "verb"),
    [
        (lambda a, b: a + b, "add"),
        (lambda a, b: b + a, "add"),
        (lambda a, b: a - b, "subtract"),
        (lambda a, b: a <= b, "compare"),
        (lambda a, b: a >= b, "compare"),
        (lambda a, b: a < b, "compare"),
        (lambda a, b: b > a, "compare"),
        (lambda a, b: a.dominant_share(b), "divide"),
        (lambda a, b: ResourceSlot.total([b, a]), "add"),
    ],
)
def test_arithmetic_and_ordering_with_an_unset_slot_is_a_type_error_naming_it(
    operation: Callable[[ResourceSlot, ResourceSlot], object], verb: str
) -> None:
    """Upstream raises TypeError there too (``Decimal + None``); here always, naming the slot
    (upstream's ordering only when no earlier slot already decided it)."""
    unset, other = ResourceSlot({"cpu": None, "mem": 1}), ResourceSlot(cpu=2, mem=2)
    with pytest.raises(TypeError, match=rf"cannot {verb} resource slots with no value.*: cpu"):
        operation(unset, other)


def test_the_scheduler_never_takes_an_unset_slot_for_a_number() -> None:
    with pytest.raises(TypeError, match="no value \\(None\\): cpu"):
        SlotLayout(TYPES).to_units(ResourceSlot(cpu=None, mem=1))


@given(st.dictionaries(st.sampled_from(["cpu", "mem", "cuda.device"]), slot_values | st.none()))
def test_json_round_trips_everything_but_the_unset_slots(values: dict[str, Decimal | None]) -> None:
    slots = ResourceSlot(values)
    back = ResourceSlot.from_json(slots.to_json())
    assert dict(back) == {k: v for k, v in values.items() if v is not None}
    assert set(slots.to_json()) == {k for k, v in values.items() if v is not None}


# ---- infinities --------------------------------------------------------------------------------
def test_infinities_are_humanised_with_their_sign() -> None:
    minus, plus = Decimal("-Infinity"), Decimal("Infinity")
    assert (format_size(minus), format_size(plus)) == ("-Infinity", "Infinity")
    assert (humanize_size(minus), humanize_size(plus)) == ("-Infinity", "Infinity")
    slots = ResourceSlot(mem=minus, cpu=minus)
    assert slots.to_humanized(TYPES) == {"cpu": "-Infinity", "mem": "-Infinity"}
    assert slots.to_json() == {"cpu": "-Infinity", "mem": "-Infinity"}
    assert (ResourceSlot(mem=1) - ResourceSlot(mem=plus)).to_humanized(TYPES) == {
        "mem": "-Infinity"
    }


# ---- BinarySize --------------------------------------------------------------------------------
SIZE = BinarySize(1536 * M)


@pytest.mark.parametrize(
    ("size", "spec", "written"),
    [
        (SIZE, "s", "1.5g"),
        (SIZE, "k", "1572864k"),
        (SIZE, "m", "1536m"),
        (SIZE, "g", "1.5g"),
        (SIZE, "G", "1.5g"),  # the letter in either case, written lower-case
        (SIZE, "t", "0t"),  # two decimals, then trailing zeros dropped: 0.0015 -> 0
        (SIZE, " ", str(1536 * M)),  # bytes
        (BinarySize(1), "s", "1"),
        (BinarySize(1), "k", "0k"),
        (BinarySize(1023), "k", "1k"),  # 0.999 rounds to 1.00
        (BinarySize(1023), "s", "1023"),
        (BinarySize(K), "s", "1k"),
        (BinarySize(0), "m", "0m"),
        (BinarySize(3 * 2**80), "y", "3y"),
        (BinarySize(2**90), "s", "1024y"),  # no scale past yotta
        (BinarySize(5 * G + 256 * M), "g", "5.25g"),
        (BinarySize(100 * G + 1), "g", "100g"),  # upstream: "1E+2g" (docs/deviations.md)
        (BinarySize(-1536), "k", "-1.5k"),
    ],
)
def test_binary_size_in_a_fixed_scale_as_upstream(
    size: BinarySize, spec: str, written: str
) -> None:
    assert format(size, spec) == written
    assert f"{{:{spec}}}".format(size) == written


def test_binary_size_str_and_parsing() -> None:
    assert (str(BinarySize(1)), str(BinarySize(1000)), str(SIZE)) == (
        "1 byte",
        "1000 bytes",
        "1.5 GiB",
    )
    assert f"{SIZE}" == "1.5 GiB"  # upstream raises on the empty spec (docs/deviations.md)
    assert BinarySize.from_str("1.5g") == SIZE and isinstance(BinarySize.from_str("1g"), BinarySize)
    assert BinarySize.from_str("inf") == Decimal("Infinity")
    with pytest.raises(ValueError, match="infinite"):
        BinarySize.finite_from_str("infinity")
    assert BinarySize.finite_from_str("512m") == 512 * M


@pytest.mark.parametrize("spec", ["x", "b", "d", "%", "i", "1"])
def test_an_unknown_scale_is_refused_as_upstream(spec: str) -> None:
    with pytest.raises(ValueError) as refused:
        format(SIZE, spec)
    assert refused.value.args == ("Unsupported scale unit.", spec)


@pytest.mark.parametrize("spec", ["kk", "gb", ">10", "10s", ".2g"])
def test_a_spec_longer_than_one_character_is_refused_as_upstream(spec: str) -> None:
    with pytest.raises(ValueError, match="format-string for BinarySize can be only one character"):
        format(SIZE, spec)


@given(st.integers(0, 2**100), st.sampled_from(SCALES + SCALES.upper()))
def test_a_fixed_scale_reads_back_within_its_rounding(size: int, letter: str) -> None:
    """What a fixed scale writes parses back to within half a hundredth of that unit (two
    decimals), never in scientific notation, with the letter given."""
    written = format(BinarySize(size), letter)
    assert written.endswith(letter.lower()) and "E" not in written
    unit = 1024 ** (SCALES.index(letter.lower()) + 1)
    number = Decimal(written[:-1])
    with localcontext() as exact:
        exact.prec = 100
        assert abs(number * unit - size) <= unit * Decimal("0.005")
    if size % unit == 0:
        assert number == size // unit  # exact when whole


@given(st.integers(-(2**90), 2**90))
def test_the_automatic_scale_is_the_short_form(size: int) -> None:
    written = format(BinarySize(size), "s")
    assert written == format_size(size) and "E" not in written
    if size >= 0:
        assert abs(parse_size(written) - size) <= Decimal(size) / 200 + 1
