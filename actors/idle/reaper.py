"""The reaper: reclaims sessions that outlived their policy or went idle (23.03's
``manager/idle.py``; docs/idle.md).

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

from actors.domain.commands.sessions import (
    DestroyIfIdle,
    DestroyManyIfIdle,
    NoteActivities,
    NoteActivity,
    SessionClient,
    WarnIdle,
    WarnIdleMany,
)
from actors.domain.idle import (
    IdleConfig,
    activity_note_id,
    idle_reclaim_id,
    idle_warning_id,
    review,
)
from actors.idle.facts import APP_STALE_S, IdleFacts
from actors.runtime.outage import Outages
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


async def touch(store: RedisEventStore, session_id: uuid.UUID | str) -> None:
    """Activity on a session (an execution started or finished, an app disconnected)."""
    await store.idle.touch(str(session_id))


async def app_opened(store: RedisEventStore, session_id: uuid.UUID | str, connection: str) -> None:
    """An app connection opened, or is still open (re-announced every ``APP_REFRESH_S``):
    while one is live the network timer is held, and each announcement is activity, so a
    gateway that dies with its connections leaves a timer that runs from then on."""
    await store.idle.app_opened(str(session_id), connection, APP_STALE_S)
    await touch(store, session_id)


async def app_closed(store: RedisEventStore, session_id: uuid.UUID | str, connection: str) -> None:
    """An app connection closed; the last live one closing restarts the timer (a touch)."""
    if not await store.idle.app_closed(str(session_id), connection, APP_STALE_S):
        await touch(store, session_id)


class Reaper:
    def __init__(
        self,
        store: RedisEventStore,
        shard: SessionClient,
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

    def forget(self) -> None:
        """The log changed under the reaper (Redis restarted): what it noted as appended may
        be gone, so each running session's access is noted again; it judges at once."""
        self._noted.clear()
        self._wake.set()

    async def now(self) -> float:
        return await self.idle_facts.now()

    # ---- following the log -------------------------------------------------------------------
    async def on_events(self, events: Sequence[Event]) -> None:
        """A session that started gets its first access (its start time) and a check; one
        that ends leaves the schedule."""
        batch = self.store.idle.batch()
        for event in events:
            sid = str(getattr(event.data, "session_id", ""))
            if event.type == "session_started":
                batch.started(sid, event.position_ms / 1000)
            elif event.type in REAPER_REACTS_TO:
                batch.unschedule(sid)
                self._noted.pop(sid, None)
        await batch.execute()
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
        due = await self.store.idle.due(now)
        if not due:
            return []
        records = {r["id"]: r for r in await self.models.sessions_by_id(due)}
        facts_of = await self.idle_facts.of(
            [r for r in records.values() if r["status"] == "RUNNING"], now
        )
        batch = self.store.idle.batch()
        destroys: list[DestroyIfIdle] = []
        notes: list[NoteActivity] = []
        warnings: list[WarnIdle] = []
        reclaimed: list[tuple[str, str]] = []
        for session_id in due:
            record = records.get(session_id)
            status = record["status"] if record else None
            if status in _GONE:
                batch.unschedule(session_id)
                self._noted.pop(session_id, None)
                continue
            if record is None or status != "RUNNING":  # behind, or restarting: look again
                batch.schedule(session_id, now + _RETRY_S)
                continue
            facts = facts_of[session_id]
            running_since = (record.get("running_since_ms") or 0) / 1000
            seen = review(
                facts,
                self.config,
                now,
                running_since=running_since,
                noted=self._noted.get(session_id),
            )
            batch.report(session_id, json.dumps(seen.reports), _REPORT_TTL_S)
            sid = uuid.UUID(session_id)
            if seen.reclaim is not None:
                destroys.append(
                    DestroyIfIdle(
                        session_id=sid,
                        reason=seen.reclaim,
                        judged_access=facts.last_access,
                        evidence=seen.evidence,
                        command_id=idle_reclaim_id(sid, seen.reclaim),
                    )
                )
                batch.unschedule(session_id)
                reclaimed.append((session_id, seen.reclaim))
                self._noted.pop(session_id, None)
                continue
            if seen.note is not None:
                notes.append(
                    NoteActivity(
                        session_id=sid,
                        last_access=seen.note,
                        command_id=activity_note_id(sid, seen.note),
                    )
                )
            if seen.warning is not None:
                warning = seen.warning
                warnings.append(
                    WarnIdle(
                        session_id=sid,
                        checker=warning.checker,
                        reason=warning.reason,
                        deadline=warning.deadline,
                        remaining=warning.remaining,
                        last_access=facts.last_access or None,
                        command_id=idle_warning_id(sid, warning.checker, warning.deadline),
                    )
                )
            if seen.next_check is not None:  # the earliest moment its verdict could change
                batch.schedule(session_id, seen.next_check)
            else:  # nothing measures it (no policy, timer off): a touch brings it back
                batch.unschedule(session_id)
        await batch.execute()
        if destroys:
            await self.shard.handle(DestroyManyIfIdle(items=tuple(destroys)))
            for session_id, reason in reclaimed:
                log.info("session reclaimed", session=session_id, reason=reason)
                if self.on_reclaim is not None:
                    self.on_reclaim(reason)
        if notes:
            await self._note(notes)
        if warnings:
            await self._warn(warnings)
        return reclaimed

    async def _warn(self, warnings: list[WarnIdle]) -> None:
        """Reclaims ahead into the log (``session_idle_warning``), once per deadline (the
        command id and the aggregate both say so). History, not a decision: a failure is
        logged, and a later look before the deadline (if any) tries again."""
        try:
            await self.shard.handle(WarnIdleMany(items=tuple(warnings)))
        except Exception as exc:
            log.warning("idle warnings not appended", sessions=len(warnings), error=repr(exc))
            return
        for warning in warnings:
            log.info(
                "session warned",
                session=str(warning.session_id),
                checker=warning.checker,
                remaining=round(warning.remaining, 1),
            )

    async def _note(self, notes: list[NoteActivity]) -> None:
        """Coalesced activity into the log: the latest access of each session judged alive,
        once per access time (the command id makes a repeat after a restart a no-op)."""
        try:
            await self.shard.handle(NoteActivities(items=tuple(notes)))
        except Exception as exc:  # history, not a decision: the next judgment notes it again
            log.warning("activity not noted", sessions=len(notes), error=repr(exc))
            return
        for note in notes:
            self._noted[str(note.session_id)] = note.last_access

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Sleep until the earliest check time (or a new session), judge, repeat."""
        outages = Outages("idle check")
        while not (stop and stop.is_set()):
            try:
                await self.run_once()
                head = await self.store.idle.next_due()
                wait = self.max_sleep_s
                if head is not None:
                    wait = max(0.0, min(wait, head - await self.now()))
            except Exception as exc:  # logged once per outage, each time for a bug
                wait = self.max_sleep_s + outages.failed(exc)
            else:
                outages.succeeded()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
