"""The ledger as its stream (``alloc-<group>``) records it: the fold, the snapshot, and what
a kernel's start or end appends.

The scheduler owns the stream and does the I/O (reads, appends at the version it folded,
snapshot storage); what the entries mean is decided here. :class:`LedgerFold` is the
ledger of one scaling group up to a stream version: it folds reservations, settlements and
releases, says when a snapshot is due and what it holds, and judges which ledger moves a
batch of kernel events calls for (a replay of events the ledger already reflects calls for
none).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from events.catalogue import (
    AllocReleased,
    AllocReserved,
    AllocSettled,
    AnyPayload,
    KernelCancelled,
    KernelStarted,
    KernelTerminated,
)

from ..slots import ResourceSlot
from .ledger import Ledger
from .records import actual_allocation, slots_of

__all__ = [
    "LEDGER_MOVES",
    "LEDGER_SNAPSHOT_EVERY",
    "LEDGER_SNAPSHOT_SCHEMA",
    "LedgerFold",
    "ledger_command_id",
    "ledger_stream",
    "pass_stream",
]

LEDGER_SNAPSHOT_SCHEMA = "ledger-v1"
LEDGER_SNAPSHOT_EVERY = 500
"""Ledger events between snapshots (a restart replays at most this many)."""
LEDGER_MOVES = frozenset({"kernel_started", "kernel_terminated", "kernel_cancelled"})
"""The kernel events that may move the ledger (settle or release a hold)."""


def ledger_stream(scaling_group: str) -> str:
    """The stream of a scaling group's ledger."""
    return f"alloc-{scaling_group}"


def ledger_command_id(first: uuid.UUID, count: int) -> uuid.UUID:
    """The command id of a ledger append: derived from what it answers (the first kernel
    event of a batch, or the first decision of a committed batch) and how many entries it
    carries, so a replay after a restart is recognised as the same command."""
    return uuid.uuid5(first, f"ledger/{count}")


def pass_stream(scaling_group: str) -> str:
    """Where a group's scheduling passes are recorded (``scheduling_pass``), beside its
    ledger: apart from it, so loading the ledger never reads them."""
    return f"pass-{scaling_group}"


class LedgerFold:
    """A scaling group's ledger as its stream says, up to :attr:`version`."""

    def __init__(self, capacities: Mapping[str, ResourceSlot] | None = None) -> None:
        self.ledger = Ledger(capacities)
        self.version = 0
        """The stream version folded so far (the expected version of the next append)."""
        self.snapshot_version = 0
        """The version of the latest snapshot (taken or loaded)."""
        self._capacities: dict[str, ResourceSlot] = dict(capacities or {})

    @classmethod
    def restore(
        cls,
        capacities: Mapping[str, ResourceSlot],
        snapshot: Mapping[str, Any] | None = None,
        version: int = 0,
    ) -> LedgerFold:
        """The ledger at ``version`` from a snapshot's state (``None``: from the start)."""
        fold = cls(capacities)
        if snapshot is None:
            return fold
        for kernel, session, agent, slots in snapshot["holds"]:
            if agent not in fold.ledger.capacity:
                fold.ledger.set_capacity(agent, ResourceSlot())
            fold.ledger.apply_reservation(
                uuid.UUID(session), [(uuid.UUID(kernel), agent, slots_of(slots))]
            )
        fold.version = fold.snapshot_version = version
        return fold

    def set_capacities(self, capacities: Iterable[tuple[str, ResourceSlot]]) -> None:
        """Agents' current capacities; only those that changed are applied (a thousand
        agents, rarely resized)."""
        for agent_id, capacity in capacities:
            if self._capacities.get(agent_id) is not capacity:
                self.ledger.set_capacity(agent_id, capacity)
                self._capacities[agent_id] = capacity

    def apply(self, version: int, payload: AnyPayload) -> None:
        """Fold one entry of the ledger stream."""
        ledger = self.ledger
        if isinstance(payload, AllocReserved):
            for a in payload.allocations:
                if a.agent_id not in ledger.capacity:  # an agent gone from the read side
                    ledger.set_capacity(a.agent_id, ResourceSlot())
            fresh = [a for a in payload.allocations if ledger.held(a.kernel_id) is None]
            ledger.apply_reservation(
                payload.session_id,
                [(a.kernel_id, a.agent_id, ResourceSlot(a.slots)) for a in fresh],
            )
        elif isinstance(payload, AllocSettled) and ledger.held(payload.kernel_id) is not None:
            ledger.settle(payload.kernel_id, ResourceSlot(payload.actual))
        elif isinstance(payload, AllocReleased):
            ledger.release(payload.kernel_id)
        self.version = version

    def committed(self, entries: int) -> None:
        """``entries`` reservations the ledger already holds (a pass reserved them) were
        appended: the folded version moves past them."""
        self.version += entries

    # ---- snapshots -----------------------------------------------------------------------------
    def snapshot_due(self) -> bool:
        return self.version - self.snapshot_version >= LEDGER_SNAPSHOT_EVERY

    def snapshot(self) -> dict[str, Any]:
        """What a snapshot keeps: every live hold as (kernel, session, agent, slots)."""
        return {
            "holds": [
                [str(k), str(s), a, {n: str(v) for n, v in slots.items()}]
                for k, s, a, slots in self.ledger.holds()
            ]
        }

    def snapshotted(self) -> None:
        """A snapshot of the current version was stored."""
        self.snapshot_version = self.version

    # ---- answering kernels ---------------------------------------------------------------------
    def moves(self, kernel_events: Sequence[AnyPayload]) -> list[AnyPayload]:
        """The ledger entries a batch of kernel events calls for: a kernel that ended
        releases its hold (once); one that started settles it when the agent allocated
        other than was reserved. What the ledger already reflects (and any other event)
        calls for nothing."""
        payloads: list[AnyPayload] = []
        released: set[uuid.UUID] = set()
        for event in kernel_events:
            if not isinstance(event, KernelStarted | KernelTerminated | KernelCancelled):
                continue
            hold = self.ledger.holder(event.kernel_id)
            if hold is None or event.kernel_id in released:
                continue
            session_id, agent_id = hold
            held = self.ledger.held(event.kernel_id) or ResourceSlot()
            if isinstance(event, KernelStarted):
                actual = actual_allocation(event.creation_info)
                if actual is not None and actual != held:
                    payloads.append(
                        AllocSettled(
                            session_id=session_id,
                            kernel_id=event.kernel_id,
                            agent_id=agent_id,
                            actual=dict(actual),
                        )
                    )
            else:
                released.add(event.kernel_id)
                payloads.append(
                    AllocReleased(
                        session_id=session_id,
                        kernel_id=event.kernel_id,
                        agent_id=agent_id,
                        slots=dict(held),
                    )
                )
        return payloads
