"""The base of every event payload."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from .._canonical import PlainDecimal

__all__ = ["EventPayload", "JsonObject", "Record", "Slots", "added_later"]

JsonObject = dict[str, JsonValue]
"""A JSON object; payload fields of free shape use it so they stay canonical-encodable."""

Slots = dict[str, PlainDecimal]
"""Resource slots on the wire: ``{"cpu": "1.5", "mem": "1073741824"}`` (plain decimals)."""


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
