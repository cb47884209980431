"""Looking inside a projection generation, for tests and operators (not a query path: it
walks keys with SCAN)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

__all__ = ["dump_generation"]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def dump_generation(client: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` with its full contents, keyed by the suffix, so two
    generations can be compared for equality."""
    dump: dict[str, Any] = {}
    async for raw_key in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = _s(raw_key)
        suffix = key[len(prefix) + 1 :]
        kind = _s(await client.type(key))
        if kind == "hash":
            dump[suffix] = {_s(k): _s(v) for k, v in (await client.hgetall(key)).items()}
        elif kind == "zset":
            scored: list[Any] = await client.zrange(key, 0, -1, withscores=True)
            dump[suffix] = [(_s(member), score) for member, score in scored]
        elif kind == "string":
            dump[suffix] = _s(await client.get(key))
        else:
            dump[suffix] = f"<{kind}>"
    return dict(sorted(dump.items()))
