"""Byte sizes as people write them: ``"1g"``, ``"1.5 GiB"``, ``"512m"`` (1024-based).

Backend.AI's ``BinarySize`` semantics, with one deliberate difference: ``"1024b"`` (a unit
ending straight after the digits, no scale letter) means 1024 bytes here, where upstream
raises (its parser mistakes the last digit for a scale letter). See docs/deviations.md.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["INFINITY", "format_size", "humanize_size", "parse_size"]

INFINITY = Decimal("Infinity")
_SCALES = "kmgtpezy"
_PATTERN = re.compile(
    r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<scale>[kmgtpezy])?"
    r"(?P<unit>ib|ibyte|ibytes|b|byte|bytes)?\s*$",
    re.IGNORECASE,
)
_LONG_UNITS = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]


def parse_size(value: str | int | Decimal, *, allow_infinity: bool = True) -> Decimal:
    """Bytes as a Decimal (an integer, or Infinity when allowed)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        if value.is_infinite():
            if not allow_infinity:
                raise ValueError("infinite size is not allowed here")
            return value
        if value != value.to_integral_value():
            raise ValueError("Fractional bytes are not allowed")
        return value
    text = str(value).replace("_", "").strip()
    if text.lower() in ("inf", "infinite", "infinity"):
        if not allow_infinity:
            raise ValueError("infinite size is not allowed here")
        return INFINITY
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"invalid size {value!r}: use bytes or a 1024-based suffix like 512m, 1g")
    try:
        mantissa = Decimal(match["num"])
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"invalid size {value!r}") from None
    scale = match["scale"]
    if scale is None:
        if mantissa != mantissa.to_integral_value():
            raise ValueError("Fractional bytes are not allowed")
        return mantissa
    return Decimal(int(mantissa * (1024 ** (_SCALES.index(scale.lower()) + 1))))


def format_size(value: int | Decimal) -> str:
    """The short form: ``"1g"``, ``"1.5g"``, ``"512m"``, plain digits under 1 KiB."""
    size = Decimal(value)
    if size.is_infinite():
        return "Infinity"
    for power in range(len(_SCALES), 0, -1):
        unit = Decimal(1024) ** power
        if abs(size) >= unit:
            scaled = (size / unit).quantize(Decimal("0.01")).normalize()
            return f"{scaled:f}{_SCALES[power - 1]}"
    return f"{int(size)}"


def humanize_size(value: int | Decimal) -> str:
    """The long form of ``str(BinarySize)``: ``"1 byte"``, ``"N bytes"``, ``"1.5 GiB"``."""
    size = Decimal(value)
    if size.is_infinite():
        return "Infinity"
    if abs(size) < 1024:
        return "1 byte" if size == 1 else f"{int(size)} bytes"
    power = 1
    while power < len(_LONG_UNITS) - 1 and abs(size) >= Decimal(1024) ** (power + 1):
        power += 1
    scaled = (size / Decimal(1024) ** power).quantize(Decimal("0.01")).normalize()
    return f"{scaled:f} {_LONG_UNITS[power]}"
