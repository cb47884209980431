"""A read-through cache for lookups on a hot path (a keypair, a resource policy).

A plain "cached for N seconds" has two faults under load:
- When an entry expires, every request in flight misses at once and each reloads it. With
  32 connections that is 32 reads of the same record.
- Each of those requests waits for its reload.

Here one load runs per key at a time (single flight). A stale entry is served while it
reloads in the background, so no request waits for a refresh. Only the first lookup of a
key waits for Redis. A failed refresh keeps the stale value and is retried on the next
request. How stale an answer can be is bounded by the TTL plus one load, or by nothing at all where
the owner knows better: :meth:`forget` (and :meth:`forget_where`) drop an entry *and* any load
of it in flight, whose answer may predate what made the owner forget it (the gateway forgets
a keypair once the read model shows it changed, :mod:`actors.gateway.revocation_follower`).

The cache is bounded: at most ``max_entries`` keys, the least recently used dropped first.
Where keys come from strangers (an access key in a request header) a miss must not stay
forever either: with ``absent_ttl_s`` a load that answers ``None`` ("no such key") is kept in
a second, smaller table (``max_absent``) for that long and never served stale, so a flood
of made-up keys neither grows memory nor evicts the keys that exist.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import structlog

__all__ = ["RefreshingCache"]

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RefreshingCache(Generic[K, V]):
    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        ttl_s: float,
        *,
        max_entries: int = 10_000,
        absent_ttl_s: float | None = None,
        max_absent: int = 1_000,
    ) -> None:
        self.load = load
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.absent_ttl_s = absent_ttl_s
        self.max_absent = max_absent
        self._values: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._absent: OrderedDict[K, float] = OrderedDict()
        """Keys whose load answered ``None`` -> when (only with ``absent_ttl_s``)."""
        self._loading: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        """Keys held, present and absent (what memory the cache takes grows with)."""
        return len(self._values) + len(self._absent)

    def cached(self, key: K) -> bool:
        """Whether ``key`` would be answered without waiting for a load."""
        return key in self._values or self._absent_fresh(key)

    async def get(self, key: K) -> V:
        cached = self._values.get(key)
        if cached is not None:
            self._values.move_to_end(key)
            if time.monotonic() - cached[0] >= self.ttl_s and key not in self._loading:
                self._start(key)  # stale: answer now, refresh behind
            return cached[1]
        if self._absent_fresh(key):
            return None  # type: ignore[return-value]  # only a load that answered None is here
        loading = self._loading.get(key) or self._start(key)
        return await asyncio.shield(loading)

    def forget(self, key: K) -> None:
        """Drop ``key``: the next get loads it afresh, and a load already running is not
        kept (its callers still get its answer)."""
        self._values.pop(key, None)
        self._absent.pop(key, None)
        self._loading.pop(key, None)

    def forget_where(self, predicate: Callable[[K, V], bool]) -> int:
        """Forget every present key whose value ``predicate`` accepts; how many (a scan:
        for rare changes, like a user's status, that name no key)."""
        doomed = [key for key, (_, value) in self._values.items() if predicate(key, value)]
        for key in doomed:
            self.forget(key)
        return len(doomed)

    def _absent_fresh(self, key: K) -> bool:
        at = self._absent.get(key)
        if at is None or self.absent_ttl_s is None:
            return False
        if time.monotonic() - at < self.absent_ttl_s:
            return True
        del self._absent[key]  # expired: the next get loads again
        return False

    def _start(self, key: K) -> asyncio.Future[V]:
        future = asyncio.ensure_future(self.load(key))
        self._loading[key] = future
        future.add_done_callback(lambda done: self._settle(key, done))
        return future

    def _settle(self, key: K, done: asyncio.Future[V]) -> None:
        if self._loading.get(key) is not done:
            # forgotten while it loaded: its answer may predate the forgetting, so it is not
            # kept (an error is retrieved here, so asyncio never reports it as unseen)
            if not done.cancelled():
                done.exception()
            return
        del self._loading[key]
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            self._keep(key, done.result())
        elif key in self._values:  # a refresh failed: keep serving the stale value
            log.warning("cache refresh failed", key=str(key), error=repr(error))

    def _keep(self, key: K, value: V) -> None:
        if value is None and self.absent_ttl_s is not None:
            self._values.pop(key, None)
            self._absent[key] = time.monotonic()
            self._absent.move_to_end(key)
            while len(self._absent) > self.max_absent:
                self._absent.popitem(last=False)
            return
        self._absent.pop(key, None)
        self._values[key] = (time.monotonic(), value)
        self._values.move_to_end(key)
        while len(self._values) > self.max_entries:
            self._values.popitem(last=False)
