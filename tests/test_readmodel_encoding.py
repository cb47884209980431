"""The read side's fast paths give what the slow ones gave (issue 33): record JSON, JSON
parsing, slot arithmetic, event times, and skipping events no projection reads.

Pure functions: no Redis, no Ray.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import from_json

from events import NewEvent, canonical_dumps, default_codec
from events._canonical import decimal_to_plain
from events.codec import parse_json
from events.readmodels import decode_record, encode_record
from projections.base import iso_of
from projections.models import default_projections
from projections.runtime import unread_types
from projections.slots import add_slots, replace_slots, slots_json, sub_slots

from .strategies import new_events

pytestmark = pytest.mark.unit

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(min_value=1e-4, max_value=1e15, allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), _json_values, max_size=6))
def test_records_encode_to_the_canonical_bytes(record: dict[str, Any]) -> None:
    assert encode_record(record) == canonical_dumps(record)
    assert decode_record(encode_record(record)) == json.loads(canonical_dumps(record))


def test_what_orjson_does_not_take_is_written_canonically_or_fails_as_before() -> None:
    for record in ({1: "a"}, {"n": 2**64}, {"d": Decimal("1E+3")}, {"s": Decimal("Infinity")}):
        assert encode_record(record) == canonical_dumps(record)
    with pytest.raises(TypeError):
        encode_record({"t": datetime.now(UTC)})
    tiny = encode_record({"x": 5e-05, "y": 1e16})  # spelled otherwise, read the same
    assert json.loads(tiny) == {"x": 5e-05, "y": 1e16}


def test_record_decoding_refuses_and_accepts_what_json_loads_does() -> None:
    for text in ('{"a":NaN}', '{"a":1e400}', '"\\ud800"', "[1,2]", '{"a":123456789012345678901}'):
        assert repr(decode_record(text)) == repr(json.loads(text))
    with pytest.raises(ValueError):
        decode_record(b"{not json")


def test_event_bodies_parse_as_pydantic_core_parses_them() -> None:
    for text in ('{"a":NaN}', '{"a":1e400}', '{"a":123456789012345678901,"b":[0.1,-0.0]}'):
        assert repr(parse_json(text)) == repr(from_json(text))
    for text in (b"{not json", b'{"a":1', b"\xff"):
        with pytest.raises(ValueError):
            from_json(text)
        with pytest.raises(ValueError):
            parse_json(text)


_slot_values = st.sampled_from(
    ["0", "1", "42", "007", "-3", "1.5", "1.50", "Infinity", "1E+3", "9" * 18, "9" * 30, "٣"]
)
_slots = st.dictionaries(st.sampled_from(["cpu", "mem", "cuda.device"]), _slot_values)


def _old_add(a: dict[str, str], b: dict[str, str], sign: int, drop_zero: bool) -> dict[str, str]:
    result = {}
    for k in sorted(set(a) | set(b)):
        value = Decimal(a.get(k, "0")) + sign * Decimal(b.get(k, "0"))
        if value or not drop_zero:
            result[k] = decimal_to_plain(value)
    return result


@given(_slots, _slots, st.sampled_from([1, -1]), st.booleans())
def test_slot_arithmetic_equals_the_decimal_arithmetic(
    a: dict[str, str], b: dict[str, str], sign: int, drop_zero: bool
) -> None:
    try:
        expected: Any = _old_add(a, b, sign, drop_zero)
    except ArithmeticError as exc:
        expected = type(exc)
    try:
        got: Any = add_slots(a, b, sign, drop_zero=drop_zero)
    except ArithmeticError as exc:
        got = type(exc)
    assert got == expected
    try:
        plain: Any = {k: decimal_to_plain(Decimal(str(v))) for k, v in sorted(a.items())}
    except ArithmeticError as exc:
        plain = type(exc)
    try:
        assert slots_json(a) == plain
    except ArithmeticError as exc:
        assert plain is type(exc)


@given(_slots, _slots, _slots)
def test_a_hold_replaced_in_one_pass_equals_give_back_then_take(
    total: dict[str, str], old: dict[str, str], new: dict[str, str]
) -> None:
    try:
        expected: Any = add_slots(sub_slots(total, old, drop_zero=True), new, drop_zero=True)
    except ArithmeticError as exc:
        expected = type(exc)
    try:
        got: Any = replace_slots(total, old, new)
    except ArithmeticError as exc:
        got = type(exc)
    assert got == expected


def test_a_stored_event_is_built_as_its_class_builds_it() -> None:
    from events import StoredEvent
    from events.codec import _stored_event

    made = _stored_event("1-2", 1, "agent-a", 3, "agent_started", {"a": 1}, {"b": 2})
    assert made == StoredEvent("1-2", 1, "agent-a", 3, "agent_started", {"a": 1}, {"b": 2})
    with pytest.raises(AttributeError):
        made.position = "3-4"  # type: ignore[misc]


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_event_times_are_the_iso_form_of_their_position(position_ms: int) -> None:
    moment = datetime.fromtimestamp(position_ms / 1000, UTC)
    assert iso_of(position_ms) == moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(new_events)
def test_an_event_is_skipped_only_when_no_projection_reads_its_type(event: NewEvent) -> None:
    unread = unread_types(default_projections())
    tails = default_codec.stored_tails(unread)
    body = default_codec.encode(event).encode()
    assert body.endswith(tails) == (event.type in unread)
