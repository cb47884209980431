"""Hypothesis strategies for every event of the catalogue, derived from the payload models.

Deriving them from ``model_fields`` means a new event type is covered the moment it joins
the catalogue, with no test to remember to write.
"""

from __future__ import annotations

import enum
import types
import typing
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st
from pydantic import JsonValue

from events import PAYLOAD_TYPES, EventPayload, NewEvent

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


def _for_annotation(annotation: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_for_annotation(a) for a in args])
    if annotation is type(None):
        return st.none()
    if annotation is uuid.UUID:
        return st.uuids()
    if annotation is str:
        return st.text(max_size=40)
    if annotation is int:
        return st.integers(min_value=-(2**31), max_value=2**31)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return st.sampled_from(list(annotation))
    if origin is dict:
        return json_objects
    if annotation is JsonValue:
        return json_values
    raise NotImplementedError(f"no strategy for {annotation!r}: extend tests/strategies.py")


def payloads_of(cls: type[EventPayload]) -> st.SearchStrategy[EventPayload]:
    fields = {
        name: _for_annotation(info.annotation)
        for name, info in cls.model_fields.items()
        if name != "type"
    }
    return st.fixed_dictionaries(fields).map(lambda values: cls(**values))


payloads: st.SearchStrategy[EventPayload] = st.one_of(
    [payloads_of(cls) for cls in PAYLOAD_TYPES.values()]
)

new_events = st.builds(
    NewEvent,
    data=payloads,
    event_id=st.uuids(),
    occurred_at=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    correlation_id=st.none() | st.uuids(),
    causation_id=st.none() | st.uuids(),
    command_id=st.none() | st.uuids(),
    actor=st.sampled_from(["kernelhub", "sessions:3", "scheduler:default", "agent-i-node1"]),
)
