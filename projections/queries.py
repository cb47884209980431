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
from events.keys import AgentIndexes, SessionIndexes
from events.readmodels import Generation

from .base import Record
from .slots import sub_slots, sum_slots

__all__ = ["USAGE_BIN_S", "Page", "ReadModels", "TooManyToScan", "UsageBin"]

USAGE_BIN_S = 900
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    items: list[Record]


class TooManyToScan(Exception):
    """A listing that would read more records than its bound allows."""

    def __init__(self, count: int, bound: int) -> None:
        super().__init__(f"{count} sessions to read; at most {bound}")
        self.count = count
        self.bound = bound


_LEX_TOP = "\x7f"
"""Above every character of a name or an id (ASCII): ``(prefix + _LEX_TOP`` ends a range."""


@dataclass(frozen=True, slots=True)
class UsageBin:
    start_ms: int
    num_sessions: int
    slot_seconds: dict[str, str]


MAX_USAGE_INTERVALS = 100_000
"""Ended holds a fair-share read takes (the latest: older ones weigh least)."""


class ReadModels:
    def __init__(self, store: RedisEventStore) -> None:
        self.storage = store.read_models

    async def checkpoints(self, names: Sequence[str]) -> list[tuple[int, int] | None]:
        """How far each named projection has folded the log (``None``: not yet at all)."""
        raw = await self.storage.checkpoints(names)
        return [position_key(r) if r else None for r in raw]

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
        return await self.storage.active_records(projection, kind, ids)

    async def _active(self, projection: str) -> Generation | None:
        return await self.storage.active(projection)

    async def _records(self, active: Generation, kind: str, ids: Sequence[str]) -> list[Record]:
        return await active.records(kind, ids)

    # ---- sessions ---------------------------------------------------------------------------
    async def session(self, session_id: str) -> Record | None:
        found = await self.sessions_by_id([str(session_id)])
        return found[0] if found else None

    async def sessions_by_id(self, session_ids: Sequence[str]) -> list[Record]:
        """Several sessions in one round trip (unknown ids are left out)."""
        return await self._active_records("sessions", "session", [str(s) for s in session_ids])

    async def session_by_name(self, access_key: str, name: str) -> Record | None:
        active = await self._active("sessions")
        if active is None:
            return None
        session_id = await active.field(SessionIndexes.name(access_key), name)
        return None if session_id is None else await self.session(session_id)

    async def sessions_named(
        self, access_key: str, name: str, limit: int = 10, *, ended: bool = True
    ) -> list[Record]:
        """The sessions of the keypair named ``name`` (a name may be reused once its session
        ended), newest first, at most ``limit``: those not ended always (read from the index
        of live names, so however many ended sessions bore the name), and with ``ended``
        the ended ones too among the first 1000 of the name in id order (the bound on one
        lookup's work)."""
        ranges = [(SessionIndexes.ref_live_names(access_key), f"{name} ", f"{name}!")]
        if ended:
            ranges.append((SessionIndexes.ref_names(access_key), f"{name} ", f"{name}!"))
        found = await self._by_ref(access_key, ranges, 1000)
        return [r for r in found if r.get("name") == name][:limit]

    async def sessions_prefixed(
        self, access_key: str, prefix: str, limit: int = 10, scan: int = 1000
    ) -> list[Record]:
        """The keypair's sessions whose id or name starts with ``prefix``, newest first, at
        most ``limit`` of the first ``scan`` ids and ``scan`` names in lexical order (the
        bound on one lookup's work, as 23.03 bounds its ``LIKE 'x%'``)."""
        top = prefix + _LEX_TOP
        ranges = [
            (SessionIndexes.ref_ids(access_key), prefix, top),
            (SessionIndexes.ref_names(access_key), prefix, top),
        ]
        found = await self._by_ref(access_key, ranges, scan)
        return [
            r for r in found if str(r["id"]).startswith(prefix) or str(r["name"]).startswith(prefix)
        ][:limit]

    async def _by_ref(
        self, access_key: str, ranges: list[tuple[str, str, str]], scan: int
    ) -> list[Record]:
        """The keypair's sessions found in lexical ``ranges`` (index, from, below), at most
        ``scan`` members of each, newest first."""
        active = await self._active("sessions")
        if active is None:
            return []
        ids: set[str] = set()
        for index, low, below in ranges:
            for member in await active.members_between(index, low, below, scan):
                ids.add(member.rsplit(" ", 1)[-1])
        records = await self._records(active, "session", sorted(ids))
        records = [r for r in records if r.get("access_key") == access_key]
        records.sort(key=lambda r: r.get("created_ms") or 0, reverse=True)
        return records

    async def session_candidates(
        self,
        *,
        owner: str | None = None,
        statuses: Sequence[str] | None = None,
        projects: Sequence[str] | None = None,
        bound: int = 5000,
        by_owner: bool = False,
    ) -> list[Record]:
        """Every session matching the given filters, newest first, for a listing that
        filters or orders by what no index knows; :class:`TooManyToScan` when the smallest
        index to walk holds more than ``bound`` sessions (the caller narrows it).

        ``by_owner`` (a caller who may see only ``owner``'s sessions): the owner's index is
        the one walked and counted, whatever the size of the others. The status and project
        indexes hold every tenant's sessions, so choosing one of them would tell such a
        caller, by the count in the refusal (and by the time taken), how many sessions
        another tenant or project has."""
        active = await self._active("sessions")
        if active is None:
            return []
        choices: list[tuple[list[str], str, Any]] = []
        index = SessionIndexes
        if owner:
            choices.append(([index.owner(owner)], "access_key", {owner}))
        if statuses:
            choices.append(([index.status(s) for s in statuses], "status", set(statuses)))
        if projects is not None:
            choices.append(([index.project(p) for p in projects], "project_id", set(projects)))
        if not choices:
            choices.append(([index.ALL], "id", None))
        sizes = [sum(await active.sizes(keys)) for keys, _, _ in choices]
        smallest = min(range(len(choices)), key=lambda i: sizes[i])
        if by_owner and owner:
            smallest = 0  # the owner's index: what this caller may know the size of
        if sizes[smallest] > bound:
            raise TooManyToScan(sizes[smallest], bound)
        page = await self._filtered(
            active,
            choices[smallest][0],
            [c for i, c in enumerate(choices) if i != smallest],
            0,
            max(1, sizes[smallest]),
            True,
        )
        return page.items

    async def kernel(self, kernel_id: str) -> Record | None:
        """One kernel with ``session_id`` and ``session_status`` (see :meth:`kernels`)."""
        return (await self.kernels([str(kernel_id)])).get(str(kernel_id))

    async def kernels(self, kernel_ids: Sequence[str]) -> dict[str, Record]:
        """Several kernels (with ``session_id`` and ``session_status``) in two round trips,
        keyed by kernel id; unknown ids are left out."""
        active = await self._active("sessions")
        if active is None or not kernel_ids:
            return {}
        owners = await active.fields(SessionIndexes.KERNEL, list(kernel_ids))
        wanted = sorted({o for o in owners if o is not None})
        sessions = {r["id"]: r for r in await self._records(active, "session", wanted)}
        found: dict[str, Record] = {}
        for kernel_id, owner in zip(kernel_ids, owners, strict=True):
            session = sessions.get(owner) if owner is not None else None
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
        active = await self._active("sessions")
        if active is None:
            return Page(0, [])
        choices: list[tuple[list[str], str, Any]] = []  # (index keys, record field, wanted)
        index = SessionIndexes
        if owner:
            choices.append(([index.owner(owner)], "access_key", {owner}))
        if statuses:
            choices.append(([index.status(s) for s in statuses], "status", set(statuses)))
        if session_type:
            choices.append(([index.type(session_type)], "type", {session_type}))
        if scaling_group:
            choices.append(([index.scaling_group(scaling_group)], "scaling_group", {scaling_group}))
        if project:
            choices.append(([index.project(project)], "project_id", {project}))
        if projects is not None:
            choices.append(([index.project(p) for p in projects], "project_id", set(projects)))
        if not choices:
            choices.append(([index.ALL], "id", None))
        sizes = [sum(await active.sizes(keys)) for keys, _, _ in choices]
        smallest = min(range(len(choices)), key=lambda i: sizes[i])
        keys = choices[smallest][0]
        others = [c for i, c in enumerate(choices) if i != smallest]
        if len(keys) == 1 and not others:
            total = sizes[smallest]
            start, stop = offset, offset + limit - 1
            ids = await active.members(keys[0], start, stop, newest_first=newest_first)
            return Page(total, await self._records(active, "session", ids))
        return await self._filtered(active, keys, others, offset, limit, newest_first)

    async def _filtered(
        self,
        active: Generation,
        keys: list[str],
        others: list[tuple[list[str], str, Any]],
        offset: int,
        limit: int,
        newest_first: bool,
    ) -> Page:
        """Walk the smallest index in order, keep what matches the other filters."""
        members: list[tuple[float, str]] = []
        for key in keys:
            members += [(score, member) for member, score in await active.scored(key)]
        members.sort(reverse=newest_first)
        total, items = 0, []
        for start in range(0, len(members), _CHUNK):
            chunk = [m for _, m in members[start : start + _CHUNK]]
            for record in await self._records(active, "session", chunk):
                if all(record.get(field) in wanted for _, field, wanted in others):
                    if offset <= total < offset + limit:
                        items.append(record)
                    total += 1
        return Page(total, items)

    async def dependants(self, session_id: str) -> list[str]:
        """Ids of the sessions that name ``session_id`` among their dependencies."""
        active = await self._active("sessions")
        if active is None:
            return []
        return await active.members(SessionIndexes.dependants(session_id))

    async def pending_queue(self, scaling_group: str, offset: int = 0, limit: int = 100) -> Page:
        """PENDING sessions of a scaling group in scheduling order (oldest first)."""
        active = await self._active("sessions")
        if active is None:
            return Page(0, [])
        key = SessionIndexes.pending(scaling_group)
        total = await active.size(key)
        ids = await active.members(key, offset, offset + limit - 1)
        return Page(total, await self._records(active, "session", ids))

    async def session_counts(
        self, statuses: Sequence[str], types: Sequence[str]
    ) -> tuple[list[int], list[int]] | None:
        """How many sessions have each status and each type (one ZCARD per index, never a
        scan, in one round trip); ``None`` before the projection first ran."""
        active = await self._active("sessions")
        if active is None:
            return None
        index = SessionIndexes
        counts = await active.sizes([*map(index.status, statuses), *map(index.type, types)])
        return counts[: len(statuses)], counts[len(statuses) :]

    async def oldest_created_ms(self, status: str) -> float | None:
        """When the oldest session with ``status`` was created (ms; ``None``: there is none)."""
        active = await self._active("sessions")
        if active is None:
            return None
        oldest = await active.scored(SessionIndexes.status(status), 0, 0)
        return oldest[0][1] if oldest else None

    # ---- agents -----------------------------------------------------------------------------
    async def agent(self, agent_id: str) -> Record | None:
        active = await self._active("agents")
        if active is None:
            return None
        found = await self._records(active, "agent", [agent_id])
        return found[0] if found else None

    async def agents(
        self, scaling_group: str | None = None, status: str | None = None
    ) -> list[Record]:
        active = await self._active("agents")
        if active is None:
            return []
        key = AgentIndexes.scaling_group(scaling_group) if scaling_group else AgentIndexes.ALL
        ids = await active.members(key)
        records = []
        for start in range(0, len(ids), _CHUNK):
            records += await self._records(active, "agent", ids[start : start + _CHUNK])
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
    async def usage_intervals(
        self, scope: str, since_ms: int, limit: int = MAX_USAGE_INTERVALS
    ) -> list[dict[str, Any]]:
        """The holds of one usage scope (``group:<name>`` for fair share): the running
        ones, and at most ``limit`` of those that ended at ``since_ms`` or later, the
        latest first (``{session, owner, project, start, end, slots}``, times in ms)."""
        active = await self._active("sessions")
        if active is None:
            return []
        closed = await active.members_newest_from(
            SessionIndexes.usage_closed(scope), since_ms, limit
        )
        open_ = await active.values(SessionIndexes.usage_open(scope))
        return [loads(c) for c in closed] + [loads(o) for o in open_]

    async def usage(
        self, scope: str, start_ms: int, end_ms: int, now_ms: int, bin_s: int = USAGE_BIN_S
    ) -> list[UsageBin]:
        """Slot-seconds and session counts per ``bin_s`` bin (UTC-aligned) of one scope
        (``keypair:<ak>``, ``user:<id>``, ``project:<id>``, ``domain:<name>``); running
        sessions count up to ``now_ms``."""
        active = await self._active("sessions")
        if active is None:
            return []
        closed = await active.members_from(SessionIndexes.usage_closed(scope), start_ms)
        open_ = await active.values(SessionIndexes.usage_open(scope))
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
