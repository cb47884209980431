"""Encoding validates everything once more; decoding upcasts and refuses what it cannot read."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given

from events import (
    EventCodec,
    EventDecodeError,
    InvalidEventError,
    NewEvent,
    UnknownEventTypeError,
    UpcasterRegistry,
    events_for_command,
)
from events.catalogue import SessionEnqueued, SessionTerminated

from .strategies import new_events

pytestmark = pytest.mark.unit

codec = EventCodec()


def _entry(body: str, stream: str = "session-x", version: int = 1) -> dict[bytes, bytes]:
    return {b"s": stream.encode(), b"v": str(version).encode(), b"e": body.encode()}


@given(new_events)
def test_every_event_type_round_trips_through_the_codec(event: NewEvent) -> None:
    body = codec.encode(event)
    decoded = codec.decode("1700000000000-0", _entry(body, "agent-a", 7))
    assert decoded.data == event.data
    assert decoded.event_id == event.event_id
    assert decoded.occurred_at == event.occurred_at
    assert (decoded.command_id, decoded.correlation_id, decoded.causation_id, decoded.actor) == (
        event.command_id,
        event.correlation_id,
        event.causation_id,
        event.actor,
    )
    assert (decoded.stream, decoded.version, decoded.position) == ("agent-a", 7, "1700000000000-0")
    # the stored bytes are canonical: encoding again gives the very same bytes
    again = NewEvent(**decoded.model_dump(include=set(NewEvent.model_fields)))
    assert codec.encode(again) == body


def test_body_is_canonical_json_with_the_envelope_fields() -> None:
    command = uuid.UUID("00000000-0000-4000-8000-000000000001")
    sid = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
    (event,) = events_for_command(
        command, [SessionTerminated(session_id=sid, reason="user-requested")]
    )
    body = json.loads(codec.encode(event))
    assert list(body) == sorted(body)
    assert body["type"] == "session_terminated"
    assert body["schema_version"] == 1
    assert body["event_id"] == str(uuid.uuid5(command, "0"))
    assert body["data"] == {"session_id": str(sid), "reason": "user-requested"}


def test_event_ids_derive_from_the_command() -> None:
    command = uuid.uuid4()
    payloads = [SessionEnqueued(session_id=uuid.uuid4(), creation_id="c")] * 2
    first = events_for_command(command, payloads)
    retry = events_for_command(command, payloads)
    assert [e.event_id for e in first] == [e.event_id for e in retry]
    assert first[0].event_id != first[1].event_id


def test_constructed_but_invalid_payload_is_rejected_at_encode() -> None:
    bogus = SessionEnqueued.model_construct(
        type="session_enqueued", session_id="nope", creation_id=3
    )
    event = NewEvent(data=_valid()).model_copy(update={"data": bogus})  # skips validation
    with pytest.raises(InvalidEventError, match="invalid session_enqueued event: session_id"):
        codec.encode(event)


def test_payload_outside_the_catalogue_is_rejected_at_encode() -> None:
    class Rogue(SessionEnqueued):
        pass

    event = NewEvent(data=_valid()).model_copy(
        update={"data": Rogue(session_id=uuid.uuid4(), creation_id="c")}
    )
    with pytest.raises(UnknownEventTypeError, match="session_enqueued"):
        codec.encode(event)


def _valid() -> SessionEnqueued:
    return SessionEnqueued(session_id=uuid.uuid4(), creation_id="c")


def _body(**changes: Any) -> str:
    body = json.loads(codec.encode(NewEvent(data=_valid())))
    body.update(changes)
    return json.dumps(body)


def test_decoding_an_unknown_type_names_the_position_and_type() -> None:
    with pytest.raises(
        EventDecodeError, match=r"at log position 5-0: unknown event type 'session_exploded'"
    ):
        codec.decode("5-0", _entry(_body(type="session_exploded")))


def test_decoding_a_newer_schema_than_the_code_fails_clearly() -> None:
    with pytest.raises(EventDecodeError, match="schema_version 2 cannot be read"):
        codec.decode("5-0", _entry(_body(schema_version=2)))


def test_decoding_garbage_fails_clearly() -> None:
    with pytest.raises(EventDecodeError, match="malformed log entry"):
        codec.decode("5-0", {b"s": b"x", b"v": b"1", b"e": b"{not json"})
    with pytest.raises(EventDecodeError, match="not a JSON object"):
        codec.decode("5-0", _entry("[1, 2]"))
    with pytest.raises(EventDecodeError, match=r"data\.session_id"):
        codec.decode("5-0", _entry(_body(data={"session_id": "x", "creation_id": "c"})))


def test_upcasters_lift_old_shapes_on_read() -> None:
    registry = UpcasterRegistry()

    @registry.register("session_queued", 0)  # an imagined older name and shape
    def rename(raw: dict[str, Any]) -> dict[str, Any]:
        data = raw["data"]
        data["creation_id"] = data.pop("creation")
        return {**raw, "type": "session_enqueued", "schema_version": 1}

    old = json.loads(_body())
    old.update(type="session_queued", schema_version=0)
    old["data"]["creation"] = old["data"].pop("creation_id")
    decoded = EventCodec(registry).decode("9-0", _entry(json.dumps(old)))
    assert isinstance(decoded.data, SessionEnqueued)
    assert decoded.data.creation_id == "c"
    with pytest.raises(EventDecodeError, match="unknown event type 'session_queued'"):
        codec.decode("9-0", _entry(json.dumps(old)))  # the default registry has no such step


def test_an_upcaster_that_does_not_move_forward_is_caught() -> None:
    registry = UpcasterRegistry()
    registry.register("session_enqueued", 1)(lambda raw: raw)
    with pytest.raises(EventDecodeError, match="did not move the event forward"):
        EventCodec(registry).decode("9-0", _entry(_body()))
    with pytest.raises(ValueError, match="already exists"):
        registry.register("session_enqueued", 1)(lambda raw: raw)


@given(new_events)
def test_the_read_path_sees_the_stored_json(event: NewEvent) -> None:
    body = codec.encode(event)
    stored = codec.decode_stored("1700000000000-3", _entry(body, "agent-a", 7))
    assert (stored.type, stored.stream, stored.version) == (event.type, "agent-a", 7)
    assert stored.position_ms == 1700000000000
    assert stored.data == json.loads(body)["data"]
    assert stored.event_id == str(event.event_id)


def test_the_read_path_refuses_what_it_cannot_fold() -> None:
    with pytest.raises(EventDecodeError, match="unknown event type 'session_exploded'"):
        codec.decode_stored("5-0", _entry(_body(type="session_exploded")))
    with pytest.raises(EventDecodeError, match="schema_version 2 cannot be read"):
        codec.decode_stored("5-0", _entry(_body(schema_version=2)))
    with pytest.raises(EventDecodeError, match="malformed log entry"):
        codec.decode_stored("5-0", {b"s": b"x", b"v": b"1", b"e": b"{not json"})
    with pytest.raises(EventDecodeError, match="no data object"):
        codec.decode_stored("5-0", _entry(_body(data=None)))


def test_the_read_path_applies_upcasters() -> None:
    registry = UpcasterRegistry()

    @registry.register("session_enqueued", 0)
    def lift(raw: dict[str, Any]) -> dict[str, Any]:
        return {**raw, "schema_version": 1, "data": {**raw["data"], "creation_id": "lifted"}}

    old = json.loads(_body())
    old["schema_version"] = 0
    stored = EventCodec(registry).decode_stored("9-0", _entry(json.dumps(old)))
    assert stored.data["creation_id"] == "lifted"
