"""Agents as Ray actors: ``agent:<id>`` for a real node (one agent, process or Docker
backend), ``agents-sim:<k>`` hosting many simulated agents in one process (one Ray process
per simulated agent would be unaffordable; docs/architecture.md, The actors).

Each agent is ``(agent id, spec)``: the spec is its slots (``cpu``, ``mem``) and, under
``accelerators``, its accelerator plugins' configuration (``[{"plugin": "nvml"}]``,
``[{"plugin": "sim", "devices": 2}]``), whose devices add their own slots."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import ray
import structlog

from actors.runtime.metrics import ActorMetrics
from actors.runtime.outage import Outages
from actors.runtime.restarts import RestartWatch
from actors.sessions.execution import KERNEL_OPERATIONS
from actors.sessions.routing import ShardRouter
from events import Event, RedisEventStore
from events.server import log_unreachable

from ..agents.accelerators import make_accelerators
from ..agents.agent import AGENTS_REACT_TO, Agent, dispatch
from ..agents.backends import make_backend
from ..domain.liveness import DEFAULT_HEARTBEAT_INTERVAL_S
from ._follower import Follower, boot
from ._traced import traced_actor

__all__ = ["DEFAULT_RECONCILE_INTERVAL_S", "AgentsActor"]

log = structlog.get_logger(__name__)

DEFAULT_RECONCILE_INTERVAL_S = 30.0
BEATS_PER_ROUND_TRIP = 250
"""Agents whose heartbeats share one pipeline (bounded: a pipeline's replies are buffered)."""


@ray.remote(max_restarts=-1)
@traced_actor
class AgentsActor(Follower):
    def __init__(
        self,
        name: str,
        redis_url: str,
        shards: tuple[int, str],
        agents: list[tuple[str, dict[str, Any]]],
        prefix: str = "kh",
        backend: str = "sim",
        work_root: str = "/tmp/kernelhub-kernels",
        scaling_group: str = "default",
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S,
        stop_grace_s: float = 1.0,
        sample_interval_s: float = 15.0,
    ) -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        self.shard = router = ShardRouter.named(self.store, *shards)  # (count, namespace)
        self.follower_name = name
        self.interests = AGENTS_REACT_TO

        self.metrics = ActorMetrics(
            "kernelhub_kernels_started_total", "kernelhub_kernels_terminated_total"
        )
        self.agents = {
            agent_id: Agent(
                self.store,
                router,
                agent_id,
                {k: Decimal(str(v)) for k, v in spec.items() if k != "accelerators"},
                backend=make_backend(backend, work_root, agent_id),
                scaling_group=scaling_group,
                metrics=self.metrics,
                stop_grace_s=stop_grace_s,
                accelerators=make_accelerators(spec.get("accelerators")),
            )
            for agent_id, spec in agents
        }
        self.heartbeat_interval_s = heartbeat_interval_s
        self.reconcile_interval_s = reconcile_interval_s
        self.sample_interval_s = sample_interval_s
        self._loops: list[asyncio.Task[None]] = []
        self._registered: set[str] = set()
        self.restarts = RestartWatch(self.store, self._reload, name=name)
        self._boot = boot(self._start, watch=self.restarts)

    async def _start(self) -> None:
        await self._start_following()
        for agent_id, agent in self.agents.items():
            if agent_id not in self._registered:  # a start retried after an outage
                await agent.register()
                self._registered.add(agent_id)
        if not self._loops:
            self._loops = [
                asyncio.create_task(self._heartbeat()),
                asyncio.create_task(self._reconcile()),
                asyncio.create_task(self._sample()),
            ]

    async def _reload(self) -> None:
        """The log changed under the agents (Redis restarted and may have lost its last
        second): an agent whose registration is gone announces itself again. What runs
        here against what the log now says is the reconciliation's to judge."""
        for agent in self.agents.values():
            await agent.announce_if_lost()

    async def react(self, event: Event) -> None:
        await dispatch(self.shard, self.agents, event)

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()

    async def node_id(self) -> str:
        """The Ray node this host runs on (a node's agent is pinned there)."""
        return str(ray.get_runtime_context().get_node_id())

    async def agent_ids(self) -> list[str]:
        return sorted(self.agents)

    async def set_schedulable(self, agent_id: str, schedulable: bool) -> bool:
        """Drain (or undrain) one of the hosted agents."""
        return await self._agent(agent_id).set_schedulable(schedulable)

    async def reconcile(self, agent_id: str) -> dict[str, list[str]]:
        acted = await self._agent(agent_id).reconcile()
        return {kind: sorted(str(k) for k in ids) for kind, ids in acted.items()}

    async def running(self, agent_id: str) -> list[str]:
        return sorted(str(k) for k in self._agent(agent_id).backend.running())

    async def kernel_call(self, agent_id: str, method: str, kernel_id: Any, *args: Any) -> Any:
        """A user's operation on a kernel of a hosted agent (execute, files, logs, ...;
        :data:`~actors.sessions.execution.KERNEL_OPERATIONS`)."""
        if method not in KERNEL_OPERATIONS:
            raise ValueError(f"not a kernel operation: {method}")
        return await getattr(self._agent(agent_id).execution, method)(kernel_id, *args)

    def _agent(self, agent_id: str) -> Agent:
        try:
            return self.agents[agent_id]
        except KeyError:
            raise ValueError(f"{self.follower_name} hosts no agent {agent_id!r}") from None

    async def _each_agent(self, what: str, step: Any, outages: Outages) -> float:
        """``step(agent)`` for every hosted agent; the seconds to wait before the next round
        beyond its interval. The log being away stops the round (every other agent would
        fail the same way; one warning for the outage, not one per agent and tick); any
        other failure is one agent's, logged, and the others go on."""
        for agent in self.agents.values():
            try:
                await step(agent)
            except Exception as exc:
                if log_unreachable(exc):
                    return outages.failed(exc)
                log.exception(f"{what} failed", agent=agent.agent_id)
        outages.succeeded()
        return 0.0

    async def _heartbeat(self) -> None:
        outages = Outages("heartbeats", host=self.follower_name)
        while True:
            try:
                await self._beat_all()
            except Exception as exc:
                extra = outages.failed(exc)
            else:
                outages.succeeded()
                extra = 0.0
            await asyncio.sleep(self.heartbeat_interval_s + extra)

    async def _beat_all(self) -> None:
        """Every hosted agent's heartbeat at one server time, :data:`BEATS_PER_ROUND_TRIP`
        agents per round trip (a host of a thousand simulated agents made two thousand
        round trips per interval: a fifth of its CPU). An agent whose stats cannot be read
        is logged and skipped; the others beat."""
        now = await self.store.clock.now()
        beats: list[tuple[str, dict[str, str]]] = []
        ttl_s = 60
        for agent in self.agents.values():
            try:
                beats.append((agent.agent_id, agent.telemetry.live_stats(now)))
                ttl_s = agent.telemetry.stats_ttl_s
            except Exception:
                log.exception("heartbeat failed", agent=agent.agent_id)
        for first in range(0, len(beats), BEATS_PER_ROUND_TRIP):
            chunk = beats[first : first + BEATS_PER_ROUND_TRIP]
            await self.store.telemetry.beat_many(now, chunk, ttl_s)

    async def _sample(self) -> None:
        outages = Outages("utilization samples", host=self.follower_name)
        while True:
            await asyncio.sleep(self.sample_interval_s)
            await self._each_agent("utilization sample", lambda a: a.sample_utilization(), outages)

    async def _reconcile(self) -> None:
        outages = Outages("reconciliation", host=self.follower_name)
        while True:
            await asyncio.sleep(self.reconcile_interval_s)
            await self._each_agent("reconciliation", lambda a: a.reconcile(), outages)
