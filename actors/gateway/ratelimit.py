"""Requests per keypair over a rolling 15-minute window (seed API §2.3), counted in Redis
with one round trip: a script that drops what left the window, records this request at
Redis's own clock, and answers how many are in it."""

from __future__ import annotations

from typing import Any

from ..domain.errors import DomainError

__all__ = ["UNAUTHENTICATED_LIMIT", "WINDOW_S", "RateLimitExceeded", "RateLimiter"]

WINDOW_S = 900
UNAUTHENTICATED_LIMIT = 1000
"""What ``X-RateLimit-Limit``/``-Remaining`` say to a request without a keypair."""

_HIT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local seq = redis.call('INCR', KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[1]) * 1000)
redis.call('ZADD', KEYS[1], ms, seq)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


class RateLimitExceeded(DomainError):
    status, error_type = 429, "rate-limit-exceeded"
    title = "You have reached your API query rate limit."


class RateLimiter:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.prefix = prefix
        self._hit = redis.register_script(_HIT)

    async def hit(self, access_key: str) -> int:
        """Count this request; the requests of the keypair in the window, this one included."""
        keys = [f"{self.prefix}:ratelimit:{access_key}", f"{self.prefix}:ratelimit:seq"]
        return int(await self._hit(keys=keys, args=[WINDOW_S]))
