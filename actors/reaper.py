"""The reaper: reclaims sessions that outlived their policy or went idle (23.03 §5).

Activity is telemetry, not events: ``touch`` sets the session's last access (Redis time)
and makes sure it has a check time in the ``<p>:idle:due`` sorted set; one pipeline, on the
request path. A check time is never later than the session's true deadline (activity only
moves deadlines later), so the reaper can sleep until the earliest one, judge the session
afresh with the pure checkers (:mod:`actors.domain.idle`), and either ask its shard for a
*conditional* destroy or schedule the next check at the earliest remaining time. The shard
re-reads the last access before destroying for ``idle-timeout``: activity that came after
the judgment (a lagging read model, a touch in flight) always wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import structlog

from events import Event, RedisEventStore
from projections.queries import ReadModels
from projections.tenancy_queries import TenancyLookups

from .domain.idle import IdleConfig, SessionFacts, judge

__all__ = ["REAPER_REACTS_TO", "Reaper", "app_closed", "app_opened", "touch"]

log = structlog.get_logger(__name__)

REAPER_REACTS_TO = frozenset({"session_started", "session_terminating", "session_terminated",
                              "session_cancelled"})  # fmt: skip
_REPORT_TTL_S = 150
_RETRY_S = 1.0
_POLICY_TTL_S = 1.0
_GONE = frozenset({"TERMINATING", "TERMINATED", "CANCELLED", "ERROR"})
_ACCESS_TTL_S = 86_400


async def touch(store: RedisEventStore, session_id: uuid.UUID | str) -> None:
    """Activity on a session (an execution started or finished, an app disconnected)."""
    seconds, micros = await store.redis.time()
    now = seconds + micros / 1e6
    pipe = store.redis.pipeline(transaction=False)
    pipe.set(store.keys.idle_access(str(session_id)), repr(now), ex=_ACCESS_TTL_S)
    pipe.zadd(store.keys.idle_due, {str(session_id): now}, nx=True)
    await pipe.execute()


async def app_opened(store: RedisEventStore, session_id: uuid.UUID | str, connection: str) -> None:
    """An app connection opened: while any is open the network timer is held."""
    seconds, _ = await store.redis.time()
    await store.redis.zadd(store.keys.idle_apps(str(session_id)), {connection: seconds})


async def app_closed(store: RedisEventStore, session_id: uuid.UUID | str, connection: str) -> None:
    """An app connection closed; the last one closing restarts the timer (a touch)."""
    key = store.keys.idle_apps(str(session_id))
    await store.redis.zrem(key, connection)
    if not await store.redis.zcard(key):
        await touch(store, session_id)


class Reaper:
    def __init__(
        self,
        store: RedisEventStore,
        shard: Any,
        config: IdleConfig | None = None,
        *,
        max_sleep_s: float = 1.0,
    ) -> None:
        self.store = store
        self.shard = shard
        self.config = config or IdleConfig()
        self.max_sleep_s = max_sleep_s
        self.models = ReadModels(store)
        self.tenancy = TenancyLookups(store)
        self._wake = asyncio.Event()
        self._policies: dict[str, tuple[float, dict[str, Any]]] = {}
        self._users: dict[str, tuple[float, float | None]] = {}
        for warning in self.config.warnings:
            log.warning("idle configuration", problem=warning)

    async def now(self) -> float:
        seconds, micros = await self.store.redis.time()
        return float(seconds + micros / 1e6)

    # ---- following the log -------------------------------------------------------------------
    async def on_events(self, events: Sequence[Event]) -> None:
        """A session that started gets its first access (its start time) and a check; one
        that ends leaves the schedule."""
        pipe = self.store.redis.pipeline(transaction=False)
        for event in events:
            sid = str(getattr(event.data, "session_id", ""))
            if event.type == "session_started":
                started = event.position_ms / 1000
                pipe.set(self.store.keys.idle_access(sid), repr(started), ex=_ACCESS_TTL_S,
                         nx=True)  # fmt: skip
                pipe.zadd(self.store.keys.idle_due, {sid: started}, nx=True)
            elif event.type in REAPER_REACTS_TO:
                pipe.zrem(self.store.keys.idle_due, sid)
        await pipe.execute()
        self._wake.set()

    # ---- judging -------------------------------------------------------------------------------
    async def facts(self, session_id: str) -> SessionFacts | None:
        """What the checkers need, fresh (RUNNING sessions only)."""
        record = await self.models.session(session_id)
        if record is None or record["status"] != "RUNNING":
            return None
        return (await self._facts_many([record]))[session_id]

    async def _facts_many(self, records: list[dict[str, Any]]) -> dict[str, SessionFacts]:
        """Facts of several sessions from their read-model records, with their telemetry
        read in a few round trips (last accesses, open apps, utilization samples) and each
        owner's policy once."""
        if not records:
            return {}
        ids = [r["id"] for r in records]
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.mget([self.store.keys.idle_access(sid) for sid in ids])
        for sid in ids:
            pipe.zcard(self.store.keys.idle_apps(sid))
        accesses, *apps = await pipe.execute()
        series = await self._utilization(records)
        facts = {}
        for record, raw_access, open_apps in zip(records, accesses, apps, strict=True):
            owner = await self._owner(record)
            owner.update(apps=int(open_apps), utilization=series[record["id"]])
            facts[record["id"]] = self._facts(record, owner, raw_access)
        return facts

    async def _utilization(
        self, records: list[dict[str, Any]]
    ) -> dict[str, dict[str, list[float]]]:
        """Each session's utilization series from its running kernels' samples (one read
        for all), averaged kernel by kernel for cluster sessions (23.03 §5.3)."""
        if "utilization" not in self.config.enabled:
            return {r["id"]: {} for r in records}
        kernels = [(r["id"], k) for r in records for k, kernel in r["kernels"].items()
                   if kernel["status"] == "RUNNING"]  # fmt: skip
        raw = await self.store.redis.mget(
            [self.store.keys.idle_utilization(k) for _, k in kernels]
        ) if kernels else []  # fmt: skip
        per_session: dict[str, list[dict[str, list[float]]]] = {r["id"]: [] for r in records}
        for (session_id, _), value in zip(kernels, raw, strict=True):
            if value:
                per_session[session_id].append(json.loads(value))
        return {sid: _average(series) for sid, series in per_session.items()}

    async def _owner(self, record: dict[str, Any]) -> dict[str, Any]:
        """The owner's policy and, when the session names its user, when that user was
        created (the new-user grace period counts from it)."""
        owner: dict[str, Any] = {"policy": await self._policy(record["access_key"])}
        if self.config.user_initial_grace_period is None:
            return owner
        user_id = record.get("user_id")
        if not user_id and record["access_key"]:
            keypair = await self.tenancy.keypair(record["access_key"])
            user_id = (keypair or {}).get("user_id")
        created = await self._user_created(str(user_id)) if user_id else None
        if created is not None:
            owner["user_created_at"] = created
        return owner

    async def _user_created(self, user_id: str) -> float | None:
        cached = self._users.get(user_id)
        if cached is None or time.monotonic() - cached[0] >= _POLICY_TTL_S:
            user = await self.tenancy.user(user_id)
            created = user.get("created_ms") if user else None
            cached = self._users[user_id] = (time.monotonic(),
                                             created / 1000 if created else None)  # fmt: skip
        return cached[1]

    async def _policy(self, access_key: str | None) -> dict[str, Any]:
        """The owner's resource policy, re-read at most once a second."""
        if not access_key:
            return {}
        now = time.monotonic()
        cached = self._policies.get(access_key)
        if cached is None or now - cached[0] >= _POLICY_TTL_S:
            limits = await self.tenancy.limits_of(access_key)
            cached = self._policies[access_key] = (now, dict((limits or {}).get("policy") or {}))
        return cached[1]

    @staticmethod
    def _facts(record: dict[str, Any], owner: dict[str, Any], raw_access: Any) -> SessionFacts:
        policy = owner["policy"]
        occupied = {k: float(v) for k, v in (record.get("occupying_slots") or {}).items()}
        return SessionFacts(
            session_id=record["id"], session_type=record["type"],
            created_at=record["created_ms"] / 1000, occupied_slots=occupied,
            policy_idle_timeout=float(policy.get("idle_timeout", -1)),
            policy_max_session_lifetime=float(policy.get("max_session_lifetime", 0)),
            last_access=float(raw_access) if raw_access else None,
            user_created_at=owner.get("user_created_at"),
            utilization_series=owner.get("utilization") or {},
            active_app_connections=int(owner.get("apps", 0)),
        )  # fmt: skip

    async def report(self, session_id: str) -> dict[str, dict[str, Any]]:
        """Each checker's remaining time, as 23.03's ``idle_checks`` (empty when the session
        is not running)."""
        facts = await self.facts(session_id)
        return {} if facts is None else judge(facts, self.config, await self.now())[1]

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
        facts_of = await self._facts_many([r for r in records.values() if r["status"] == "RUNNING"])
        pipe = self.store.redis.pipeline(transaction=False)
        destroys: list[tuple[uuid.UUID, str, float | None, uuid.UUID]] = []
        reclaimed: list[tuple[str, str]] = []
        for session_id in due:
            record = records.get(session_id)
            status = record["status"] if record else None
            if status in _GONE:
                pipe.zrem(self.store.keys.idle_due, session_id)
                continue
            if record is None or status != "RUNNING":  # behind, or restarting: look again
                pipe.zadd(self.store.keys.idle_due, {session_id: now + _RETRY_S})
                continue
            facts = facts_of[session_id]
            reason, reports = judge(facts, self.config, now)
            pipe.set(self.store.keys.idle_report(session_id), json.dumps(reports),
                     ex=_REPORT_TTL_S)  # fmt: skip
            if reason is not None:
                sid = uuid.UUID(session_id)
                command = uuid.uuid5(sid, f"idle/{reason}")
                destroys.append((sid, reason, facts.last_access, command))
                pipe.zrem(self.store.keys.idle_due, session_id)
                reclaimed.append((session_id, reason))
                continue
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
        return reclaimed

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


def _average(kernels: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Sample-wise averages over kernels, aligned on the newest samples."""
    if len(kernels) <= 1:
        return kernels[0] if kernels else {}
    metrics = set.intersection(*(set(k) for k in kernels))
    averaged: dict[str, list[float]] = {}
    for metric in metrics:
        length = min(len(k[metric]) for k in kernels)
        columns = [k[metric][len(k[metric]) - length :] for k in kernels]
        averaged[metric] = [sum(values) / len(values) for values in zip(*columns, strict=True)]
    return averaged


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
