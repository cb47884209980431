"""The projector runtime: reads the log once, folds every projection, commits exactly once.

Each projection has its own *generation* (a key prefix) and checkpoint, kept by the store's
read-model storage (:mod:`events.readmodels`). A batch of events
is read once; for each projection the events after its checkpoint are folded and the
changed records, their index operations and the new checkpoint are committed in one
MULTI/EXEC (see ``targets``). A crash before EXEC leaves nothing; after it, everything. An
event that cannot be decoded, or whose fold fails, stops the projections that have not
passed it and raises an alarm: it is never skipped.

Rebuild builds a new generation from position 0 in memory, bulk-writes it, catches up to
the head, flips the active pointer and unlinks the old generation in the background; the
old one serves reads until the flip.

After Redis was away (or restarted, and may have lost its last second) the projector
*realigns* before it folds on: the checkpoints are read again from Redis (the ones in
memory may be ahead of what survived), and a projection whose stored checkpoint is past the
log's head (its records were kept somewhere the lost tail was not) is rebuilt rather than
left skipping whatever is appended up to that checkpoint.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from events import (
    PAYLOAD_TYPES,
    EventCodec,
    EventDecodeError,
    RedisEventStore,
    StoredEvent,
    position_key,
)
from events.archive import merged_entries
from events.readmodels import Generation, StaleGeneration, decode_record, encode_record
from events.server import SERVER_GONE

from .base import Op, Projection, RecordRef, WorkingSet

__all__ = ["ProjectionState", "Projector"]

log = structlog.get_logger(__name__)

_OUTAGES: tuple[type[Exception], ...] = (*SERVER_GONE, ConnectionError, OSError)
"""Redis gone for a while: waited out, never a reason to halt a projection."""
_OUTAGE_BACKOFF_S = (0.05, 2.0)
_REALIGN_REBUILDS = "rebuilt: its checkpoint was past the log's head"

CommitHook = Callable[[str, Sequence[StoredEvent], float], None]
ProgressHook = Callable[[int, int], None]
RawEntry = tuple[str, Mapping[Any, Any]]


async def _nothing() -> list[Any]:
    return []


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while a rebuild piles up records and writes them: every collection
    would walk the whole growing heap (records are trees, so nothing cyclic is left behind
    meanwhile)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class ProjectionState:
    projection: Projection
    generation: int
    checkpoint: str = "0-0"
    running: bool = True
    error: str | None = None
    events_per_s: float = 0.0
    committed_at: float = 0.0


async def fold(
    projection: Projection, events: Sequence[StoredEvent], target: Generation
) -> tuple[dict[RecordRef, str | None], list[Op]]:
    """Fold ``events`` into the records they touch; return the writes and index ops."""
    if projection.types is not None:
        events = [e for e in events if e.type in projection.types]
    refs: dict[RecordRef, None] = {}
    for event in events:
        for ref in projection.refs(event):
            refs[ref] = None
    original = await target.load(refs)
    working = WorkingSet(
        original=original,
        current={
            ref: (None if raw is None else decode_record(raw)) for ref, raw in original.items()
        },
    )
    for event in events:
        projection.apply(event, working)
    records: dict[RecordRef, str | None] = {}
    ops: list[Op] = []
    for ref, old, new, encoded in working.changes(projection.finalize):
        records[ref] = encoded
        ops.extend(projection.index_ops(ref, old, new))
    return records, ops


class Projector:
    def __init__(
        self,
        store: RedisEventStore,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        block_ms: int = 500,
        on_commit: CommitHook | None = None,
    ) -> None:
        self.store = store
        self.storage = store.read_models
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.on_commit = on_commit
        self.states: dict[str, ProjectionState] = {}
        self._cleanup: set[asyncio.Task[None]] = set()
        self._realign = False
        self.realigned = 0
        """How many times the checkpoints were read again after an outage or a restart."""
        self.costs: dict[str, float] | None = None
        """When a dict, rebuilds add to it the seconds spent per stage: ``read`` (waiting
        for the log), ``decode``, ``fold:<name>``, ``write:<name>`` (encoding and bulk
        writing a generation) and ``catch_up:<name>`` (a few clock reads per page: cheap)."""

    def realign_soon(self) -> None:
        """Read the checkpoints again (and rebuild any past the head) before the next fold:
        the log changed under the projector (Redis restarted)."""
        self._realign = True

    async def realign(self) -> list[str]:
        """Read each projection's generation and checkpoint again from Redis; rebuild those
        whose checkpoint is past the log's head. The names rebuilt."""
        for state in self.states.values():
            await self._reload(state)
        head = position_key(await self.store.head())
        behind = [
            name
            for name, state in self.states.items()
            if state.running and position_key(state.checkpoint) > head
        ]
        for name in behind:
            log.warning(
                "projection checkpoint past the log's head; rebuilding",
                projection=name,
                checkpoint=self.states[name].checkpoint,
            )
        if behind:
            await self.rebuild_many(behind)
        self.realigned += 1
        return behind

    # ---- generations ----------------------------------------------------------------------
    async def _active_generation(self, name: str) -> int:
        active = await self.storage.active_number(name)
        if active is not None:
            return active
        generation = await self.storage.next_number(name)
        await self._generation(name, generation).set_version(self.projections[name].version)
        return await self.storage.activate_first(name, generation)

    def _generation(self, name: str, generation: int) -> Generation:
        return self.storage.generation(name, generation)

    async def load(self) -> None:
        """Find each projection's active generation and checkpoint; rebuild a generation
        folded by another version of the code. All or nothing: a load cut short by an
        outage leaves no projection half-known."""
        states: dict[str, ProjectionState] = {}
        for name, projection in self.projections.items():
            generation = await self._active_generation(name)
            version = await self._generation(name, generation).version()
            if version is not None and version != projection.version:
                log.warning(
                    "projection folded by other code: rebuilding",
                    projection=name,
                    stored=version,
                    code=projection.version,
                )
                generation = await self.rebuild(name)
            ckpt = await self._checkpoint(name, generation)
            states[name] = ProjectionState(projection, generation, ckpt)
        self.states = states

    # ---- the live loop --------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Tail the log until ``stop`` is set; return early if every projection halted. A
        Redis outage is waited out: the checkpoints are re-read and folding goes on."""
        backoff = _OUTAGE_BACKOFF_S[0]
        away: float | None = None
        while not (stop and stop.is_set()):
            if self.states and not any(s.running for s in self.states.values()):
                return
            try:
                if not self.states:
                    await self.load()
                if self._realign:
                    self._realign = False
                    await self.realign()
                processed = await self.step()
                if processed == 0:
                    await self._wait_for_more()
            except _OUTAGES as exc:
                if away is None:  # once per outage, not once per try
                    away = time.monotonic()
                    log.warning("projector lost Redis; waiting for it", error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _OUTAGE_BACKOFF_S[1])
                self._realign = True  # a commit may have landed unacknowledged, or been lost
                continue
            if away is not None:
                log.info("projector reached Redis again", down_s=round(time.monotonic() - away, 2))
                away = None
            backoff = _OUTAGE_BACKOFF_S[0]

    async def catch_up(self) -> int:
        """Fold until every running projection has reached the head; returns events folded."""
        if not self.states:
            await self.load()
        total = 0
        while True:
            processed = await self.step()
            total += processed
            if processed == 0:
                return total

    async def _wait_for_more(self) -> None:
        after = self._read_from()
        if after is None:
            return
        await self.store.wait_for_events(after, self.block_ms)

    def _read_from(self) -> str | None:
        running = [s.checkpoint for s in self.states.values() if s.running]
        return min(running, key=position_key) if running else None

    async def step(self) -> int:
        """Read one batch and fold it into every projection behind it."""
        after = self._read_from()
        if after is None:
            return 0
        entries = await self.store.read_raw(after, self.batch_size)
        if not entries:
            return 0
        events: list[StoredEvent] = []
        halt: tuple[str, str] | None = None
        for position, fields in entries:
            try:
                events.append(self.store.codec.decode_stored(position, fields))
            except EventDecodeError as exc:
                halt = (position, str(exc))
                break
        keys = [position_key(e.position) for e in events]
        for state in self.states.values():
            if state.running:
                start = bisect.bisect_right(keys, position_key(state.checkpoint))
                await self._fold_and_commit(state, events[start:])
        if halt is not None:
            await self._halt_all_behind(*halt)
        return len(events) + (1 if halt else 0)

    async def _fold_and_commit(self, state: ProjectionState, mine: Sequence[StoredEvent]) -> None:
        """Fold ``mine`` (the batch's events after the projection's checkpoint) and commit."""
        if not mine:
            return
        name = state.projection.name
        target = self._generation(name, state.generation)
        try:
            records, ops = await fold(state.projection, mine, target)
        except _OUTAGES:
            raise  # Redis, not the fold: retried by the loop
        except Exception as exc:  # a fold that breaks halts the projection, never skips
            await self._halt(state, mine[0].position, f"fold failed: {exc!r}")
            return
        started = time.perf_counter()
        now = time.time()
        elapsed = max(now - state.committed_at, 1e-3) if state.committed_at else 1.0
        rate = len(mine) / elapsed
        status = {
            "generation": str(state.generation),
            "version": str(state.projection.version),
            "checkpoint": mine[-1].position,
            "committed_at_ms": str(int(now * 1000)),
            "events_per_s": f"{0.8 * state.events_per_s + 0.2 * rate:.1f}",
            "state": "running",
            "error": "",
        }
        try:
            await target.commit(
                expected_checkpoint=state.checkpoint,
                checkpoint=mine[-1].position,
                records=records,
                ops=ops,
                status=status,
            )
        except StaleGeneration as exc:
            log.info("projection generation moved; reloading", projection=name, why=str(exc))
            await self._reload(state)
            return
        state.checkpoint = mine[-1].position
        state.events_per_s = float(status["events_per_s"])
        state.committed_at = now
        if self.on_commit:
            self.on_commit(name, mine, time.time())
        log.debug(
            "projection committed",
            projection=name,
            events=len(mine),
            ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def _reload(self, state: ProjectionState) -> None:
        name = state.projection.name
        state.generation = await self.storage.active_number(name) or 1
        state.checkpoint = await self._checkpoint(name, state.generation)

    async def _checkpoint(self, name: str, generation: int) -> str:
        return await self._generation(name, generation).checkpoint()

    async def _halt_all_behind(self, position: str, reason: str) -> None:
        for state in self.states.values():
            if state.running and position_key(state.checkpoint) < position_key(position):
                await self._halt(state, position, reason)

    async def _halt(self, state: ProjectionState, position: str, reason: str) -> None:
        name = state.projection.name
        message = f"projection {name} stopped at log position {position}: {reason}"
        state.running = False
        state.error = message
        await self.storage.halt(name, message)
        log.error("projection halted", projection=name, position=position, reason=reason)

    # ---- rebuild ----------------------------------------------------------------------------
    async def rebuild(self, name: str, progress: ProgressHook | None = None) -> int:
        """Build a fresh generation of ``name`` from position 0 and make it the active one."""
        return (await self.rebuild_many([name], progress))[name]

    async def rebuild_many(
        self, names: Sequence[str], progress: ProgressHook | None = None
    ) -> dict[str, int]:
        """Rebuild several projections reading the log once; returns their new generations.

        Records are folded in memory and written once at the end, with their indexes
        derived from the final records (an indexed projection's indexes are a function of
        its records, which is what makes this equal to the live, diff-by-diff result).
        """
        projections = [self.projections[n] for n in names]
        generations = {p.name: await self.storage.next_number(p.name) for p in projections}
        folder = _PageFolder(self.store.codec, projections, self.costs)
        with _gc_paused():  # until the records are written: they are the heap
            position, done = await self._fold_in_memory(folder, progress)
            for projection in projections:
                with folder.timed(f"write:{projection.name}"):
                    await self._write_generation(
                        projection,
                        generations[projection.name],
                        folder.working.pop(projection.name),
                        position,
                    )
        result = {}
        for projection in projections:
            generation = generations[projection.name]
            with folder.timed(f"catch_up:{projection.name}"):
                result[projection.name] = await self._catch_up_and_flip(
                    projection, generation, position
                )
        log.info("projections rebuilt", generations=result, events=done)
        return result

    async def _fold_in_memory(
        self, folder: _PageFolder, progress: ProgressHook | None
    ) -> tuple[str, int]:
        head = await self.store.head()
        total = await self.store.log_length()
        files = await self.store.archive_files()
        if files:  # archived events fold in their place among the live ones
            return await self._fold_merged(
                folder, progress, head, total + sum(f.events for f in files)
            )
        position, done = "0-0", 0
        page = self.batch_size * 5
        # read the next page while this one is folded: Redis works on the other core
        pending = asyncio.ensure_future(self.store.read_raw(position, page, until=head))
        while True:
            with folder.timed("read"):
                entries = await pending
            if not entries:
                break
            position = entries[-1][0]
            if position_key(position) < position_key(head):
                pending = asyncio.ensure_future(self.store.read_raw(position, page, until=head))
            else:
                pending = asyncio.ensure_future(_nothing())
            folder.fold(entries)
            done += len(entries)
            if progress:
                progress(done, total)
        return position, done

    async def _fold_merged(
        self, folder: _PageFolder, progress: ProgressHook | None, head: str, total: int
    ) -> tuple[str, int]:
        position, done, batch = "0-0", 0, []
        async for entry in merged_entries(self.store, until=head):
            batch.append(entry)
            if len(batch) >= self.batch_size * 5:
                folder.fold(batch)
                position, done = batch[-1][0], done + len(batch)
                batch = []
                if progress:
                    progress(done, total)
        if batch:
            folder.fold(batch)
            position, done = batch[-1][0], done + len(batch)
        if progress:
            progress(done, total)
        return position, done

    async def _write_generation(
        self, projection: Projection, generation: int, records: WorkingSet, position: str
    ) -> None:
        encoded: dict[RecordRef, str] = {}
        ops: list[Op] = []
        for ref, record in records.current.items():
            if record is None:
                continue
            projection.finalize(ref, record)
            encoded[ref] = encode_record(record)
            ops.extend(projection.initial_index_ops(ref, record))
        target = self._generation(projection.name, generation)
        await target.bulk_write(encoded, ops)
        await target.set_checkpoint(position)
        await target.set_version(projection.version)

    async def _catch_up_and_flip(
        self, projection: Projection, generation: int, position: str
    ) -> int:
        """Fold what arrived during the rebuild, then make the generation the active one."""
        name = projection.name
        target = self._generation(name, generation)
        state = ProjectionState(projection, generation, position)
        while True:
            events = await self.store.read_stored(state.checkpoint, self.batch_size)
            if not events:
                break
            records, ops = await fold(projection, events, target)
            await target.commit(
                expected_checkpoint=state.checkpoint,
                checkpoint=events[-1].position,
                records=records,
                ops=ops,
                require_active=False,
            )
            state.checkpoint = events[-1].position
        old = await self.storage.flip(name, generation)
        await self.storage.clear_alarm(name)
        if old is not None and old != generation:
            task = asyncio.create_task(self._unlink_generation(name, old))
            self._cleanup.add(task)
            task.add_done_callback(self._cleanup.discard)
        if name in self.states:
            self.states[name] = ProjectionState(projection, generation, state.checkpoint)
        return generation

    async def _unlink_generation(self, name: str, generation: int) -> None:
        """Drop a retired generation's keys (maintenance, not a query: SCAN is fine here)."""
        await self._generation(name, generation).unlink()

    async def wait_cleanup(self) -> None:
        if self._cleanup:
            await asyncio.gather(*self._cleanup)


class _PageFolder:
    """A rebuild's fold of pages of raw log entries into in-memory working sets.

    Each projection is handed only the event types it reads (:attr:`Projection.types`),
    and an entry that no projection reads is not decoded at all: its type is read off the
    end of its body (:meth:`events.codec.EventCodec.stored_type`). Everything else is
    decoded as the live path decodes it, and an entry that cannot be decoded raises."""

    def __init__(
        self,
        codec: EventCodec,
        projections: Sequence[Projection],
        costs: dict[str, float] | None,
    ) -> None:
        self.projections = projections
        self.working = {p.name: WorkingSet(complete=True) for p in projections}
        self.costs = costs
        self._decode = codec.decode_stored
        self._unread = codec.stored_tails(unread_types(projections))

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        if self.costs is None:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            self.costs[stage] = self.costs.get(stage, 0.0) + time.perf_counter() - started

    def fold(self, entries: Sequence[RawEntry]) -> None:
        with self.timed("decode"):
            events = self._decode_read(entries)
        for projection in self.projections:
            types = projection.types
            mine = events if types is None else [e for e in events if e.type in types]
            records, apply = self.working[projection.name], projection.apply
            with self.timed(f"fold:{projection.name}"):
                for event in mine:
                    apply(event, records)

    def _decode_read(self, entries: Sequence[RawEntry]) -> list[StoredEvent]:
        """The entries some projection reads, decoded."""
        decode, unread = self._decode, self._unread
        if not unread:
            return [decode(position, fields) for position, fields in entries]
        events = []
        for position, fields in entries:
            body = fields.get(b"e")
            if type(body) is bytes and body.endswith(unread):
                continue
            events.append(decode(position, fields))
        return events


def unread_types(projections: Sequence[Projection]) -> frozenset[str]:
    """The event types none of ``projections`` reads (none when one may read any)."""
    if any(p.types is None for p in projections):
        return frozenset()
    read: set[str] = set()
    for projection in projections:
        read |= projection.types or frozenset()
    return frozenset(PAYLOAD_TYPES) - read
