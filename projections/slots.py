"""Slot arithmetic on read-model JSON (``{"cpu": "1.5", "mem": "1073741824"}``).

The read side keeps slots as plain-decimal strings, exactly as events carry them; these
helpers add and subtract them without importing the write side's ``ResourceSlot``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from events._canonical import decimal_to_plain

__all__ = ["add_slots", "slots_json", "sub_slots", "sum_slots"]

SlotsJson = Mapping[str, str]


def slots_json(values: Mapping[str, object]) -> dict[str, str]:
    return {k: decimal_to_plain(Decimal(str(v))) for k, v in sorted(values.items())}


def add_slots(
    a: SlotsJson, b: SlotsJson, sign: int = 1, *, drop_zero: bool = False
) -> dict[str, str]:
    """Key-wise ``a + sign * b``; with ``drop_zero`` slots that come out 0 are left out."""
    result = {}
    for k in sorted(set(a) | set(b)):
        value = Decimal(a.get(k, "0")) + sign * Decimal(b.get(k, "0"))
        if value or not drop_zero:
            result[k] = decimal_to_plain(value)
    return result


def sub_slots(a: SlotsJson, b: SlotsJson, *, drop_zero: bool = False) -> dict[str, str]:
    return add_slots(a, b, -1, drop_zero=drop_zero)


def sum_slots(items: Iterable[SlotsJson]) -> dict[str, str]:
    total: dict[str, str] = {}
    for item in items:
        total = add_slots(total, item)
    return total
