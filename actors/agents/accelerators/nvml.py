"""NVIDIA GPUs through NVML (nvidia-ml-py).

Discovery reads each GPU's index, UUID, name, memory, PCI bus id and NUMA node. A kernel
is given its GPUs by UUID: a container through Docker's device requests (the NVIDIA
container runtime mounts those GPUs, and only those, with the driver's utilities), a host
process through ``CUDA_VISIBLE_DEVICES``. Live stats are NVML's utilization rate (the
share of the last sample period a kernel ran on the GPU) and memory in use.

A host without the NVIDIA driver is normal, not an error: the plugin then offers no
devices and says why in :attr:`NvmlAccelerator.unavailable` (logged once), and the agent
registers without ``cuda`` slots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from .base import AcceleratorPlugin, AllocationMode, Device, DeviceArgs, DeviceStat

__all__ = ["NvmlAccelerator", "NvmlConfig", "nvml_devices"]

log = structlog.get_logger(__name__)


class NvmlConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    plugin: Literal["nvml"] = "nvml"
    mode: AllocationMode = AllocationMode.DISCRETE
    shares_per_device: Decimal = Field(Decimal(1), gt=0)
    quantum: Decimal = Field(Decimal("0.01"), gt=0)
    device_mask: tuple[int, ...] | None = None
    """Only these GPU indices (Backend.AI's ``device_mask``); all when unset."""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlAccelerator(AcceleratorPlugin):
    name = "nvml"

    def __init__(self, config: NvmlConfig | None = None) -> None:
        self.config = config or NvmlConfig()
        super().__init__(
            "cuda",
            self.config.mode,
            shares_per_device=self.config.shares_per_device,
            quantum=self.config.quantum,
        )
        self.unavailable: str | None = None
        self.driver_version = ""
        self._handles: dict[str, Any] = {}
        self._devices: list[Device] = []
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError (no library, no driver), or no module at all
            self.unavailable = f"NVML is not available: {exc}"
            log.info("no NVIDIA GPUs", reason=self.unavailable)
            return
        self._nvml = pynvml
        self.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
        for index in range(pynvml.nvmlDeviceGetCount()):
            if self.config.device_mask is not None and index not in self.config.device_mask:
                continue
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._handles[str(index)] = handle
            self._devices.append(self._describe(index, handle))

    def _describe(self, index: int, handle: Any) -> Device:
        nvml = self._nvml
        numa: int | None = None
        try:
            numa = int(nvml.nvmlDeviceGetNumaNodeId(handle))
        except Exception:  # older drivers, or no NUMA
            numa = None
        return Device(
            device_id=str(index),
            model_name=_text(nvml.nvmlDeviceGetName(handle)),
            memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            bus_id=_text(nvml.nvmlDeviceGetPciInfo(handle).busId),
            numa_node=numa,
        )

    def devices(self) -> Sequence[Device]:
        return self._devices

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["driver_version"] = self.driver_version
        if self.unavailable:
            info["unavailable"] = self.unavailable
        return info

    def launch_args(self, devices: Sequence[Device]) -> DeviceArgs:
        uuids = [d.uuid or d.device_id for d in devices]
        visible = ",".join(uuids)
        return DeviceArgs(
            host_environ={"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible},
            docker={
                "DeviceRequests": [
                    {"Driver": "nvidia", "DeviceIDs": uuids, "Capabilities": [["gpu"]]}
                ]
            },
        )

    def stats(self, busy: Mapping[str, float]) -> dict[str, DeviceStat]:
        out = {}
        for device_id, handle in self._handles.items():
            try:
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # a GPU fallen off the bus: no sample, not a crash
                log.warning("GPU sample failed", device=device_id, error=repr(exc))
                continue
            out[device_id] = DeviceStat(
                utilization=float(rates.gpu),
                memory_used=int(memory.used),
                memory_total=int(memory.total),
            )
        return out

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:
                log.warning("NVML shutdown failed", error=repr(exc))
            self._nvml = None


def nvml_devices() -> list[Device]:
    """The GPUs NVML sees on this host (none without the driver)."""
    plugin = NvmlAccelerator()
    try:
        return list(plugin.devices())
    finally:
        plugin.close()
