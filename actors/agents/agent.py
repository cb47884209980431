"""An agent: registers its capacity, runs kernels through a backend, reports progress to the
session shard, and heartbeats to telemetry.

Heartbeats are not events (design.md): each one refreshes the agent's score in the
``<p>:hb`` sorted set. The liveness monitor turns silence into ``agent_terminated``
(``agent-lost``) and a heartbeat after that into ``agent_started`` (``revived``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from events import AnyPayload, Event, RedisEventStore, events_for_command
from events.catalogue import (
    AgentRegistered,
    AgentStarted,
    KernelCreating,
    KernelStarted,
    KernelTerminated,
    SessionFailure,
    SessionSuccess,
)

from ..background import Background
from ..domain.statuses import KernelStatus
from ..sessions import ShardClient, load_session
from .backends import Backend, KernelLaunch, SimBackend

__all__ = ["Agent", "SimAgent"]


class Agent:
    def __init__(
        self,
        store: RedisEventStore,
        shard: ShardClient,
        agent_id: str,
        capacity: Mapping[str, Decimal | int | str],
        *,
        backend: Backend,
        scaling_group: str = "default",
        stop_grace_s: float = 1.0,
        metrics: Any = None,
    ) -> None:
        self.store = store
        self.shard = shard
        self.agent_id = agent_id
        self.capacity = {k: Decimal(str(v)) for k, v in capacity.items()}
        self.scaling_group = scaling_group
        self.backend = backend
        self.stop_grace_s = stop_grace_s
        self.metrics = metrics
        """An ``ActorMetrics`` when hosted by an actor."""
        self.fail_next_start = False
        """Test hook: the next kernel creation fails as an agent error would."""
        self.heartbeating = True
        """Test hook: a "frozen" agent stops heartbeating."""
        self.background = Background()

    async def on_event(self, event: Event) -> None:
        """The agent's reactions to the log: create the kernels placed on it when their
        session is prepared; stop them when it is destroyed."""
        data: Any = event.data
        if event.type not in ("session_preparing", "session_terminating"):
            return
        session = await load_session(self.store, data.session_id)
        mine = [k for k in session.kernels.values() if k.agent == self.agent_id]
        if not mine:
            return
        if event.type == "session_preparing":
            spec = session.spec or {}
            slots = {k["kernel_id"]: k["requested_slots"] for k in spec.get("kernels", [])}
            launches = [
                KernelLaunch(
                    k.kernel_id, session.session_id,
                    {name: Decimal(v) for name, v in slots.get(str(k.kernel_id), {}).items()},
                    session_type=session.session_type,
                    startup_command=spec.get("startup_command"),
                )
                for k in mine
            ]  # fmt: skip
            self.background.spawn(self.create_kernels(session.session_id, launches))
        else:
            stopping = [k.kernel_id for k in mine if k.status is KernelStatus.TERMINATING]
            if stopping:
                self.background.spawn(
                    self.destroy_kernels(session.session_id, stopping, str(data.reason))
                )

    async def drain(self) -> None:
        await self.background.drain()

    @property
    def stream(self) -> str:
        return f"agent-{self.agent_id}"

    async def register(self) -> None:
        """Announce capacity and liveness."""
        version = await self.store.stream_version(self.stream)
        command = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.agent_id}/start/{version}")
        payloads: list[AnyPayload] = [
            AgentRegistered(agent_id=self.agent_id, scaling_group=self.scaling_group,
                            available_slots=self.capacity, version="kernelhub"),
            AgentStarted(reason="self-started"),
        ]  # fmt: skip
        batch = events_for_command(command, payloads, actor=self.agent_id)
        await self.store.append(self.stream, batch, version)
        await self.heartbeat()

    async def heartbeat(self) -> None:
        if self.heartbeating:
            seconds, micros = await self.store.redis.time()
            await self.store.redis.zadd(
                self.store.keys.heartbeats, {self.agent_id: seconds + micros / 1e6}
            )

    async def create_kernels(self, session_id: uuid.UUID, launches: Iterable[KernelLaunch]) -> None:
        kernels = list(launches)
        if self.fail_next_start:
            self.fail_next_start = False
            await self.shard.start_failed(session_id)
            return
        try:
            for launch in kernels:
                await self.shard.report(
                    KernelCreating(kernel_id=launch.kernel_id, session_id=session_id)
                )
                info = await self.backend.start(launch)
                info["agent"] = self.agent_id
                await self.shard.report(
                    KernelStarted(
                        kernel_id=launch.kernel_id, session_id=session_id, creation_info=info
                    )
                )
        except Exception:
            for launch in kernels:
                await self.backend.stop(launch.kernel_id, self.stop_grace_s)
            await self.shard.start_failed(session_id)
            raise
        batch = [k for k in kernels if k.session_type == "batch"]
        if batch:
            main = batch[0]
            exit_code = await self.backend.wait(main.kernel_id)
            result: SessionSuccess | SessionFailure = (
                SessionSuccess(session_id=session_id, reason="task-done", exit_code=0)
                if exit_code == 0
                else SessionFailure(
                    session_id=session_id, reason="task-failed", exit_code=exit_code
                )
            )
            await self.shard.batch_result(result)

    async def destroy_kernels(
        self, session_id: uuid.UUID, kernel_ids: Iterable[uuid.UUID], reason: str
    ) -> None:
        for kernel_id in kernel_ids:
            exit_code = await self.backend.stop(kernel_id, self.stop_grace_s)
            known = exit_code is not None
            if known and self.metrics is not None:
                self.metrics.inc("kernelhub_kernels_terminated_total", agent=self.agent_id)
            await self.shard.report(KernelTerminated(
                kernel_id=kernel_id, session_id=session_id,
                reason=reason if known else "already-terminated",
                exit_code=exit_code if exit_code is not None else -1,
            ))  # fmt: skip


def SimAgent(
    store: RedisEventStore,
    shard: ShardClient,
    agent_id: str,
    capacity: Mapping[str, Decimal | int | str],
    *,
    scaling_group: str = "default",
    start_delay: float = 0.02,
    stop_delay: float = 0.01,
    batch_exit_code: int = 0,
    **options: Any,
) -> Agent:
    """An agent on the simulated backend."""
    backend = SimBackend(start_delay, stop_delay, batch_exit_code)
    return Agent(
        store, shard, agent_id, capacity, backend=backend, scaling_group=scaling_group, **options
    )
