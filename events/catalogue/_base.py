"""The base of every event payload."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, JsonValue

__all__ = ["EventPayload", "JsonObject"]

JsonObject = dict[str, JsonValue]
"""A JSON object; payload fields of free shape use it so they stay canonical-encodable."""


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
