"""The base of every event payload."""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    StringConstraints,
)

from .._canonical import PlainDecimal, decimal_to_plain

__all__ = [
    "EventPayload",
    "JsonObject",
    "Record",
    "RequestedSlots",
    "Short",
    "Slots",
    "added_later",
]

JsonObject = dict[str, JsonValue]
"""A JSON object; payload fields of free shape use it so they stay canonical-encodable."""

Slots = dict[str, PlainDecimal]
"""Resource slots on the wire: ``{"cpu": "1.5", "mem": "1073741824"}`` (plain decimals)."""

MAX_SHORT = 1024
"""The longest name or reference an event holds (:data:`Short`)."""

Short = Annotated[str, StringConstraints(max_length=MAX_SHORT)]
"""A name or reference in an event (the gateway allows far less; this is the log's own
bound, its last line of defence against a writer that forgot to check)."""

_MAX_REQUESTED_DIGITS = 24
_FINEST = Decimal("0.000001")
_WIDE = Context(prec=2 * _MAX_REQUESTED_DIGITS)


def _requested_amount(value: Decimal) -> Decimal:
    """An amount a session asks for: finite, not negative, at most 24 integer digits and
    6 decimals (``"1e100000000"`` would otherwise be a 100 MB event, forever)."""
    if not value.is_finite() or value < 0:
        raise ValueError("a requested amount is finite and not negative")
    if value.adjusted() >= _MAX_REQUESTED_DIGITS:
        raise ValueError(f"a requested amount has at most {_MAX_REQUESTED_DIGITS} digits")
    if value != value.quantize(_FINEST, context=_WIDE):
        raise ValueError("a requested amount has at most 6 decimals")
    return value


RequestedAmount = Annotated[
    Decimal,
    Field(allow_inf_nan=True),  # refused by the validator with a message that says why
    AfterValidator(_requested_amount),
    PlainSerializer(decimal_to_plain, return_type=str, when_used="json"),
]
RequestedSlots = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], RequestedAmount],
    Field(max_length=64),
]
"""Slots a session asks for: :data:`Slots` bounded (no infinity, no huge or fine values)."""


def _is_none(value: object) -> bool:
    return value is None


def added_later() -> Any:
    """An optional field added to an existing event: left out of the JSON while unset, so
    events stored before it existed keep their exact bytes."""
    return Field(default=None, exclude_if=_is_none)


class Record(BaseModel):
    """A nested structure inside a payload: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EventPayload(BaseModel):
    """The typed ``data`` of one event.

    Subclasses fix ``type`` to a ``Literal`` (the discriminator, Backend.AI's event name) and
    bump ``SCHEMA_VERSION`` when their shape changes, with an upcaster for the old shape.
    Payloads are immutable and refuse unknown fields, so a typo never reaches the log.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    SCHEMA_VERSION: ClassVar[int] = 1

    type: str

    def data_dict(self) -> dict[str, Any]:
        """The payload in JSON shape, without the discriminator (the envelope carries it)."""
        # no serializer warnings: a model_construct'd payload is re-validated by the codec
        return self.model_dump(mode="json", exclude={"type"}, warnings=False)
