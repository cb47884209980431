"""kernelhub's event log: the envelope, the catalogue, and the Redis store.

Imports point one way: ``kernelhub -> actors/projections -> events``; this package imports
none of them.
"""

from ._canonical import PlainDecimal, canonical_dumps
from .catalogue import PAYLOAD_TYPES, AnyPayload, EventPayload, KernelLifecycleEventReason
from .codec import EventCodec, default_codec
from .envelope import (
    Event,
    NewEvent,
    Position,
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
from .upcasting import UpcasterRegistry, default_upcasters

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
    "InvalidEventError",
    "KernelLifecycleEventReason",
    "KeySpace",
    "NewEvent",
    "PlainDecimal",
    "Position",
    "RedisEventStore",
    "Snapshot",
    "StreamBatch",
    "StreamName",
    "Subscription",
    "UnknownEventTypeError",
    "UpcasterRegistry",
    "WrongExpectedVersionError",
    "canonical_dumps",
    "default_codec",
    "default_upcasters",
    "events_for_command",
    "position_key",
    "validate_stream_name",
]
