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
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

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


slot_values = st.one_of(
    st.integers(0, 2**40).map(Decimal),
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
    st.just(Decimal("Infinity")),
)


def _accepted_by(annotation: Any) -> typing.Callable[[Any], bool]:
    """Whether a value passes the annotation's validators (a requested amount is finite; a
    capacity may be Infinity)."""
    adapter = TypeAdapter(annotation)

    def accepted(value: Any) -> bool:
        try:
            adapter.validate_python(value)
        except ValidationError:
            return False
        return True

    return accepted


def _for_field(info: Any) -> st.SearchStrategy[Any]:
    low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    if low is not None:
        args = set(typing.get_args(info.annotation)) or {info.annotation}
        numbers = (
            st.integers(min_value=low, max_value=2**31 if high is None else high)
            if int in args
            else st.floats(min_value=low, max_value=1e6 if high is None else high, allow_nan=False)
        )
        return numbers | st.none() if type(None) in args else numbers
    if info.annotation is str:  # a bounded string: within its bounds, of its pattern
        pattern = next((m.pattern for m in info.metadata if getattr(m, "pattern", None)), None)
        if pattern is not None:
            return st.from_regex(pattern, fullmatch=True)
        shortest = next((m.min_length for m in info.metadata if hasattr(m, "min_length")), 0)
        longest = next((m.max_length for m in info.metadata if hasattr(m, "max_length")), None)
        most = 40 if longest is None else min(40, longest)
        return st.text(min_size=shortest or 0, max_size=max(most, shortest or 0))
    return _for_annotation(info.annotation)


def _for_annotation(annotation: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_for_annotation(a) for a in args])
    if origin is typing.Annotated:
        if args[0] is Decimal:  # every slot value the field's own validators accept
            return slot_values.filter(_accepted_by(annotation))
        return _for_annotation(args[0])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(_for_annotation(args[0]), max_size=3)
    if origin is dict and args and args[1] is not JsonValue:
        return st.dictionaries(
            st.sampled_from(["cpu", "mem", "cuda.device"]), _for_annotation(args[1])
        )
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return (
            st.fixed_dictionaries({n: _for_field(i) for n, i in annotation.model_fields.items()})
            .filter(_accepted_by(annotation))  # a nested model's own bounds (ModelService)
            .map(lambda values: annotation(**values))
        )
    if annotation is bool:
        return st.booleans()
    if annotation is float:
        return st.floats(min_value=0, max_value=1e6, allow_nan=False)
    if annotation is datetime:
        return st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        )
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
    fields = {name: _for_field(info) for name, info in cls.model_fields.items() if name != "type"}
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
