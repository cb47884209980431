"""The correlation id of the work in hand: one API call, followed through every actor.

The gateway gives each request a correlation id; whoever acts on its behalf (the shard it
calls, the scheduler placing the session, the agent starting the kernels) works inside
:func:`correlated` with the same id. Events decided there carry it in their envelope
(:func:`~events.envelope.events_for_command` reads it), and so do log lines (kernelhub's
structlog configuration adds it), which is what ``kh trace`` joins on.

A context variable rather than a parameter: the id crosses a dozen layers that have no
other reason to know of it, and asyncio copies it into every task spawned while it is set.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = [
    "add_correlation_id",
    "correlated",
    "correlation_kwargs",
    "current_correlation",
    "parse_correlation",
]

_CURRENT: ContextVar[uuid.UUID | None] = ContextVar("kernelhub_correlation_id", default=None)


def current_correlation() -> uuid.UUID | None:
    return _CURRENT.get()


def correlation_kwargs() -> dict[str, str]:
    """What a call to another actor adds to carry the bound id (``correlation_id=``; Ray
    copies no context across a call): nothing when none is bound."""
    current = _CURRENT.get()
    return {"correlation_id": str(current)} if current is not None else {}


def parse_correlation(value: object) -> uuid.UUID | None:
    """A correlation id from outside (a header, a call's argument); ``None`` when absent or
    not a UUID (a caller's odd header starts a new trace rather than failing the call)."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@contextmanager
def correlated(correlation_id: uuid.UUID | str | None) -> Iterator[uuid.UUID | None]:
    """Work inside the block belongs to ``correlation_id``; ``None`` (or a malformed id)
    leaves whatever is bound already."""
    parsed = parse_correlation(correlation_id)
    if parsed is None:
        yield _CURRENT.get()
        return
    token = _CURRENT.set(parsed)
    try:
        yield parsed
    finally:
        _CURRENT.reset(token)


def add_correlation_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the bound correlation id on every line logged under it."""
    current = _CURRENT.get()
    if current is not None:
        event_dict.setdefault("correlation_id", str(current))
    return event_dict
