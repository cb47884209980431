"""Agents with their capacity and what the ledger holds on them (Backend.AI's ``agents`` rows).

``occupied_slots`` is folded from the ledger (``alloc_reserved`` / ``alloc_settled`` /
``alloc_released``), per kernel hold, so a release gives back exactly what was held and a
settle replaces it with the actual allocation. Status from ``agent_started`` /
``agent_terminated`` (``agent-lost`` -> LOST, ``agent-restart`` -> RESTARTING, else
TERMINATED), capacity and placement facts from ``agent_registered``.

Indexes: ``i:all``, ``i:sg:<group>``, ``i:status:<STATUS>`` (sorted sets, score 0;
:class:`events.keys.AgentIndexes`).
"""

from __future__ import annotations

from collections.abc import Iterable

from events import StoredEvent
from events.keys import AgentIndexes as Index

from ..base import IndexedProjection, IndexEntries, Record, RecordRef, WorkingSet, iso_of
from ..slots import replace_slots, slots_json, sub_slots

__all__ = ["AgentsProjection"]

KIND = "agent"


def _new_agent(agent_id: str, event: StoredEvent) -> Record:
    return {
        "id": agent_id,
        "status": "ALIVE",
        "status_changed": iso_of(event.position_ms),
        "scaling_group": "default",
        "architecture": "x86_64",
        "available_slots": {},
        "occupied_slots": {},
        "holds": {},
        "addr": "",
        "public_host": None,
        "region": None,
        "version": "",
        "schedulable": True,
        "compute_plugins": {},
        "isolation": None,
        "first_contact": iso_of(event.position_ms),
        "lost_at": None,
    }


_FOLDED = frozenset(
    {
        "agent_registered",
        "agent_started",
        "agent_terminated",
        "alloc_reserved",
        "alloc_settled",
        "alloc_released",
    }
)


def _agent_of_stream(event: StoredEvent) -> str | None:
    return event.stream[len("agent-") :] if event.stream.startswith("agent-") else None


def _hold(record: Record, kernel_id: str, slots: dict[str, str]) -> None:
    """Replace a kernel's hold (reserve or settle), keeping the total in step."""
    previous = record["holds"].get(kernel_id, {})
    record["holds"][kernel_id] = slots
    record["occupied_slots"] = replace_slots(record["occupied_slots"], previous, slots)


class AgentsProjection(IndexedProjection):
    name = "agents"
    version = 1
    types = _FOLDED

    def refs(self, event: StoredEvent) -> Iterable[RecordRef]:
        data = event.data
        if event.type == "agent_registered":
            return ((KIND, data["agent_id"]),)
        if event.type in ("agent_started", "agent_terminated"):
            agent_id = _agent_of_stream(event)
            return ((KIND, agent_id),) if agent_id else ()
        if event.type == "alloc_reserved":
            return tuple(dict.fromkeys((KIND, a["agent_id"]) for a in data["allocations"]))
        if event.type in ("alloc_settled", "alloc_released"):
            return ((KIND, data["agent_id"]),)
        return ()

    def apply(self, event: StoredEvent, records: WorkingSet) -> None:
        if event.type not in _FOLDED:
            return
        for kind, agent_id in self.refs(event):
            record = records.get(kind, agent_id) or _new_agent(agent_id, event)
            self._fold(record, event, agent_id)
            records.put(kind, agent_id, record)

    @staticmethod
    def _fold(record: Record, event: StoredEvent, agent_id: str) -> None:
        data = event.data
        if event.type == "alloc_settled":  # the commonest first
            _hold(record, data["kernel_id"], slots_json(data["actual"]))
        elif event.type == "alloc_released":
            # give back exactly what was held (idempotent: a second release finds nothing)
            held = record["holds"].pop(data["kernel_id"], None)
            if held:
                record["occupied_slots"] = sub_slots(record["occupied_slots"], held, drop_zero=True)
        elif event.type == "alloc_reserved":
            for allocation in data["allocations"]:
                if allocation["agent_id"] == agent_id:
                    _hold(record, allocation["kernel_id"], slots_json(allocation["slots"]))
        elif event.type == "agent_registered":
            record.update(
                scaling_group=data.get("scaling_group", "default"),
                architecture=data.get("architecture", "x86_64"),
                available_slots=slots_json(data["available_slots"]),
                addr=data.get("addr", ""),
                public_host=data.get("public_host"),
                region=data.get("region"),
                version=data.get("version", ""),
                schedulable=data.get("schedulable", True),
                compute_plugins=data.get("compute_plugins") or {},
                isolation=data.get("isolation"),
            )
        elif event.type == "agent_started":
            if record["status"] != "ALIVE":
                at = iso_of(event.position_ms)
                record.update(status="ALIVE", status_changed=at, lost_at=None)
        elif event.type == "agent_terminated":
            reason = data.get("reason", "")
            status = {"agent-lost": "LOST", "agent-restart": "RESTARTING"}.get(reason, "TERMINATED")
            if record["status"] != status:
                at = iso_of(event.position_ms)
                record.update(status=status, status_changed=at)
                if status in ("LOST", "TERMINATED"):
                    record["lost_at"] = at

    def zset_entries(self, ref: RecordRef, record: Record) -> IndexEntries:
        agent_id = record["id"]
        return {
            (Index.ALL, agent_id): 0,
            (Index.scaling_group(record["scaling_group"]), agent_id): 0,
            (Index.status(record["status"]), agent_id): 0,
        }
