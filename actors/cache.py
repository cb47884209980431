"""A read-through cache for lookups on a hot path (a keypair, a resource policy).

A plain "cached for N seconds" has two faults under load:
- When an entry expires, every request in flight misses at once and each reloads it. With
  32 connections that is 32 reads of the same record.
- Each of those requests waits for its reload.

Here one load runs per key at a time (single flight). A stale entry is served while it
reloads in the background, so no request waits for a refresh. Only the first lookup of a
key waits for Redis. A failed refresh keeps the stale value and is retried on the next
request. How stale an answer can be is bounded by the TTL plus one load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import structlog

__all__ = ["RefreshingCache"]

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RefreshingCache(Generic[K, V]):
    def __init__(self, load: Callable[[K], Awaitable[V]], ttl_s: float) -> None:
        self.load = load
        self.ttl_s = ttl_s
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        cached = self._values.get(key)
        if cached is not None:
            if time.monotonic() - cached[0] >= self.ttl_s and key not in self._loading:
                self._start(key)  # stale: answer now, refresh behind
            return cached[1]
        loading = self._loading.get(key) or self._start(key)
        return await asyncio.shield(loading)

    def forget(self, key: K) -> None:
        self._values.pop(key, None)

    def _start(self, key: K) -> asyncio.Future[V]:
        future = asyncio.ensure_future(self.load(key))
        self._loading[key] = future
        future.add_done_callback(lambda done: self._settle(key, done))
        return future

    def _settle(self, key: K, done: asyncio.Future[V]) -> None:
        self._loading.pop(key, None)
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            self._values[key] = (time.monotonic(), done.result())
        elif key in self._values:  # a refresh failed: keep serving the stale value
            log.warning("cache refresh failed", key=str(key), error=repr(error))
