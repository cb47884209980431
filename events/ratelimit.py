"""Requests per keypair over a rolling window, counted in Redis with one round trip: a
script that drops what left the window, records each request at Redis's own clock, and
answers how many are in it (``store.rate_limits``; the gateway decides what is too many).

One call counts several requests (:meth:`RequestCounter.hits`: the gateway counts the
requests of one turn of its event loop together), each exactly as a call of its own would:
in order, a keypair named twice counted twice, every gateway sharing the same counts."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from .keys import KeySpace

__all__ = ["RequestCounter"]

_HITS = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local oldest = ms - tonumber(ARGV[1]) * 1000
local counts = {}
for i = 2, #KEYS do
  local seq = redis.call('INCR', KEYS[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', oldest)
  redis.call('ZADD', KEYS[i], ms, seq)
  redis.call('EXPIRE', KEYS[i], ARGV[1])
  counts[i - 1] = redis.call('ZCARD', KEYS[i])
end
return counts
"""
"""``KEYS[1]``: the sequence that makes each request a member of its own; ``KEYS[2..]``:
the keypairs' windows, one per request."""


class RequestCounter:
    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._keys = keys
        self._hits = client.register_script(_HITS)

    async def hit(self, access_key: str, window_s: int) -> int:
        """Count this request; the keypair's requests in the last ``window_s``, this one
        included."""
        return (await self.hits([access_key], window_s))[0]

    async def hits(self, access_keys: Sequence[str], window_s: int) -> list[int]:
        """Count one request of each access key (in order; a key named twice counts two);
        for each, its keypair's requests in the window up to and including it."""
        if not access_keys:
            return []
        keys = [self._keys.rate_limit_seq, *(self._keys.rate_limit(k) for k in access_keys)]
        return [int(count) for count in await self._hits(keys=keys, args=[window_s])]
