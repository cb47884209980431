"""``serving``: the model-serving write side, as one Ray actor: the single writer of the
``endpoint-<id>`` streams (:class:`~actors.endpoints.writer.EndpointService`) and the
reconciler that keeps each endpoint's replicas alive (:mod:`actors.endpoints.reconciler`).

One actor for both, so the reconciler appends through the writer in-process, and a
decision never races another writer of the same streams. It follows the log for the events
of the sessions' streams (a replica's session started, ended, failed), and restarts
(``max_restarts=-1``) into the same state: everything it needs is in the log.

Methods (the contract of issue 31): ``ready()``; ``endpoint(command)`` runs one endpoint
command (the gateway's create, scale, rm, traffic ratio, token) and reconciles at once;
``sync(endpoint_id)`` probes every route now and reconciles; ``report(endpoint_id)`` is the
reconciler's view (each route's last probes, and whether failing replicas' replacements
are held back). ``backoff_s`` and ``max_failures`` tune that hold (tests shorten it).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import ray

from actors.domain.commands.endpoints import EndpointCommand
from actors.domain.endpoints import BACKOFF_BASE_S, MAX_FAILURES
from actors.endpoints.reconciler import Reconciler
from actors.endpoints.writer import EndpointService
from actors.runtime.metrics import ActorMetrics
from actors.runtime.restarts import RestartWatch
from actors.sessions.routing import ShardRouter
from events import AnyPayload, Event, RedisEventStore

from ._follower import Follower, boot
from ._traced import traced_actor
from .gateway import vfolder_root_for

__all__ = ["ROUTES_METRIC", "ServingActor"]

ROUTES_METRIC = "kernelhub_endpoint_routes_total"
_SESSION_STREAM = "session-"


@ray.remote(max_restarts=-1)
@traced_actor
class ServingActor(Follower):
    def __init__(
        self,
        redis_url: str,
        shards: tuple[int, str],
        master_key_path: str,
        prefix: str = "kh",
        tick_s: float = 1.0,
        backoff_s: float = BACKOFF_BASE_S,
        max_failures: int = MAX_FAILURES,
    ) -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        self.follower_name = "serving"
        self.writer = EndpointService(self.store, actor="serving")
        self.metrics = ActorMetrics(ROUTES_METRIC)
        self.reconciler = Reconciler(
            self.writer,
            ShardRouter.named(self.store, *shards),
            self.store,
            vfolder_root=vfolder_root_for(Path(master_key_path)),
            tick_s=tick_s,
            on_change=self._changed,
            backoff_s=backoff_s,
            max_failures=max_failures,
        )
        self._loop: asyncio.Task[None] | None = None
        self.restarts = RestartWatch(self.store, self._reload, name="serving")
        self._boot = boot(self._start, watch=self.restarts)

    def follows_stream(self, stream: str) -> bool:
        return stream.startswith(_SESSION_STREAM)

    async def _start(self) -> None:
        await self.writer.load()
        await self._start_following()
        if self._loop is None:
            self._loop = asyncio.create_task(self.reconciler.run())
        self.reconciler.wake()

    async def _reload(self) -> None:
        """The log changed under the writer (Redis restarted): it folds the endpoints
        afresh, and the reconciler looks at each at once."""
        await self.writer.reload()
        self.reconciler.wake()

    async def react_many(self, events: list[Event]) -> None:
        for event in events:
            try:
                session_id = uuid.UUID(event.stream.removeprefix(_SESSION_STREAM))
            except ValueError:
                continue
            self.reconciler.session_changed(session_id)

    def _changed(self, endpoint_id: str, change: str) -> None:
        self.metrics.inc(ROUTES_METRIC, endpoint=endpoint_id, change=change)

    async def endpoint(self, command: EndpointCommand) -> list[AnyPayload]:
        """Run one endpoint command (the single writer); the reconciler acts on it at once."""
        await self._boot
        appended = await self.writer.handle(command)
        self.reconciler.wake()
        return appended

    async def sync(self, endpoint_id: str) -> None:
        await self._boot
        await self.reconciler.sync(uuid.UUID(endpoint_id))

    async def report(self, endpoint_id: str) -> dict[str, object]:
        await self._boot
        return self.reconciler.report(uuid.UUID(endpoint_id))

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()
