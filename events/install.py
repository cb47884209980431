"""Facts of an installation kept beside the log: the session shard count (fixed at install),
the operator's opt-in to unisolated agents, the port a gateway took, and where each actor
that follows the log has got to. Plus the synchronous look-up of the shard count the launcher
makes before any event loop runs.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from .keys import INSTALL_ALLOW_UNISOLATED, INSTALL_SHARDS, KeySpace

__all__ = [
    "FollowerPositions",
    "InstallFacts",
    "install_shard_count",
    "installed_shard_count",
]


class InstallFacts:
    """``store.install``."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = client
        self._keys = keys

    async def allow_unisolated(self) -> bool:
        """Whether the operator allowed tenants' code on unisolated agents."""
        value = await self._redis.hget(self._keys.install, INSTALL_ALLOW_UNISOLATED)
        return value in (b"1", "1")

    async def set_allow_unisolated(self, allowed: bool) -> None:
        await self._redis.hset(
            self._keys.install, INSTALL_ALLOW_UNISOLATED, "1" if allowed else "0"
        )

    async def gateway_port(self) -> int | None:
        """The port a gateway asked for "any free port" took (``None``: none yet)."""
        remembered = await self._redis.get(self._keys.gateway_port)
        return int(remembered) if remembered else None

    async def remember_gateway_port(self, port: int) -> None:
        await self._redis.set(self._keys.gateway_port, port)


class FollowerPositions:
    """``store.followers``: the last log position each following actor has reacted to."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = client
        self._keys = keys

    async def get(self, actor: str) -> str | None:
        recorded = await self._redis.get(self._keys.follower(actor))
        return recorded.decode() if isinstance(recorded, bytes) else recorded

    async def set(self, actor: str, position: str) -> None:
        await self._redis.set(self._keys.follower(actor), position)


def install_shard_count(redis_url: str, prefix: str, wanted: int) -> int:
    """The shard count recorded at install, recording ``wanted`` on a fresh one."""
    client = redis.Redis.from_url(redis_url)
    try:
        key = KeySpace(prefix).install
        client.hsetnx(key, INSTALL_SHARDS, wanted)
        return int(client.hget(key, INSTALL_SHARDS) or wanted)
    finally:
        client.close()


def installed_shard_count(redis_url: str, prefix: str) -> int | None:
    """The session shard count the installation recorded (``None``: no installation)."""
    client = redis.Redis.from_url(redis_url)
    try:
        recorded = client.hget(KeySpace(prefix).install, INSTALL_SHARDS)
    finally:
        client.close()
    return None if recorded is None else int(recorded)
