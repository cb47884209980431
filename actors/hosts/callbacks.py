"""``callbacks``: session callbacks (:mod:`actors.runtime.callbacks`) delivered from a Ray
actor of their own, so a slow receiver costs the write side nothing."""

from __future__ import annotations

import ray

from actors.domain.callbacks import CallbackPolicy
from actors.runtime.callbacks import CallbackDispatcher
from actors.runtime.metrics import ActorMetrics
from events import RedisEventStore

from ._follower import boot
from ._traced import traced_actor

__all__ = ["CallbacksActor"]


@ray.remote(max_restarts=-1)
@traced_actor
class CallbacksActor:
    def __init__(
        self, redis_url: str, prefix: str = "kh", policy: CallbackPolicy | None = None
    ) -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        self.metrics = ActorMetrics("kernelhub_callbacks_total")
        self.dispatcher = CallbackDispatcher(
            self.store, policy or CallbackPolicy(), on_outcome=self._outcome
        )
        self._boot = boot(self._start)

    async def _start(self) -> None:
        await self.dispatcher.start()  # positions only: a log that went back costs nothing

    def _outcome(self, outcome: str) -> None:
        self.metrics.inc("kernelhub_callbacks_total", outcome=outcome)

    async def ready(self) -> bool:
        await self._boot
        return True

    async def pending(self) -> int:
        """Deliveries read from the log and not yet done."""
        return self.dispatcher.pending

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()
