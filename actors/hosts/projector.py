"""``projector``: every read model, folded by one :class:`~projections.runtime.Projector`,
plus the gauges only the read side can give (sessions by status and type)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray
import structlog

from actors.runtime.metrics import ActorMetrics
from actors.runtime.outage import Outages
from actors.runtime.restarts import RestartWatch
from events import RedisEventStore
from projections.queries import ReadModels

from ..domain.statuses import SessionStatus
from ._follower import boot
from ._traced import traced_actor

__all__ = ["ProjectorActor"]

log = structlog.get_logger(__name__)

_SESSION_TYPES = ("interactive", "batch", "inference")


@ray.remote(max_restarts=-1)
@traced_actor
class ProjectorActor:
    def __init__(self, redis_url: str, prefix: str = "kh", gauge_interval_s: float = 5.0) -> None:
        from projections.models import default_projections
        from projections.runtime import Projector

        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        self.metrics = ActorMetrics(
            "kernelhub_projection_lag_ms",
            "kernelhub_sessions",
            "kernelhub_sessions_by_type",
            "kernelhub_pending_oldest_seconds",
            "kernelhub_slots",
            "kernelhub_redis_used_memory_bytes",
        )
        self.projector = Projector(
            self.store, default_projections(), block_ms=100, on_commit=self._committed
        )
        self.gauge_interval_s = gauge_interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self.restarts = RestartWatch(self.store, self._reload, name="projector")
        self._boot = boot(self._start, watch=self.restarts)

    def _committed(self, name: str, events: Any, committed_at: float) -> None:
        lag = committed_at * 1000 - events[-1].position_ms
        self.metrics.set("kernelhub_projection_lag_ms", max(0.0, lag), projection=name)

    async def metrics_snapshot(self) -> dict[str, float]:
        await self.count_sessions()
        await self.measure_cluster()
        return self.metrics.snapshot()

    async def count_sessions(self) -> None:
        """Sessions by status and by type: one ZCARD per index, never a scan."""
        models = ReadModels(self.store)
        counts = await models.session_counts([s.name for s in SessionStatus], _SESSION_TYPES)
        if counts is None:
            return
        by_status, by_type = counts
        for status, count in zip(SessionStatus, by_status, strict=True):
            self.metrics.set("kernelhub_sessions", count, status=status.name)
        for kind, count in zip(_SESSION_TYPES, by_type, strict=True):
            self.metrics.set("kernelhub_sessions_by_type", count, type=kind)
        oldest = await models.oldest_created_ms("PENDING")
        waited = time.time() - oldest / 1000 if oldest is not None else 0.0
        self.metrics.set("kernelhub_pending_oldest_seconds", max(0.0, waited))

    async def measure_cluster(self) -> None:
        """Slots offered and held per scaling group (alive agents), and Redis's memory."""
        totals: dict[tuple[str, str, str], float] = {}
        for agent in await ReadModels(self.store).agents():
            if agent["status"] != "ALIVE":
                continue
            group = str(agent.get("scaling_group") or "default")
            for state in ("available", "occupied"):
                for slot, amount in (agent.get(f"{state}_slots") or {}).items():
                    key = (group, slot, state)
                    totals[key] = totals.get(key, 0.0) + float(amount)
        for (group, slot, state), amount in totals.items():
            self.metrics.set("kernelhub_slots", amount, scaling_group=group, slot=slot, state=state)
        memory = await self.store.used_memory()
        self.metrics.set("kernelhub_redis_used_memory_bytes", float(memory))

    async def _gauges(self) -> None:
        outages = Outages("measuring the cluster")
        while True:
            try:
                await self.count_sessions()
                await self.measure_cluster()
            except Exception as exc:
                outages.failed(exc)
            else:
                outages.succeeded()
            await asyncio.sleep(self.gauge_interval_s)

    async def _start(self) -> None:
        await self.projector.load()
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self.projector.run()),
                asyncio.create_task(self._gauges()),
            ]

    async def _reload(self) -> None:
        """The log changed under the projector (Redis restarted): its checkpoints are read
        again, and a read model whose checkpoint is past the log's head is rebuilt."""
        self.projector.realign_soon()

    async def rebuild(self, names: list[str]) -> dict[str, int]:
        """Fold the named read models again from the start of the log and switch to them
        (``recalculate-usage``); the new generations."""
        await asyncio.shield(self._boot)
        return await self.projector.rebuild_many(names)

    async def ready(self) -> bool:
        await asyncio.shield(self._boot)
        return True
