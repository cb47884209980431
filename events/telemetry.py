"""Telemetry: what is measured, not decided, kept beside the log (TTL'd, never replayed).

* :class:`Clock` (``store.clock``): the server's time, the one clock every host shares.
* :class:`Telemetry` (``store.telemetry``): agents' heartbeats, kernel stats, utilization
  samples, devices, and the logs of terminated kernels.
* :class:`IdleActivity` (``store.idle``): sessions' last accesses (``touch``), open app
  connections, the reaper's schedule of check times and its last reports.

Policy (TTLs, staleness) belongs to the callers; this module only stores and reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from .keys import KeySpace

__all__ = ["ACCESS_TTL_S", "Clock", "DeviceStats", "IdleActivity", "IdleBatch", "Telemetry"]

ACCESS_TTL_S = 86_400
"""How long a session's last access and its app connections are kept without news."""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Clock:
    """The Redis server's clock (``TIME``): hosts' clocks may disagree, this one does not."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def now(self) -> float:
        """Seconds since the epoch, to the microsecond."""
        seconds, micros = await self._redis.time()
        return float(seconds + micros / 1e6)

    async def now_ms(self) -> int:
        """Milliseconds since the epoch (exact: no float in between)."""
        seconds, micros = await self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


@dataclass(frozen=True, slots=True)
class DeviceStats:
    """An agent's accelerator devices, live (canonical JSON), kept for ``ttl_s``."""

    agent_id: str
    stats: str
    ttl_s: int


class Telemetry:
    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = client
        self._keys = keys

    # ---- heartbeats and stats ---------------------------------------------------------------
    async def beat(
        self, agent_id: str, at: float, kernel_stats: Mapping[str, str], ttl_s: int
    ) -> None:
        """An agent's heartbeat at ``at`` (server time) with its kernels' live stats
        (kernel id -> JSON, kept ``ttl_s``), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._keys.heartbeats, {agent_id: at})
        for kernel_id, stats in kernel_stats.items():
            pipe.set(self._keys.kernel_stats(kernel_id), stats, ex=ttl_s)
        await pipe.execute()

    async def beat_many(
        self, at: float, beats: Sequence[tuple[str, Mapping[str, str]]], ttl_s: int
    ) -> None:
        """Many agents' heartbeats at ``at`` (a host of simulated agents beats for all of
        them at once), each with its kernels' live stats, in one round trip."""
        if not beats:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._keys.heartbeats, {agent_id: at for agent_id, _ in beats})
        for _, kernel_stats in beats:
            for kernel_id, stats in kernel_stats.items():
                pipe.set(self._keys.kernel_stats(kernel_id), stats, ex=ttl_s)
        await pipe.execute()

    async def kernels_measured(
        self, kernel_ids: Sequence[str]
    ) -> list[tuple[str | None, str | None]]:
        """Each kernel's last heartbeat stats and its utilization samples (JSON each;
        ``None``: none kept), in one round trip."""
        if not kernel_ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        pipe.mget([self._keys.kernel_stats(k) for k in kernel_ids])
        pipe.mget([self._keys.idle_utilization(k) for k in kernel_ids])
        stats, samples = await pipe.execute()
        return [
            (None if s is None else _s(s), None if u is None else _s(u))
            for s, u in zip(stats, samples, strict=True)
        ]

    async def heartbeats(self) -> list[tuple[str, float]]:
        """Every agent that ever heartbeated, with its last heartbeat (server time, s)."""
        beats: list[Any] = await self._redis.zrange(self._keys.heartbeats, 0, -1, withscores=True)
        return [(_s(agent), float(at)) for agent, at in beats]

    async def heartbeat_agents(self) -> list[str]:
        """Every agent that ever heartbeated (registration heartbeats at once)."""
        raw: list[Any] = await self._redis.zrange(self._keys.heartbeats, 0, -1)
        return [_s(a) for a in raw]

    # ---- utilization and devices -----------------------------------------------------------
    async def record_samples(
        self, utilization: Mapping[str, str], ttl_s: int, devices: DeviceStats | None = None
    ) -> None:
        """Kernels' utilization samples (kernel id -> JSON, kept ``ttl_s``) and the agent's
        devices, in one round trip (none when there is nothing to record)."""
        if not utilization and devices is None:
            return
        pipe = self._redis.pipeline(transaction=False)
        if devices is not None:
            pipe.set(self._keys.agent_devices(devices.agent_id), devices.stats, ex=devices.ttl_s)
        for kernel_id, sample in utilization.items():
            pipe.set(self._keys.idle_utilization(kernel_id), sample, ex=ttl_s)
        await pipe.execute()

    async def utilization(self, kernel_ids: Sequence[str]) -> list[str | None]:
        """Each kernel's recent utilization samples (JSON; ``None``: none), in one read."""
        if not kernel_ids:
            return []
        raw = await self._redis.mget([self._keys.idle_utilization(k) for k in kernel_ids])
        return [None if v is None else _s(v) for v in raw]

    async def agent_devices(self, agent_id: str) -> str | None:
        """An agent's devices, live (JSON ``{at, devices}``; ``None``: none or expired)."""
        raw = await self._redis.get(self._keys.agent_devices(agent_id))
        return None if raw is None else _s(raw)

    # ---- logs of terminated kernels --------------------------------------------------------
    async def keep_kernel_log(self, kernel_id: str, log: bytes, ttl_s: int) -> None:
        await self._redis.set(self._keys.kernel_logs(kernel_id), log, ex=ttl_s)

    async def kernel_log(self, kernel_id: str) -> str:
        """What was kept of a terminated kernel's log ("" when nothing, or expired)."""
        raw = await self._redis.get(self._keys.kernel_logs(kernel_id))
        if isinstance(raw, str):
            return raw
        return bytes(raw or b"").decode("utf-8", "replace")


class IdleBatch:
    """Changes to the reaper's schedule and reports, sent together by :meth:`execute`."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._pipe = client.pipeline(transaction=False)
        self._keys = keys

    def started(self, session_id: str, at: float, access_ttl_s: int = ACCESS_TTL_S) -> None:
        """A session started at ``at``: its first access and first check, unless it has them."""
        self._pipe.set(self._keys.idle_access(session_id), repr(at), ex=access_ttl_s, nx=True)
        self._pipe.zadd(self._keys.idle_due, {session_id: at}, nx=True)

    def schedule(self, session_id: str, at: float) -> None:
        """Judge the session next at ``at`` (server time, s)."""
        self._pipe.zadd(self._keys.idle_due, {session_id: at})

    def unschedule(self, session_id: str) -> None:
        self._pipe.zrem(self._keys.idle_due, session_id)

    def report(self, session_id: str, report: str, ttl_s: int) -> None:
        """The idle checkers' last report on the session (JSON)."""
        self._pipe.set(self._keys.idle_report(session_id), report, ex=ttl_s)

    async def execute(self) -> None:
        await self._pipe.execute()


class IdleActivity:
    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = client
        self._keys = keys

    async def touch(self, session_id: str, access_ttl_s: int = ACCESS_TTL_S) -> None:
        """Activity on a session now (server time): its last access, and a check time if it
        has none, in one round trip."""
        seconds, micros = await self._redis.time()
        now = seconds + micros / 1e6
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._keys.idle_access(session_id), repr(now), ex=access_ttl_s)
        pipe.zadd(self._keys.idle_due, {session_id: now}, nx=True)
        await pipe.execute()

    async def app_opened(
        self, session_id: str, connection: str, stale_s: float, ttl_s: int = ACCESS_TTL_S
    ) -> None:
        """An app connection is open now; those not announced for ``stale_s`` are dropped."""
        seconds, micros = await self._redis.time()
        key = self._keys.idle_apps(session_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(key, {connection: seconds + micros / 1e6})
        pipe.zremrangebyscore(key, "-inf", seconds - stale_s)
        pipe.expire(key, ttl_s)
        await pipe.execute()

    async def app_closed(self, session_id: str, connection: str, stale_s: float) -> int:
        """An app connection closed; how many of the session's are still live."""
        seconds, _ = await self._redis.time()
        key = self._keys.idle_apps(session_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(key, connection)
        pipe.zcount(key, seconds - stale_s, "+inf")
        _, live = await pipe.execute()
        return int(live)

    async def last_accesses(self, session_ids: Sequence[str]) -> list[float | None]:
        """Each session's last access (server time, s; ``None``: none known), in one read."""
        raw = await self._redis.mget([self._keys.idle_access(sid) for sid in session_ids])
        return [float(r) if r else None for r in raw]

    async def activity(
        self, session_ids: Sequence[str], apps_since: float
    ) -> tuple[list[float | None], list[int]]:
        """Each session's last access and its app connections announced since
        ``apps_since``, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.mget([self._keys.idle_access(sid) for sid in session_ids])
        for sid in session_ids:
            pipe.zcount(self._keys.idle_apps(sid), apps_since, "+inf")
        accesses, *apps = await pipe.execute()
        return [float(r) if r else None for r in accesses], [int(n) for n in apps]

    async def due(self, until: float) -> list[str]:
        """Sessions whose check time is ``until`` or earlier."""
        members: list[Any] = await self._redis.zrangebyscore(self._keys.idle_due, "-inf", until)
        return [_s(m) for m in members]

    async def next_due(self) -> float | None:
        """The earliest check time (``None``: nothing scheduled)."""
        head: list[Any] = await self._redis.zrange(self._keys.idle_due, 0, 0, withscores=True)
        return float(head[0][1]) if head else None

    def batch(self) -> IdleBatch:
        return IdleBatch(self._redis, self._keys)
