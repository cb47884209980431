"""Requests per keypair over a rolling 15-minute window (23.03's ``manager/api/ratelimit.py``;
docs/gateway.md), counted beside the log with one round trip (``store.rate_limits``,
:mod:`events.ratelimit`: what left the window is dropped, this request recorded at Redis's
own clock, and how many are in it answered). The requests of one turn of the event loop
share that round trip (:mod:`.coalesce`): each is still counted in Redis, in order, so the
count stays exact per keypair across every gateway.

A request that fails authentication has no keypair to count against, so those are counted
per peer address (:class:`PeerLimiter`), in the gateway's memory: a flood of bad requests
then costs no Redis round trip at all, and the table of peers is bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from .coalesce import Coalescer
from .problems import GatewayError

if TYPE_CHECKING:
    from events.ratelimit import RequestCounter

__all__ = [
    "UNAUTHENTICATED_LIMIT",
    "WINDOW_S",
    "PeerLimiter",
    "PeerRateLimited",
    "RateLimitExceeded",
    "RateLimiter",
]

WINDOW_S = 900
UNAUTHENTICATED_LIMIT = 1000
"""What ``X-RateLimit-Limit``/``-Remaining`` say to a request without a keypair."""


class RateLimitExceeded(GatewayError):
    status, error_type = 429, "rate-limit-exceeded"
    title = "You have reached your API query rate limit."


class RateLimiter:
    def __init__(self, counter: RequestCounter) -> None:
        self._counter = counter
        self._hits: Coalescer[str, int] = Coalescer(self._count)

    async def hit(self, access_key: str) -> int:
        """Count this request; the requests of the keypair in the window, this one included."""
        return await self._hits(access_key)

    async def _count(self, access_keys: list[str]) -> list[int]:
        return await self._counter.hits(access_keys, WINDOW_S)


class PeerRateLimited(RateLimitExceeded):
    """Too many failed authentications from one address."""


class PeerLimiter:
    """Failed authentications per peer address: a token bucket of ``limit`` tokens that
    refills over ``window_s`` (so the spec's "1000 in 15 minutes" for unauthenticated
    callers, and a peer that stops failing is whole again a window later). At most
    ``max_peers`` addresses are held, the least recently seen forgotten first (a forgotten
    peer starts with a full bucket: the bound is on memory, never on who is served)."""

    def __init__(
        self,
        limit: int = UNAUTHENTICATED_LIMIT,
        window_s: float = WINDOW_S,
        max_peers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_peers = max_peers
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """peer -> (tokens, when they were counted)."""

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, peer: str) -> float:
        found = self._buckets.get(peer)
        if found is None:
            return float(self.limit)
        tokens, at = found
        refill = (self._clock() - at) * self.limit / self.window_s
        return min(float(self.limit), tokens + refill)

    def over(self, peer: str) -> bool:
        """Whether the peer has failed its whole allowance (its requests are then answered
        from memory only)."""
        return self._tokens(peer) < 1

    def remaining(self, peer: str) -> int:
        return int(self._tokens(peer))

    def fail(self, peer: str) -> bool:
        """Count one failed authentication; ``False`` when it is past the allowance."""
        tokens = self._tokens(peer)
        allowed = tokens >= 1
        self._buckets[peer] = (max(0.0, tokens - 1), self._clock())
        self._buckets.move_to_end(peer)
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return allowed
