"""The agent's threads for tenants' file operations (upload, download, listing).

They block on the tenant's files (a directory of millions of names, a slow disk), so they
run off the event loop; but not in the loop's default executor, which the agent shares
with other work (``batch_exit`` reading a batch's result, ``asyncio.to_thread`` anywhere):
fifty downloads at once would fill it and queue every other tenant's batch results behind
them. Here they get a small pool of their own, :data:`FILE_WORKERS` threads, and one kernel
runs at most :data:`FILE_OPS_PER_KERNEL` of its operations at a time (the rest wait their
turn), so a single session never holds the whole pool either. The gateway refuses more
than a few file operations per keypair before they get here (``actors.gateway.stream_limits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["FILE_OPS_PER_KERNEL", "FILE_WORKERS", "FilePool"]

FILE_WORKERS = 8
"""Threads for file operations, for all the agent's kernels together."""
FILE_OPS_PER_KERNEL = 2
"""File operations one kernel runs at once: a quarter of the pool."""

T = TypeVar("T")


class FilePool:
    def __init__(self, workers: int = FILE_WORKERS, per_kernel: int = FILE_OPS_PER_KERNEL) -> None:
        self.per_kernel = per_kernel
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="kh-files")
        self._gates: dict[uuid.UUID, tuple[asyncio.Semaphore, int]] = {}
        """Each kernel's turn to run, and how many of its operations hold or await it."""

    async def run(self, kernel_id: uuid.UUID, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` in the pool, once ``kernel_id`` has a turn. The turn is given back
        when the work ends, not when the caller stops waiting: a cancelled call never lets
        one kernel run more than its share of threads."""
        gate, users = self._gates.get(kernel_id) or (asyncio.Semaphore(self.per_kernel), 0)
        self._gates[kernel_id] = (gate, users + 1)
        try:
            await gate.acquire()
        except BaseException:
            self._leave(kernel_id)
            raise
        loop = asyncio.get_running_loop()
        try:
            job: Future[T] = self._executor.submit(work, *args)
        except BaseException:
            self._done(kernel_id, gate)
            raise

        def finished(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._done, kernel_id, gate)

        job.add_done_callback(finished)
        return await asyncio.wrap_future(job)

    def _done(self, kernel_id: uuid.UUID, gate: asyncio.Semaphore) -> None:
        gate.release()
        self._leave(kernel_id)

    def _leave(self, kernel_id: uuid.UUID) -> None:
        gate, users = self._gates[kernel_id]
        if users > 1:
            self._gates[kernel_id] = (gate, users - 1)
        else:
            del self._gates[kernel_id]

    def busy(self, kernel_id: uuid.UUID) -> int:
        """Operations of ``kernel_id`` running or waiting now."""
        return self._gates.get(kernel_id, (None, 0))[1]

    def shutdown(self) -> None:
        """Let the threads go once their work ends (work already queued still runs)."""
        self._executor.shutdown(wait=False)
