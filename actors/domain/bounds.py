"""Bounds on what a tenant may ask for, checked before anything becomes an event.

The log is immutable and shared, and Redis runs ``noeviction``: a value that reaches it
unbounded (``"cpu": "1e100000000"`` is a 100 MB plain decimal) can never be taken back,
and a full Redis stops every tenant. So each requested slot is parsed here with its size
checked *before* any arithmetic, kept within documented limits, never below the image's
minimum (``mem``/``cpu`` are never 0: Docker reads 0 as "no limit"), and only for slots the
cluster knows (an unknown slot would wait forever, or worse, trip the scheduler).

Refusals are :class:`InvalidAPIParameters` (400) naming the slot, with a ``data`` entry
keyed by the request field (``resources.cpu``). Everything here is pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import InvalidAPIParameters
from .sizes import format_size, parse_size
from .slots import INTRINSIC_SLOTS, ResourceSlot, SlotType

__all__ = [
    "COUNT_MAX",
    "CPU_MAX",
    "CPU_MIN",
    "MAX_SLOTS",
    "MAX_SLOT_NAME",
    "MAX_VALUE_TEXT",
    "MEM_MAX",
    "MEM_MIN",
    "QUANTUM",
    "SlotBound",
    "bound_of",
    "known_slot_types",
    "out_of_bounds",
    "parse_slot_value",
    "requested_slots",
    "shown",
]

MAX_SLOTS = 16
"""Slots in one request (Backend.AI clusters know a handful: cpu, mem, one or two devices)."""
MAX_SLOT_NAME = 64
MAX_VALUE_TEXT = 32
"""Characters of one value as written (``"1.5g"``, ``"0.25"``); checked before parsing."""
QUANTUM = Decimal("0.001")
"""The finest count a slot may ask for (ResourceSlot's quantum for user input)."""

CPU_MIN = Decimal("0.01")
"""Docker's smallest CFS quota (1 ms per 100 ms period)."""
CPU_MAX = Decimal(1024)
MEM_MIN = Decimal(16 * 2**20)
"""16 MiB: Docker refuses less than 6 MiB, and nothing useful runs below this."""
MEM_MAX = Decimal(2**46)
"""64 TiB: more than any one host has; a bound, not a policy (quotas are policies)."""
COUNT_MAX = Decimal(65536)
"""Any other counted slot (devices, device shares)."""
BYTES_MAX = MEM_MAX
"""Any other byte-sized slot."""

_SLOT_NAME = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z0-9_-]+)*$")
_NUMBER = re.compile(r"^\+?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$|^-")
"""A plain decimal (a leading ``-`` is let through to be refused as negative)."""
_SPECIAL = frozenset({"inf", "infinity", "nan"})
_MAX_MAGNITUDE = 20
"""Decimal exponents beyond this are refused before any arithmetic (1e20 is past every
bound, and quantizing stays within the default 28-digit context)."""


@dataclass(frozen=True, slots=True)
class SlotBound:
    """What one slot may be asked for: ``low`` (0 means the slot may be left out)..``high``,
    in steps of ``step``."""

    low: Decimal
    high: Decimal
    step: Decimal


_BOUNDS: dict[str, SlotBound] = {
    "cpu": SlotBound(CPU_MIN, CPU_MAX, QUANTUM),
    "mem": SlotBound(MEM_MIN, MEM_MAX, Decimal(1)),
}


def bound_of(name: str, slot_type: SlotType) -> SlotBound:
    """The bound of a slot: cpu and mem have their own; other slots may be 0 (not asked)
    up to a large count or size."""
    if name in _BOUNDS:
        return _BOUNDS[name]
    if slot_type is SlotType.BYTES:
        return SlotBound(Decimal(0), BYTES_MAX, Decimal(1))
    return SlotBound(Decimal(0), COUNT_MAX, QUANTUM)


def shown(value: Any, limit: int = 40) -> str:
    """A value as a message may quote it: its repr, cut short (never echo a megabyte)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _refuse(field: str, message: str) -> InvalidAPIParameters:
    error = InvalidAPIParameters(message)
    error.data = {field: message}  # type: ignore[attr-defined]
    return error


def known_slot_types(offered: Iterable[str] = ()) -> dict[str, SlotType]:
    """The slots a cluster knows: cpu and mem, and every slot an agent has registered
    (``offered``: slot names, e.g. from agents' ``available_slots``); a name with ``mem`` in
    it is a size, others a count (the convention of ``ResourceSlot.from_user_input``)."""
    known: dict[str, SlotType] = dict(INTRINSIC_SLOTS)
    for name in offered:
        known.setdefault(name, SlotType.BYTES if "mem" in name else SlotType.COUNT)
    return known


def _text_of(name: str, raw: Any, field: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise _refuse(
            field,
            f"resource slot {name!r} must be a number or a size string, not {type(raw).__name__}",
        )
    if isinstance(raw, float) and not math.isfinite(raw):
        raise _refuse(field, f"resource slot {name!r} must be finite, not {shown(raw)}")
    if isinstance(raw, int) and raw.bit_length() > 128:  # bounded before it is rendered
        raise _refuse(field, f"resource slot {name!r} is too large")
    text = str(raw).strip()
    if len(text) > MAX_VALUE_TEXT:
        raise _refuse(
            field,
            f"resource slot {name!r}: a value of at most {MAX_VALUE_TEXT} "
            f"characters, not {shown(raw)}",
        )
    return text


def parse_slot_value(
    name: str, raw: Any, slot_type: SlotType, *, field: str | None = None
) -> Decimal:
    """A finite, non-negative amount of slot ``name`` with at most ``QUANTUM``'s precision
    (bytes: whole bytes), its magnitude bounded before any arithmetic; no range check
    beyond that (see :func:`out_of_bounds`)."""
    field = field or f"resources.{name}"
    text = _text_of(name, raw, field)
    try:
        if slot_type is SlotType.BYTES:
            value = parse_size(text, allow_infinity=False)
        elif _NUMBER.match(text):
            value = Decimal(text)
        else:  # "Infinity", "NaN", "1_0", "0x10": refused, the first two by name below
            value = Decimal(text) if text.lower().lstrip("+-s") in _SPECIAL else Decimal("x")
    except (ValueError, ArithmeticError):
        raise _refuse(field, f"invalid value for resource slot {name!r}: {shown(raw)}") from None
    if not value.is_finite():
        raise _refuse(field, f"resource slot {name!r} must be finite, not {shown(raw)}")
    if value.adjusted() > _MAX_MAGNITUDE or (value != 0 and value.adjusted() < -_MAX_MAGNITUDE):
        raise _refuse(field, f"resource slot {name!r} is out of range: {shown(raw)}")
    if value < 0:
        raise _refuse(field, f"resource slot {name!r} cannot be negative: {shown(raw)}")
    step = Decimal(1) if slot_type is SlotType.BYTES else QUANTUM
    try:
        exact = value.quantize(step) == value
    except InvalidOperation:
        exact = False
    if not exact:
        unit = "whole bytes" if slot_type is SlotType.BYTES else f"a multiple of {step}"
        raise _refuse(field, f"resource slot {name!r} must be {unit}: {shown(raw)}")
    return Decimal(int(value)) if slot_type is SlotType.BYTES else value.quantize(step).normalize()


def _render(value: Decimal, slot_type: SlotType) -> str:
    return format_size(value) if slot_type is SlotType.BYTES else format(value.normalize(), "f")


def out_of_bounds(name: str, value: Decimal, slot_type: SlotType) -> str | None:
    """Why ``value`` is outside the bound of slot ``name`` (None: within it). Also used on
    what is already in the log: a pass skips a session asking for the impossible."""
    if not value.is_finite():
        return f"resource slot {name!r} must be finite"
    bound = bound_of(name, slot_type)
    if value > bound.high:
        return f"resource slot {name!r} may be at most {_render(bound.high, slot_type)}"
    if value < bound.low or value < 0:
        return f"resource slot {name!r} must be at least {_render(bound.low, slot_type)}"
    return None


def _check_name(name: Any) -> str:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= MAX_SLOT_NAME
        or not _SLOT_NAME.match(name)
    ):
        raise _refuse("resources", f"invalid resource slot name {shown(name)}")
    return name


def requested_slots(
    resources: Any,
    minimum: Mapping[str, Any],
    known: Mapping[str, SlotType],
    *,
    image: str = "the image",
) -> ResourceSlot:
    """The slots a session asks for: what was requested, the image's minimum for what was
    not (cpu 1 and mem 1g when the image says nothing), each within its bound and not below
    the image's minimum. Slots asked as 0 are left out (except cpu and mem, which may not be
    0); any other slot the cluster does not know is refused, naming it."""
    if resources is None:
        resources = {}
    if not isinstance(resources, Mapping):
        raise _refuse("resources", "resources must be an object of slot: amount")
    if len(resources) > MAX_SLOTS:
        raise _refuse("resources", f"at most {MAX_SLOTS} resource slots in one request")
    asked: dict[str, Decimal] = {}
    for name, raw in resources.items():
        _check_name(name)
        if raw is None:
            continue
        slot_type = known.get(name, SlotType.BYTES if "mem" in name else SlotType.COUNT)
        value = parse_slot_value(name, raw, slot_type)
        if name not in known:
            if value == 0:
                continue  # nothing asked of a slot nobody has: harmless, dropped
            offered = ", ".join(sorted(known))
            message = f"unknown resource slot {name!r}: no agent in this cluster offers it"
            raise _refuse(f"resources.{name}", f"{message} (known: {offered})")
        asked[name] = value
    floor = _minimum(minimum, known, image)
    wanted = {"cpu": Decimal(1), "mem": Decimal(2**30), **floor, **asked}
    for name, value in wanted.items():
        slot_type = known[name]
        if name not in asked:  # a default or the image's minimum: at least the slot's floor
            value = wanted[name] = max(value, bound_of(name, slot_type).low)
        why = out_of_bounds(name, value, slot_type)
        if why is not None:
            raise _refuse(f"resources.{name}", f"{why}, not {_render(value, slot_type)}")
        least = floor.get(name)
        if least is not None and value < least:
            raise _refuse(
                f"resources.{name}",
                (
                    "Your resource request is smaller than the minimum required by the image. "
                    f"({name} {_render(value, slot_type)} < {_render(least, slot_type)})"
                ),
            )
    return ResourceSlot({k: v for k, v in sorted(wanted.items()) if v != 0 or k in INTRINSIC_SLOTS})


def _minimum(
    minimum: Mapping[str, Any], known: Mapping[str, SlotType], image: str
) -> dict[str, Decimal]:
    """The image's minimum slots (from its labels, which tenants may write: parsed with the
    same bounds); a non-zero minimum of a slot the cluster lacks means it cannot run here."""
    floor: dict[str, Decimal] = {}
    for name, raw in list(minimum.items())[:MAX_SLOTS]:
        if not isinstance(name, str) or not _SLOT_NAME.match(name) or len(name) > MAX_SLOT_NAME:
            continue
        slot_type = known.get(name, SlotType.BYTES if "mem" in name else SlotType.COUNT)
        field = f"image.min.{name}"
        try:
            value = parse_slot_value(name, raw, slot_type, field=field)
        except InvalidAPIParameters:
            raise _refuse(
                field, f"{image} declares an invalid minimum for {name!r}: {shown(raw)}"
            ) from None
        if value == 0:
            continue
        if name not in known:
            raise _refuse(
                f"resources.{name}",
                f"{image} needs resource slot {name!r}, which no agent in this cluster offers",
            )
        floor[name] = value
    return floor
