"""The write side on Ray: one actor per role, each following the log on its own.

``sessions:<n>`` hosts a :class:`SessionShard`, ``scheduler:<group>`` a :class:`Scheduler`
(and the liveness monitor), ``agents:<k>`` one or more :class:`Agent`\\s, ``projector`` the
read models. They share nothing but Redis: every actor rebuilds its state from the log when
(re)started, so ``max_restarts=-1`` is all the recovery there is. Calls between actors
carry command ids, so a retry after a ``RayActorError`` has one effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import ray
import structlog

from events import Event, RedisEventStore, Subscription

from .agents.agent import Agent
from .agents.backends import Backend, ProcessBackend, SimBackend
from .domain.liveness import DEFAULT_HEARTBEAT_INTERVAL_S, DEFAULT_LOST_TIMEOUT_S
from .domain.session_aggregate import KernelReport, SessionAggregate
from .liveness import LivenessMonitor
from .metrics import ActorMetrics
from .scheduler import WAKES_SCHEDULER, Scheduler
from .sessions import SessionShard, load_session

__all__ = ["NAMESPACE", "RemoteShard", "start_actors"]

NAMESPACE = "kernelhub"

log = structlog.get_logger(__name__)


def _boot(coro: Any) -> asyncio.Task[None]:
    """Start an actor's loops from its constructor. Ray runs async actors' ``__init__`` in
    their running event loop, so a restarted actor (``max_restarts=-1``) resumes its work
    by itself, without anyone having to call it first."""
    return asyncio.get_event_loop().create_task(coro)


class _Follower:
    """Runs ``self.react`` for every event, resuming after a restart from the last position
    it recorded: reactions are at-least-once, and idempotent (their command ids derive from
    the event's id), so nothing an actor was told before it died is lost."""

    store: RedisEventStore
    follower_name: str
    _subscription: Subscription | None = None
    _task: asyncio.Task[None] | None = None

    async def _start_following(self) -> None:
        key = self.store.keys.follower(self.follower_name)
        recorded = await self.store.redis.get(key)
        after = recorded.decode() if isinstance(recorded, bytes) else recorded
        if after is None:
            after = await self.store.head()
            await self.store.redis.set(key, after)
        self._subscription = self.store.subscribe(after, block_ms=200)
        self._task = asyncio.create_task(self._follow(key))

    async def _follow(self, key: str) -> None:
        assert self._subscription is not None
        async for event in self._subscription:
            try:
                await self.react(event)
            except Exception:  # one failed reaction must not stop the actor following the log
                log.exception("reaction failed", actor=self.follower_name, position=event.position)
            await self.store.redis.set(key, event.position)

    async def react(self, event: Event) -> None:
        raise NotImplementedError


@ray.remote(max_restarts=-1)
class SessionsActor(_Follower):
    def __init__(self, redis_url: str, prefix: str = "kh", name: str = "sessions:0") -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        self.follower_name = name
        self.shard = SessionShard(self.store, actor=name)
        self.metrics = ActorMetrics(
            "kernelhub_session_commands_total", "kernelhub_session_events_total"
        )
        self._boot = _boot(self._start_following())

    def _count(self, command: str, events: list[Any]) -> None:
        self.metrics.inc("kernelhub_session_commands_total", command=command)
        for event in events:
            self.metrics.inc("kernelhub_session_events_total", type=event.type)

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()

    async def ready(self) -> bool:
        await asyncio.shield(self._boot)
        return True

    async def react(self, event: Event) -> None:
        await self.shard.on_event(event)

    async def create(self, **options: Any) -> str:
        session_id = str(await self.shard.create(**options))
        self.metrics.inc("kernelhub_session_commands_total", command="create")
        self.metrics.inc("kernelhub_session_events_total", type="session_enqueued")
        return session_id

    async def destroy(
        self,
        session_id: str,
        forced: bool = False,
        reason: str | None = None,
        command_id: str | None = None,
    ) -> list[str]:
        command = uuid.UUID(command_id) if command_id else None
        events = await self.shard.destroy(
            uuid.UUID(session_id), forced=forced, reason=reason, command_id=command
        )
        self._count("destroy", events)
        return [e.type for e in events]

    async def report(self, report: KernelReport, command_id: uuid.UUID | None = None) -> None:
        self._count("report", await self.shard.report(report, command_id=command_id))

    async def start_failed(
        self, session_id: uuid.UUID, command_id: uuid.UUID | None = None
    ) -> None:
        await self.shard.start_failed(session_id, command_id=command_id)

    async def batch_result(self, result: Any, command_id: uuid.UUID | None = None) -> None:
        await self.shard.batch_result(result, command_id=command_id)

    async def scheduling_failed(self, failure: Any, command_id: uuid.UUID | None = None) -> None:
        await self.shard.scheduling_failed(failure, command_id=command_id)

    async def status(self, session_id: str) -> str:
        return (await self.shard.get(uuid.UUID(session_id))).status.name


class RemoteShard:
    """The shard as other actors use it: reads fold the stream locally, writes go to the
    owning actor with a command id fixed before the first attempt."""

    def __init__(self, store: RedisEventStore, handle: Any) -> None:
        self.store = store
        self.handle = handle

    async def get(self, session_id: uuid.UUID) -> SessionAggregate:
        return await load_session(self.store, session_id)

    async def report(
        self, report: KernelReport, *, command_id: uuid.UUID | None = None
    ) -> list[Any]:
        await self.handle.report.remote(report, command_id or uuid.uuid4())
        return []

    async def start_failed(
        self, session_id: uuid.UUID, *, command_id: uuid.UUID | None = None
    ) -> list[Any]:
        await self.handle.start_failed.remote(session_id, command_id or uuid.uuid4())
        return []

    async def batch_result(self, result: Any, *, command_id: uuid.UUID | None = None) -> list[Any]:
        await self.handle.batch_result.remote(result, command_id or uuid.uuid4())
        return []

    async def scheduling_failed(
        self, failure: Any, *, command_id: uuid.UUID | None = None
    ) -> list[Any]:
        await self.handle.scheduling_failed.remote(failure, command_id or uuid.uuid4())
        return []

    async def destroy(
        self,
        session_id: uuid.UUID,
        *,
        forced: bool = False,
        reason: str | None = None,
        command_id: uuid.UUID | None = None,
    ) -> list[Any]:
        command = str(command_id or uuid.uuid4())
        await self.handle.destroy.remote(str(session_id), forced, reason, command)
        return []


@ray.remote(max_restarts=-1)
class SchedulerActor(_Follower):
    def __init__(
        self,
        redis_url: str,
        sessions: Any,
        prefix: str = "kh",
        scaling_group: str = "default",
        safety_tick_s: float = 2.0,
        lost_timeout_s: float = DEFAULT_LOST_TIMEOUT_S,
        liveness_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
    ) -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        shard = RemoteShard(self.store, sessions)
        self.follower_name = f"scheduler:{scaling_group}"
        self.scheduler = Scheduler(self.store, shard, scaling_group)
        self.liveness = LivenessMonitor(self.store, lost_timeout_s=lost_timeout_s)
        self.safety_tick_s = safety_tick_s
        self.liveness_interval_s = liveness_interval_s
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self.group = scaling_group
        self.metrics = ActorMetrics(
            "kernelhub_scheduling_decisions_total", "kernelhub_scheduling_pass_seconds",
            "kernelhub_pending_sessions",
        )  # fmt: skip
        self._boot = _boot(self._start())

    async def _start(self) -> None:
        await self._start_following()
        self._loops = [asyncio.create_task(self._schedule()), asyncio.create_task(self._watch())]
        self._wake.set()

    async def ready(self) -> bool:
        await asyncio.shield(self._boot)
        return True

    async def react(self, event: Event) -> None:
        await self.scheduler.on_event(event)
        if event.type in WAKES_SCHEDULER:
            await self._projection_reached(event.position)
            self._wake.set()

    async def _projection_reached(self, position: str, timeout_s: float = 2.0) -> None:
        """The pass reads the pending queue from the sessions projection: let it catch up to
        the event that woke us (bounded: the safety tick covers a stalled projector)."""
        from events import position_key

        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            status_key = self.store.keys.projection_status("sessions")
            raw = await self.store.redis.hget(status_key, "checkpoint")
            reached = raw.decode() if isinstance(raw, bytes) else raw
            if reached is not None and position_key(reached) >= position_key(position):
                return
            await asyncio.sleep(0.01)

    async def _schedule(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.safety_tick_s)
            self._wake.clear()
            try:
                await self.run_pass()
            except Exception:
                log.exception("scheduling pass failed; retrying on the next wake-up")

    async def _watch(self) -> None:
        while True:
            try:
                await self.liveness.check()
            except Exception:
                log.exception("liveness check failed")
            await asyncio.sleep(self.liveness_interval_s)

    async def run_pass(self) -> int:
        started = time.perf_counter()
        scheduled = await self.scheduler.run_pass()
        group = self.group
        self.metrics.observe("kernelhub_scheduling_pass_seconds", time.perf_counter() - started,
                             scaling_group=group)  # fmt: skip
        self.metrics.set(
            "kernelhub_pending_sessions", self.scheduler.last_pending, scaling_group=group
        )
        if scheduled:
            self.metrics.inc("kernelhub_scheduling_decisions_total", scheduled, scaling_group=group)
        return scheduled

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()


@ray.remote(max_restarts=-1)
class AgentsActor(_Follower):
    """One real agent (process backend) or many simulated ones, in one actor."""

    def __init__(
        self,
        redis_url: str,
        sessions: Any,
        agents: list[tuple[str, dict[str, Any]]],
        prefix: str = "kh",
        backend: str = "sim",
        work_root: str = "/tmp/kernelhub-kernels",
        scaling_group: str = "default",
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
    ) -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        shard = RemoteShard(self.store, sessions)
        self.follower_name = "agents:" + ",".join(agent_id for agent_id, _ in agents)

        def make_backend(agent_id: str) -> Backend:
            if backend == "process":
                return ProcessBackend(Path(work_root) / agent_id)
            return SimBackend()

        self.metrics = ActorMetrics(
            "kernelhub_kernels_started_total", "kernelhub_kernels_terminated_total"
        )
        self.agents = [
            Agent(
                self.store,
                shard,
                agent_id,
                {k: Decimal(str(v)) for k, v in capacity.items()},
                backend=make_backend(agent_id),
                scaling_group=scaling_group,
                metrics=self.metrics,
            )
            for agent_id, capacity in agents
        ]
        self.heartbeat_interval_s = heartbeat_interval_s
        self._beats: asyncio.Task[None] | None = None
        self._boot = _boot(self._start())

    async def _start(self) -> None:
        await self._start_following()
        for agent in self.agents:
            await agent.register()
        self._beats = asyncio.create_task(self._heartbeat())

    async def ready(self) -> bool:
        await asyncio.shield(self._boot)
        return True

    async def react(self, event: Event) -> None:
        for agent in self.agents:
            await agent.on_event(event)

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()

    async def _heartbeat(self) -> None:
        while True:
            for agent in self.agents:
                with contextlib.suppress(Exception):
                    await agent.heartbeat()
            await asyncio.sleep(self.heartbeat_interval_s)


@ray.remote(max_restarts=-1)
class ProjectorActor:
    def __init__(self, redis_url: str, prefix: str = "kh") -> None:
        from projections.models import default_projections
        from projections.runtime import Projector

        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        self.metrics = ActorMetrics("kernelhub_projection_lag_ms")
        self.projector = Projector(self.store, default_projections(), block_ms=100,
                                   on_commit=self._committed)  # fmt: skip
        self._task: asyncio.Task[None] | None = None
        self._boot = _boot(self._start())

    def _committed(self, name: str, events: Any, committed_at: float) -> None:
        lag = committed_at * 1000 - events[-1].position_ms
        self.metrics.set("kernelhub_projection_lag_ms", max(0.0, lag), projection=name)

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()

    async def _start(self) -> None:
        await self.projector.load()
        self._task = asyncio.create_task(self.projector.run())

    async def ready(self) -> bool:
        await asyncio.shield(self._boot)
        return True


def start_actors(
    redis_url: str,
    *,
    prefix: str = "kh",
    namespace: str = NAMESPACE,
    detached: bool = False,
    agents: list[tuple[str, dict[str, Any]]] | None = None,
    backend: str = "sim",
    work_root: str = "/tmp/kernelhub-kernels",
    safety_tick_s: float = 2.0,
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
    lost_timeout_s: float = DEFAULT_LOST_TIMEOUT_S,
) -> dict[str, Any]:
    """Create (or find) the named actors and wait until each has rebuilt from the log."""
    lifetime = "detached" if detached else None
    agents = agents or [("i-local", {"cpu": 4, "mem": 8 * 2**30})]

    def named(cls: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        return cls.options(
            name=name, namespace=namespace, lifetime=lifetime, get_if_exists=True, num_cpus=0
        ).remote(*args, **kwargs)

    projector = named(ProjectorActor, "projector", redis_url, prefix)
    sessions = named(SessionsActor, "sessions:0", redis_url, prefix, "sessions:0")
    scheduler = named(
        SchedulerActor,
        "scheduler:default",
        redis_url,
        sessions,
        prefix,
        "default",
        safety_tick_s,
        lost_timeout_s,
        heartbeat_interval_s,
    )
    agent_host = named(
        AgentsActor,
        "agents:0",
        redis_url,
        sessions,
        agents,
        prefix,
        backend,
        work_root,
        "default",
        heartbeat_interval_s,
    )
    handles = {
        "projector": projector,
        "sessions": sessions,
        "scheduler": scheduler,
        "agents": agent_host,
    }
    ray.get([h.ready.remote() for h in handles.values()])
    return handles
