"""An agent's accelerators: its plugins, who holds which device, and what that means for
a kernel (its environment, its container's device requests, its utilization).

Holds are announced in the log: a kernel's ``kernel_started`` carries
``creation_info.attached_devices`` (Backend.AI's shape, below), and an agent that restarts
while kernels run takes their holds back from there, so the devices a kernel was given
are never handed to another one.

``attached_devices``: ``{key: [{"device_id", "model_name", "data": {slot: amount,
"mem": bytes}}]}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from ...domain.device_alloc import AllocMap, DeviceAllocationError
from ...domain.slots import INTRINSIC_SLOTS
from .base import AcceleratorPlugin, Device, DeviceArgs, DeviceStat
from .nvml import NvmlAccelerator, NvmlConfig
from .sim import SimAccelerator, SimAcceleratorConfig

__all__ = [
    "ACCELERATOR_CHOICES",
    "Accelerators",
    "KernelDevices",
    "UnsupportedResource",
    "accelerator_configs",
    "accelerator_option",
    "make_accelerators",
]

PluginConfig = Annotated[SimAcceleratorConfig | NvmlConfig, Field(discriminator="plugin")]
_CONFIGS: TypeAdapter[list[PluginConfig]] = TypeAdapter(list[PluginConfig])


class UnsupportedResource(DeviceAllocationError):
    """A request for a slot this agent has no plugin for (upstream's ``UnsupportedResource``)."""


@dataclass(frozen=True)
class KernelDevices:
    """The devices one kernel holds: per plugin, ``{device id: amount}``."""

    holds: tuple[tuple[AcceleratorPlugin, dict[str, Decimal]], ...]

    def _devices(self, plugin: AcceleratorPlugin, hold: Mapping[str, Decimal]) -> list[Device]:
        return [d for d in plugin.devices() if d.device_id in hold]

    def _args(self) -> list[DeviceArgs]:
        return [plugin.launch_args(self._devices(plugin, hold)) for plugin, hold in self.holds]

    def environ(self, *, on_host: bool) -> dict[str, str]:
        """The kernel's device variables (``on_host``: it runs as a host process)."""
        out: dict[str, str] = {}
        for args in self._args():
            out.update(args.environ)
            if on_host:
                out.update(args.host_environ)
        return out

    def docker(self) -> dict[str, Any]:
        """``HostConfig`` additions (device requests of every plugin, joined)."""
        out: dict[str, Any] = {}
        for args in self._args():
            for name, value in args.docker.items():
                if isinstance(value, list):
                    out.setdefault(name, []).extend(value)
                else:
                    out[name] = value
        return out

    def attached(self) -> dict[str, list[dict[str, Any]]]:
        """Backend.AI's ``attached_devices`` (what the log records of the hold)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for plugin, hold in self.holds:
            out[plugin.key] = [
                {
                    "device_id": d.device_id,
                    "model_name": d.model_name,
                    "data": {
                        plugin.slot: format(hold[d.device_id].normalize(), "f"),
                        "mem": d.memory_bytes,
                    },
                }
                for d in self._devices(plugin, hold)
            ]
        return out

    def device_ids(self) -> dict[str, list[str]]:
        return {plugin.key: sorted(hold) for plugin, hold in self.holds}


class Accelerators:
    """The plugins of one agent and one alloc map per plugin."""

    def __init__(self, plugins: Sequence[AcceleratorPlugin] = ()) -> None:
        self.plugins = {p.key: p for p in plugins if p.devices()}
        self.unused = [p for p in plugins if not p.devices()]
        """Plugins that found nothing (kept for :meth:`info`: an operator sees why)."""
        self.maps: dict[str, AllocMap] = {key: p.alloc_map() for key, p in self.plugins.items()}
        if len(self.plugins) != len([p for p in plugins if p.devices()]):
            raise ValueError("two accelerator plugins for the same slot prefix")

    def slots(self) -> dict[str, Decimal]:
        """The slots the agent offers for its devices."""
        return {p.slot: p.available() for p in self.plugins.values()}

    def info(self) -> dict[str, Any]:
        """``compute_plugins`` of the agent's registration."""
        out = {key: p.info() for key, p in self.plugins.items()}
        for plugin in self.unused:
            out.setdefault(plugin.key, plugin.info())
        return out

    def allocate(self, kernel_id: str, requested: Mapping[str, Decimal]) -> KernelDevices:
        """Hold devices for every accelerator slot the kernel asks for (all or nothing);
        the same hold again for a kernel that has one (a restart keeps its devices)."""
        wanted: dict[str, Decimal] = {}
        for slot, amount in requested.items():
            if slot in INTRINSIC_SLOTS or not amount:
                continue
            plugin = self.plugins.get(slot.split(".", 1)[0])
            if plugin is None or plugin.slot != slot:
                offered = ", ".join(sorted(self.slots())) or "none"
                raise UnsupportedResource(
                    f"{slot} is not offered by this agent (its accelerator slots: {offered})"
                )
            wanted[plugin.key] = Decimal(amount)
        taken: list[str] = []
        try:
            for key, amount in wanted.items():
                self.maps[key].allocate(kernel_id, amount)
                taken.append(key)
        except DeviceAllocationError:
            for key in taken:
                self.maps[key].release(kernel_id)
            raise
        return self.held(kernel_id)

    def held(self, kernel_id: str) -> KernelDevices:
        holds = tuple(
            (self.plugins[key], dict(m.holds[kernel_id]))
            for key, m in self.maps.items()
            if kernel_id in m.holds
        )
        return KernelDevices(holds)

    def holders(self) -> set[str]:
        return {owner for m in self.maps.values() for owner in m.holds}

    def restore(self, kernel_id: str, attached: Mapping[str, Iterable[Mapping[str, Any]]]) -> None:
        """Take back a running kernel's hold from its recorded ``attached_devices``."""
        for key, entries in (attached or {}).items():
            plugin, alloc_map = self.plugins.get(key), self.maps.get(key)
            if plugin is None or alloc_map is None:
                continue
            hold = {
                str(e["device_id"]): Decimal(str((e.get("data") or {}).get(plugin.slot, 1)))
                for e in entries
            }
            alloc_map.restore(kernel_id, hold)

    def release(self, kernel_id: str) -> None:
        for alloc_map in self.maps.values():
            alloc_map.release(kernel_id)

    def sample(self, cpu_of: Mapping[str, float]) -> dict[str, dict[str, DeviceStat]]:
        """One live sample of every device, per plugin. ``cpu_of``: each holding kernel's
        CPU use (percent), which a simulated device may follow."""
        out = {}
        for key, plugin in self.plugins.items():
            busy: dict[str, float] = {}
            for kernel_id, hold in self.maps[key].holds.items():
                for device_id in hold:
                    busy[device_id] = max(busy.get(device_id, 0.0), cpu_of.get(kernel_id, 0.0))
            out[key] = plugin.stats(busy)
        return out

    def kernel_metrics(
        self, kernel_id: str, sample: Mapping[str, Mapping[str, DeviceStat]]
    ) -> dict[str, float]:
        """A kernel's device utilization from one :meth:`sample`: ``<key>_util`` and
        ``<key>_mem`` (the names the utilization checker judges), averaged over the devices
        it holds."""
        out: dict[str, float] = {}
        for key, alloc_map in self.maps.items():
            stats = [sample.get(key, {}).get(d) for d in alloc_map.holds.get(kernel_id, {})]
            present = [s for s in stats if s is not None]
            if present:
                out[f"{key}_util"] = sum(s.utilization for s in present) / len(present)
                out[f"{key}_mem"] = sum(s.memory_pct for s in present) / len(present)
        return out

    def close(self) -> None:
        for plugin in [*self.plugins.values(), *self.unused]:
            plugin.close()


def accelerator_configs(raw: Iterable[Mapping[str, Any]] | None) -> list[PluginConfig]:
    """Validated plugin configurations (``[{"plugin": "sim", "devices": 2}, ...]``)."""
    return _CONFIGS.validate_python(list(raw or []))


def make_accelerators(raw: Iterable[Mapping[str, Any]] | None) -> Accelerators:
    plugins: list[AcceleratorPlugin] = []
    for config in accelerator_configs(raw):
        if isinstance(config, SimAcceleratorConfig):
            plugins.append(SimAccelerator(config))
        else:
            plugins.append(NvmlAccelerator(config))
    return Accelerators(plugins)


ACCELERATOR_CHOICES = "auto, none, nvml, nvml:shares, sim, sim:<devices>, sim:<devices>:shares"


def accelerator_option(text: str) -> list[dict[str, Any]]:
    """``kh up --accelerator``: ``auto`` (NVIDIA GPUs when NVML finds any, else none),
    ``none``, ``nvml`` or ``sim[:<devices>]``, each with ``:shares`` for fractional
    allocation. Raises ``ValueError`` with the accepted forms."""
    parts = text.strip().lower().split(":")
    shares = parts[-1] == "shares"
    if shares:
        parts = parts[:-1]
    mode = {"mode": "fractional"} if shares else {}
    name, rest = parts[0], parts[1:]
    if name == "none" and not rest and not shares:
        return []
    if name == "auto" and not rest and not shares:
        from .nvml import nvml_devices

        return [{"plugin": "nvml"}] if nvml_devices() else []
    if name == "nvml" and not rest:
        return [{"plugin": "nvml", **mode}]
    if name == "sim" and len(rest) <= 1 and all(r.isdigit() for r in rest):
        return [{"plugin": "sim", **({"devices": int(rest[0])} if rest else {}), **mode}]
    raise ValueError(f"--accelerator {text!r}: use one of {ACCELERATOR_CHOICES}")
