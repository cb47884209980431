"""The allocation ledger of one scaling group: what each agent has and what is held on it.

Reservations are made when the scheduler decides, settled to the agent's actual allocation
when a kernel starts, and released when it terminates. Occupancy never goes negative, a
multi-kernel reservation is all-or-nothing, and every reservation records each agent's free
capacity *at decision time*, so "it fitted when we decided" can be checked from the entry
alone (``kh events verify`` does).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import InstanceNotAvailable
from ..slots import ResourceSlot

__all__ = ["Allocation", "Ledger", "Reservation"]


@dataclass(frozen=True, slots=True)
class Allocation:
    kernel_id: uuid.UUID
    agent_id: str
    slots: ResourceSlot
    free_before: ResourceSlot
    """The agent's free capacity just before this allocation (earlier ones of the same
    reservation already deducted)."""

    def fitted(self) -> bool:
        return self.slots <= self.free_before


@dataclass(frozen=True, slots=True)
class Reservation:
    session_id: uuid.UUID
    allocations: tuple[Allocation, ...]

    def fitted(self) -> bool:
        """The ledger invariant, checkable from the entry alone."""
        return all(a.fitted() for a in self.allocations)


@dataclass(slots=True)
class _Hold:
    session_id: uuid.UUID
    agent_id: str
    slots: ResourceSlot


_MAX_TOUCHED = 65_536


class Ledger:
    def __init__(self, capacity: Mapping[str, ResourceSlot] | None = None) -> None:
        self.capacity: dict[str, ResourceSlot] = dict(capacity or {})
        self.occupied: dict[str, ResourceSlot] = {a: ResourceSlot() for a in self.capacity}
        self._holds: dict[uuid.UUID, _Hold] = {}
        self._kernels_of: dict[uuid.UUID, dict[uuid.UUID, None]] = {}
        """Each holding session's kernels: releasing a session must not scan every hold."""
        self._touched: list[str] = []
        self._touched_base = 0

    def copy(self) -> Ledger:
        """An independent ledger with the same capacities and holds (what a forward
        simulation changes without touching the scheduler's own)."""
        twin = Ledger(self.capacity)
        twin.occupied = dict(self.occupied)
        twin._holds = {k: _Hold(h.session_id, h.agent_id, h.slots) for k, h in self._holds.items()}
        twin._kernels_of = {s: dict(k) for s, k in self._kernels_of.items()}
        return twin

    def set_capacity(self, agent_id: str, capacity: ResourceSlot) -> None:
        self.capacity[agent_id] = capacity
        self.occupied.setdefault(agent_id, ResourceSlot())
        self._touch(agent_id)

    def touched_since(self, cursor: int) -> tuple[set[str] | None, int]:
        """The agents whose occupancy or capacity changed since ``cursor`` (a value this
        returned before; 0 at first), and the cursor for next time. ``None`` when the
        record no longer goes back that far: the caller then looks at every agent.

        What lets a kept agent index look at the few agents a pass changed instead of all
        of them (a thousand agents cost a replay of the Alibaba trace 1.6 ms a pass). Only
        changes made through the ledger's methods are recorded."""
        end = self._touched_base + len(self._touched)
        if cursor < self._touched_base:
            return None, end
        return set(self._touched[cursor - self._touched_base :]), end

    def _touch(self, agent_id: str) -> None:
        self._touched.append(agent_id)
        if len(self._touched) > _MAX_TOUCHED:  # a reader this far behind scans instead
            drop = len(self._touched) // 2
            del self._touched[:drop]
            self._touched_base += drop

    def free(self, agent_id: str) -> ResourceSlot:
        return self.capacity[agent_id] - self.occupied[agent_id]

    def holds(self) -> list[tuple[uuid.UUID, uuid.UUID, str, ResourceSlot]]:
        """Every live hold as (kernel, session, agent, slots): what a snapshot keeps."""
        return [(k, h.session_id, h.agent_id, h.slots) for k, h in self._holds.items()]

    def occupying_by_session(self) -> dict[uuid.UUID, ResourceSlot]:
        """What each session holds, summed over its kernels: the sessions occupying agent
        slots are exactly those with a hold (reserved at decision, released as kernels end)."""
        totals: dict[uuid.UUID, ResourceSlot] = {}
        for hold in self._holds.values():
            held = totals.get(hold.session_id)
            totals[hold.session_id] = hold.slots if held is None else held + hold.slots
        return totals

    def holder(self, kernel_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
        """The (session, agent) a kernel's hold belongs to, if it holds anything."""
        hold = self._holds.get(kernel_id)
        return (hold.session_id, hold.agent_id) if hold else None

    def held(self, kernel_id: uuid.UUID) -> ResourceSlot | None:
        hold = self._holds.get(kernel_id)
        return hold.slots if hold else None

    def reserve(
        self, session_id: uuid.UUID, placements: Sequence[tuple[uuid.UUID, str, ResourceSlot]]
    ) -> Reservation:
        """Hold ``slots`` on ``agent`` for each kernel, all or none.

        Raises :class:`InstanceNotAvailable` (and changes nothing) if any placement does not
        fit what is free after the earlier placements of the same call.
        """
        pending: dict[str, ResourceSlot] = {}
        allocations = []
        for kernel_id, agent_id, slots in placements:
            if agent_id not in self.capacity:
                raise InstanceNotAvailable(f"unknown agent {agent_id!r}")
            if kernel_id in self._holds:
                raise ValueError(f"kernel {kernel_id} already holds a reservation")
            free = self.free(agent_id) - pending.get(agent_id, ResourceSlot())
            if not slots <= free:
                raise InstanceNotAvailable(
                    f"agent {agent_id} has {free.to_json()} free, kernel {kernel_id} needs "
                    f"{slots.to_json()}"
                )
            allocations.append(Allocation(kernel_id, agent_id, slots, free))
            pending[agent_id] = pending.get(agent_id, ResourceSlot()) + slots
        for allocation in allocations:
            self._apply_hold(
                session_id, allocation.kernel_id, allocation.agent_id, allocation.slots
            )
        return Reservation(session_id, tuple(allocations))

    def _apply_hold(
        self, session_id: uuid.UUID, kernel_id: uuid.UUID, agent_id: str, slots: ResourceSlot
    ) -> None:
        self.occupied[agent_id] = self.occupied[agent_id] + slots
        self._touch(agent_id)
        self._holds[kernel_id] = _Hold(session_id, agent_id, slots)
        self._kernels_of.setdefault(session_id, {})[kernel_id] = None

    def apply_reservation(
        self, session_id: uuid.UUID, placements: Sequence[tuple[uuid.UUID, str, ResourceSlot]]
    ) -> None:
        """Replay a reservation already decided (folding the ledger stream): it was checked
        when it was made, so it is applied as recorded, even past today's capacity."""
        for kernel_id, agent_id, slots in placements:
            self._apply_hold(session_id, kernel_id, agent_id, slots)

    def settle(self, kernel_id: uuid.UUID, actual: ResourceSlot) -> ResourceSlot:
        """Replace the requested amount by what the agent actually allocated; returns the
        change. The agent's report is a fact, so this never refuses."""
        hold = self._holds[kernel_id]
        delta = actual - hold.slots
        self._set_occupied(hold.agent_id, self.occupied[hold.agent_id] + delta)
        hold.slots = actual
        return delta

    def release(self, kernel_id: uuid.UUID) -> ResourceSlot | None:
        """Give back a kernel's hold; releasing twice is a no-op (returns ``None``)."""
        hold = self._holds.pop(kernel_id, None)
        if hold is None:
            return None
        kernels = self._kernels_of[hold.session_id]
        del kernels[kernel_id]
        if not kernels:
            del self._kernels_of[hold.session_id]
        self._set_occupied(hold.agent_id, self.occupied[hold.agent_id] - hold.slots)
        return hold.slots

    def release_session(self, session_id: uuid.UUID) -> list[uuid.UUID]:
        kernels = list(self._kernels_of.get(session_id, ()))
        for kernel_id in kernels:
            self.release(kernel_id)
        return kernels

    def _set_occupied(self, agent_id: str, value: ResourceSlot) -> None:
        if any(v < 0 for v in value.values()):
            raise ValueError(f"occupancy of agent {agent_id} would go negative: {value.to_json()}")
        self.occupied[agent_id] = value
        self._touch(agent_id)
