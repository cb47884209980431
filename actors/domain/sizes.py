"""Byte sizes as people write them: ``"1g"``, ``"1.5 GiB"``, ``"512m"`` (1024-based).

Backend.AI's ``BinarySize`` semantics (23.03's ``common/types.py``), with deliberate
differences (docs/deviations.md):

* ``"1024b"`` (a unit ending straight after the digits, no scale letter) means 1024 bytes
  here, where upstream raises (its parser mistakes the last digit for a scale letter);
* a scaled number is never written in scientific notation: upstream's ``normalize()`` turns
  ``100.00`` into ``1E+2``, so it prints ``"1E+2g"`` for a little over 100 GiB; here
  ``"100g"``;
* a negative size is scaled by its magnitude (``"-1.5g"``; upstream prints the bare bytes);
* ``format(size, "")`` (a plain ``f"{size}"``) is ``str(size)``, as for any Python object;
  upstream raises.

Infinity is a :class:`~decimal.Decimal` (``BinarySize`` is an ``int`` and cannot hold it);
``Infinity`` and ``-Infinity`` are written as such, as upstream's humaniser falls back to.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext

__all__ = ["INFINITY", "BinarySize", "format_size", "humanize_size", "parse_size"]

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


def _infinite(size: Decimal) -> str:
    return "-Infinity" if size < 0 else "Infinity"


def _scaled(size: Decimal, unit: Decimal) -> str:
    """``size / unit`` as upstream's ``BinarySize._quantize`` rounds it (a whole number as
    is, else two decimals with trailing zeros dropped), in plain notation."""
    with localcontext() as context:  # exact however many digits (upstream fails past 28)
        context.prec = max(28, size.adjusted() + 4)
        scaled = size / unit
        if scaled == scaled.to_integral_value():
            return f"{scaled.quantize(Decimal(1)):f}"
        return f"{scaled.quantize(Decimal('0.01')).normalize():f}"


def format_size(value: int | Decimal) -> str:
    """The short form: ``"1g"``, ``"1.5g"``, ``"512m"``, plain digits under 1 KiB."""
    size = Decimal(value)
    if size.is_infinite():
        return _infinite(size)
    for power in range(len(_SCALES), 0, -1):
        unit = Decimal(1024) ** power
        if abs(size) >= unit:
            return f"{_scaled(size, unit)}{_SCALES[power - 1]}"
    return f"{int(size)}"


def humanize_size(value: int | Decimal) -> str:
    """The long form of ``str(BinarySize)``: ``"1 byte"``, ``"N bytes"``, ``"1.5 GiB"``."""
    size = Decimal(value)
    if size.is_infinite():
        return _infinite(size)
    if abs(size) < 1024:
        return "1 byte" if size == 1 else f"{int(size)} bytes"
    power = 1
    while power < len(_LONG_UNITS) - 1 and abs(size) >= Decimal(1024) ** (power + 1):
        power += 1
    return f"{_scaled(size, Decimal(1024) ** power)} {_LONG_UNITS[power]}"


_FIXED_SCALES = {" ": 0, **{letter: power + 1 for power, letter in enumerate(_SCALES)}}


class BinarySize(int):
    """A whole number of bytes that prints as upstream's ``BinarySize``.

    ``str(size)`` is the long form (:func:`humanize_size`). ``format(size, spec)`` takes one
    character: ``"s"`` scales automatically (:func:`format_size`); a scale letter
    (``k m g t p e z y``, either case) writes the size in that unit whatever its magnitude
    (``f"{BinarySize(1536 * 2**20):m}"`` is ``"1536m"``, ``:g`` of it ``"1.5g"``); ``" "``
    writes bytes. Any other spec is a :class:`ValueError`, as upstream (``""`` is ``str``).
    """

    @classmethod
    def from_str(cls, value: str | int | Decimal) -> BinarySize | Decimal:
        """A size as people write it; ``Decimal("Infinity")`` for ``"inf"`` and its kin."""
        size = parse_size(value)
        return size if size.is_infinite() else cls(int(size))

    @classmethod
    def finite_from_str(cls, value: str | int | Decimal) -> BinarySize:
        return cls(int(parse_size(value, allow_infinity=False)))

    def __str__(self) -> str:
        return humanize_size(int(self))

    def __repr__(self) -> str:
        return f"BinarySize({int(self)})"

    def __format__(self, format_spec: str) -> str:
        if format_spec == "":
            return str(self)
        if len(format_spec) != 1:
            raise ValueError("format-string for BinarySize can be only one character.")
        if format_spec == "s":
            return format_size(int(self))
        power = _FIXED_SCALES.get(format_spec.lower())
        if power is None:
            raise ValueError("Unsupported scale unit.", format_spec.lower())
        letter = format_spec.lower().strip()
        return f"{_scaled(Decimal(int(self)), Decimal(1024) ** power)}{letter}"
