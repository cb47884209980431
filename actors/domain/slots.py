"""Resource slots: how much of each resource a session asks for or an agent has.

Backend.AI's ``ResourceSlot`` semantics (23.03's ``common/types.py``) with one fix:
comparisons never mutate their operands (upstream's ``sync_keys`` adds missing keys to *both*
sides). Every operation works on the union of keys, a missing key counting as 0. The
comparisons are a *partial* order (``{cpu:1, mem:2}`` is neither <= nor >=
``{cpu:2, mem:1}``), so code that picks a maximum must say how it breaks ties.

Decimals at the edges (JSON, user input, policies); :class:`SlotLayout` turns slots into
tuples of integer units for the scheduler's hot loops.

A slot may be present with the value ``None`` (upstream lets one be "named but unset"): it
is kept (``slots["cpu"] is None``, it counts in ``len`` and iteration), left out of
:meth:`ResourceSlot.to_json` and of :meth:`ResourceSlot.to_humanized`, and equal only to
another ``None``. Adding, subtracting or ordering with an unset slot is a :class:`TypeError`
naming it (upstream fails there too, with Python's bare ``NoneType`` message, and its
ordering only when no earlier slot already decided the answer). Nothing kernelhub builds
holds one: user input, policies and JSON skip ``None`` values.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any, cast

from events import canonical_dumps
from events._canonical import decimal_to_plain

from .sizes import INFINITY, format_size, parse_size

__all__ = [
    "INTRINSIC_SLOTS",
    "DefaultForUnspecified",
    "ResourceSlot",
    "SlotLayout",
    "SlotType",
    "UnknownSlotError",
    "cap_from",
]

_QUANTUM = Decimal("0.001")
ZERO = Decimal(0)


class SlotType(enum.StrEnum):
    COUNT = "count"
    BYTES = "bytes"
    UNIQUE = "unique"


class DefaultForUnspecified(enum.StrEnum):
    LIMITED = "LIMITED"
    UNLIMITED = "UNLIMITED"


INTRINSIC_SLOTS: Mapping[str, SlotType] = {"cpu": SlotType.COUNT, "mem": SlotType.BYTES}


class UnknownSlotError(ValueError):
    pass


def _normalize_value(value: Any, slot_type: SlotType) -> Decimal:
    if slot_type is SlotType.BYTES:
        return parse_size(value)
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if number.is_infinite():
        return number
    return number.quantize(_QUANTUM).normalize()


def _unset_in(slots: Mapping[str, Any]) -> frozenset[str]:
    if isinstance(slots, ResourceSlot):
        return slots._unset
    return frozenset(k for k, v in slots.items() if v is None)


class ResourceSlot(Mapping[str, Decimal]):
    """An immutable ``{slot name: Decimal}``. Slot names are dotted for accelerators
    (``cuda.device``); the part before the first dot names the device plugin.

    A value may be ``None`` (see the module's docstring): typed as ``Decimal`` all the same,
    because only a caller that passes ``None`` itself can ever read one back."""

    __slots__ = ("_data", "_unset")

    def __init__(self, data: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        merged = {**(data or {}), **kwargs}
        data_or_unset: dict[str, Decimal | None] = {
            k: v if isinstance(v, Decimal) or v is None else Decimal(str(v))
            for k, v in merged.items()
        }
        self._data = cast(dict[str, Decimal], data_or_unset)  # None: see the class docstring
        self._unset: frozenset[str] = frozenset(k for k, v in merged.items() if v is None)

    def _refuse_unset(self, other: Mapping[str, Any], operation: str) -> None:
        """Upstream's TypeError for ``None`` in arithmetic or ordering, naming the slots."""
        unset = self._unset | _unset_in(other)
        if unset:
            raise TypeError(
                f"cannot {operation} resource slots with no value (None): "
                f"{', '.join(sorted(unset))}"
            )

    # ---- mapping ------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Decimal:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{k}={'None' if v is None else decimal_to_plain(v)}"
            for k, v in sorted(self._data.items())
        )
        return f"ResourceSlot({inner})"

    def get_or_zero(self, key: str) -> Decimal:
        return self._data.get(key, ZERO)

    def _union(self, other: Mapping[str, Decimal]) -> list[str]:
        return sorted(set(self._data) | set(other))

    @classmethod
    def total(cls, many: Iterable[Mapping[str, Decimal]]) -> ResourceSlot:
        """The sum of many at once: one object, not one per step (a scheduling pass sums
        what thousands of running sessions hold)."""
        acc: dict[str, Decimal] = {}
        for slots in many:
            if isinstance(slots, ResourceSlot) and slots._unset:
                slots._refuse_unset({}, "add")
            items = slots._data.items() if isinstance(slots, ResourceSlot) else slots.items()
            for key, value in items:
                acc[key] = acc.get(key, ZERO) + value
        return cls({key: acc[key] for key in sorted(acc)})

    # ---- arithmetic (union of keys; nothing clamps: a - b may go negative) ------------------
    def __add__(self, other: Mapping[str, Decimal]) -> ResourceSlot:
        self._refuse_unset(other, "add")
        return ResourceSlot(
            {k: self.get_or_zero(k) + other.get(k, ZERO) for k in self._union(other)}
        )

    def __sub__(self, other: Mapping[str, Decimal]) -> ResourceSlot:
        self._refuse_unset(other, "subtract")
        return ResourceSlot(
            {k: self.get_or_zero(k) - other.get(k, ZERO) for k in self._union(other)}
        )

    # ---- comparisons: a partial order over the union, operands untouched ---------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return all(self.get_or_zero(k) == other.get(k, ZERO) for k in self._union(other))

    __hash__ = None  # type: ignore[assignment]

    def __le__(self, other: Mapping[str, Decimal]) -> bool:
        self._refuse_unset(other, "compare")
        return all(self.get_or_zero(k) <= other.get(k, ZERO) for k in self._union(other))

    def __ge__(self, other: Mapping[str, Decimal]) -> bool:
        self._refuse_unset(other, "compare")
        return all(self.get_or_zero(k) >= other.get(k, ZERO) for k in self._union(other))

    def __lt__(self, other: Mapping[str, Decimal]) -> bool:
        return self <= other and self != other

    def __gt__(self, other: Mapping[str, Decimal]) -> bool:
        return self >= other and self != other

    def eq_contains(self, other: Mapping[str, Decimal]) -> bool:
        """Equal on the common keys, and the keys only in ``other`` are 0."""
        common = set(self._data) & set(other)
        only_other = set(other) - set(self._data)
        return all(self._data[k] == other[k] for k in common) and all(
            other[k] == 0 for k in only_other
        )

    def eq_contained(self, other: Mapping[str, Decimal]) -> bool:
        return ResourceSlot(other).eq_contains(self)

    # ---- construction -----------------------------------------------------------------------
    def normalize(
        self, known: Mapping[str, SlotType], *, ignore_unknown: bool = True
    ) -> ResourceSlot:
        """Only known slots, each present (missing ones 0)."""
        unknown = set(self._data) - set(known)
        if unknown and not ignore_unknown:
            raise UnknownSlotError(f"Unknown slots: {', '.join(sorted(unknown))}")
        return ResourceSlot({k: self.get_or_zero(k) for k in known})

    @classmethod
    def from_user_input(
        cls, obj: Mapping[str, Any], slot_types: Mapping[str, SlotType] | None = None
    ) -> ResourceSlot:
        """Parse a request: ``"1g"`` for bytes, ``"1.5"`` for counts; ``None`` values skipped.

        Without ``slot_types`` a key containing ``mem`` is bytes, anything else a count. With
        them, an unknown key is an error and missing known slots become 0.
        """
        values: dict[str, Decimal] = {}
        for key, value in obj.items():
            if value is None:
                continue
            if slot_types is None:
                unit = SlotType.BYTES if "mem" in key else SlotType.COUNT
            elif key in slot_types:
                unit = slot_types[key]
            else:
                raise UnknownSlotError(f"unit unknown for slot {key!r}")
            try:
                values[key] = _normalize_value(value, unit)
            except (ValueError, ArithmeticError) as exc:
                raise ValueError(f"invalid value for slot {key!r}: {value!r} ({exc})") from None
        if slot_types is not None:
            for key in slot_types:
                values.setdefault(key, ZERO)
        return cls(values)

    @classmethod
    def from_policy(
        cls, policy: Mapping[str, Any], slot_types: Mapping[str, SlotType]
    ) -> ResourceSlot:
        """A quota from ``{total_resource_slots, default_for_unspecified}``: unlisted known
        slots are 0 (LIMITED) or Infinity (UNLIMITED); slots not known are dropped."""
        default = DefaultForUnspecified(policy.get("default_for_unspecified", "LIMITED"))
        fill = ZERO if default is DefaultForUnspecified.LIMITED else INFINITY
        given = policy.get("total_resource_slots") or {}
        values = {}
        for key, unit in slot_types.items():
            raw = given.get(key)
            values[key] = fill if raw is None else _normalize_value(raw, unit)
        return cls(values)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ResourceSlot:
        """The inverse of :meth:`to_json`; a ``null`` value is skipped (as upstream's
        later releases: JSON never carries an unset slot)."""
        return cls({k: Decimal(str(v)) for k, v in obj.items() if v is not None})

    def to_json(self) -> dict[str, str]:
        """``{slot: "plain decimal"}``: never scientific notation, infinity as ``"Infinity"``;
        an unset (``None``) slot left out, as upstream's ``to_json``."""
        return {k: decimal_to_plain(v) for k, v in sorted(self._data.items()) if v is not None}

    def to_canonical_json(self) -> str:
        return canonical_dumps(self.to_json())

    def to_humanized(self, slot_types: Mapping[str, SlotType]) -> dict[str, str]:
        """Bytes in the short form (``"1g"``, ``"-Infinity"``), counts as plain numbers; an
        unset slot left out."""
        return {
            k: format_size(v) if slot_types.get(k) is SlotType.BYTES else decimal_to_plain(v)
            for k, v in sorted(self._data.items())
            if v is not None
        }

    def dominant_share(self, capacity: Mapping[str, Decimal]) -> Decimal:
        """max over slots of self[slot] / capacity[slot], skipping slots with no capacity."""
        self._refuse_unset(capacity, "divide")
        shares = [v / capacity[k] for k, v in self._data.items() if capacity.get(k, ZERO) > 0]
        return max(shares, default=ZERO)


def cap_from(
    slots: Mapping[str, Any],
    known: Mapping[str, SlotType],
    default: DefaultForUnspecified | str = DefaultForUnspecified.UNLIMITED,
) -> ResourceSlot:
    """A quota over the known slots: listed ones as given, the others 0 (LIMITED) or
    infinite (UNLIMITED)."""
    return ResourceSlot.from_policy(
        {"total_resource_slots": slots, "default_for_unspecified": default}, known
    )


class SlotLayout:
    """A fixed slot order and integer units for the scheduler's inner loops.

    Counts are kept in thousandths (the quantum of user input), bytes as bytes. Infinity
    becomes a sentinel larger than any real capacity. Decimal comes back at the edges.
    """

    INFINITE_UNITS = 1 << 62

    def __init__(self, slot_types: Mapping[str, SlotType]) -> None:
        self.names: tuple[str, ...] = tuple(sorted(slot_types))
        self.types = dict(slot_types)
        self._scale = tuple(1 if self.types[n] is SlotType.BYTES else 1000 for n in self.names)

    def to_units(self, slots: Mapping[str, Decimal]) -> tuple[int, ...]:
        units = []
        for name, scale in zip(self.names, self._scale, strict=True):
            value = slots.get(name, ZERO)
            if value is None:
                raise TypeError(f"cannot schedule a resource slot with no value (None): {name}")
            units.append(self.INFINITE_UNITS if value.is_infinite() else int(value * scale))
        return tuple(units)

    def from_units(self, units: tuple[int, ...]) -> ResourceSlot:
        values = {}
        for name, scale, unit in zip(self.names, self._scale, units, strict=True):
            if unit >= self.INFINITE_UNITS:
                values[name] = INFINITY
            else:
                values[name] = (Decimal(unit) / scale).normalize() if scale != 1 else Decimal(unit)
        return ResourceSlot(values)
