"""Canonical JSON: one byte encoding, whatever the input order or Decimal spelling."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import BaseModel

from events import PlainDecimal, canonical_dumps
from events._canonical import decimal_to_plain

pytestmark = pytest.mark.unit


def test_keys_are_sorted_and_whitespace_free() -> None:
    assert (
        canonical_dumps({"b": 1, "a": {"d": [1, 2], "c": None}})
        == '{"a":{"c":null,"d":[1,2]},"b":1}'
    )


def test_unicode_is_written_as_utf8_not_escaped() -> None:
    assert canonical_dumps({"name": "세션"}) == '{"name":"세션"}'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1E+3"), "1000"),
        (Decimal("1.500"), "1.5"),
        (Decimal("0.000"), "0"),
        (Decimal("1073741824"), "1073741824"),
        (Decimal("Infinity"), "Infinity"),
        (Decimal("-Infinity"), "-Infinity"),
        (Decimal("0.001"), "0.001"),
    ],
)
def test_decimals_are_plain_strings(value: Decimal, text: str) -> None:
    assert decimal_to_plain(value) == text
    assert canonical_dumps({"v": value}) == f'{{"v":"{text}"}}'


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError):
        canonical_dumps({"v": float("nan")})
    with pytest.raises(ValueError):
        decimal_to_plain(Decimal("NaN"))


def test_plain_decimal_fields_dump_plainly_in_models() -> None:
    class Slots(BaseModel):
        cpu: PlainDecimal
        mem: PlainDecimal

    dumped = Slots(cpu=Decimal("2E+0"), mem=Decimal("1.0737418240E+9")).model_dump(mode="json")
    assert canonical_dumps(dumped) == '{"cpu":"2","mem":"1073741824"}'
