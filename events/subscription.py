"""Following the log as it grows.

A :class:`Subscription` blocks on ``XREAD`` for events after the last one it delivered, so
after a Redis restart (or any dropped connection) it reconnects with backoff and resumes at
exactly the next event: nothing skipped, nothing repeated within one subscription.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .envelope import Event, Position

if TYPE_CHECKING:
    from .store import RedisEventStore

__all__ = ["Subscription", "entry_type"]

log = structlog.get_logger(__name__)

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 1.0


class Subscription:
    """Async iterator of :class:`Event` after a position; ``"$"`` means "from now on"."""

    def __init__(
        self,
        store: RedisEventStore,
        after: Position | Literal["$"],
        *,
        block_ms: int = 1000,
        batch: int = 500,
        types: frozenset[str] | None = None,
        streams: Callable[[str], bool] | None = None,
        select: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._store = store
        self._streams = streams
        """Entries of streams this refuses are skipped undecoded (a shard's own sessions)."""
        self._types = types
        """Entries of other types are skipped undecoded: an actor that reacts to a few event
        types does not validate every event of the log."""
        self._markers = None if types is None else [f'"type":"{t}"'.encode() for t in types]
        """The same check on the body's bytes, for a body whose type :func:`entry_type`
        cannot read (never one the store wrote)."""
        self._select = select
        """A last say on an entry (its stream and type) before it is decoded: a shard
        decodes a status change only while someone waits on that session."""
        self._after: str = after
        self._block_ms = block_ms
        self._batch = batch
        self._buffer: deque[Event] = deque()
        self._closed = False
        self._backoff = _FIRST_BACKOFF_S
        self.position: Position | None = None if after == "$" else after
        """Position of the last event handed out (``None`` before the first, with ``"$"``)."""
        self.reconnects = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            await self._fill()
        event = self._buffer.popleft()
        self.position = event.position
        return event

    def take_buffered(self) -> list[Event]:
        """Everything already read but not yet handed out, handed out now (consumers that
        react in batches: one reaction and one checkpoint for many events)."""
        events = list(self._buffer)
        self._buffer.clear()
        if events:
            self.position = events[-1].position
        return events

    async def aclose(self) -> None:
        self._closed = True

    async def _fill(self) -> None:
        try:
            if self._after == "$":
                # pin "now" to a concrete position so a reconnect cannot skip what came between
                self._after = await self._store.head()
                self.position = self._after
            reply: Any = await self._store.redis.xread(
                {self._store.keys.log: self._after}, count=self._batch, block=self._block_ms
            )
        except _TRANSIENT as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py may turn a cancelled read into a connection error; swallowing it
                # here would lose the cancellation and leave the follower running forever
                raise asyncio.CancelledError from exc
            self.reconnects += 1
            if self._backoff == _FIRST_BACKOFF_S:  # once per outage, not once per try
                log.warning(
                    "log subscription lost Redis; retrying", error=str(exc), after=self._after
                )
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF_S)
            return
        if self._backoff != _FIRST_BACKOFF_S:
            log.info("log subscription reached Redis again", after=self._after)
        self._backoff = _FIRST_BACKOFF_S
        types, markers, streams, select = self._types, self._markers, self._streams, self._select
        for _key, entries in reply or ():
            for raw_position, fields in entries:
                position = raw_position.decode()
                self._after = position
                if types is not None or select is not None:
                    body = fields.get(b"e", b"")
                    event_type = entry_type(body)
                    if event_type is None:
                        if markers is not None and not any(m in body for m in markers):
                            continue
                    elif types is not None and event_type not in types:
                        continue
                else:
                    event_type = None
                if streams is not None or select is not None:
                    stream = fields.get(b"s", b"").decode()
                    if streams is not None and not streams(stream):
                        continue
                    if select is not None and event_type is not None:
                        if not select(stream, event_type):
                            continue
                self._buffer.append(self._store.codec.decode(position, fields))


_TYPE_KEY = b',"type":"'


def entry_type(body: bytes) -> str | None:
    """The event type of a log entry's body without parsing it, or ``None`` when the body
    is not in the store's canonical form. The store writes canonical JSON (sorted keys, no
    spaces): ``type`` is the envelope's last key, so the body ends ``,"type":"<t>"}``; a
    ``"type":"`` inside a string value is escaped (``\\"type\\":\\"``) and never matches."""
    if not body.endswith(b'"}'):
        return None
    start = body.rfind(_TYPE_KEY)
    if start < 0:
        return None
    name = body[start + len(_TYPE_KEY) : -2]
    if b'"' in name or b"\\" in name:
        return None
    try:
        return name.decode("ascii")
    except UnicodeDecodeError:
        return None
