"""The envelope around every payload: identity, causality and place in the log.

Two shapes: :class:`NewEvent` is what a writer hands to the store (no stream, version or
position yet); :class:`Event` is what comes back from the log, with all three.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .catalogue import AnyPayload
from .correlation import current_correlation

__all__ = [
    "Event",
    "Initiator",
    "NewEvent",
    "Position",
    "StoredEvent",
    "StreamName",
    "events_for_command",
    "position_key",
    "validate_stream_name",
]

_STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,199}$")


def validate_stream_name(name: str) -> str:
    """Stream names become Redis key suffixes and CLI arguments: keep them plain."""
    if not _STREAM_NAME.match(name):
        raise ValueError(
            f"invalid stream name {name!r}: use 1-200 characters of letters, digits and _.:@/- "
            "starting with a letter or digit"
        )
    return name


StreamName = Annotated[str, AfterValidator(validate_stream_name)]

Position = str
"""A place in the global log: the Redis stream ID of ``kh:log`` (``"<ms>-<seq>"``).

It is also kernelhub's clock: Redis server time, monotonic across the whole log.
"""


def position_key(position: Position) -> tuple[int, int]:
    """Sort key of a position (string order is wrong: ``"9-0" > "10-0"``)."""
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


class Initiator(BaseModel):
    """Who asked for a change, and from where: the keypair and user behind an
    administrative request, and the request's peer address. Kept in the envelope (not the
    payload) because it describes the command, not the fact, so ``kh events show`` and
    ``kh events audit`` can answer "who gave bob a GPU" for any event type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    access_key: str | None = Field(default=None, max_length=64)
    user_id: uuid.UUID | None = None
    email: str | None = Field(default=None, max_length=256)
    role: str | None = Field(default=None, max_length=32)
    peer: str | None = Field(default=None, max_length=128)
    """The request's remote address as the gateway saw it (``None`` in-process)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _EnvelopeFields(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(
        default_factory=_utcnow,
        description="Writer's wall clock; informational only. Order and time come from position.",
    )
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    command_id: uuid.UUID | None = None
    actor: str = "kernelhub"
    initiator: Initiator | None = Field(default=None, exclude_if=lambda v: v is None)
    """Who asked for it (administrative events); left out of the stored bytes when unset,
    so events written before it keep theirs."""
    data: AnyPayload

    @property
    def type(self) -> str:
        return self.data.type


class NewEvent(_EnvelopeFields):
    """An event about to be appended.

    Give it a ``command_id`` and build it with :meth:`for_command` so a retried command
    produces the same ``event_id`` and the store recognises the retry.
    """

    @classmethod
    def for_command(
        cls, command_id: uuid.UUID, index: int, data: AnyPayload, **envelope: object
    ) -> NewEvent:
        return cls.model_validate(
            {
                "event_id": uuid.uuid5(command_id, str(index)),
                "command_id": command_id,
                "data": data,
                **envelope,
            }
        )


def events_for_command(
    command_id: uuid.UUID, payloads: Sequence[AnyPayload], **envelope: object
) -> list[NewEvent]:
    """The events of one command decision, with ids ``uuid5(command_id, i)``; they carry
    the correlation id bound where the decision is made, unless the caller names one."""
    envelope.setdefault("correlation_id", current_correlation())
    return [NewEvent.for_command(command_id, i, p, **envelope) for i, p in enumerate(payloads)]


class Event(_EnvelopeFields):
    """An event as recorded in the log."""

    schema_version: int = Field(ge=1)
    stream: StreamName
    version: int = Field(ge=1, description="1-based position of the event in its stream")
    position: Position

    @property
    def position_ms(self) -> int:
        """Redis server time (ms) at which the event was appended."""
        return position_key(self.position)[0]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the read side sees it: the stored JSON, not re-validated.

    Projections replay the whole log; re-validating every payload would make a rebuild
    several times slower than reading it. Every event was validated when it was appended,
    so readers that only fold get the body as decoded JSON (UUIDs, times and quantities as
    the strings they are stored as). Unknown types and schema versions are still refused,
    and upcasters still apply. ``kh events verify`` re-validates everything.
    """

    position: Position
    position_ms: int
    stream: str
    version: int
    type: str
    data: dict[str, Any]
    body: dict[str, Any]
    """The whole stored envelope (``event_id``, ``occurred_at``, ``actor``, ids, ...)."""

    @property
    def event_id(self) -> str:
        return str(self.body["event_id"])

    @property
    def schema_version(self) -> int:
        return int(self.body["schema_version"])
