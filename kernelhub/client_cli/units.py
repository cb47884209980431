"""Slot amounts as ``kh`` shows them to a person: memory in the short 1024-based form a user
types (``-r mem=256m``, ``kh session create --mem 256m``), so ``kh ps``, ``kh info`` and
``kh session show`` speak the same units the commands take. One formatter for all of them.

The client's own copy of :func:`actors.domain.sizes.format_size`'s rules (a client
install has no server modules): scales k, m, g, ... of 1024, two decimals at most, plain
digits under 1 KiB, ``Infinity`` and ``-Infinity`` as words. ``--json`` keeps the raw
amounts: scripts read numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

__all__ = ["format_size", "format_slot", "format_slots", "is_bytes_slot"]

_SCALES = "kmgtpezy"


def format_size(value: int | str | Decimal) -> str:
    """Bytes in the short form: ``"256m"``, ``"1.5g"``, ``"512"``; what is not a number is
    shown as it came."""
    try:
        size = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if size.is_nan():
        return str(value)
    if size.is_infinite():
        return "-Infinity" if size < 0 else "Infinity"
    for power in range(len(_SCALES), 0, -1):
        unit = Decimal(1024) ** power
        if abs(size) >= unit:
            scaled = (size / unit).quantize(Decimal("0.01")).normalize()
            return f"{scaled:f}{_SCALES[power - 1]}"
    return f"{int(size)}"


def is_bytes_slot(name: str) -> bool:
    """``mem`` and an accelerator's memory (``cuda.mem``) count bytes; the rest count units."""
    return name == "mem" or name.endswith(".mem")


def format_slot(name: str, amount: object) -> str:
    if is_bytes_slot(name):
        return format_size(str(amount))
    try:
        return format(Decimal(str(amount)).normalize(), "f")
    except InvalidOperation:
        return str(amount)


def format_slots(slots: Mapping[str, object]) -> str:
    """``cpu=1 mem=256m``, sorted by slot name."""
    return " ".join(f"{name}={format_slot(name, amount)}" for name, amount in sorted(slots.items()))
