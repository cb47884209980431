"""Where the read models live: each projection's generations, checkpoints, status and alarms,
and the records and indexes of one generation (the storage the projector writes and the
queries read; the projections themselves never talk to Redis).

:meth:`Generation.commit` is the live path: everything a batch changed, committed with the
checkpoint in one MULTI/EXEC guarded by WATCH on the active-generation pointer and the
checkpoint (so a zombie projector or a concurrent rebuild can never double-apply).
:meth:`Generation.bulk_write` is the rebuild path: a whole generation folded in memory,
written once. Keys are relative to the generation (``record_hash(kind)``, the
``*Indexes`` of :mod:`events.keys`).
"""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from itertools import chain
from typing import Any

import msgspec
import orjson
import redis.asyncio as aioredis
from hiredis import pack_command as _pack
from redis.exceptions import ResponseError, WatchError

from ._canonical import canonical_dumps, decimal_to_plain, loads
from .keys import CHECKPOINT, KeySpace, record_hash

__all__ = [
    "Generation",
    "IndexOp",
    "ReadModelStorage",
    "RecordKey",
    "StaleGeneration",
    "decode_record",
    "dump_generation",
    "encode_record",
    "failpoint",
]

_BULK = 500

RecordKey = tuple[str, str]
"""(kind, id): records live in one hash per kind, keyed by id."""

IndexOp = tuple[Any, ...]
"""An index operation on a key relative to the generation, one of:
``("zadd", key, score, member)``, ``("zrem", key, member)``, ``("hset", key, field, value)``,
``("hdel", key, field)``."""

_ACTIVE_RECORDS = """
local active = redis.call('GET', KEYS[1])
if not active then return {} end
return redis.call('HMGET', ARGV[1] .. active .. ':' .. ARGV[2], unpack(ARGV, 3))
"""
"""Records of the active generation, resolved and read in one round trip (and atomically:
a rebuild's flip lands before or after, never between)."""


_RECORD_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _plain_decimal(value: Any) -> str:
    if isinstance(value, Decimal):
        return decimal_to_plain(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def encode_record(record: Any) -> str:
    """A read-model record as the JSON it is stored as: keys sorted, no whitespace, UTF-8,
    Decimals as plain strings, the bytes :func:`canonical_dumps` writes, 5-7x faster (orjson).

    One difference, in form only: a float below 1e-4 or from 1e16 up is written
    ``0.00005`` / ``1e16`` where Python writes ``5e-05`` / ``1e+16`` (the same float when
    read). Whatever orjson does not take as :func:`canonical_dumps` would (integers past 64
    bits, keys that are not strings, subclasses, dates) is written by :func:`canonical_dumps`
    itself, and fails where it failed. A record folded from JSON holds none of what orjson
    writes and json refused (non-finite floats, UUIDs, enums)."""
    try:
        return orjson.dumps(record, default=_plain_decimal, option=_RECORD_OPTIONS).decode()
    except TypeError:
        return canonical_dumps(record)


_decode_record = msgspec.json.Decoder().decode


def decode_record(raw: str | bytes) -> Any:
    """A stored record back to Python values, as ``json.loads`` reads it, about 3x faster
    (msgspec); ``json.loads`` for anything msgspec refuses, so the same texts fail."""
    try:
        return _decode_record(raw)
    except (msgspec.MsgspecError, TypeError):
        return loads(raw)


class StaleGeneration(Exception):
    """The generation or checkpoint moved under us: reload and fold again."""


def failpoint(name: str) -> None:
    """Crash here if ``KH_FAILPOINT`` names this point (``name:N`` = on the N-th pass).

    Used by the fault tests to SIGKILL a projector between writing and acknowledging; a
    no-op unless the variable is set.
    """
    spec = os.environ.get("KH_FAILPOINT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    remaining = int(count or "1") - 1
    os.environ["KH_FAILPOINT"] = f"{point}:{remaining}"
    if remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Generation:
    """One generation of one projection: its records, indexes and checkpoint."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace, name: str, number: int) -> None:
        self._redis = client
        self._keys = keys
        self.name = name
        self.number = number
        self.prefix = keys.projection_generation(name, number)

    def key(self, relative: str) -> str:
        return self._keys.projection_key(self.name, self.number, relative)

    # ---- the projector's side ---------------------------------------------------------------
    async def load(self, refs: Iterable[RecordKey]) -> dict[RecordKey, str | None]:
        """The stored canonical JSON of each record (``None``: none), one HMGET per kind."""
        by_kind: dict[str, list[str]] = defaultdict(list)
        for kind, record_id in refs:
            by_kind[kind].append(record_id)
        loaded: dict[RecordKey, str | None] = {}
        if not by_kind:
            return loaded
        pipe = self._redis.pipeline(transaction=False)
        kinds = list(by_kind)
        for kind in kinds:
            pipe.hmget(self.key(record_hash(kind)), by_kind[kind])
        replies = await pipe.execute()
        for kind, values in zip(kinds, replies, strict=True):
            for record_id, value in zip(by_kind[kind], values, strict=True):
                loaded[(kind, record_id)] = None if value is None else _s(value)
        return loaded

    async def commit(
        self,
        *,
        expected_checkpoint: str,
        checkpoint: str,
        records: Mapping[RecordKey, str | None],
        ops: Iterable[IndexOp],
        status: Mapping[str, str] | None = None,
        require_active: bool = True,
    ) -> None:
        """Records, index operations, the new checkpoint (and the projection's status) in
        one transaction, if this generation is still the active one (unless not required)
        and its checkpoint still ``expected_checkpoint``; else :class:`StaleGeneration`."""
        active_key = self._keys.projection_active(self.name)
        ckpt_key = self.key(CHECKPOINT)
        async with self._redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(active_key, ckpt_key)
                active = await pipe.get(active_key)
                current = await pipe.get(ckpt_key)
                if require_active and (active is None or int(active) != self.number):
                    raise StaleGeneration(f"generation {self.number} is no longer active")
                if (_s(current) if current is not None else "0-0") != expected_checkpoint:
                    raise StaleGeneration("checkpoint moved: another projector is running")
                pipe.multi()  # type: ignore[no-untyped-call]
                self._queue_writes(pipe, records, ops)
                pipe.set(ckpt_key, checkpoint)
                if status:
                    pipe.hset(
                        self._keys.projection_status(self.name),
                        mapping=dict(status),  # type: ignore[arg-type]
                    )
                failpoint("projector.before_commit")
                await pipe.execute()
            except WatchError:
                raise StaleGeneration(
                    "generation or checkpoint changed during the commit"
                ) from None
        failpoint("projector.after_commit")

    def _queue_writes(
        self, pipe: Any, records: Mapping[RecordKey, str | None], ops: Iterable[IndexOp]
    ) -> None:
        for (kind, record_id), value in records.items():
            if value is None:
                pipe.hdel(self.key(record_hash(kind)), record_id)
            else:
                pipe.hset(self.key(record_hash(kind)), record_id, value)
        for op in ops:
            _queue_op(pipe, self.key, op)

    async def bulk_write(self, records: Mapping[RecordKey, str], ops: Iterable[IndexOp]) -> None:
        """Write a whole generation at once (a rebuild): records and index entries grouped by
        key, in pipelines of large multi-member commands. Only additions: it starts empty."""
        hashes: dict[str, dict[str, str]] = defaultdict(dict)
        zsets: dict[str, dict[str, float]] = defaultdict(dict)
        for (kind, record_id), value in records.items():
            hashes[record_hash(kind)][record_id] = value
        for op in ops:
            if op[0] == "zadd":
                zsets[op[1]][op[3]] = float(op[2])
            elif op[0] == "hset":
                hashes[op[1]][op[2]] = op[3]
            else:
                raise ValueError(f"a fresh generation cannot {op[0]}")
        commands: list[bytes] = []
        for key, mapping in hashes.items():
            full = self.key(key)
            for chunk in _chunks(list(mapping.items())):
                commands.append(_pack(("HSET", full, *chain.from_iterable(chunk))))
        for key, members in zsets.items():
            full = self.key(key)
            for chunk in _chunks(list(members.items())):
                args = ("ZADD", full, *chain.from_iterable(_swap(chunk)))
                commands.append(_pack(args))  # type: ignore[arg-type]  # hiredis's stub
        if commands:
            await self._send_packed(commands)

    async def _send_packed(self, commands: Sequence[bytes]) -> None:
        """Send commands packed by hiredis (C) in one write and read every reply, raising the
        first error: a pipeline without redis-py packing each argument in Python, which
        was a third of a rebuild's write (a generation is ~10^5 arguments)."""
        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(commands)
            first_error: ResponseError | None = None
            for _ in commands:
                try:
                    await connection.read_response()
                except ResponseError as exc:
                    first_error = first_error or exc
            if first_error is not None:
                raise first_error
        except ResponseError:
            raise
        except BaseException:
            await connection.disconnect()  # replies may be left unread: never reuse it
            raise
        finally:
            await pool.release(connection)

    async def checkpoint(self) -> str:
        """The last log position folded into this generation (``"0-0"``: none)."""
        raw = await self._redis.get(self.key(CHECKPOINT))
        return "0-0" if raw is None else _s(raw)

    async def set_checkpoint(self, position: str) -> None:
        await self._redis.set(self.key(CHECKPOINT), position)

    async def version(self) -> int | None:
        """The version of the projection's code that folded this generation."""
        raw = await self._redis.hget(self._keys.projection_meta(self.name, self.number), "version")
        return None if raw is None else int(raw)

    async def set_version(self, version: int) -> None:
        await self._redis.hset(
            self._keys.projection_meta(self.name, self.number), mapping={"version": version}
        )

    async def unlink(self) -> None:
        """Drop every key of this (retired) generation (maintenance, not a query: SCAN)."""
        batch: list[Any] = []
        pattern = self._keys.projection_generation_keys(self.name, self.number)
        async for key in self._redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await self._redis.unlink(*batch)
                batch = []
        if batch:
            await self._redis.unlink(*batch)

    # ---- the queries' side (no SCAN, no KEYS) -----------------------------------------------
    async def records(self, kind: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The records of ``kind`` with these ids, in order (unknown ids are left out)."""
        if not ids:
            return []
        raw = await self._redis.hmget(self.key(record_hash(kind)), list(ids))
        return [decode_record(r) for r in raw if r is not None]

    async def record(self, kind: str, record_id: str) -> dict[str, Any] | None:
        raw = await self._redis.hget(self.key(record_hash(kind)), record_id)
        return None if raw is None else decode_record(raw)

    async def field(self, index: str, name: str) -> str | None:
        """One field of a hash index."""
        value = await self._redis.hget(self.key(index), name)
        return None if value is None else _s(value)

    async def fields(self, index: str, names: Sequence[str]) -> list[str | None]:
        """Several fields of a hash index, in order."""
        values = await self._redis.hmget(self.key(index), list(names))
        return [None if v is None else _s(v) for v in values]

    async def values(self, index: str) -> list[str]:
        """Every value of a hash index."""
        return [_s(v) for v in await self._redis.hvals(self.key(index))]

    async def members(
        self, index: str, start: int = 0, stop: int = -1, *, newest_first: bool = False
    ) -> list[str]:
        """Members of a sorted-set index by rank (highest score first if ``newest_first``)."""
        if newest_first:
            raw = await self._redis.zrevrange(self.key(index), start, stop)
        else:
            raw = await self._redis.zrange(self.key(index), start, stop)
        return [_s(m) for m in raw]

    async def scored(self, index: str, start: int = 0, stop: int = -1) -> list[tuple[str, float]]:
        """Members of a sorted-set index with their scores, by rank."""
        raw: list[Any] = await self._redis.zrange(self.key(index), start, stop, withscores=True)
        return [(_s(member), float(score)) for member, score in raw]

    async def members_between(self, index: str, low: str, below: str, count: int) -> list[str]:
        """Members of a lexical sorted-set index (every score equal) from ``low`` up to, not
        including, ``below``, at most ``count`` (``ZRANGEBYLEX``)."""
        raw: list[Any] = await self._redis.zrangebylex(
            self.key(index), f"[{low}", f"({below}", start=0, num=count
        )
        return [_s(m) for m in raw]

    async def members_from(self, index: str, min_score: float) -> list[str]:
        """Members of a sorted-set index scored ``min_score`` or more, by score."""
        raw: list[Any] = await self._redis.zrangebyscore(self.key(index), min_score, "+inf")
        return [_s(m) for m in raw]

    async def members_newest_from(self, index: str, min_score: float, limit: int) -> list[str]:
        """At most ``limit`` members scored ``min_score`` or more, highest score first."""
        raw: list[Any] = await self._redis.zrevrangebyscore(
            self.key(index), "+inf", min_score, start=0, num=limit
        )
        return [_s(m) for m in raw]

    async def size(self, index: str) -> int:
        return int(await self._redis.zcard(self.key(index)))

    async def sizes(self, indexes: Sequence[str]) -> list[int]:
        """The sizes of several sorted-set indexes, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for index in indexes:
            pipe.zcard(self.key(index))
        return [int(n) for n in await pipe.execute()]


def _queue_op(pipe: Any, key: Any, op: IndexOp) -> None:
    name = op[0]
    if name == "zadd":
        pipe.zadd(key(op[1]), {op[3]: op[2]})
    elif name == "zrem":
        pipe.zrem(key(op[1]), op[2])
    elif name == "hset":
        pipe.hset(key(op[1]), op[2], op[3])
    elif name == "hdel":
        pipe.hdel(key(op[1]), op[2])
    else:
        raise ValueError(f"unknown index operation {name!r}")


def _swap(pairs: Iterable[tuple[str, float]]) -> Iterable[tuple[float, str]]:
    """(member, score) pairs as ZADD takes them: score first."""
    return ((score, member) for member, score in pairs)


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), _BULK):
        yield items[start : start + _BULK]


class ReadModelStorage:
    """Each projection's generations: which one serves reads, new ones for rebuilds, the
    status ``kh projections`` shows and the alarms of halted ones (``store.read_models``)."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = client
        self._keys = keys
        self._active_records = client.register_script(_ACTIVE_RECORDS)

    def generation(self, name: str, number: int) -> Generation:
        return Generation(self._redis, self._keys, name, number)

    async def dump(self, name: str, number: int) -> dict[str, Any]:
        """Generation ``number`` of ``name`` in full (:func:`dump_generation`): what a
        checker compares with a rebuild."""
        return await dump_generation(self._redis, self._keys.projection_generation(name, number))

    async def active_number(self, name: str) -> int | None:
        """The generation of ``name`` that serves reads (``None``: it never ran)."""
        active = await self._redis.get(self._keys.projection_active(name))
        return None if active is None else int(active)

    async def active(self, name: str) -> Generation | None:
        """The generation of ``name`` that serves reads (``None``: it never ran)."""
        number = await self.active_number(name)
        return None if number is None else self.generation(name, number)

    async def active_records(self, name: str, kind: str, ids: Sequence[str]) -> list[Any]:
        """Records of the active generation in one round trip, atomically with a flip
        (unknown ids are left out)."""
        if not ids:
            return []
        stem = self._keys.projection_generations(name)
        raw = await self._active_records(
            keys=[self._keys.projection_active(name)], args=[stem, record_hash(kind), *ids]
        )
        return [decode_record(r) for r in raw if r is not None]

    async def next_number(self, name: str) -> int:
        """A generation number never used before (for a first run or a rebuild)."""
        return int(await self._redis.incr(self._keys.projection_counter(name)))

    async def activate_first(self, name: str, number: int) -> int:
        """Make ``number`` the active generation unless one already is; the active one."""
        await self._redis.set(self._keys.projection_active(name), number, nx=True)
        return int(await self._redis.get(self._keys.projection_active(name)) or number)

    async def flip(self, name: str, number: int) -> int | None:
        """Make ``number`` the active generation; the one it replaced, if any."""
        old = await self._redis.getset(self._keys.projection_active(name), number)
        return None if old is None else int(old)

    async def status(self, name: str) -> dict[str, str]:
        """What ``kh projections status`` shows of ``name`` (empty: it never ran)."""
        raw = await self._redis.hgetall(self._keys.projection_status(name))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def checkpoints(self, names: Sequence[str]) -> list[str | None]:
        """The status checkpoint of each projection, in one round trip (``None``: none)."""
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(self._keys.projection_status(name), "checkpoint")
        return [_s(r) if r else None for r in await pipe.execute()]

    async def halt(self, name: str, message: str) -> None:
        """Raise the alarm of a halted projection, and show it stopped."""
        await self._redis.hset(self._keys.projection_alarms, name, message)
        await self._redis.hset(
            self._keys.projection_status(name), mapping={"state": "stopped", "error": message}
        )

    async def clear_alarm(self, name: str) -> None:
        await self._redis.hdel(self._keys.projection_alarms, name)


async def dump_generation(client: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` with its full contents, keyed by the suffix, so two
    generations can be compared for equality (tests and operators: it walks keys with SCAN)."""
    dump: dict[str, Any] = {}
    async for raw_key in client.scan_iter(match=KeySpace.generation_keys(prefix), count=1000):
        key = _s(raw_key)
        suffix = key[len(prefix) + 1 :]
        kind = _s(await client.type(key))
        if kind == "hash":
            dump[suffix] = {_s(k): _s(v) for k, v in (await client.hgetall(key)).items()}
        elif kind == "zset":
            scored: list[Any] = await client.zrange(key, 0, -1, withscores=True)
            dump[suffix] = [(_s(member), score) for member, score in scored]
        elif kind == "string":
            dump[suffix] = _s(await client.get(key))
        else:
            dump[suffix] = f"<{kind}>"
    return dict(sorted(dump.items()))
