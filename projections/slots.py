"""Slot arithmetic on read-model JSON (``{"cpu": "1.5", "mem": "1073741824"}``).

The read side keeps slots as plain-decimal strings, exactly as events carry them; these
helpers add and subtract them without importing the write side's ``ResourceSlot``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from events._canonical import decimal_to_plain

__all__ = ["add_slots", "replace_slots", "slots_json", "sub_slots", "sum_slots"]

SlotsJson = Mapping[str, str]


def _plain_int(value: object) -> bool:
    """A whole number written as :func:`decimal_to_plain` writes it (``"0"``, ``"42"``), short
    enough that its sums are exact in ``int`` and in the Decimal context: the common case
    (counts, bytes), computed without Decimal. Anything else takes the Decimal way."""
    return (
        type(value) is str
        and 0 < len(value) <= 18
        and value.isdigit()
        and value.isascii()
        and (value[0] != "0" or value == "0")
    )


def slots_json(values: Mapping[str, object]) -> dict[str, str]:
    return {
        k: v if _plain_int(v) else decimal_to_plain(Decimal(str(v)))  # type: ignore[misc]
        for k, v in sorted(values.items())
    }


def add_slots(
    a: SlotsJson, b: SlotsJson, sign: int = 1, *, drop_zero: bool = False
) -> dict[str, str]:
    """Key-wise ``a + sign * b``; with ``drop_zero`` slots that come out 0 are left out."""
    result = {}
    for k in sorted(a.keys() | b.keys()):
        x, y = a.get(k, "0"), b.get(k, "0")
        if _plain_int(x) and _plain_int(y):
            whole = int(x) + sign * int(y)
            if whole or not drop_zero:
                result[k] = str(whole)
            continue
        value = Decimal(x) + sign * Decimal(y)
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


def replace_slots(total: SlotsJson, old: SlotsJson, new: SlotsJson) -> dict[str, str]:
    """``total - old + new`` with zeros left out: a ledger hold replaced (``old`` given back,
    ``new`` taken), equal to ``add_slots(sub_slots(total, old, drop_zero=True), new,
    drop_zero=True)`` and computed in one pass when every figure is a plain whole number."""
    keys = total.keys() | old.keys() | new.keys()
    result = {}
    for k in sorted(keys):
        x, y, z = total.get(k, "0"), old.get(k, "0"), new.get(k, "0")
        if not (_plain_int(x) and _plain_int(y) and _plain_int(z)):
            return add_slots(sub_slots(total, old, drop_zero=True), new, drop_zero=True)
        whole = int(x) - int(y) + int(z)
        if whole:
            result[k] = str(whole)
    return result
