"""The accelerator plugin interface: what an agent needs to know of a kind of device.

A plugin discovers its devices, names the slot they are offered under (``cuda.device`` for
whole devices, ``cuda.shares`` for fractions: the prefix before the dot is the plugin's
``key``), says what a kernel needs to reach the devices it was given (environment
variables, Docker device requests) and reports each device's live utilization and
memory. It decides nothing about who gets which device: that is the agent's alloc map
(:mod:`actors.domain.device_alloc`), the same for every plugin.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from ...domain.device_alloc import AllocMap, DiscreteAllocMap, FractionAllocMap

__all__ = ["AcceleratorPlugin", "AllocationMode", "Device", "DeviceArgs", "DeviceStat"]


class AllocationMode(enum.StrEnum):
    DISCRETE = "discrete"
    """Whole devices (``<key>.device``): no two kernels share one."""
    FRACTIONAL = "fractional"
    """Shares of devices (``<key>.shares``): kernels may share a device."""


class Device(BaseModel):
    """One device as discovered (Backend.AI's ``AbstractComputeDevice``)."""

    model_config = ConfigDict(frozen=True)

    device_id: str
    """The agent-local id: the device's index on its host, as a string."""
    model_name: str
    memory_bytes: int
    uuid: str | None = None
    """A stable hardware id where the device has one (NVML's ``GPU-...``)."""
    bus_id: str | None = None
    numa_node: int | None = None


class DeviceStat(BaseModel):
    """One live sample of a device (telemetry, never an event)."""

    utilization: float
    """Percent of the device's compute busy over the last sample period."""
    memory_used: int
    memory_total: int

    @property
    def memory_pct(self) -> float:
        return 100.0 * self.memory_used / self.memory_total if self.memory_total else 0.0


@dataclass(frozen=True)
class DeviceArgs:
    """What a kernel needs to reach its devices."""

    environ: dict[str, str] = field(default_factory=dict)
    """Variables for every kernel, containerised or not."""
    host_environ: dict[str, str] = field(default_factory=dict)
    """Variables only for a kernel that runs directly on the host (the process backend),
    where host device indices and ids mean what they say; a container gets only its own
    devices, renumbered, and these would mislead it."""
    docker: dict[str, Any] = field(default_factory=dict)
    """Merged into a container's ``HostConfig`` (``DeviceRequests`` lists are joined)."""


class AcceleratorPlugin(ABC):
    """One kind of device on one agent."""

    name: str
    """The plugin's name in configuration (``sim``, ``nvml``)."""

    def __init__(
        self,
        key: str,
        mode: AllocationMode,
        *,
        shares_per_device: Decimal = Decimal(1),
        quantum: Decimal = Decimal("0.01"),
    ) -> None:
        self.key = key
        self.mode = mode
        self.shares_per_device = shares_per_device
        self.quantum = quantum

    @property
    def slot(self) -> str:
        """The slot its devices are offered under."""
        unit = "device" if self.mode is AllocationMode.DISCRETE else "shares"
        return f"{self.key}.{unit}"

    @abstractmethod
    def devices(self) -> Sequence[Device]:
        """The devices this agent offers (fixed for the agent's life)."""

    @abstractmethod
    def launch_args(self, devices: Sequence[Device]) -> DeviceArgs:
        """What a kernel given ``devices`` needs to reach them."""

    @abstractmethod
    def stats(self, busy: Mapping[str, float]) -> dict[str, DeviceStat]:
        """A live sample of each device. ``busy`` is, per device held by a kernel, that
        kernel's CPU use in percent (only a simulated device has use for it)."""

    def info(self) -> dict[str, Any]:
        """Its entry in the agent's registered ``compute_plugins`` (what an operator sees)."""
        return {
            "plugin": self.name,
            "slot": self.slot,
            "mode": str(self.mode),
            "devices": [d.model_dump(exclude_none=True) for d in self.devices()],
        }

    def available(self) -> Decimal:
        """How much of its slot the agent offers."""
        count = Decimal(len(self.devices()))
        return count if self.mode is AllocationMode.DISCRETE else count * self.shares_per_device

    def alloc_map(self) -> AllocMap:
        ids = [d.device_id for d in self.devices()]
        if self.mode is AllocationMode.DISCRETE:
            return DiscreteAllocMap(self.slot, ids)
        return FractionAllocMap(
            self.slot, ids, capacity=self.shares_per_device, quantum=self.quantum
        )

    def close(self) -> None:
        return None
