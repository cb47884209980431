"""``reaper``: the idle and lifetime checks (see :mod:`actors.idle.reaper`) as a Ray actor."""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from actors.idle.reaper import REAPER_REACTS_TO, Reaper
from actors.runtime.metrics import ActorMetrics
from actors.runtime.restarts import RestartWatch
from actors.sessions.routing import ShardRouter
from events import Event, RedisEventStore

from ..domain.idle import IdleConfig
from ._follower import Follower, boot
from ._traced import traced_actor

__all__ = ["ReaperActor"]


@ray.remote(max_restarts=-1)
@traced_actor
class ReaperActor(Follower):
    def __init__(
        self,
        redis_url: str,
        shards: tuple[int, str],
        prefix: str = "kh",
        idle: dict[str, Any] | None = None,
    ) -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        self.follower_name = "reaper"
        self.interests = REAPER_REACTS_TO
        self.metrics = ActorMetrics("kernelhub_idle_reclaims_total")
        self.reaper = Reaper(
            self.store,
            ShardRouter.named(self.store, *shards),
            IdleConfig.parse(idle or {}),
            on_reclaim=self._reclaimed,
        )
        self._loop: asyncio.Task[None] | None = None
        self.restarts = RestartWatch(self.store, self._reload, name=self.follower_name)
        self._boot = boot(self._start, watch=self.restarts)

    async def _start(self) -> None:
        await self._start_following()
        if self._loop is None:
            self._loop = asyncio.create_task(self.reaper.run())

    async def _reload(self) -> None:
        """The log changed under the reaper: what it noted is forgotten, and it judges now."""
        self.reaper.forget()

    async def react_many(self, events: list[Event]) -> None:
        await self.reaper.on_events(events)

    def _reclaimed(self, reason: str) -> None:
        self.metrics.inc("kernelhub_idle_reclaims_total", reason=reason)

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()

    async def report(self, session_id: str) -> dict[str, dict[str, Any]]:
        return await self.reaper.report(session_id)
