"""An agent's telemetry: heartbeats and utilization samples, never events.

Each heartbeat refreshes the agent's score in the ``<p>:hb`` sorted set and writes each
running kernel's live stats to ``<p>:stat:<kernel>`` (TTL'd). The liveness monitor turns
silence into ``agent_terminated`` (``agent-lost``) and a heartbeat after that into
``agent_started`` (``revived``). Every sample interval each running kernel's stats become a
utilization sample (:mod:`.utilization`) in ``<p>:idle:util:<kernel>``, for the idle checks,
and the agent's devices their live stats in ``<p>:stat:agent:<agent>:devices``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal

from events import RedisEventStore, canonical_dumps
from events.telemetry import DeviceStats

from .accelerators import Accelerators
from .backends.base import Backend
from .utilization import UtilizationSampler

__all__ = ["AgentTelemetry"]

_UTIL_TTL_S = 3600


class AgentTelemetry:
    def __init__(
        self,
        store: RedisEventStore,
        agent_id: str,
        backend: Backend,
        accelerators: Accelerators,
        slots: Mapping[uuid.UUID, Mapping[str, Decimal]],
    ) -> None:
        self.store = store
        self.agent_id = agent_id
        self.backend = backend
        self.accelerators = accelerators
        self.slots = slots
        """What each kernel started here was allocated (utilization is a share of it)."""
        self.stats_ttl_s = 60
        self.sampler = UtilizationSampler()

    def forget(self, kernel_id: uuid.UUID) -> None:
        """A kernel stopped (or restarted): its next sample starts afresh."""
        self.sampler.forget(kernel_id)

    async def heartbeat(self) -> None:
        now = await self.store.clock.now()
        await self.store.telemetry.beat(self.agent_id, now, self.live_stats(now), self.stats_ttl_s)

    def live_stats(self, now: float) -> dict[str, str]:
        """What a heartbeat at ``now`` (server time) carries: each running kernel's live
        stats (kernel id -> JSON)."""
        stats_of: dict[str, str] = {}
        for kernel_id in self.backend.running():
            stats = self.backend.stats(kernel_id)
            if stats is not None:
                sample = {**stats, "at": int(now), "agent": self.agent_id}
                stats_of[str(kernel_id)] = canonical_dumps(sample)
        return stats_of

    async def sample_utilization(self) -> int:
        """One utilization sample of every running kernel, to telemetry; returns how many."""
        now = await self.store.clock.now()
        sampled: list[uuid.UUID] = []
        for kernel_id in self.backend.running():
            stats, slots = self.backend.stats(kernel_id), self.slots.get(kernel_id)
            if stats is None or slots is None:
                continue
            if self.sampler.sample(kernel_id, stats, slots, now) is not None:
                sampled.append(kernel_id)
        devices = self._sample_devices(sampled, int(now)) if self.accelerators.plugins else None
        await self.store.telemetry.record_samples(
            {str(k): canonical_dumps(self.sampler.of(k)) for k in sampled}, _UTIL_TTL_S, devices
        )
        return len(sampled)

    def _sample_devices(self, sampled: list[uuid.UUID], at: int) -> DeviceStats:
        """Each device's live stats (the agent's device telemetry) and, for each sampled
        kernel holding devices, their utilization added to its sample."""
        cpu_of = {str(k): self.sampler.latest(k, "cpu_util") for k in sampled}
        sample = self.accelerators.sample(cpu_of)
        for kernel_id in sampled:
            metrics = self.accelerators.kernel_metrics(str(kernel_id), sample)
            if metrics:
                self.sampler.extend(kernel_id, metrics)
        devices = {
            key: {d: s.model_dump() for d, s in stats.items()} for key, stats in sample.items()
        }
        return DeviceStats(
            self.agent_id, canonical_dumps({"at": at, "devices": devices}), self.stats_ttl_s
        )
