"""What a projection is: a pure fold from events to records, plus indexes derived from them.

A projection never talks to Redis. For each event it names the records it touches
(:meth:`Projection.refs`), changes them in a working set (:meth:`Projection.apply`), and for
each record that changed it derives its secondary-index operations from the old and new
versions (:meth:`Projection.index_ops`). The runtime loads, commits and checkpoints; the same
fold runs live (record by record against Redis) and in a rebuild (all in memory), which is
why a rebuilt projection equals the live one byte for byte.

Time comes from events (their log position), never from a clock.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from events import StoredEvent
from events.readmodels import decode_record, encode_record

__all__ = [
    "IndexEntries",
    "IndexedProjection",
    "Op",
    "Projection",
    "Record",
    "RecordRef",
    "WorkingSet",
    "iso_of",
]

Record = dict[str, Any]
"""A read-model record: JSON-shaped, stored as canonical JSON."""

RecordRef = tuple[str, str]
"""(kind, id): records live in one hash per kind, keyed by id."""

Op = tuple[Any, ...]
"""An index operation on a key relative to the generation prefix, one of:
``("zadd", key, score, member)``, ``("zrem", key, member)``, ``("hset", key, field, value)``,
``("hdel", key, field)``."""


def iso_of(position_ms: int) -> str:
    """An event's time (its log position) as ISO 8601 UTC with milliseconds."""
    return f"{_iso_second(position_ms // 1000)}.{position_ms % 1000:03d}Z"


@functools.lru_cache(maxsize=1024)
def _iso_second(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a Unix second: events come many to a second, so the date
    is formatted once per second of log, not once per event."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class WorkingSet:
    """The records one batch works on: loaded before, written after (only those changed)."""

    original: dict[RecordRef, str | None] = field(default_factory=dict)
    current: dict[RecordRef, Record | None] = field(default_factory=dict)
    complete: bool = False
    """True when ``current`` holds every record there is (a rebuild): any record may be put.
    Otherwise only records loaded for the batch, which ``refs()`` must have named."""

    def get(self, kind: str, record_id: str) -> Record | None:
        return self.current.get((kind, record_id))

    def put(self, kind: str, record_id: str, record: Record | None) -> None:
        if not self.complete and (kind, record_id) not in self.current:
            raise KeyError(f"record {kind}/{record_id} was not named by refs()")
        self.current[(kind, record_id)] = record

    def changes(
        self, finalize: Callable[[RecordRef, Record], None] | None = None
    ) -> Iterator[tuple[RecordRef, Record | None, Record | None, str | None]]:
        """(ref, old, new, new canonical JSON) for every record that differs from its load,
        after ``finalize`` completed each record's derived fields."""
        for ref, record in self.current.items():
            if record is not None and finalize is not None:
                finalize(ref, record)
            encoded = None if record is None else encode_record(record)
            before = self.original.get(ref)
            if encoded != before:
                old = None if before is None else decode_record(before)
                yield ref, old, record, encoded


class Projection(ABC):
    """A read model folded from the log."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    """Bump when the fold changes: the stored generation then no longer matches."""
    types: ClassVar[frozenset[str] | None] = None
    """The event types the fold reads (``None``: it may read any). The runtime hands it
    only these, and does not decode an event no projection reads: ``refs`` and ``apply``
    must do nothing with any other type."""

    @abstractmethod
    def refs(self, event: StoredEvent) -> Iterable[RecordRef]:
        """The records ``event`` reads or writes (it may ignore the event: nothing)."""

    @abstractmethod
    def apply(self, event: StoredEvent, records: WorkingSet) -> None:
        """Fold ``event`` into the records (pure: no I/O, no clock)."""

    def finalize(self, ref: RecordRef, record: Record) -> None:
        """Complete fields derived from the rest of the record, once per record and batch
        (not per event): totals, counts. Nothing to derive by default."""
        return None

    def index_ops(self, ref: RecordRef, old: Record | None, new: Record | None) -> Iterable[Op]:
        """Secondary-index changes implied by one record's change."""
        return ()

    def initial_index_ops(self, ref: RecordRef, record: Record) -> Iterable[Op]:
        """The index entries of ``record`` in a fresh generation (a rebuild): its change from
        nothing, in any order."""
        return self.index_ops(ref, None, record)


IndexEntries = dict[tuple[str, str], Any]
"""(key, member) -> score for sorted sets, or (key, field) -> value for hashes."""


class IndexedProjection(Projection):
    """A projection whose indexes are a pure function of each record.

    Subclasses say which sorted-set memberships and hash fields a record implies; the
    index operations are the difference between the old and the new record's entries, so
    indexes can never drift from the records.
    """

    def zset_entries(self, ref: RecordRef, record: Record) -> IndexEntries:
        return {}

    def hash_entries(self, ref: RecordRef, record: Record) -> IndexEntries:
        return {}

    def index_ops(self, ref: RecordRef, old: Record | None, new: Record | None) -> list[Op]:
        ops: list[Op] = []
        old_z = self.zset_entries(ref, old) if old is not None else {}
        new_z = self.zset_entries(ref, new) if new is not None else {}
        for (key, member), _ in sorted(old_z.items()):
            if (key, member) not in new_z:
                ops.append(("zrem", key, member))
        for (key, member), score in sorted(new_z.items()):
            if old_z.get((key, member)) != score:
                ops.append(("zadd", key, score, member))
        old_h = self.hash_entries(ref, old) if old is not None else {}
        new_h = self.hash_entries(ref, new) if new is not None else {}
        for (key, field_), _ in sorted(old_h.items()):
            if (key, field_) not in new_h:
                ops.append(("hdel", key, field_))
        for (key, field_), value in sorted(new_h.items()):
            if old_h.get((key, field_)) != value:
                ops.append(("hset", key, field_, value))
        return ops

    def initial_index_ops(self, ref: RecordRef, record: Record) -> list[Op]:
        """:meth:`index_ops` from nothing, without the diff and the sort."""
        ops: list[Op] = [
            ("zadd", key, score, member)
            for (key, member), score in self.zset_entries(ref, record).items()
        ]
        ops += [
            ("hset", key, field_, value)
            for (key, field_), value in self.hash_entries(ref, record).items()
        ]
        return ops
