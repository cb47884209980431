"""Accelerator plugins (NVIDIA GPUs through NVML, simulated devices) and the agent's view
of its devices. See :mod:`.base` for the interface."""

from .base import AcceleratorPlugin, AllocationMode, Device, DeviceArgs, DeviceStat
from .devices import (
    ACCELERATOR_CHOICES,
    Accelerators,
    KernelDevices,
    UnsupportedResource,
    accelerator_configs,
    accelerator_option,
    make_accelerators,
)
from .nvml import NvmlAccelerator, NvmlConfig, nvml_devices
from .sim import SimAccelerator, SimAcceleratorConfig

__all__ = [
    "ACCELERATOR_CHOICES",
    "AcceleratorPlugin",
    "Accelerators",
    "AllocationMode",
    "Device",
    "DeviceArgs",
    "DeviceStat",
    "KernelDevices",
    "NvmlAccelerator",
    "NvmlConfig",
    "SimAccelerator",
    "SimAcceleratorConfig",
    "UnsupportedResource",
    "accelerator_configs",
    "accelerator_option",
    "make_accelerators",
    "nvml_devices",
]
