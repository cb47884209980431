"""The log's cold tier: archived events in compressed JSONL files, and reading them back
merged with the live log.

``kh events archive`` moves the streams of sessions that ended long ago out of Redis, into
``*.jsonl.gz`` files. Each line has the export's shape, secrets included, because an
archive is a backup. The files are listed in ``<p>:archive`` (a hash: file path -> JSON
``{first, last, events, sessions}``), so every reader on the host finds them:
- the projector's rebuilds;
- ``kh replay --as-of``;
- ``kh events show`` and ``kh events verify``.

:func:`merged_entries` yields archive and log entries together in log order, as if nothing
had moved.

Archived events are deleted from the log entry by entry (``XDEL``), never by cutting a
prefix of the stream. A live aggregate's old events (tenancy, agents, the ledger, running
sessions) stay where their writers read them.
"""

from __future__ import annotations

import gzip
import heapq
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._canonical import canonical_dumps
from .envelope import position_key

__all__ = [
    "ArchiveFile",
    "archive_files",
    "archived_entries",
    "archived_stream",
    "entry_fields",
    "merged_entries",
    "write_archive",
]

RawEntry = tuple[str, Mapping[Any, Any]]
"""A log entry as XRANGE gives it: position and fields (``s``, ``v``, ``e``)."""


@dataclass(frozen=True)
class ArchiveFile:
    path: Path
    first: str
    last: str
    events: int
    sessions: int

    def as_json(self) -> str:
        return json.dumps(
            {
                "first": self.first,
                "last": self.last,
                "events": self.events,
                "sessions": self.sessions,
            },
            sort_keys=True,
        )


def write_archive(path: Path, entries: list[dict[str, Any]]) -> None:
    """Write export-shaped entries (sorted by position) to ``path``, durably: a temporary
    file, fsync'd, renamed into place."""
    temporary = path.with_name(path.name + ".part")
    with gzip.open(temporary, "wt", encoding="utf-8") as out:
        for entry in entries:
            out.write(json.dumps(entry, sort_keys=True))
            out.write("\n")
    with temporary.open("rb") as written:
        os.fsync(written.fileno())
    temporary.rename(path)


def entry_fields(entry: Mapping[str, Any]) -> dict[str, str]:
    """An export-shaped entry (an archive's or an export's line) back as the log's fields:
    the body's stored bytes when the line kept them, else its canonical form, and the
    hash-chain link when it has one (docs/audit.md)."""
    stored = entry.get("stored_body")
    fields = {
        "s": str(entry["stream"]),
        "v": str(entry["version"]),
        "e": stored if isinstance(stored, str) else canonical_dumps(entry["body"]),
    }
    if isinstance(entry.get("chain"), str):
        fields["h"] = entry["chain"]
    return fields


def _file_entries(path: Path) -> Iterator[RawEntry]:
    with gzip.open(path, "rt", encoding="utf-8") as source:
        for line in source:
            if line.strip():
                entry = json.loads(line)
                yield str(entry["position"]), entry_fields(entry)


async def archive_files(redis: Any, key: str) -> list[ArchiveFile]:
    """The archive files recorded for this log, oldest first."""
    recorded = await redis.hgetall(key)
    files = []
    for raw_path, raw_meta in recorded.items():
        meta = json.loads(raw_meta)
        path = Path(raw_path.decode() if isinstance(raw_path, bytes) else raw_path)
        files.append(
            ArchiveFile(
                path, meta["first"], meta["last"], int(meta["events"]), int(meta.get("sessions", 0))
            )
        )
    return sorted(files, key=lambda f: position_key(f.first))


def archived_entries(
    files: list[ArchiveFile], until: str | None = None, after: str | None = None
) -> Iterator[RawEntry]:
    """Every archived entry (after ``after``, up to ``until``), in log order across the
    files."""
    limit = position_key(until) if until else None
    start = position_key(after) if after else None
    streams = [
        _file_entries(f.path)
        for f in files
        if f.path.exists() and (start is None or position_key(f.last) > start)
    ]
    for position, fields in heapq.merge(*streams, key=lambda item: position_key(item[0])):
        if limit is not None and position_key(position) > limit:
            return
        if start is None or position_key(position) > start:
            yield position, fields


async def merged_entries(
    store: Any, until: str | None = None, page: int = 2000, after: str | None = None
) -> AsyncIterator[RawEntry]:
    """Archive and live log together, in log order (after ``after``, up to ``until``)."""
    files = await archive_files(store.redis, store.keys.archive)
    cold = archived_entries(files, until, after)
    pending = next(cold, None)
    after = after or "0-0"
    while True:
        live = await store.read_raw(after, page, until=until)
        for position, fields in live:
            while pending is not None and position_key(pending[0]) < position_key(position):
                yield pending
                pending = next(cold, None)
            yield position, fields
        if len(live) < page:
            break
        after = live[-1][0]
    while pending is not None:
        yield pending
        pending = next(cold, None)


async def archived_stream(store: Any, stream: str) -> list[RawEntry]:
    """A stream's entries from the archive (for a stream no longer in the live log)."""
    files = await archive_files(store.redis, store.keys.archive)
    return [
        (position, fields) for position, fields in archived_entries(files) if fields["s"] == stream
    ]
