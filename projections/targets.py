"""Where a projection generation's records and indexes live while a batch is folded.

:class:`RedisTarget` is the live path: records are loaded per batch with one HMGET per kind
and everything a batch changed is committed with the checkpoint in one MULTI/EXEC, guarded by
WATCH on the active-generation pointer and the checkpoint (so a zombie projector or a
concurrent rebuild can never double-apply). :func:`bulk_write` is the rebuild path: a whole
generation folded in memory, written once.
"""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from .base import Op, RecordRef

__all__ = ["RedisTarget", "StaleGeneration", "bulk_write", "failpoint"]

_BULK = 500


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


class RedisTarget:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix

    def key(self, relative: str) -> str:
        return f"{self.prefix}:{relative}"

    async def load(self, refs: Iterable[RecordRef]) -> dict[RecordRef, str | None]:
        by_kind: dict[str, list[str]] = defaultdict(list)
        for kind, record_id in refs:
            by_kind[kind].append(record_id)
        loaded: dict[RecordRef, str | None] = {}
        if not by_kind:
            return loaded
        pipe = self.redis.pipeline(transaction=False)
        kinds = list(by_kind)
        for kind in kinds:
            pipe.hmget(self.key(f"r:{kind}"), by_kind[kind])
        replies = await pipe.execute()
        for kind, values in zip(kinds, replies, strict=True):
            for record_id, value in zip(by_kind[kind], values, strict=True):
                loaded[(kind, record_id)] = None if value is None else _s(value)
        return loaded

    async def commit(
        self,
        *,
        active_key: str,
        generation: int,
        expected_checkpoint: str,
        checkpoint: str,
        records: Mapping[RecordRef, str | None],
        ops: Iterable[Op],
        status_key: str | None = None,
        status: Mapping[str, str] | None = None,
        require_active: bool = True,
    ) -> None:
        ckpt_key = self.key("ckpt")
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(active_key, ckpt_key)
                active = await pipe.get(active_key)
                current = await pipe.get(ckpt_key)
                if require_active and (active is None or int(active) != generation):
                    raise StaleGeneration(f"generation {generation} is no longer active")
                if (_s(current) if current is not None else "0-0") != expected_checkpoint:
                    raise StaleGeneration("checkpoint moved: another projector is running")
                pipe.multi()  # type: ignore[no-untyped-call]
                self._queue_writes(pipe, records, ops)
                pipe.set(ckpt_key, checkpoint)
                if status_key and status:
                    pipe.hset(status_key, mapping=dict(status))  # type: ignore[arg-type]
                failpoint("projector.before_commit")
                await pipe.execute()
            except WatchError:
                raise StaleGeneration(
                    "generation or checkpoint changed during the commit"
                ) from None
        failpoint("projector.after_commit")

    def _queue_writes(
        self, pipe: Any, records: Mapping[RecordRef, str | None], ops: Iterable[Op]
    ) -> None:
        for (kind, record_id), value in records.items():
            if value is None:
                pipe.hdel(self.key(f"r:{kind}"), record_id)
            else:
                pipe.hset(self.key(f"r:{kind}"), record_id, value)
        for op in ops:
            _queue_op(pipe, self.key, op)


def _queue_op(pipe: Any, key: Any, op: Op) -> None:
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


async def bulk_write(
    client: aioredis.Redis, prefix: str, records: Mapping[RecordRef, str], ops: Iterable[Op]
) -> None:
    """Write a whole generation at once (a rebuild): records and index entries grouped by
    key, in pipelines of large multi-member commands. Only additions: it starts empty."""
    hashes: dict[str, dict[str, str]] = defaultdict(dict)
    zsets: dict[str, dict[str, float]] = defaultdict(dict)
    for (kind, record_id), value in records.items():
        hashes[f"r:{kind}"][record_id] = value
    for op in ops:
        if op[0] == "zadd":
            zsets[op[1]][op[3]] = float(op[2])
        elif op[0] == "hset":
            hashes[op[1]][op[2]] = op[3]
        else:
            raise ValueError(f"a fresh generation cannot {op[0]}")
    pipe = client.pipeline(transaction=False)
    queued = 0
    for key, mapping in hashes.items():
        for chunk in _chunks(list(mapping.items())):
            pipe.hset(f"{prefix}:{key}", mapping=dict(chunk))
            queued += 1
    for key, members in zsets.items():
        for chunk in _chunks(list(members.items())):
            pipe.zadd(f"{prefix}:{key}", dict(chunk))
            queued += 1
    if queued:
        await pipe.execute()


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), _BULK):
        yield items[start : start + _BULK]
