"""Baselines the benchmarks compare against: as fast as they honestly can be.

Same client library (redis-py asyncio with hiredis), same server, same payload bytes, same
batch size as the code under test. Nothing here validates, checks versions or dedups: that
is exactly the cost the ratios expose.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from pydantic_core import from_json

__all__ = ["Fields", "machine", "raw_read_decode", "raw_xadd_pipelined", "raw_xadd_single"]

Fields = dict[str, str | int]


async def raw_xadd_single(client: aioredis.Redis, key: str, entries: Sequence[Fields]) -> None:
    """One XADD per round trip."""
    for fields in entries:
        await client.xadd(key, fields)  # type: ignore[arg-type]


async def raw_xadd_pipelined(
    client: aioredis.Redis, key: str, entries: Sequence[Fields], batch: int
) -> None:
    """Pipelines of ``batch`` XADDs (no MULTI), one round trip each."""
    for start in range(0, len(entries), batch):
        pipe = client.pipeline(transaction=False)
        for fields in entries[start : start + batch]:
            pipe.xadd(key, fields)  # type: ignore[arg-type]
        await pipe.execute()


def redis_version_at(url: str) -> str:
    """The version of the Redis server at ``url`` (for :func:`machine`)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def machine(redis_version: str | None = None) -> dict[str, object]:
    """What the figures were measured on (bench rules: every line names its machine)."""
    try:
        import ray

        ray_version: str | None = ray.__version__
    except Exception:  # pragma: no cover - ray is a dependency; report rather than fail
        ray_version = None
    cpu = ""
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpu.splitlines()
                if line.startswith("Model name")
            ),
            "",
        )
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "redis": redis_version,
        "ray": ray_version,
    }


async def raw_read_decode(
    client: aioredis.Redis, key: str, page: int = 5000, parse: Callable[[bytes], Any] = from_json
) -> int:
    """Read the whole log with XRANGE pages and decode every body with ``parse``: the
    floor any replay has to pay. Give it the JSON parser the read path uses
    (``events.codec.parse_json``: msgspec, about 1.8x faster than pydantic-core's
    ``from_json``, the default, which is twice as fast as ``json.loads``)."""
    after, count = "-", 0
    while True:
        entries = await client.xrange(key, min=after, count=page)
        if not entries:
            return count
        for _, fields in entries:
            parse(fields[b"e"])
        count += len(entries)
        after = "(" + entries[-1][0].decode()
