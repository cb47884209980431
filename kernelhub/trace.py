"""``kh trace``'s model: one API call's path through kernelhub, as a timeline.

Two sources meet on the correlation id the gateway gave the call: the actors' JSON log
lines (each names its ``component``; a line about many sessions lists their ids in
``correlation_ids``) and the events whose envelope carries the id. Parsing, matching and
ordering are here, pure; fetching the logs from Ray and the events from Redis is
:mod:`kernelhub.trace_cli`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from events import StoredEvent

from .history.positions import iso_ms
from .history.render import short_stream

__all__ = ["EVENTS", "TraceEntry", "event_entry", "log_entries", "render", "timeline"]

EVENTS = "events"
"""The component name of entries that are events in the log."""
_OWN_KEYS = frozenset(
    {
        "timestamp",
        "component",
        "actor_name",
        "level",
        "event",
        "pid",
        "correlation_id",
        "correlation_ids",
    }
)


class TraceEntry(BaseModel):
    """One step of a traced call: a log line of an actor, or an event in the log."""

    model_config = ConfigDict(frozen=True)

    time: datetime
    source: Literal["log", "event"]
    component: str
    """``gateway``, ``sessions``, ``scheduler``, ``agent``, ... or ``events``."""
    where: str
    """The actor that logged it (``sessions:1``), or the event's stream."""
    what: str
    """The log message, or the event type."""
    level: str | None = None
    fields: dict[str, Any] = {}


def _mentions(record: dict[str, Any], correlation_id: str) -> bool:
    if record.get("correlation_id") == correlation_id:
        return True
    many = record.get("correlation_ids")
    return isinstance(many, list) and correlation_id in many


def log_entries(text: str, correlation_id: str) -> Iterator[TraceEntry]:
    """kernelhub's log lines in ``text`` (a worker's stderr: Ray's lines, tracebacks and
    other output interleave) that belong to ``correlation_id``."""
    for line in text.splitlines():
        if correlation_id not in line:  # most lines: no JSON parse
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "component" not in record:
            continue
        if not _mentions(record, correlation_id):
            continue
        try:
            time = datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            continue
        yield TraceEntry(
            time=time,
            source="log",
            component=str(record["component"]),
            where=str(record.get("actor_name", record["component"])),
            what=str(record.get("event", "")),
            level=record.get("level"),
            fields={k: v for k, v in record.items() if k not in _OWN_KEYS},
        )


def event_entry(event: StoredEvent) -> TraceEntry:
    return TraceEntry(
        time=datetime.fromisoformat(iso_ms(event.position_ms).replace("Z", "+00:00")),
        source="event",
        component=EVENTS,
        where=event.stream,
        what=event.type,
        fields={
            "version": event.version,
            "position": event.position,
            "actor": event.body.get("actor"),
        },
    )


def timeline(entries: Iterable[TraceEntry], components: Iterable[str] = ()) -> list[TraceEntry]:
    """In time order (an event before the log lines of the same millisecond: the log says
    what was done about it); only ``components``, if any are named."""
    wanted = frozenset(components)
    kept = [e for e in entries if not wanted or e.component in wanted]
    return sorted(kept, key=lambda e: (e.time, e.source != "event"))


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _where(entry: TraceEntry) -> str:
    """An event's stream shortened as ``kh events`` does; an actor's name as it is."""
    return short_stream(entry.where) if entry.source == "event" else entry.where


def render(entry: TraceEntry) -> str:
    """``18:41:26.867  scheduler  scheduler:default  sessions scheduled  agents=[...]``"""
    shown = {k: v for k, v in entry.fields.items() if v is not None and k != "position"}
    fields = " ".join(f"{k}={_value(v)}" for k, v in sorted(shown.items()))
    clock = entry.time.strftime("%H:%M:%S.%f")[:-3]
    level = f" [{entry.level}]" if entry.level not in (None, "info") else ""
    line = f"{clock}  {entry.component:9}  {_where(entry):18}  {entry.what}{level}  {fields}"
    return line.rstrip()
