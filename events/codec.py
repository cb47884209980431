"""Turning events into log entries and back.

A log entry (one ``XADD`` to ``kh:log``) has three fields: ``s`` the stream, ``v`` the
version in that stream, ``e`` the envelope as canonical JSON. Stream and version sit beside
the body because the append script assigns them atomically; the body never changes after
it is encoded, so the bytes in the log are exactly the bytes the writer validated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ._canonical import canonical_dumps, loads
from .catalogue import PAYLOAD_ADAPTER, PAYLOAD_TYPES
from .envelope import Event, NewEvent
from .errors import EventDecodeError, InvalidEventError, UnknownEventTypeError
from .upcasting import UpcasterRegistry, default_upcasters

__all__ = ["EventCodec", "default_codec"]


def _first_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        # drop the union tag pydantic puts in the path ("data.session_enqueued.session_id")
        loc = ".".join(str(p) for p in err["loc"] if p not in PAYLOAD_TYPES) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class EventCodec:
    """Validates and encodes new events; decodes and upcasts stored ones."""

    def __init__(self, upcasters: UpcasterRegistry | None = None) -> None:
        self.upcasters = upcasters if upcasters is not None else default_upcasters

    def encode(self, event: NewEvent) -> str:
        """The canonical JSON body of ``event``, after validating it once more from scratch.

        Re-validating the payload's JSON shape catches what construction could not (a
        ``model_construct``'d payload, a subclass outside the catalogue): nothing that would
        not decode ever reaches the log.
        """
        if not isinstance(event, NewEvent):
            raise InvalidEventError(f"expected a NewEvent, got {type(event).__name__}")
        payload = event.data
        event_type = getattr(payload, "type", None)
        payload_cls = PAYLOAD_TYPES.get(event_type) if isinstance(event_type, str) else None
        if payload_cls is None or type(payload) is not payload_cls:
            raise UnknownEventTypeError(str(event_type))
        data = payload.data_dict()
        try:
            PAYLOAD_ADAPTER.validate_python({"type": event_type, **data})
        except ValidationError as exc:
            raise InvalidEventError(f"invalid {event_type} event: {_first_error(exc)}") from None
        body = event.model_dump(mode="json", exclude={"data"})
        body["type"] = event_type
        body["schema_version"] = payload_cls.SCHEMA_VERSION
        body["data"] = data
        return canonical_dumps(body)

    def decode(self, position: str, fields: Mapping[Any, Any]) -> Event:
        """Rebuild an :class:`Event` from one ``kh:log`` entry (bytes or str fields)."""
        try:
            stream = _text(fields[b"s"] if b"s" in fields else fields["s"])
            version = int(fields[b"v"] if b"v" in fields else fields["v"])
            body = loads(fields[b"e"] if b"e" in fields else fields["e"])
        except (KeyError, ValueError, TypeError) as exc:
            raise EventDecodeError(position, f"malformed log entry ({exc})") from None
        return self.decode_body(body, stream=stream, version=version, position=position)

    def decode_body(self, body: Any, *, stream: str, version: int, position: str) -> Event:
        if not isinstance(body, dict):
            raise EventDecodeError(position, "event body is not a JSON object")
        try:
            raw = self.upcasters.upcast(body)
        except ValueError as exc:
            raise EventDecodeError(position, str(exc)) from None
        event_type = raw.get("type")
        payload_cls = PAYLOAD_TYPES.get(event_type) if isinstance(event_type, str) else None
        if payload_cls is None:
            raise EventDecodeError(position, f"unknown event type {event_type!r}")
        schema_version = raw.get("schema_version")
        if schema_version != payload_cls.SCHEMA_VERSION:
            raise EventDecodeError(
                position,
                f"{event_type} schema_version {schema_version!r} cannot be read by this code "
                f"(it reads v{payload_cls.SCHEMA_VERSION}; no upcaster applies)",
            )
        envelope = {k: v for k, v in raw.items() if k != "type"}
        envelope["data"] = {"type": event_type, **(raw.get("data") or {})}
        envelope.update(stream=stream, version=version, position=position)
        try:
            return Event.model_validate(envelope)
        except ValidationError as exc:
            raise EventDecodeError(position, _first_error(exc)) from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


default_codec = EventCodec()
