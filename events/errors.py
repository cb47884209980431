"""Errors of the event log. Each says what went wrong in one line a user can act on."""

from __future__ import annotations

__all__ = [
    "DuplicateBatchError",
    "EventDecodeError",
    "EventStoreError",
    "InvalidEventError",
    "UnknownEventTypeError",
    "WrongExpectedVersionError",
]


class EventStoreError(Exception):
    """Base class of everything the event log raises on purpose."""


class InvalidEventError(EventStoreError, ValueError):
    """An event failed validation; it was not (and will never be) written."""


class UnknownEventTypeError(InvalidEventError):
    """The ``type`` of an event is not in the catalogue."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}: not in the kernelhub event catalogue")
        self.event_type = event_type


class EventDecodeError(EventStoreError):
    """A stored entry could not be turned back into an event (corrupt or from newer code)."""

    def __init__(self, position: str | None, reason: str) -> None:
        where = f"at log position {position}" if position else "in input"
        super().__init__(f"cannot decode event {where}: {reason}")
        self.position = position
        self.reason = reason


class WrongExpectedVersionError(EventStoreError):
    """Optimistic concurrency conflict: someone else appended to the stream first.

    The caller reloads the stream (``actual_version`` tells how far it got) and decides again.
    """

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream!r} is at version {actual}, expected {expected}: reload and retry"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class DuplicateBatchError(EventStoreError):
    """Some, but not all, event ids of a batch are already stored.

    A retried command re-sends exactly the events it sent before, so a partial overlap means
    two different commands reused ids: a bug in the caller, never something to paper over.
    """

    def __init__(self, stored: int, total: int, example_id: str) -> None:
        super().__init__(
            f"{stored} of {total} event ids are already stored (e.g. {example_id}); "
            "a retry must resend the identical batch"
        )
        self.stored = stored
        self.total = total
        self.example_id = example_id
