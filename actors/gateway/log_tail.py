"""One tail of the log shared by every event stream the gateway serves.

A stream that follows the log with its own subscription holds a Redis connection in a
blocking ``XREAD`` nearly all the time; the gateway's pool has 256, so 256 open streams
left no connection for any other request (each waited up to 30 s for one). Here one task
reads the log for all of them and hands each event to every listener's queue: however many
streams are open, they hold one connection between them.

A listener that does not keep up (its client stopped reading, so its queue filled) is
dropped rather than buffered without bound: its queue says so with ``None`` and its stream
ends. The tail stops when the last listener leaves and starts again with the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from events import RedisEventStore
from events.envelope import Event

__all__ = ["Listener", "LogTail"]

log = structlog.get_logger(__name__)

QUEUE_SIZE = 1_000


class Listener:
    """One stream's queue of events; ``None`` in it means the stream must end (it fell
    behind, or the tail stopped)."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(size)
        self.ended = False

    async def get(self) -> Event | None:
        return await self._queue.get()

    def offer(self, event: Event) -> None:
        if self.ended:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.end()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        while not self._queue.empty():  # room for the end mark, and nothing to read first
            self._queue.get_nowait()
        self._queue.put_nowait(None)


class LogTail:
    def __init__(
        self,
        store: RedisEventStore,
        *,
        types: frozenset[str],
        streams: Callable[[str], bool],
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.store = store
        self.types = types
        self.streams = streams
        self.queue_size = queue_size
        self._listeners: set[Listener] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[Listener]:
        """A listener for every event appended from now on (matching the tail's types and
        streams), until the block ends."""
        listener = Listener(self.queue_size)
        if self._task is None or self._task.done():
            after = await self.store.head()  # pinned before the block runs: nothing missed
            self._task = asyncio.create_task(self._follow(after))
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)
            if not self._listeners and self._task is not None:
                task, self._task = self._task, None
                task.cancel()

    async def _follow(self, after: Any) -> None:
        subscription = self.store.subscribe(
            after, block_ms=1000, types=self.types, streams=self.streams
        )
        me = asyncio.current_task()
        try:
            async for event in subscription:
                for listener in list(self._listeners):
                    listener.offer(event)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the gateway's log tail failed; its streams end")
        finally:
            with contextlib.suppress(Exception):
                await subscription.aclose()
            if self._task is me:  # not replaced by a newer tail: its listeners end
                self._task = None
                for listener in list(self._listeners):
                    listener.end()
