"""One Redis round trip for the requests of one turn of the event loop.

A Redis round trip costs the gateway far more than the work Redis does for it: a ``send``
system call that wakes Redis, an ``epoll`` wake-up, redis-py's connection checkout, command
packing and timeouts (about 0.3 ms of CPU per call, measured: docs/gateway.md, "What a
request costs"). Under load many requests wait on the same kind of read at once (their
keypair's rate-limit count, their session's record), so :class:`Coalescer` collects the
calls made during one turn of the loop and answers all of them from one call of its
``run`` function, made at the start of the next turn. A lone request waits one turn of the
loop (microseconds) and is then sent alone, as before.

Each caller gets its own answer, in the order it asked; a failure of the shared call is
each caller's failure (the same exception, so an outage is classified as before). A caller
cancelled before the call is made is left out of it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await coalescer(item)``: ``run``'s answer for ``item``, where ``run`` is called
    with the items of every caller of one loop turn (at most ``max_batch`` a call) and
    answers with one result per item, in order."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], max_batch: int = 256) -> None:
        self._run = run
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()
        """Calls in flight (the loop keeps only weak references to tasks)."""

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, context=contextvars.Context())
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        waiting = [(item, future) for item, future in self._pending if not future.done()]
        self._pending = []
        loop = asyncio.get_running_loop()
        for start in range(0, len(waiting), self.max_batch):
            # an empty context: the shared call belongs to no one request's correlation id
            task = loop.create_task(
                self._answer(waiting[start : start + self.max_batch]),
                context=contextvars.Context(),
            )
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} answers to {len(batch)} calls")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
