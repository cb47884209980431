"""``scheduler:<group>``: the scheduler of one scaling group
(see :mod:`actors.scheduling.scheduler`), with the agent liveness monitor, as a Ray actor.

Wake-ups are leading-edge: an event that may bring work or room (``WAKES_SCHEDULER``) sets
a flag the pass loop is waiting on, so a pass starts as soon as the previous one ended;
events arriving during a pass coalesce into the next one. A slow safety tick covers
anything missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import ray
import structlog

from actors.runtime.metrics import ActorMetrics
from actors.runtime.outage import Outages
from actors.runtime.restarts import RestartWatch
from actors.scheduling.liveness import LivenessMonitor
from actors.scheduling.scheduler import SCHEDULER_REACTS_TO, WAKES_SCHEDULER, Scheduler
from actors.sessions.routing import ShardRouter
from events import Event, RedisEventStore
from events.server import log_unreachable

from ..domain.liveness import DEFAULT_HEARTBEAT_INTERVAL_S, DEFAULT_LOST_TIMEOUT_S
from ._follower import Follower, boot
from ._traced import traced_actor

__all__ = ["SchedulerActor"]

log = structlog.get_logger(__name__)


@ray.remote(max_restarts=-1)
@traced_actor
class SchedulerActor(Follower):
    def __init__(
        self,
        redis_url: str,
        shards: tuple[int, str],
        prefix: str = "kh",
        scaling_group: str = "default",
        safety_tick_s: float = 2.0,
        lost_timeout_s: float = DEFAULT_LOST_TIMEOUT_S,
        liveness_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        terminate_lost_after_s: float | None = None,
    ) -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        router = ShardRouter.named(self.store, *shards)  # (count, namespace)
        self.follower_name = f"scheduler:{scaling_group}"
        self.interests = SCHEDULER_REACTS_TO
        self.scheduler = Scheduler(self.store, router, scaling_group)
        self.scheduler.follows_log = True  # react_many feeds it every event it cares for
        self.liveness = LivenessMonitor(
            self.store,
            lost_timeout_s=lost_timeout_s,
            terminate_after_s=terminate_lost_after_s,
            shard=router,
        )
        self.safety_tick_s = safety_tick_s
        self.liveness_interval_s = min(liveness_interval_s, lost_timeout_s / 2)
        self._wake = asyncio.Event()
        self._paused = False
        self._reach: str | None = None
        self._loops: list[asyncio.Task[None]] = []
        self.group = scaling_group
        self.metrics = ActorMetrics(
            "kernelhub_scheduling_decisions_total",
            "kernelhub_scheduling_pass_seconds",
            "kernelhub_pending_sessions",
            "kernelhub_scheduling_passes_total",
        )
        self.restarts = RestartWatch(self.store, self._reload, name=self.follower_name)
        self._boot = boot(self._start, watch=self.restarts)

    async def _start(self) -> None:
        await self._start_following()
        if not self._loops:
            self._loops = [
                asyncio.create_task(self._schedule()),
                asyncio.create_task(self._watch()),
            ]
        self._wake.set()

    async def _reload(self) -> None:
        """The log changed under the scheduler: the ledger, the agents and the sessions it
        knew are read again from the log by the next pass, which starts now."""
        self.scheduler.forget()
        self.liveness.forget()
        self._reach = None
        self._wake.set()

    async def react_many(self, events: list[Event]) -> None:
        waking = [e for e in events if e.type in WAKES_SCHEDULER]
        if waking:
            self._reach = waking[-1].position  # the pass waits for the read model to show it
            self._wake.set()
        try:
            await self.scheduler.on_events(events)
        except Exception as exc:
            if log_unreachable(exc):
                raise  # the follower reacts again once the log is back: no release is lost
            log.exception("ledger reaction failed", position=events[-1].position)

    async def _schedule(self) -> None:
        outages = Outages("scheduling pass", scaling_group=self.group)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.safety_tick_s)
            self._wake.clear()
            if self._paused:
                continue
            try:
                await self.run_pass()
            except Exception as exc:  # retried on the next wake-up (or after the outage)
                await asyncio.sleep(outages.failed(exc))
                if outages.down:
                    self._wake.set()  # try again as soon as the backoff allows
            else:
                outages.succeeded()

    async def _watch(self) -> None:
        outages = Outages("liveness check", scaling_group=self.group)
        while True:
            try:
                await self.liveness.check()
            except Exception as exc:
                await asyncio.sleep(outages.failed(exc))
                if outages.down:
                    self.liveness.deaf()  # the agents could not beat either
            else:
                outages.succeeded()
            await asyncio.sleep(self.liveness_interval_s)

    async def set_paused(self, paused: bool) -> None:
        """Hold scheduling (an operator's freeze; benchmarks enqueue a queue first): while
        paused nothing is placed; resuming runs a pass at once."""
        self._paused = paused
        if not paused:
            self._wake.set()

    async def run_pass(self) -> int:
        started = time.perf_counter()
        reach, self._reach = self._reach, None
        scheduled = await self.scheduler.run_pass(reach=reach)
        group = self.group
        self.metrics.inc("kernelhub_scheduling_passes_total", scaling_group=group)
        self.metrics.observe(
            "kernelhub_scheduling_pass_seconds", time.perf_counter() - started, scaling_group=group
        )
        self.metrics.set(
            "kernelhub_pending_sessions", self.scheduler.last_pending, scaling_group=group
        )
        if scheduled:
            self.metrics.inc("kernelhub_scheduling_decisions_total", scheduled, scaling_group=group)
        return scheduled

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()
