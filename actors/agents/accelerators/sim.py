"""Simulated accelerators: fake devices with the slots and stats of real ones.

Like Backend.AI's mock accelerator plugin, it lets scheduling, allocation, idle checks and
the tests run on a machine without a GPU. A kernel is told which fake devices it holds the
way the mock plugin tells it (``BACKENDAI_MOCK_<KEY>_DEVICES``), and never gets a real
device or a ``CUDA_VISIBLE_DEVICES`` that could confuse a real CUDA.

Its utilization is configuration: a fixed percent, or ``follow-cpu``, where a device is
as busy as the CPU of the kernel holding it (a kernel that computes keeps "its GPU" busy,
one that waits lets it go idle: what the utilization checker should see).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...domain.sizes import parse_size
from .base import AcceleratorPlugin, AllocationMode, Device, DeviceArgs, DeviceStat

__all__ = ["SimAccelerator", "SimAcceleratorConfig"]


class SimAcceleratorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    plugin: Literal["sim"] = "sim"
    key: str = Field("cuda", pattern=r"^[a-z][a-z0-9_]*$")
    devices: int = Field(2, ge=0, le=256)
    mode: AllocationMode = AllocationMode.DISCRETE
    model_name: str = "Simulated CUDA Device"
    memory: int = 16 * 2**30
    """Each device's memory in bytes (``"16g"`` accepted)."""
    shares_per_device: Decimal = Field(Decimal(1), gt=0)
    quantum: Decimal = Field(Decimal("0.01"), gt=0)
    load: float | Literal["follow-cpu"] = 0.0
    """Each device's utilization in percent, or ``follow-cpu``."""
    memory_load: float = Field(0.0, ge=0, le=100)
    """Percent of each held device's memory in use."""

    @field_validator("memory", mode="before")
    @classmethod
    def _size(cls, value: str | int) -> int:
        return int(parse_size(value))


class SimAccelerator(AcceleratorPlugin):
    name = "sim"

    def __init__(self, config: SimAcceleratorConfig | None = None) -> None:
        self.config = config or SimAcceleratorConfig()
        super().__init__(
            self.config.key,
            self.config.mode,
            shares_per_device=self.config.shares_per_device,
            quantum=self.config.quantum,
        )
        self._devices = [
            Device(
                device_id=str(n),
                model_name=self.config.model_name,
                memory_bytes=self.config.memory,
                uuid=f"SIM-{self.key}-{n}",
            )
            for n in range(self.config.devices)
        ]

    def devices(self) -> Sequence[Device]:
        return self._devices

    def launch_args(self, devices: Sequence[Device]) -> DeviceArgs:
        prefix = f"BACKENDAI_MOCK_{self.key.upper()}"
        ids = ",".join(d.device_id for d in devices)
        return DeviceArgs(
            environ={f"{prefix}_DEVICES": ids, f"{prefix}_DEVICE_COUNT": str(len(devices))}
        )

    def stats(self, busy: Mapping[str, float]) -> dict[str, DeviceStat]:
        load = self.config.load
        out = {}
        for device in self._devices:
            held = device.device_id in busy
            if load == "follow-cpu":
                utilization = min(100.0, busy.get(device.device_id, 0.0))
            else:
                utilization = load if held else 0.0
            used = int(device.memory_bytes * self.config.memory_load / 100) if held else 0
            out[device.device_id] = DeviceStat(
                utilization=utilization, memory_used=used, memory_total=device.memory_bytes
            )
        return out
