"""The reaper: reclaims sessions that outlived their policy or went idle (23.03 §5).

Activity is telemetry, not events: ``touch`` sets the session's last access (Redis time)
and makes sure it has a check time in the ``<p>:idle:due`` sorted set; one pipeline, on the
request path. A check time is never later than the session's true deadline (activity only
moves deadlines later), so the reaper can sleep until the earliest one, judge the session
afresh with the pure checkers (:mod:`actors.domain.idle`), and either ask its shard for a
*conditional* destroy or schedule the next check at the earliest remaining time. The shard
re-reads the last access before destroying for ``idle-timeout``: activity that came after
the judgment (a lagging read model, a touch in flight) always wins.

The log gets what explains a reclaim, coalesced: a ``session_activity`` when a judgment
finds a newer access than the last noted, and the evidence (checker, reports, last access,
judgment time) on the reclaim's ``session_terminating``. See docs/idle.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from actors.domain.idle import IdleConfig, judge
from actors.idle.facts import APP_STALE_S, IdleFacts
from actors.sessions.shard import IdleDestroy
from events import Event, RedisEventStore
from projections.queries import ReadModels

__all__ = ["REAPER_REACTS_TO", "Reaper", "app_closed", "app_opened", "touch"]

log = structlog.get_logger(__name__)

REAPER_REACTS_TO = frozenset(
    {"session_started", "session_terminating", "session_terminated", "session_cancelled"}
)
_REPORT_TTL_S = 150
_RETRY_S = 1.0
_GONE = frozenset({"TERMINATING", "TERMINATED", "CANCELLED", "ERROR"})
_ACCESS_TTL_S = 86_400
_CHECKER_OF = {
    "idle-timeout": "network_timeout",
    "idle-session-lifetime": "session_lifetime",
    "idle-utilization": "utilization",
}


async def touch(store: RedisEventStore, session_id: uuid.UUID | str) -> None:
    """Activity on a session (an execution started or finished, an app disconnected)."""
    seconds, micros = await store.redis.time()
    now = seconds + micros / 1e6
    pipe = store.redis.pipeline(transaction=False)
    pipe.set(store.keys.idle_access(str(session_id)), repr(now), ex=_ACCESS_TTL_S)
    pipe.zadd(store.keys.idle_due, {str(session_id): now}, nx=True)
    await pipe.execute()


async def app_opened(store: RedisEventStore, session_id: uuid.UUID | str, connection: str) -> None:
    """An app connection opened, or is still open (re-announced every ``APP_REFRESH_S``):
    while one is live the network timer is held, and each announcement is activity, so a
    gateway that dies with its connections leaves a timer that runs from then on."""
    seconds, micros = await store.redis.time()
    key = store.keys.idle_apps(str(session_id))
    pipe = store.redis.pipeline(transaction=False)
    pipe.zadd(key, {connection: seconds + micros / 1e6})
    pipe.zremrangebyscore(key, "-inf", seconds - APP_STALE_S)
    pipe.expire(key, _ACCESS_TTL_S)
    await pipe.execute()
    await touch(store, session_id)


async def app_closed(store: RedisEventStore, session_id: uuid.UUID | str, connection: str) -> None:
    """An app connection closed; the last live one closing restarts the timer (a touch)."""
    seconds, _ = await store.redis.time()
    key = store.keys.idle_apps(str(session_id))
    pipe = store.redis.pipeline(transaction=False)
    pipe.zrem(key, connection)
    pipe.zcount(key, seconds - APP_STALE_S, "+inf")
    _, live = await pipe.execute()
    if not live:
        await touch(store, session_id)


class Reaper:
    def __init__(
        self,
        store: RedisEventStore,
        shard: Any,
        config: IdleConfig | None = None,
        *,
        max_sleep_s: float = 1.0,
        on_reclaim: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.shard = shard
        self.on_reclaim = on_reclaim
        """Told each reclaim's reason (the reaper actor counts them as a metric)."""
        self.config = config or IdleConfig()
        self.max_sleep_s = max_sleep_s
        self.models = ReadModels(store)
        self.idle_facts = IdleFacts(store, self.config)
        self._wake = asyncio.Event()
        self._noted: dict[str, float] = {}
        """The last access noted in the log per session (in memory: a restart notes once
        more, a no-op by its command id)."""
        for warning in self.config.warnings:
            log.warning("idle configuration", problem=warning)

    async def now(self) -> float:
        return await self.idle_facts.now()

    # ---- following the log -------------------------------------------------------------------
    async def on_events(self, events: Sequence[Event]) -> None:
        """A session that started gets its first access (its start time) and a check; one
        that ends leaves the schedule."""
        pipe = self.store.redis.pipeline(transaction=False)
        for event in events:
            sid = str(getattr(event.data, "session_id", ""))
            if event.type == "session_started":
                started = event.position_ms / 1000
                pipe.set(self.store.keys.idle_access(sid), repr(started), ex=_ACCESS_TTL_S, nx=True)
                pipe.zadd(self.store.keys.idle_due, {sid: started}, nx=True)
            elif event.type in REAPER_REACTS_TO:
                pipe.zrem(self.store.keys.idle_due, sid)
                self._noted.pop(sid, None)
        await pipe.execute()
        self._wake.set()

    # ---- judging -------------------------------------------------------------------------------
    async def report(self, session_id: str) -> dict[str, dict[str, Any]]:
        """Each checker's remaining time, as 23.03's ``idle_checks`` (empty when the session
        is not running)."""
        return await self.idle_facts.report(await self.models.session(session_id))

    async def run_once(self) -> list[tuple[str, str]]:
        """Judge every session whose check time has come; returns what it asked to destroy.

        Reads are batched (the due sessions' records in one round trip, their last accesses
        in another, each owner's policy once) and the destroys go to the shards together,
        so a pass costs a few round trips however many sessions are due."""
        now = await self.now()
        members: list[Any] = await self.store.redis.zrangebyscore(
            self.store.keys.idle_due, "-inf", now
        )
        due = [_text(m) for m in members]
        if not due:
            return []
        records = {r["id"]: r for r in await self.models.sessions_by_id(due)}
        facts_of = await self.idle_facts.of(
            [r for r in records.values() if r["status"] == "RUNNING"], now
        )
        pipe = self.store.redis.pipeline(transaction=False)
        destroys: list[IdleDestroy] = []
        notes: list[tuple[uuid.UUID, float, uuid.UUID]] = []
        reclaimed: list[tuple[str, str]] = []
        for session_id in due:
            record = records.get(session_id)
            status = record["status"] if record else None
            if status in _GONE:
                pipe.zrem(self.store.keys.idle_due, session_id)
                self._noted.pop(session_id, None)
                continue
            if record is None or status != "RUNNING":  # behind, or restarting: look again
                pipe.zadd(self.store.keys.idle_due, {session_id: now + _RETRY_S})
                continue
            facts = facts_of[session_id]
            reason, reports = judge(facts, self.config, now)
            pipe.set(self.store.keys.idle_report(session_id), json.dumps(reports), ex=_REPORT_TTL_S)
            sid = uuid.UUID(session_id)
            if reason is not None:
                command = uuid.uuid5(sid, f"idle/{reason}")
                evidence = {
                    "checker": _CHECKER_OF[reason],
                    "reports": reports,
                    "last_access": facts.last_access,
                    "judged_at": now,
                }
                destroys.append((sid, reason, facts.last_access, command, evidence))
                pipe.zrem(self.store.keys.idle_due, session_id)
                reclaimed.append((session_id, reason))
                self._noted.pop(session_id, None)
                continue
            if _worth_noting(facts.last_access, record, reports, self._noted.get(session_id)):
                assert facts.last_access is not None
                notes.append(
                    (sid, facts.last_access, uuid.uuid5(sid, f"activity@{facts.last_access!r}"))
                )
            waits = [r["remaining"] for r in reports.values() if (r["remaining"] or 0) > 0]
            if "utilization" in reports:  # samples keep coming: look again each interval
                waits.append(self.config.utilization.interval)
            if waits:  # the earliest moment something could change its verdict
                pipe.zadd(self.store.keys.idle_due, {session_id: now + min(waits)})
            else:  # nothing measures it (no policy, timer off): a touch brings it back
                pipe.zrem(self.store.keys.idle_due, session_id)
        await pipe.execute()
        if destroys:
            await self.shard.destroy_many_if_idle(destroys)
            for session_id, reason in reclaimed:
                log.info("session reclaimed", session=session_id, reason=reason)
                if self.on_reclaim is not None:
                    self.on_reclaim(reason)
        if notes:
            await self._note(notes)
        return reclaimed

    async def _note(self, notes: list[tuple[uuid.UUID, float, uuid.UUID]]) -> None:
        """Coalesced activity into the log: the latest access of each session judged alive,
        once per access time (the command id makes a repeat after a restart a no-op)."""
        try:
            await self.shard.note_activity_many(notes)
        except Exception as exc:  # history, not a decision: the next judgment notes it again
            log.warning("activity not noted", sessions=len(notes), error=repr(exc))
            return
        for sid, last_access, _ in notes:
            self._noted[str(sid)] = last_access

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Sleep until the earliest check time (or a new session), judge, repeat."""
        while not (stop and stop.is_set()):
            try:
                await self.run_once()
                head: list[Any] = await self.store.redis.zrange(
                    self.store.keys.idle_due, 0, 0, withscores=True
                )
                wait = self.max_sleep_s
                if head:
                    wait = max(0.0, min(wait, float(head[0][1]) - await self.now()))
            except Exception:
                log.exception("idle check failed; retrying")
                wait = self.max_sleep_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)


def _worth_noting(
    last_access: float | None,
    record: dict[str, Any],
    reports: dict[str, dict[str, Any]],
    noted: float | None,
) -> bool:
    """Activity goes into the log where it explains something: the network timer measures
    the session, and it was used after it started (``session_started`` says that much) and
    after the last note."""
    if last_access is None or (reports.get("network_timeout") or {}).get("remaining") is None:
        return False
    started = (record.get("running_since_ms") or 0) / 1000
    return last_access > max(started, noted or 0.0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
