"""kernelhub's event log: the envelope, the catalogue, and the Redis store.

Imports point one way: ``kernelhub -> actors/projections -> events``; this package imports
none of them.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._canonical import PlainDecimal, canonical_dumps
from .catalogue import PAYLOAD_TYPES, AnyPayload, EventPayload, KernelLifecycleEventReason
from .codec import EventCodec, default_codec
from .correlation import correlated, current_correlation, parse_correlation
from .envelope import (
    Event,
    Initiator,
    NewEvent,
    Position,
    StoredEvent,
    StreamName,
    events_for_command,
    position_key,
    validate_stream_name,
)
from .errors import (
    DuplicateBatchError,
    EventDecodeError,
    EventStoreError,
    InvalidEventError,
    UnknownEventTypeError,
    WrongExpectedVersionError,
)
from .keys import KeySpace
from .upcasting import UpcasterRegistry, default_upcasters

if TYPE_CHECKING:
    from .store import (
        ANY_VERSION,
        NO_STREAM,
        AppendResult,
        Durability,
        RedisEventStore,
        Snapshot,
        StreamBatch,
    )
    from .subscription import Subscription

# The store pulls in redis; loading it lazily keeps ``events`` importable from pure domain
# code (state machines, folds) without dragging a client library along.
_LAZY = {
    **dict.fromkeys(
        [
            "ANY_VERSION",
            "NO_STREAM",
            "AppendResult",
            "Durability",
            "RedisEventStore",
            "Snapshot",
            "StreamBatch",
        ],
        "store",
    ),
    "Subscription": "subscription",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'events' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ANY_VERSION",
    "NO_STREAM",
    "PAYLOAD_TYPES",
    "AnyPayload",
    "AppendResult",
    "DuplicateBatchError",
    "Durability",
    "Event",
    "EventCodec",
    "EventDecodeError",
    "EventPayload",
    "EventStoreError",
    "Initiator",
    "InvalidEventError",
    "KernelLifecycleEventReason",
    "KeySpace",
    "NewEvent",
    "PlainDecimal",
    "Position",
    "RedisEventStore",
    "Snapshot",
    "StoredEvent",
    "StreamBatch",
    "StreamName",
    "Subscription",
    "UnknownEventTypeError",
    "UpcasterRegistry",
    "WrongExpectedVersionError",
    "canonical_dumps",
    "correlated",
    "current_correlation",
    "default_codec",
    "default_upcasters",
    "events_for_command",
    "parse_correlation",
    "position_key",
    "validate_stream_name",
]
