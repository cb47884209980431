"""Queries over the read models. Every answer comes from records and indexes: no SCAN, no
KEYS, no fold at query time. Reads resolve the active generation first, so a rebuild's flip
is seen atomically."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from events import Position, RedisEventStore, position_key
from events._canonical import decimal_to_plain, loads

from .base import Record
from .slots import sub_slots, sum_slots

__all__ = ["USAGE_BIN_S", "Page", "ReadModels", "UsageBin"]

USAGE_BIN_S = 900
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    items: list[Record]


@dataclass(frozen=True, slots=True)
class UsageBin:
    start_ms: int
    num_sessions: int
    slot_seconds: dict[str, str]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_RECORDS = """
local active = redis.call('GET', KEYS[1])
if not active then return {} end
return redis.call('HMGET', ARGV[1] .. active .. ':r:' .. ARGV[2], unpack(ARGV, 3))
"""
"""Records of the active generation, resolved and read in one round trip (and atomically:
a rebuild's flip lands before or after, never between)."""


class ReadModels:
    def __init__(self, store: RedisEventStore) -> None:
        self.redis = store.redis
        self.keys = store.keys
        self._records_script = store.redis.register_script(_RECORDS)

    async def checkpoints(self, names: Sequence[str]) -> list[tuple[int, int] | None]:
        """How far each named projection has folded the log (``None``: not yet at all)."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(self.keys.projection_status(name), "checkpoint")
        raw = await pipe.execute()
        return [position_key(r.decode() if isinstance(r, bytes) else r) if r else None for r in raw]

    async def reach(
        self, position: Position, names: Sequence[str] = ("sessions",), timeout_s: float = 2.0
    ) -> bool:
        """Wait until the named read models have folded the log up to ``position`` (read your
        own writes); False if ``timeout_s`` passed first (a stalled projector must not hang
        the caller: it then reads what the models show)."""
        target = position_key(position)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            reached = await self.checkpoints(names)
            if all(r is not None and r >= target for r in reached):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)

    async def _active_records(self, projection: str, kind: str, ids: Sequence[str]) -> list[Record]:
        if not ids:
            return []
        generation_prefix = self.keys.projection_generation(projection, 0)[:-1]  # "...:g"
        raw = await self._records_script(
            keys=[self.keys.projection_active(projection)], args=[generation_prefix, kind, *ids]
        )
        return [loads(r) for r in raw if r is not None]

    async def _prefix(self, projection: str) -> str | None:
        active = await self.redis.get(self.keys.projection_active(projection))
        if active is None:
            return None
        return self.keys.projection_generation(projection, int(active))

    async def _records(self, prefix: str, kind: str, ids: Sequence[str]) -> list[Record]:
        if not ids:
            return []
        raw = await self.redis.hmget(f"{prefix}:r:{kind}", list(ids))
        return [loads(r) for r in raw if r is not None]

    # ---- sessions ---------------------------------------------------------------------------
    async def session(self, session_id: str) -> Record | None:
        found = await self.sessions_by_id([str(session_id)])
        return found[0] if found else None

    async def sessions_by_id(self, session_ids: Sequence[str]) -> list[Record]:
        """Several sessions in one round trip (unknown ids are left out)."""
        return await self._active_records("sessions", "session", [str(s) for s in session_ids])

    async def session_by_name(self, access_key: str, name: str) -> Record | None:
        prefix = await self._prefix("sessions")
        if prefix is None:
            return None
        session_id = await self.redis.hget(f"{prefix}:i:name:{access_key}", name)
        return None if session_id is None else await self.session(_s(session_id))

    async def kernel(self, kernel_id: str) -> Record | None:
        """One kernel with ``session_id`` and ``session_status`` (see :meth:`kernels`)."""
        return (await self.kernels([str(kernel_id)])).get(str(kernel_id))

    async def kernels(self, kernel_ids: Sequence[str]) -> dict[str, Record]:
        """Several kernels (with ``session_id`` and ``session_status``) in two round trips,
        keyed by kernel id; unknown ids are left out."""
        prefix = await self._prefix("sessions")
        if prefix is None or not kernel_ids:
            return {}
        owners = await self.redis.hmget(f"{prefix}:i:kernel", list(kernel_ids))
        wanted = sorted({_s(o) for o in owners if o is not None})
        sessions = {r["id"]: r for r in await self._records(prefix, "session", wanted)}
        found: dict[str, Record] = {}
        for kernel_id, owner in zip(kernel_ids, owners, strict=True):
            session = sessions.get(_s(owner)) if owner is not None else None
            if session is not None and str(kernel_id) in session["kernels"]:
                kernel = dict(session["kernels"][str(kernel_id)])
                kernel.update(session_id=session["id"], session_status=session["status"])
                found[str(kernel_id)] = kernel
        return found

    async def sessions(
        self,
        *,
        owner: str | None = None,
        statuses: Sequence[str] | None = None,
        session_type: str | None = None,
        scaling_group: str | None = None,
        project: str | None = None,
        projects: Sequence[str] | None = None,
        offset: int = 0,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page:
        """Sessions matching every given filter, by creation time, paged (``projects``: in
        any of these projects, none when empty)."""
        prefix = await self._prefix("sessions")
        if prefix is None:
            return Page(0, [])
        choices: list[tuple[list[str], str, Any]] = []  # (index keys, record field, wanted)
        if owner:
            choices.append(([f"{prefix}:i:owner:{owner}"], "access_key", {owner}))
        if statuses:
            choices.append(([f"{prefix}:i:status:{s}" for s in statuses], "status", set(statuses)))
        if session_type:
            choices.append(([f"{prefix}:i:type:{session_type}"], "type", {session_type}))
        if scaling_group:
            choices.append(([f"{prefix}:i:sg:{scaling_group}"], "scaling_group", {scaling_group}))
        if project:
            choices.append(([f"{prefix}:i:project:{project}"], "project_id", {project}))
        if projects is not None:
            choices.append(
                ([f"{prefix}:i:project:{p}" for p in projects], "project_id", set(projects))
            )
        if not choices:
            choices.append(([f"{prefix}:i:all"], "id", None))
        sizes = []
        for keys, _, _ in choices:
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.zcard(key)
            sizes.append(sum(await pipe.execute()))
        smallest = min(range(len(choices)), key=lambda i: sizes[i])
        keys = choices[smallest][0]
        others = [c for i, c in enumerate(choices) if i != smallest]
        if len(keys) == 1 and not others:
            total = sizes[smallest]
            start, stop = offset, offset + limit - 1
            if newest_first:
                ids = await self.redis.zrevrange(keys[0], start, stop)
            else:
                ids = await self.redis.zrange(keys[0], start, stop)
            return Page(total, await self._records(prefix, "session", [_s(i) for i in ids]))
        return await self._filtered(prefix, keys, others, offset, limit, newest_first)

    async def _filtered(
        self,
        prefix: str,
        keys: list[str],
        others: list[tuple[list[str], str, Any]],
        offset: int,
        limit: int,
        newest_first: bool,
    ) -> Page:
        """Walk the smallest index in order, keep what matches the other filters."""
        members: list[tuple[float, str]] = []
        for key in keys:
            scored: list[Any] = await self.redis.zrange(key, 0, -1, withscores=True)
            members += [(float(score), _s(member)) for member, score in scored]
        members.sort(reverse=newest_first)
        total, items = 0, []
        for start in range(0, len(members), _CHUNK):
            chunk = [m for _, m in members[start : start + _CHUNK]]
            for record in await self._records(prefix, "session", chunk):
                if all(record.get(field) in wanted for _, field, wanted in others):
                    if offset <= total < offset + limit:
                        items.append(record)
                    total += 1
        return Page(total, items)

    async def dependants(self, session_id: str) -> list[str]:
        """Ids of the sessions that name ``session_id`` among their dependencies."""
        prefix = await self._prefix("sessions")
        if prefix is None:
            return []
        return [
            _s(m) for m in await self.redis.zrange(f"{prefix}:i:dependants:{session_id}", 0, -1)
        ]

    async def pending_queue(self, scaling_group: str, offset: int = 0, limit: int = 100) -> Page:
        """PENDING sessions of a scaling group in scheduling order (oldest first)."""
        prefix = await self._prefix("sessions")
        if prefix is None:
            return Page(0, [])
        key = f"{prefix}:i:pending:{scaling_group}"
        total = int(await self.redis.zcard(key))
        ids = await self.redis.zrange(key, offset, offset + limit - 1)
        return Page(total, await self._records(prefix, "session", [_s(i) for i in ids]))

    # ---- agents -----------------------------------------------------------------------------
    async def agent(self, agent_id: str) -> Record | None:
        prefix = await self._prefix("agents")
        if prefix is None:
            return None
        found = await self._records(prefix, "agent", [agent_id])
        return found[0] if found else None

    async def agents(
        self, scaling_group: str | None = None, status: str | None = None
    ) -> list[Record]:
        prefix = await self._prefix("agents")
        if prefix is None:
            return []
        key = f"{prefix}:i:sg:{scaling_group}" if scaling_group else f"{prefix}:i:all"
        ids = [_s(i) for i in await self.redis.zrange(key, 0, -1)]
        records = []
        for start in range(0, len(ids), _CHUNK):
            records += await self._records(prefix, "agent", ids[start : start + _CHUNK])
        return [r for r in records if status is None or r["status"] == status]

    async def scaling_group_slots(self, scaling_group: str) -> dict[str, dict[str, str]]:
        """Capacity, occupied and available slots of the group's ALIVE agents."""
        alive = await self.agents(scaling_group, status="ALIVE")
        capacity = sum_slots(a["available_slots"] for a in alive)
        occupied = sum_slots(a["occupied_slots"] for a in alive)
        return {
            "capacity": capacity,
            "occupied": occupied,
            "available": sub_slots(capacity, occupied),
        }

    # ---- usage ------------------------------------------------------------------------------
    async def usage(
        self, scope: str, start_ms: int, end_ms: int, now_ms: int, bin_s: int = USAGE_BIN_S
    ) -> list[UsageBin]:
        """Slot-seconds and session counts per ``bin_s`` bin (UTC-aligned) of one scope
        (``keypair:<ak>``, ``user:<id>``, ``project:<id>``, ``domain:<name>``); running
        sessions count up to ``now_ms``."""
        prefix = await self._prefix("sessions")
        if prefix is None:
            return []
        closed: list[Any] = await self.redis.zrangebyscore(
            f"{prefix}:i:usage:closed:{scope}", start_ms, "+inf"
        )
        open_ = await self.redis.hvals(f"{prefix}:i:usage:open:{scope}")
        intervals = [loads(c) for c in closed] + [{**loads(o), "end": now_ms} for o in open_]
        bin_ms = bin_s * 1000
        first = start_ms - start_ms % bin_ms
        bins: dict[int, tuple[int, dict[str, Decimal]]] = {}
        for interval in intervals:
            begin, finish = max(interval["start"], start_ms), min(interval["end"], end_ms)
            if begin >= finish:
                continue
            edge = begin - (begin - first) % bin_ms
            while edge < finish:
                overlap = (min(finish, edge + bin_ms) - max(begin, edge)) / Decimal(1000)
                count, seconds = bins.get(edge, (0, {}))
                for slot, value in interval["slots"].items():
                    seconds[slot] = seconds.get(slot, Decimal(0)) + Decimal(value) * overlap
                bins[edge] = (count + 1, seconds)
                edge += bin_ms
        return [
            UsageBin(edge, count, {k: decimal_to_plain(v) for k, v in sorted(seconds.items())})
            for edge, (count, seconds) in sorted(bins.items())
        ]
