"""Which of an agent's accelerator devices each kernel gets (Backend.AI's alloc maps).

The scheduler only counts: an agent with four GPUs has ``cuda.device: 4``, and it places
kernels while the sum of their requests fits. Which *device* a kernel gets is the agent's
business, decided here: every device belongs to exactly the kernels holding a part of it.

- :class:`DiscreteAllocMap` (``<key>.device``): whole devices only. A kernel asking for 2
  gets two devices nobody else holds, so no two kernels ever share one. A fractional request
  is refused (``InvalidResourceArgument``), as upstream's discrete map does.
- :class:`FractionAllocMap` (``<key>.shares``): each device holds ``capacity`` shares (1 by
  default) in steps of ``quantum``. A request that fits on one device goes to the device
  it fits best (the least free space that is enough: large holes stay for large requests);
  one that fits on none is spread over the freest devices. Because a request may be spread,
  what the scheduler counted always fits: the sum of free shares is exactly what is free.

Both are pure and deterministic (ties go to the lower device id), so they unit-test
without devices and an agent that restores its holds from the log gets the same picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

__all__ = [
    "AllocMap",
    "DeviceAllocationError",
    "DiscreteAllocMap",
    "FractionAllocMap",
    "InsufficientDevices",
    "InvalidResourceArgument",
]

ZERO = Decimal(0)


class DeviceAllocationError(Exception):
    """A kernel's accelerator request cannot be met on this agent."""


class InsufficientDevices(DeviceAllocationError):
    """Not enough free device capacity (upstream's ``InsufficientResource``)."""


class InvalidResourceArgument(DeviceAllocationError):
    """A request the map cannot express: a fraction of a whole device, a step finer than
    the quantum, a negative amount."""


class AllocMap:
    """Device capacity and who holds what (``owner -> {device id: amount}``)."""

    def __init__(self, slot: str, capacity: Mapping[str, Decimal]) -> None:
        self.slot = slot
        self.capacity: dict[str, Decimal] = dict(sorted(capacity.items(), key=_device_order))
        self.holds: dict[str, dict[str, Decimal]] = {}

    @property
    def total(self) -> Decimal:
        return sum(self.capacity.values(), ZERO)

    def used(self, device_id: str) -> Decimal:
        return sum((h.get(device_id, ZERO) for h in self.holds.values()), ZERO)

    def free(self) -> dict[str, Decimal]:
        return {d: c - self.used(d) for d, c in self.capacity.items()}

    def allocate(self, owner: str, amount: Decimal) -> dict[str, Decimal]:
        """Hold ``amount`` for ``owner``; its hold (the same one again if it already has
        one: a restarted kernel keeps its devices)."""
        if owner in self.holds:
            return dict(self.holds[owner])
        if amount < 0:
            raise InvalidResourceArgument(f"{self.slot}: a negative request ({amount})")
        if amount == 0:
            return {}
        self._check(amount)
        free = self.free()
        available = sum(free.values(), ZERO)
        if amount > available:
            busy = ", ".join(d for d, f in free.items() if f <= 0) or "none"
            raise InsufficientDevices(
                f"{self.slot}: {_plain(amount)} requested, {_plain(available)} free "
                f"(of {_plain(self.total)}; busy devices: {busy})"
            )
        hold = self._pick(amount, free)
        self.holds[owner] = hold
        return dict(hold)

    def restore(self, owner: str, hold: Mapping[str, Decimal]) -> None:
        """Take back a hold recorded earlier (the agent restarted while its kernel ran).
        Devices this agent no longer has are dropped: the kernel keeps what still exists."""
        kept = {d: Decimal(a) for d, a in hold.items() if d in self.capacity and Decimal(a) > 0}
        if kept:
            self.holds[owner] = kept

    def release(self, owner: str) -> dict[str, Decimal]:
        return self.holds.pop(owner, {})

    def _check(self, amount: Decimal) -> None:
        return None

    def _pick(self, amount: Decimal, free: dict[str, Decimal]) -> dict[str, Decimal]:
        raise NotImplementedError


class DiscreteAllocMap(AllocMap):
    """Whole devices, each to one kernel."""

    def __init__(self, slot: str, devices: Sequence[str]) -> None:
        super().__init__(slot, {d: Decimal(1) for d in devices})

    def _check(self, amount: Decimal) -> None:
        if amount != amount.to_integral_value():
            raise InvalidResourceArgument(
                f"{self.slot} is allocated in whole devices: {_plain(amount)} is not a whole "
                "number (fractional shares need the fractional mode)"
            )

    def _pick(self, amount: Decimal, free: dict[str, Decimal]) -> dict[str, Decimal]:
        idle = [d for d, f in free.items() if f >= 1]
        return {d: Decimal(1) for d in idle[: int(amount)]}


class FractionAllocMap(AllocMap):
    """Shares of devices: ``capacity`` shares per device, in steps of ``quantum``."""

    def __init__(
        self,
        slot: str,
        devices: Sequence[str],
        *,
        capacity: Decimal = Decimal(1),
        quantum: Decimal = Decimal("0.01"),
    ) -> None:
        super().__init__(slot, {d: capacity for d in devices})
        self.quantum = quantum

    def _check(self, amount: Decimal) -> None:
        if amount % self.quantum:
            raise InvalidResourceArgument(
                f"{self.slot}: {_plain(amount)} is not a multiple of the quantum "
                f"{_plain(self.quantum)}"
            )

    def _pick(self, amount: Decimal, free: dict[str, Decimal]) -> dict[str, Decimal]:
        fits = [(f, _device_order((d, f)), d) for d, f in free.items() if f >= amount]
        if fits:  # best fit: the least free space that is still enough
            return {min(fits)[2]: amount}
        hold: dict[str, Decimal] = {}
        left = amount
        for device, room in sorted(free.items(), key=lambda item: (-item[1], _device_order(item))):
            if left <= 0:
                break
            if room <= 0:
                continue
            take = min(room, left)
            hold[device] = take
            left -= take
        return hold


def _device_order(item: tuple[str, object]) -> tuple[int, int | str]:
    """Numeric ids in number order (``2`` before ``10``), then the others by name."""
    device = item[0]
    return (0, int(device)) if device.isdigit() else (1, device)


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")
