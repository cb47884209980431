"""The write side wired together in one process: shard, scheduler, agents, projector.

For tests and tools that want the whole write side without Ray: every reaction is driven
by the log (one subscription), exactly as in the actors — a ``session_scheduled`` makes the shard
prepare, a ``session_preparing`` makes the agents create kernels, kernel reports flow back
to the shard, terminations release the ledger, and the scheduler wakes on the leading edge
of anything that may free or need capacity (plus a slow safety tick). Session callbacks
follow the log on their own subscription and checkpoint (``callbacks``), as their actor does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from actors.agents.accelerators import Accelerators
from actors.agents.agent import Agent, SimAgent, dispatch
from actors.agents.backends.base import Backend
from actors.domain.callbacks import CallbackPolicy
from actors.domain.idle import IdleConfig
from actors.domain.liveness import DEFAULT_HEARTBEAT_INTERVAL_S, DEFAULT_LOST_TIMEOUT_S
from actors.idle.reaper import REAPER_REACTS_TO, Reaper
from actors.runtime.callbacks import CallbackDispatcher
from actors.scheduling.liveness import LivenessMonitor
from actors.scheduling.scheduler import WAKES_SCHEDULER, Scheduler
from actors.sessions.execution import LocalAgent, SessionExecution
from actors.sessions.shard import SessionShard
from events import Event, RedisEventStore, Subscription
from projections.models import default_projections
from projections.runtime import Projector

__all__ = ["LocalCluster"]

log = structlog.get_logger(__name__)


class LocalCluster:
    def __init__(
        self,
        store: RedisEventStore,
        agents: Sequence[tuple[str, dict[str, Any]]] = (
            ("i-sim0", {"cpu": 16, "mem": 64 * 2**30}),
        ),
        *,
        scaling_group: str = "default",
        safety_tick_s: float = 2.0,
        backend: Callable[[str], Backend] | None = None,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        lost_timeout_s: float = DEFAULT_LOST_TIMEOUT_S,
        terminate_lost_after_s: float | None = None,
        idle: IdleConfig | None = None,
        accelerators: Callable[[str], Accelerators | None] | None = None,
        agent_class: type[Agent] = Agent,
        callback_policy: CallbackPolicy | None = None,
        **agent_options: Any,
    ) -> None:
        self.store = store
        self.shard = SessionShard(store)
        self.scheduler = Scheduler(store, self.shard, scaling_group)
        self.agents: dict[str, Agent] = {
            agent_id: (
                agent_class(
                    store,
                    self.shard,
                    agent_id,
                    capacity,
                    backend=backend(agent_id),
                    scaling_group=scaling_group,
                    accelerators=accelerators(agent_id) if accelerators else None,
                    **agent_options,
                )
                if backend is not None
                else SimAgent(
                    store,
                    self.shard,
                    agent_id,
                    capacity,
                    scaling_group=scaling_group,
                    accelerators=accelerators(agent_id) if accelerators else None,
                    agent_class=agent_class,
                    **agent_options,
                )
            )
            for agent_id, capacity in agents
        }
        self.projector = Projector(
            store, default_projections(), on_commit=self._committed, block_ms=100
        )
        self.safety_tick_s = safety_tick_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.liveness = LivenessMonitor(
            store,
            lost_timeout_s=lost_timeout_s,
            terminate_after_s=terminate_lost_after_s,
            shard=self.shard,
        )
        self.reaper = Reaper(store, self.shard, idle, max_sleep_s=0.2)
        self.execution = SessionExecution(
            store, lambda agent_id: LocalAgent(self.agents[agent_id].execution)
        )
        self.callbacks = CallbackDispatcher(store, callback_policy or CallbackPolicy())
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self._subscription: Subscription | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> LocalCluster:
        await self.projector.load()
        for agent in self.agents.values():
            await agent.register()
        self._subscription = self.store.subscribe(await self.store.head(), block_ms=100)
        await self.callbacks.start()
        self._tasks = [
            asyncio.create_task(self.projector.run(self._stop), name="projector"),
            asyncio.create_task(self._dispatch(), name="dispatcher"),
            asyncio.create_task(self._schedule_loop(), name="scheduler"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeats"),
            asyncio.create_task(self.reaper.run(self._stop), name="reaper"),
            asyncio.create_task(self._sample_loop(), name="utilization"),
        ]
        self._wake.set()
        return self

    async def __aenter__(self) -> LocalCluster:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._subscription is not None:
            await self._subscription.aclose()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.callbacks.stop()
        for agent in self.agents.values():
            await agent.drain()
            await agent.close(stop_kernels=True)  # a local cluster's kernels end with it

    def _committed(self, name: str, events: Sequence[Any], _at: float) -> None:
        if name == "sessions" or name == "agents":
            if any(e.type in WAKES_SCHEDULER for e in events):
                self._wake.set()

    async def _heartbeat_loop(self) -> None:
        """Agents beat, and the monitor judges, every interval."""
        while not self._stop.is_set():
            for agent in self.agents.values():
                await agent.heartbeat()
            try:
                await self.liveness.check()
            except Exception:
                log.exception("liveness check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.heartbeat_interval_s)

    async def _sample_loop(self) -> None:
        """Utilization samples, at the idle configuration's sample interval."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.reaper.config.utilization.interval)
            for agent in self.agents.values():
                try:
                    await agent.sample_utilization()
                except Exception:
                    log.exception("utilization sample failed", agent=agent.agent_id)

    async def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.safety_tick_s)
            self._wake.clear()
            try:
                await self.scheduler.run_pass()
            except Exception:
                log.exception("scheduling pass failed; retrying on the next wake-up")

    # ---- reactions -----------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        assert self._subscription is not None
        async for event in self._subscription:
            try:
                await self._react(event)
            except Exception:
                log.exception("reaction failed", event_type=event.type, position=event.position)

    async def _react(self, event: Event) -> None:
        await self.scheduler.on_event(event)
        await self.shard.on_event(event)
        if event.type in REAPER_REACTS_TO:
            await self.reaper.on_events([event])
        await dispatch(self.shard, self.agents, event)
