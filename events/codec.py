"""Turning events into log entries and back.

A log entry (one ``XADD`` to ``kh:log``) has three fields: ``s`` the stream, ``v`` the
version in that stream, ``e`` the envelope as canonical JSON. Stream and version sit beside
the body because the append script assigns them atomically; the body never changes after
it is encoded, so the bytes in the log are exactly the bytes the writer validated.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Union

import msgspec
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic_core import from_json

from ._canonical import canonical_dumps, loads
from .catalogue import PAYLOAD_ADAPTER, PAYLOAD_TYPES
from .envelope import Event, Initiator, NewEvent, StoredEvent
from .errors import EventDecodeError, InvalidEventError, UnknownEventTypeError
from .upcasting import UpcasterRegistry, default_upcasters

__all__ = ["EventCodec", "default_codec", "parse_json"]


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
            raw_body = fields[b"e"] if b"e" in fields else fields["e"]
        except (KeyError, ValueError, TypeError) as exc:
            raise EventDecodeError(position, f"malformed log entry ({exc})") from None
        fast = self._decode_current(raw_body, stream, version, position)
        if fast is not None:
            return fast
        try:
            body = loads(raw_body)
        except (ValueError, TypeError) as exc:
            raise EventDecodeError(position, f"malformed log entry ({exc})") from None
        return self.decode_body(body, stream=stream, version=version, position=position)

    def _decode_current(
        self, raw_body: str | bytes, stream: str, version: int, position: str
    ) -> Event | None:
        """The fast path for events stored by the current code (almost all of them): one
        validation of the JSON bytes in pydantic-core. ``None`` sends the event down the
        general path (old schema versions to upcast, or anything invalid, for the error)."""
        try:
            body = _STORED_BODY.validate_json(raw_body)
        except ValidationError:
            return None
        if self.upcasters.has_step(body.type, body.schema_version):
            return None
        # Every field was just validated (stream/version/position were written by the store
        # itself), so the Event is assembled without a second validation pass; this is
        # ``model_construct`` without its per-field bookkeeping, on the replay hot path.
        event = Event.__new__(Event)
        object.__setattr__(
            event,
            "__dict__",
            {
                "event_id": body.event_id,
                "occurred_at": body.occurred_at,
                "correlation_id": body.correlation_id,
                "causation_id": body.causation_id,
                "command_id": body.command_id,
                "actor": body.actor,
                "initiator": body.initiator,
                "data": body.data,
                "schema_version": body.schema_version,
                "stream": stream,
                "version": version,
                "position": position,
            },
        )
        object.__setattr__(event, "__pydantic_fields_set__", _EVENT_FIELDS)
        object.__setattr__(event, "__pydantic_extra__", None)
        object.__setattr__(event, "__pydantic_private__", None)
        return event

    def decode_stored(self, position: str, fields: Mapping[Any, Any]) -> StoredEvent:
        """The read side's decode: JSON, upcasting, and a check that the type and schema
        version are ones this code folds; the payload itself is trusted (see StoredEvent)."""
        try:
            try:
                stream, version, raw_body = fields[b"s"], fields[b"v"], fields[b"e"]
            except KeyError:
                stream, version, raw_body = fields["s"], fields["v"], fields["e"]
            body = parse_json(raw_body)
            stream = stream.decode() if isinstance(stream, bytes) else str(stream)
            version = int(version)
        except (KeyError, ValueError, TypeError) as exc:
            raise EventDecodeError(position, f"malformed log entry ({exc})") from None
        if not isinstance(body, dict):
            raise EventDecodeError(position, "event body is not a JSON object")
        event_type, schema_version = body.get("type"), body.get("schema_version")
        if self.upcasters.has_step(event_type, schema_version):
            try:
                body = self.upcasters.upcast(body)
            except ValueError as exc:
                raise EventDecodeError(position, str(exc)) from None
            event_type, schema_version = body.get("type"), body.get("schema_version")
        current = _CURRENT_VERSIONS.get(event_type) if isinstance(event_type, str) else None
        if current is None or not isinstance(event_type, str):
            raise EventDecodeError(position, f"unknown event type {event_type!r}")
        if schema_version != current or not isinstance(schema_version, int):
            raise EventDecodeError(position, _version_message(event_type, schema_version))
        data = body.get("data")
        if not isinstance(data, dict):
            raise EventDecodeError(position, "the event has no data object")
        ms = int(position.partition("-")[0])
        return _stored_event(position, ms, stream, version, event_type, data, body)

    def stored_tails(self, types: Iterable[str]) -> tuple[bytes, ...]:
        """How a body of each of ``types`` ends as this code stores it, to recognise events
        of those types without parsing them (``raw.endswith(tails)``: one C call).

        The store writes bodies as canonical JSON (keys sorted, no spaces), whose last two
        members are ``schema_version`` and ``type``: ``...,"schema_version":1,"type":"x"}``.
        Only current types at their current version with no upcaster step have a tail
        here, so a body ending in one is, as :meth:`decode_stored` would read it, an event
        of that type (its payload not looked at: for a reader that skips the type, there is
        nothing to look at)."""
        return tuple(
            f',"schema_version":{_CURRENT_VERSIONS[name]},"type":"{name}"}}'.encode()
            for name in sorted(set(types))
            if name in _CURRENT_VERSIONS
            and not self.upcasters.has_step(name, _CURRENT_VERSIONS[name])
        )

    def decode_body(self, body: Any, *, stream: str, version: int, position: str) -> Event:
        if not isinstance(body, dict):
            raise EventDecodeError(position, "event body is not a JSON object")
        try:
            raw = self.upcasters.upcast(body)
        except ValueError as exc:
            raise EventDecodeError(position, str(exc)) from None
        event_type = raw.get("type")
        payload_cls = PAYLOAD_TYPES.get(event_type) if isinstance(event_type, str) else None
        if payload_cls is None or not isinstance(event_type, str):
            raise EventDecodeError(position, f"unknown event type {event_type!r}")
        schema_version = raw.get("schema_version")
        if schema_version != payload_cls.SCHEMA_VERSION:
            raise EventDecodeError(position, _version_message(event_type, schema_version))
        envelope = {k: v for k, v in raw.items() if k != "type"}
        envelope["data"] = {"type": event_type, **(raw.get("data") or {})}
        envelope.update(stream=stream, version=version, position=position)
        try:
            return Event.model_validate(envelope)
        except ValidationError as exc:
            raise EventDecodeError(position, _first_error(exc)) from None


class _StoredBody(BaseModel):
    """The envelope as stored (no stream, version or position: those sit beside it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    occurred_at: datetime
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    command_id: uuid.UUID | None = None
    actor: str
    initiator: Initiator | None = None


def _stored_body_adapter() -> TypeAdapter[Any]:
    """One model per event type, ``type`` and ``schema_version`` pinned to the current
    ones, joined in a union discriminated by ``type``: the whole stored body validates from
    JSON in one call (the payload's own ``type`` defaults, since storage leaves it out)."""
    models = [
        create_model(
            f"Stored_{name}",
            __base__=_StoredBody,
            type=(Literal[name], ...),  # type: ignore[arg-type]
            schema_version=(Literal[cls.SCHEMA_VERSION], ...),  # type: ignore[arg-type]
            data=(cls, ...),
        )
        for name, cls in PAYLOAD_TYPES.items()
    ]
    union: Any = Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(union)


_STORED_BODY = _stored_body_adapter()
_EVENT_FIELDS = frozenset(Event.model_fields)
_CURRENT_VERSIONS = {name: cls.SCHEMA_VERSION for name, cls in PAYLOAD_TYPES.items()}
_decode_json = msgspec.json.Decoder().decode


def parse_json(raw: str | bytes) -> Any:
    """JSON text to Python values, as pydantic-core's ``from_json`` reads it (which the read
    path used before), about 1.5x faster: msgspec's decoder, and ``from_json`` for whatever
    msgspec refuses (``NaN``, numbers out of a float's range, lone surrogates), so the same
    texts decode, to the same values, and the same texts fail."""
    try:
        return _decode_json(raw)
    except (msgspec.MsgspecError, TypeError):
        return from_json(raw)


def _stored_event_factory() -> Callable[..., StoredEvent]:
    """:class:`StoredEvent`'s constructor, without the frozen dataclass's ``__init__`` when
    its fields are slots: that one sets each field through ``object.__setattr__`` (the
    price of ``frozen``), a third of decoding a small event; this sets the same slots
    directly. Any other shape of the class gets its own constructor."""
    names = [f.name for f in dataclasses.fields(StoredEvent)]
    setters: list[Any] = [getattr(vars(StoredEvent).get(n), "__set__", None) for n in names]
    expected = ["position", "position_ms", "stream", "version", "type", "data", "body"]
    if names != expected or not all(setters) or hasattr(StoredEvent, "__post_init__"):
        return StoredEvent
    new = StoredEvent.__new__
    s_position, s_ms, s_stream, s_version, s_type, s_data, s_body = setters

    def make(
        position: str, ms: int, stream: str, version: int, type_: str, data: Any, body: Any
    ) -> StoredEvent:
        event = new(StoredEvent)
        s_position(event, position)
        s_ms(event, ms)
        s_stream(event, stream)
        s_version(event, version)
        s_type(event, type_)
        s_data(event, data)
        s_body(event, body)
        return event

    return make


_stored_event = _stored_event_factory()


def _version_message(event_type: str, schema_version: Any) -> str:
    current = PAYLOAD_TYPES[event_type].SCHEMA_VERSION
    return (
        f"{event_type} schema_version {schema_version!r} cannot be read by this code "
        f"(it reads v{current}; no upcaster applies)"
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


default_codec = EventCodec()
