"""``kh events archive --before TIME``: move long-ended sessions out of Redis.

What moves: the streams of sessions that ended (TERMINATED or CANCELLED) with every event
at or before the cutoff. The cutoff is also capped at the projections' lowest checkpoint:
nothing a read model has not folded may leave. Their events go into one compressed file
under the archive directory. The file is recorded in ``<p>:archive``, and only then are the
events deleted from Redis: the log entries, the stream's index and the event-id records.

The read models keep showing the archived sessions, and a rebuild folds the archive too
(:mod:`events.archive`). So what the API answers does not change; only Redis' memory does.
What stays in Redis:
- the ledger's reservations and releases: the scheduler folds that stream and its versions
  must stay contiguous;
- tenancy and agent streams, and every live session.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events import RedisEventStore, position_key
from events.archive import ArchiveFile, write_archive
from projections.models import default_projections
from projections.queries import ReadModels

from .positions import Cutoff
from .render import event_json

__all__ = ["ArchiveResult", "archive_before"]

_ENDED = ("TERMINATED", "CANCELLED")
_DELETE_CHUNK = 500


@dataclass(frozen=True)
class ArchiveResult:
    sessions: int
    events: int
    file: str | None
    memory_before: int
    memory_after: int
    until: str

    def as_json(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "events": self.events,
            "file": self.file,
            "memory_before": self.memory_before,
            "memory_after": self.memory_after,
            "until": self.until,
        }


async def _lowest_checkpoint(store: RedisEventStore) -> str:
    lowest = None
    for projection in default_projections():
        active = await store.read_models.active(projection.name)
        if active is None:
            return "0-0"  # a projection that never ran has folded nothing
        checkpoint = await active.checkpoint()
        if lowest is None or position_key(checkpoint) < position_key(lowest):
            lowest = checkpoint
    return lowest or "0-0"


async def _used_memory(store: RedisEventStore) -> int:
    return await store.used_memory()


async def _ended_sessions(store: RedisEventStore) -> list[str]:
    models = ReadModels(store)
    ended: list[str] = []
    for status in _ENDED:
        offset = 0
        while True:
            page = await models.sessions(statuses=[status], offset=offset, limit=500)
            ended += [r["id"] for r in page.items]
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
    return ended


async def archive_before(store: RedisEventStore, cutoff: Cutoff, directory: Path) -> ArchiveResult:
    """Archive the streams of sessions ended at or before ``cutoff`` (capped at the
    projections' lowest checkpoint) into one file in ``directory``."""
    checkpoint = await _lowest_checkpoint(store)
    until = cutoff.until
    if position_key(checkpoint) < position_key(until):
        until = checkpoint
    memory_before = await _used_memory(store)
    moving: list[tuple[str, list[str]]] = []
    for session_id in await _ended_sessions(store):
        stream = f"session-{session_id}"
        positions = await store.stream_positions(stream)
        if positions and position_key(positions[-1]) <= position_key(until):
            moving.append((stream, positions))
    if not moving:
        return ArchiveResult(0, 0, None, memory_before, memory_before, until)
    entries: list[dict[str, Any]] = []
    for stream, _ in moving:
        entries += [
            event_json(
                store.codec.decode_stored(position, fields), with_secrets=True, fields=fields
            )
            for position, fields in await store.read_stream_raw(stream)
        ]
    entries.sort(key=lambda e: position_key(e["position"]))
    first, last = entries[0]["position"], entries[-1]["position"]
    path = await asyncio.to_thread(_write, directory, f"sessions-{first}-{last}.jsonl.gz", entries)
    record = ArchiveFile(path, first, last, len(entries), len(moving))
    await store.record_archive_file(str(path), record.as_json())
    await _delete(store, moving, [(e["position"], e["body"]["event_id"]) for e in entries])
    return ArchiveResult(
        len(moving), len(entries), str(path), memory_before, await _used_memory(store), until
    )


def _write(directory: Path, name: str, entries: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = (directory / name).resolve()
    write_archive(path, entries)
    return path


async def _delete(
    store: RedisEventStore, moving: list[tuple[str, list[str]]], ids: list[tuple[str, str]]
) -> None:
    """The archived events leave Redis: log entries, stream indexes, event-id records."""
    await store.forget_archived(ids, [stream for stream, _ in moving], _DELETE_CHUNK)
