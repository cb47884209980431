"""State as it was at a point in the log (``kh replay --as-of``), folded afresh.

The read models' own folds (:mod:`projections.models`) run in memory over the log up to
the cutoff, so "what the API would have said then" and "what it says now" come from the
same code. A session's history is its own stream (one index read); an agent's or the whole
cluster's needs the log from the start, read in pages.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from events import RedisEventStore, StoredEvent
from events.archive import merged_entries
from projections.base import Projection, Record, WorkingSet
from projections.models import AgentsProjection, SessionsProjection, default_projections

from .positions import Cutoff

__all__ = [
    "agent_as_of",
    "cluster_as_of",
    "fold_events",
    "session_as_of",
    "stored_events_until",
    "stream_history",
]


async def stored_events_until(store: RedisEventStore, cutoff: Cutoff) -> list[StoredEvent]:
    """Every event up to the cutoff, the archived ones in their place."""
    decode = store.codec.decode_stored
    return [decode(*entry) async for entry in merged_entries(store, until=cutoff.until)]


async def stream_history(store: RedisEventStore, stream: str) -> list[StoredEvent]:
    """A stream's events, from the live log or, once archived, from the archive."""
    return await store.read_stream_stored(stream) or await store.archived_stream(stream)


def fold_events(projections: list[Projection], events: list[StoredEvent]) -> dict[str, WorkingSet]:
    working = {p.name: WorkingSet(complete=True) for p in projections}
    for event in events:
        for projection in projections:
            projection.apply(event, working[projection.name])
    for projection in projections:
        for ref, record in working[projection.name].current.items():
            if record is not None:
                projection.finalize(ref, record)
    return working


async def session_as_of(store: RedisEventStore, session_id: str, cutoff: Cutoff) -> Record | None:
    """The session's read-model record as of the cutoff (None: it did not exist yet)."""
    history = await stream_history(store, f"session-{session_id}")
    events = [e for e in history if cutoff.includes(e.position)]
    return fold_events([SessionsProjection()], events)["sessions"].get("session", session_id)


async def agent_as_of(store: RedisEventStore, agent_id: str, cutoff: Cutoff) -> Record | None:
    events = await stored_events_until(store, cutoff)
    return fold_events([AgentsProjection()], events)["agents"].get("agent", agent_id)


async def cluster_as_of(store: RedisEventStore, cutoff: Cutoff) -> dict[str, Any]:
    """Sessions by status, agents by status with their capacity and occupancy, and the
    number of events folded, as of the cutoff."""
    events = await stored_events_until(store, cutoff)
    working = fold_events(default_projections(), events)
    sessions = [
        r
        for (kind, _), r in working["sessions"].current.items()
        if kind == "session" and r is not None
    ]
    agents = [
        r for (kind, _), r in working["agents"].current.items() if kind == "agent" and r is not None
    ]
    return {
        "as_of": cutoff.shown,
        "events": len(events),
        "last_position": events[-1].position if events else None,
        "sessions": dict(sorted(Counter(r["status"] for r in sessions).items())),
        "agents": {
            a["id"]: {
                "status": a["status"],
                "available_slots": a["available_slots"],
                "occupied_slots": a["occupied_slots"],
            }
            for a in sorted(agents, key=lambda a: a["id"])
        },
    }
