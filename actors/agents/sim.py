"""Simulated agents: the agent protocol with configurable start/stop delays and no
containers, so scheduling, lifecycles and scale can be exercised anywhere."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal

from events import AnyPayload, RedisEventStore, events_for_command
from events.catalogue import (
    AgentRegistered,
    AgentStarted,
    KernelCreating,
    KernelStarted,
    KernelTerminated,
    SessionFailure,
    SessionSuccess,
)

from ..sessions import SessionShard

__all__ = ["SimAgent"]


class SimAgent:
    def __init__(
        self,
        store: RedisEventStore,
        shard: SessionShard,
        agent_id: str,
        capacity: Mapping[str, Decimal | int | str],
        *,
        scaling_group: str = "default",
        start_delay: float = 0.02,
        stop_delay: float = 0.01,
        batch_exit_code: int = 0,
    ) -> None:
        self.store = store
        self.shard = shard
        self.agent_id = agent_id
        self.capacity = {k: Decimal(str(v)) for k, v in capacity.items()}
        self.scaling_group = scaling_group
        self.start_delay = start_delay
        self.stop_delay = stop_delay
        self.batch_exit_code = batch_exit_code
        self.fail_next_start = False
        """Test hook: the next kernel creation fails as an agent error would."""
        self.running: set[uuid.UUID] = set()

    @property
    def stream(self) -> str:
        return f"agent-{self.agent_id}"

    async def register(self) -> None:
        """Announce capacity and liveness (only what changed, so restarts are cheap)."""
        version = await self.store.stream_version(self.stream)
        command = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.agent_id}/start/{version}")
        payloads: list[AnyPayload] = [
            AgentRegistered(agent_id=self.agent_id, scaling_group=self.scaling_group,
                            available_slots=self.capacity, version="sim"),
            AgentStarted(reason="self-started"),
        ]  # fmt: skip
        await self.store.append(
            self.stream, events_for_command(command, payloads, actor=self.agent_id), version
        )

    async def create_kernels(
        self, session_id: uuid.UUID, kernel_ids: Iterable[uuid.UUID], *, batch: bool = False
    ) -> None:
        kernels = list(kernel_ids)
        await asyncio.sleep(self.start_delay)
        if self.fail_next_start:
            self.fail_next_start = False
            await self.shard.start_failed(session_id)
            return
        for kernel_id in kernels:
            await self.shard.report(KernelCreating(kernel_id=kernel_id, session_id=session_id))
            info = {
                "container_id": kernel_id.hex,
                "kernel_host": "127.0.0.1",
                "agent": self.agent_id,
            }
            await self.shard.report(
                KernelStarted(kernel_id=kernel_id, session_id=session_id, creation_info=info)
            )
            self.running.add(kernel_id)
        if batch:
            await asyncio.sleep(self.start_delay)
            result: SessionSuccess | SessionFailure = (
                SessionSuccess(session_id=session_id, reason="task-done", exit_code=0)
                if self.batch_exit_code == 0
                else SessionFailure(
                    session_id=session_id, reason="task-failed", exit_code=self.batch_exit_code
                )
            )
            await self.shard.batch_result(result)

    async def destroy_kernels(
        self, session_id: uuid.UUID, kernel_ids: Iterable[uuid.UUID], reason: str
    ) -> None:
        await asyncio.sleep(self.stop_delay)
        for kernel_id in kernel_ids:
            known = kernel_id in self.running
            self.running.discard(kernel_id)
            await self.shard.report(
                KernelTerminated(
                    kernel_id=kernel_id,
                    session_id=session_id,
                    reason=reason if known else "already-terminated",
                    exit_code=0 if known else -1,
                )
            )
