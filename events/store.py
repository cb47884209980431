"""The event store: kernelhub's log on Redis Streams.

Delivery semantics, said out loud:

* **append is exactly-once per event id.** Writers derive event ids from their command id,
  so a retried command (after a timeout, a Ray actor error, a client-level reconnect) is
  recognised by the append script and answered with the original positions.
* **appends are atomic** per call, across every stream of an ``append_multi``: all events
  are stored, or none (a version conflict or a partial duplicate stores nothing).
* **acknowledged means durable** only with ``appendfsync always``; the embedded default
  ``everysec`` may lose up to about one second of acknowledged events on power loss.
* **subscriptions are at-least-once** across reconnects at the consumer (they resume after
  the last delivered position, so in practice each event is seen once, in log order).

Beside the log, the store gives each other thing kept in Redis a small, named home, so that
no caller outside ``events`` touches a Redis client: ``clock`` (the server's time),
``telemetry`` and ``idle`` (:mod:`events.telemetry`), ``followers`` and ``install``
(:mod:`events.install`), ``read_models`` (:mod:`events.readmodels`) and ``rate_limits``
(:mod:`events.ratelimit`).
"""

from __future__ import annotations

import enum
import importlib.resources
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ._canonical import canonical_dumps, loads
from .codec import EventCodec, default_codec
from .envelope import Event, NewEvent, Position, StoredEvent, validate_stream_name
from .errors import DuplicateBatchError, EventStoreError, WrongExpectedVersionError
from .install import FollowerPositions, InstallFacts
from .keys import DEFAULT_PREFIX, KeySpace
from .ratelimit import RequestCounter
from .readmodels import ReadModelStorage
from .server import ServerMark
from .subscription import Subscription
from .telemetry import Clock, IdleActivity, Telemetry

if TYPE_CHECKING:
    from .archive import ArchiveFile

__all__ = [
    "ANY_VERSION",
    "NO_STREAM",
    "AppendResult",
    "Durability",
    "RedisEventStore",
    "Snapshot",
    "StreamBatch",
]

ANY_VERSION: None = None
"""Expected version meaning "append whatever the stream's version is"."""
NO_STREAM = 0
"""Expected version of a stream that has no events yet."""

_READ_PAGE = 1000
SOCKET_TIMEOUT_S = 5.0
"""How long one command may wait for Redis's answer before it fails with ``TimeoutError``
(a stopped server, SIGSTOP, never answers: without a bound every caller would hang; the
gateway answers 503 instead). Longer than any ``XREAD BLOCK`` here (at most 1 s)."""
CONNECT_TIMEOUT_S = 2.0
"""How long connecting may take (a server whose backlog is full never accepts)."""


class Durability(enum.StrEnum):
    """Redis ``appendfsync``: when an acknowledged append is on disk."""

    EVERYSEC = "everysec"
    ALWAYS = "always"


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """Events for one stream within an ``append_multi``."""

    stream: str
    events: Sequence[NewEvent]
    expected_version: int | None = ANY_VERSION


@dataclass(frozen=True, slots=True)
class AppendResult:
    stream: str
    positions: tuple[Position, ...]
    version: int
    """The stream's version after this batch (the version of its last event)."""
    duplicate: bool = False
    """True when the batch had been stored before: this call was a retry and changed nothing."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    stream: str
    version: int
    schema: str
    state: Any


def _script(name: str) -> str:
    return importlib.resources.files("events").joinpath("lua", name).read_text()


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


BatchLike = StreamBatch | tuple[str, int | None, Sequence[NewEvent]]


def _driver_info() -> DriverInfo:
    """What each connection tells the server about its client (``CLIENT SETINFO``),
    resolved once: redis-py otherwise looks its own version up in the installed packages'
    metadata for every new connection (about 2 ms each, 13% of a busy shard's CPU while
    its pool grew under load)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        lib_version = version("redis")
    except PackageNotFoundError:  # a vendored copy: what redis-py itself reports then
        lib_version = "99.99.99"
    return DriverInfo(name="redis-py", lib_version=lib_version)


_DRIVER_INFO = _driver_info()


class RedisEventStore:
    """Append, read and subscribe to the log. One instance per event loop; cheap to share."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        codec: EventCodec | None = None,
    ) -> None:
        self.redis = client
        """The raw client: for ``events`` only (and tests); everything else has a home below."""
        self.keys = KeySpace(prefix)
        self.codec = codec or default_codec
        self.clock = Clock(client)
        self.telemetry = Telemetry(client, self.keys)
        self.idle = IdleActivity(client, self.keys)
        self.followers = FollowerPositions(client, self.keys)
        self.install = InstallFacts(client, self.keys)
        self.read_models = ReadModelStorage(client, self.keys)
        self.rate_limits = RequestCounter(client, self.keys)
        self._append = client.register_script(_script("append.lua"))
        self._read_stream = client.register_script(_script("read_stream.lua"))
        self._save_snapshot = client.register_script(_script("save_snapshot.lua"))
        self._stream_versions = client.register_script(_script("stream_versions.lua"))

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = 256, **kwargs: Any) -> RedisEventStore:
        """``redis://127.0.0.1:PORT/0`` or ``unix:///path/redis.sock``.

        Connections come from a blocking pool: a burst of concurrent commands waits for a
        free connection instead of failing (blocking reads each hold one while they wait).
        After Redis restarts, a connection the pool kept may have been closed under it
        (the pool's check on hand-out does not always see it: the write is what fails), so
        a command that fails on its connection is sent once more on a new one, and the
        first command after an outage reaches the new server instead of failing on the old
        socket. Once only, and never after a timeout: a server that is away or stopped
        fails the call at once, bounded by :data:`SOCKET_TIMEOUT_S`. Sending again is
        safe: appends are recognised by their event ids.
        """
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            decode_responses=False,
            max_connections=max_connections,
            timeout=30,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            driver_info=_DRIVER_INFO,
        )
        return cls(aioredis.Redis(connection_pool=pool), **kwargs)

    async def close(self) -> None:
        await self.redis.aclose()

    # ---- server ---------------------------------------------------------------------------

    async def check_server(self, durability: Durability | None = None) -> None:
        """Refuse a Redis that could silently drop events; optionally set ``appendfsync``."""
        reply = {_s(k): _s(v) for k, v in (await self.redis.config_get("maxmemory-policy")).items()}
        policy = reply.get("maxmemory-policy", "unknown")
        if policy != "noeviction":
            raise EventStoreError(
                f"Redis maxmemory-policy is {policy!r}: evictions would silently lose events; "
                "set it to 'noeviction'"
            )
        if durability is not None:
            await self.redis.config_set("appendonly", "yes")
            await self.redis.config_set("appendfsync", durability.value)

    async def server_time(self) -> float:
        """The log's clock (Redis ``TIME``), in seconds since the epoch: what ages are
        judged by, whatever this machine's clock says."""
        seconds, micros = await self.redis.time()
        return float(seconds) + micros / 1e6

    async def server_info(self) -> dict[str, Any]:
        """Redis's ``INFO`` (version, memory, ...), for operators."""
        return dict(await self.redis.info())

    async def server_mark(self) -> ServerMark:
        """The Redis process serving the log and the log's head there, in one round trip
        (see :func:`events.server.needs_reload`)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.info("server")
        pipe.xinfo_stream(self.keys.log)
        info, stream = await pipe.execute(raise_on_error=False)
        if isinstance(info, Exception):
            raise info
        head = "0-0" if isinstance(stream, Exception) else _s(stream["last-generated-id"])
        return ServerMark(run_id=_s(info["run_id"]), head=head)

    async def appendfsync(self) -> str | None:
        """When an acknowledged append is on disk (``everysec``/``always``)."""
        config = await self.redis.config_get("appendfsync")
        value = next(iter(config.values()), None)
        return None if value is None else _s(value)

    async def used_memory(self) -> int:
        """Bytes Redis holds (the log, its indexes, the read models, telemetry)."""
        return int((await self.redis.info("memory"))["used_memory"])

    # ---- append ---------------------------------------------------------------------------

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: int | None
    ) -> AppendResult:
        """Append ``events`` to ``stream`` if it is at ``expected_version`` (``None``: any)."""
        (result,) = await self.append_multi([StreamBatch(stream, events, expected_version)])
        return result

    async def append_multi(self, batches: Iterable[BatchLike]) -> list[AppendResult]:
        """Append to several streams atomically, each with its own expected version."""
        items = [
            b if isinstance(b, StreamBatch) else StreamBatch(b[0], b[2], b[1]) for b in batches
        ]
        if not items:
            return []
        keys = [self.keys.log, self.keys.event_ids, self.keys.chain]
        head: list[Any] = [len(items)]
        tail: list[Any] = []
        seen_streams: set[str] = set()
        seen_ids: set[str] = set()
        for item in items:
            validate_stream_name(item.stream)
            if item.stream in seen_streams:
                raise ValueError(f"stream {item.stream!r} appears twice in one append_multi")
            seen_streams.add(item.stream)
            if item.expected_version is not None and item.expected_version < 0:
                raise ValueError(f"expected_version must be >= 0, got {item.expected_version}")
            keys.append(self.keys.stream_index(item.stream))
            expected = -1 if item.expected_version is None else item.expected_version
            head += [item.stream, expected, len(item.events)]
            for event in item.events:
                event_id = str(event.event_id)
                if event_id in seen_ids:
                    raise ValueError(f"event id {event_id} appears twice in one append")
                seen_ids.add(event_id)
                tail += [event_id, self.codec.encode(event)]
        reply = await self._append(keys=keys, args=head + tail)
        return self._append_results(items, reply)

    @staticmethod
    def _append_results(items: list[StreamBatch], reply: list[Any]) -> list[AppendResult]:
        kind = _s(reply[0])
        if kind == "conflict":
            raise WrongExpectedVersionError(_s(reply[1]), int(reply[2]), int(reply[3]))
        if kind == "partial":
            raise DuplicateBatchError(int(reply[1]), int(reply[2]), _s(reply[3]))
        results: list[AppendResult] = []
        if kind == "dup":
            # each record is "<position> <version>", in the order the batch sent the events
            records = iter(_s(r).split(" ") for r in reply[1])
            for item in items:
                records_of_item = [next(records) for _ in item.events]
                version = max((int(v) for _, v in records_of_item), default=0)
                positions_of_item = tuple(p for p, _ in records_of_item)
                results.append(
                    AppendResult(item.stream, positions_of_item, version, duplicate=True)
                )
            return results
        positions = iter(reply[2])
        for item, version in zip(items, reply[1], strict=True):
            mine = tuple(_s(next(positions)) for _ in item.events)
            results.append(AppendResult(item.stream, mine, int(version)))
        return results

    # ---- read -----------------------------------------------------------------------------

    async def stream_version(self, stream: str) -> int:
        return int(await self.redis.llen(self.keys.stream_index(stream)))

    async def streams_named(self, prefix: str) -> list[str]:
        """Every stream whose name starts with ``prefix``, sorted (one ``SCAN`` of the stream
        indexes: for a writer loading its aggregates at start, never a request's path)."""
        base = self.keys.stream_index("")
        found: set[str] = set()
        async for raw in self.redis.scan_iter(
            match=self.keys.stream_index(prefix) + "*", count=1000
        ):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            found.add(key.removeprefix(base))
        return sorted(found)

    async def stream_versions(self, streams: Sequence[str]) -> list[int]:
        """The versions of many streams in one round trip (watchers of many aggregates)."""
        if not streams:
            return []
        keys = [self.keys.stream_index(stream) for stream in streams]
        return [int(v) for v in await self._stream_versions(keys=keys)]

    async def read_stream(
        self, stream: str, from_version: int = 1, to_version: int | None = None
    ) -> list[Event]:
        """Events of ``stream`` with ``from_version <= version <= to_version``, in order."""
        entries = await self._stream_entries(stream, from_version, to_version)
        return [self.codec.decode(pos, fields) for pos, fields in entries]

    async def read_stream_stored(self, stream: str) -> list[StoredEvent]:
        """Like :meth:`read_stream`, decoded for folding (see :class:`StoredEvent`)."""
        entries = await self._stream_entries(stream, 1, None)
        return [self.codec.decode_stored(pos, fields) for pos, fields in entries]

    async def read_stream_raw(self, stream: str) -> list[tuple[Position, Mapping[Any, Any]]]:
        """A stream's log entries, undecoded (an archive copies them as they are)."""
        return await self._stream_entries(stream, 1, None)

    async def archived_stream(self, stream: str) -> list[StoredEvent]:
        """An archived stream's events (``kh events archive``), decoded for folding."""
        from .archive import archived_stream

        entries = await archived_stream(self, stream)
        return [self.codec.decode_stored(pos, fields) for pos, fields in entries]

    async def _stream_entries(
        self, stream: str, from_version: int, to_version: int | None
    ) -> list[tuple[str, Mapping[Any, Any]]]:
        if from_version < 1:
            raise ValueError("stream versions start at 1")
        out: list[tuple[str, Mapping[Any, Any]]] = []
        start = from_version - 1
        last = -1 if to_version is None else to_version - 1
        while last < 0 or start <= last:
            stop = start + _READ_PAGE - 1 if last < 0 else min(start + _READ_PAGE - 1, last)
            keys = [self.keys.log, self.keys.stream_index(stream)]
            entries = await self._read_stream(keys=keys, args=[start, stop])
            out += [(_s(pos), _pairs(fields)) for pos, fields in entries]
            if len(entries) < stop - start + 1:
                break
            start = stop + 1
        return out

    async def read_log(
        self, after: Position = "0-0", count: int = _READ_PAGE, until: Position | None = None
    ) -> list[Event]:
        """Up to ``count`` events strictly after ``after`` (and up to ``until``), in log order."""
        return [self.codec.decode(pos, f) for pos, f in await self.read_raw(after, count, until)]

    async def read_raw(
        self, after: Position = "0-0", count: int = _READ_PAGE, until: Position | None = None
    ) -> list[tuple[Position, Mapping[Any, Any]]]:
        """Like :meth:`read_log` but undecoded, for readers that must know exactly which
        entry fails to decode (the projector halts there, after folding the ones before)."""
        entries = await self.redis.xrange(
            self.keys.log, min=f"({after}", max=until or "+", count=count
        )
        return [(_s(pos), fields or {}) for pos, fields in entries or ()]

    async def read_stored(
        self, after: Position = "0-0", count: int = _READ_PAGE, until: Position | None = None
    ) -> list[StoredEvent]:
        """Like :meth:`read_log`, decoded for folding (see :class:`StoredEvent`)."""
        return [
            self.codec.decode_stored(pos, f) for pos, f in await self.read_raw(after, count, until)
        ]

    async def iter_log(
        self, after: Position = "0-0", until: Position | None = None, page_size: int = _READ_PAGE
    ) -> AsyncIterator[Event]:
        """Every event after ``after``, paged so memory stays flat on a long log."""
        while True:
            page = await self.read_log(after, page_size, until)
            for event in page:
                yield event
            if len(page) < page_size:
                return
            after = page[-1].position

    async def read_raw_backwards(
        self, before: Position | None = None, count: int = _READ_PAGE
    ) -> list[tuple[Position, Mapping[Any, Any]]]:
        """Up to ``count`` entries strictly before ``before`` (``None``: from the head),
        newest first, undecoded."""
        entries = await self.redis.xrevrange(
            self.keys.log, max=f"({before}" if before else "+", min="-", count=count
        )
        return [(_s(pos), fields or {}) for pos, fields in entries or ()]

    async def wait_for_events(self, after: Position, block_ms: int) -> None:
        """Return when the log has an event after ``after``, or after ``block_ms``."""
        await self.redis.xread({self.keys.log: after}, count=1, block=block_ms)

    async def stream_positions(self, stream: str) -> list[Position]:
        """The global positions of a stream's events, in version order."""
        indexed = await self.redis.lrange(self.keys.stream_index(stream), 0, -1)
        return [_s(p) for p in indexed]

    async def head(self) -> Position:
        """The position of the last event ever appended (``"0-0"`` for an empty log)."""
        try:
            info = await self.redis.xinfo_stream(self.keys.log)
        except ResponseError:
            return "0-0"
        return _s(info["last-generated-id"])

    async def log_length(self) -> int:
        return int(await self.redis.xlen(self.keys.log))

    def subscribe(
        self,
        after: Position | Literal["$"] = "$",
        *,
        block_ms: int = 1000,
        batch: int = 500,
        types: frozenset[str] | None = None,
        streams: Callable[[str], bool] | None = None,
        select: Callable[[str, str], bool] | None = None,
    ) -> Subscription:
        """An async iterator over events after ``after`` (``"$"``: from now on) that blocks
        for new ones and survives Redis restarts; only events of ``types``, of the streams
        ``streams`` accepts and that ``select(stream, type)`` accepts, when given (the
        others are never decoded)."""
        return Subscription(
            self, after, block_ms=block_ms, batch=batch, types=types, streams=streams, select=select
        )

    # ---- archive files (``kh events archive``) -------------------------------------------------

    async def archive_files(self) -> list[ArchiveFile]:
        """The archive files recorded for this log, oldest first."""
        from .archive import archive_files

        return await archive_files(self.redis, self.keys.archive)

    async def record_archive_file(self, path: str, meta: str) -> None:
        """Record an archive file (its range, JSON) before its events leave the log."""
        await self.redis.hset(self.keys.archive, path, meta)

    async def forget_archived(
        self, entries: Sequence[tuple[Position, str]], streams: Sequence[str], chunk: int
    ) -> None:
        """Archived events leave Redis: log entries and event-id records (``(position,
        event id)``, ``chunk`` at a time), then the streams' indexes and snapshots."""
        for start in range(0, len(entries), chunk):
            part = entries[start : start + chunk]
            pipe = self.redis.pipeline(transaction=False)
            pipe.xdel(self.keys.log, *[position for position, _ in part])
            pipe.hdel(self.keys.event_ids, *[event_id for _, event_id in part])
            await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        for stream in streams:
            pipe.delete(self.keys.stream_index(stream), self.keys.snapshot(stream))
        await pipe.execute()

    async def import_entries(
        self, entries: Sequence[tuple[Position, str, Any, str, Mapping[Any, Any]]]
    ) -> None:
        """Load exported entries, positions kept, in one round trip: ``(position, stream,
        version, event id, log fields)`` each (``kh events import`` into an empty store)."""
        pipe = self.redis.pipeline(transaction=False)
        for position, stream, version, event_id, fields in entries:
            pipe.xadd(self.keys.log, dict(fields), id=position)
            pipe.rpush(self.keys.stream_index(stream), position)
            pipe.hset(self.keys.event_ids, event_id, f"{position} {version}")
        await pipe.execute()

    async def restore_chain_head(self) -> None:
        """After an import: the hash chain's head is the last entry's link (none: the next
        append starts a chain after it)."""
        last = await self.read_raw_backwards(None, 1)
        link = last[0][1].get(b"h") if last else None
        if link is None:
            await self.redis.delete(self.keys.chain)
        else:
            await self.redis.set(self.keys.chain, f"{last[0][0]} {_s(link)}")

    async def chain_head(self) -> tuple[Position, str] | None:
        """The hash chain's head: the last entry's position and link (docs/audit.md)."""
        raw = await self.redis.get(self.keys.chain)
        if raw is None:
            return None
        position, _, link = _s(raw).partition(" ")
        return position, link

    # ---- snapshots --------------------------------------------------------------------------

    async def save_snapshot(self, stream: str, version: int, state: Any, schema: str) -> bool:
        """Store ``state`` folded up to ``version``; ``schema`` names the code that folded it."""
        keys = [self.keys.snapshot(stream), self.keys.stream_index(stream)]
        stored = await self._save_snapshot(
            keys=keys, args=[version, schema, canonical_dumps(state)]
        )
        return bool(stored)

    async def load_snapshot(self, stream: str, schema: str) -> Snapshot | None:
        """The latest snapshot, or ``None`` when there is none or it cannot be trusted (folded
        by other code, or ahead of the stream after an import): the caller replays instead."""
        raw = await self.redis.hgetall(self.keys.snapshot(stream))
        if not raw:
            return None
        version = int(raw[b"version"])
        if _s(raw[b"schema"]) != schema or version > await self.stream_version(stream):
            await self.redis.delete(self.keys.snapshot(stream))
            return None
        return Snapshot(stream, version, schema, loads(raw[b"state"]))


def _pairs(flat: list[Any]) -> dict[bytes, Any]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
