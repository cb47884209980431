"""Requests per keypair over a rolling window, counted in Redis with one round trip: a
script that drops what left the window, records this request at Redis's own clock, and
answers how many are in it (``store.rate_limits``; the gateway decides what is too many)."""

from __future__ import annotations

import redis.asyncio as aioredis

from .keys import KeySpace

__all__ = ["RequestCounter"]

_HIT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local seq = redis.call('INCR', KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[1]) * 1000)
redis.call('ZADD', KEYS[1], ms, seq)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


class RequestCounter:
    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._keys = keys
        self._hit = client.register_script(_HIT)

    async def hit(self, access_key: str, window_s: int) -> int:
        """Count this request; the keypair's requests in the last ``window_s``, this one
        included."""
        keys = [self._keys.rate_limit(access_key), self._keys.rate_limit_seq]
        return int(await self._hit(keys=keys, args=[window_s]))
