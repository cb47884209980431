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

__all__ = ["Subscription"]

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
    ) -> None:
        self._store = store
        self._streams = streams
        """Entries of streams this refuses are skipped undecoded (a shard's own sessions)."""
        self._markers = None if types is None else [f'"type":"{t}"'.encode() for t in types]
        """Entries whose body holds none of these bytes are skipped undecoded: an actor that
        reacts to a few event types does not validate every event of the log."""
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
        markers = self._markers
        for _key, entries in reply or ():
            for raw_position, fields in entries:
                position = raw_position.decode()
                self._after = position
                if markers is not None:
                    body = fields.get(b"e", b"")
                    if not any(marker in body for marker in markers):
                        continue  # canonical JSON: the type is spelled exactly so
                if self._streams is not None and not self._streams(fields.get(b"s", b"").decode()):
                    continue
                self._buffer.append(self._store.codec.decode(position, fields))
