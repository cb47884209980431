"""What the idle checkers need to know of running sessions, read fresh from the read models
and telemetry: last accesses, open app connections, utilization samples, each owner's
policy and when its user was created.

Two readers share it: the reaper (which judges sessions and destroys the idle ones) and the
gateway (whose session info shows each checker's remaining time, ``idleChecks``). They
judge with the same pure checkers on the same facts, so what a user is shown is what the
reaper will decide.
"""

from __future__ import annotations

import json
import time
from typing import Any

from actors.domain.idle import IdleConfig, SessionFacts, judge
from actors.tenancy.cache import RefreshingCache
from events import RedisEventStore
from projections.tenancy_queries import TenancyLookups

__all__ = ["APP_REFRESH_S", "APP_STALE_S", "IdleFacts"]

APP_REFRESH_S = 30.0
"""How often a gateway re-announces each open app connection (and touches its session)."""
APP_STALE_S = 3 * APP_REFRESH_S
"""An app connection not re-announced for this long is gone (its gateway died with it)."""
_POLICY_TTL_S = 1.0


class IdleFacts:
    def __init__(self, store: RedisEventStore, config: IdleConfig) -> None:
        self.store = store
        self.config = config
        self.tenancy = TenancyLookups(store)
        self._policies: RefreshingCache[str, dict[str, Any]] = RefreshingCache(
            self._load_policy, _POLICY_TTL_S
        )
        self._users: RefreshingCache[str, float | None] = RefreshingCache(
            self._load_user_created, _POLICY_TTL_S
        )

    async def now(self) -> float:
        return await self.store.clock.now()

    async def of(self, records: list[dict[str, Any]], now: float) -> dict[str, SessionFacts]:
        """Facts of several running sessions from their read-model records, with their
        telemetry read in a few round trips (last accesses, live app connections,
        utilization samples) and each owner's policy once."""
        if not records:
            return {}
        ids = [r["id"] for r in records]
        accesses: list[float | None] = [None] * len(ids)
        apps: list[int] = [0] * len(ids)
        if "network_timeout" in self.config.enabled:  # only what an enabled checker reads
            accesses, apps = await self.store.idle.activity(ids, now - APP_STALE_S)
        series = await self._utilization(records)
        facts = {}
        for record, access, open_apps in zip(records, accesses, apps, strict=True):
            owner = await self._owner(record)
            owner.update(apps=open_apps, utilization=series[record["id"]])
            facts[record["id"]] = _facts(record, owner, access)
        return facts

    async def report(self, record: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
        """Each checker's remaining time, as 23.03's ``idle_checks`` (empty when the session
        is not running)."""
        if record is None or record.get("status") != "RUNNING":
            return {}
        now = time.time()  # a report, not a decision: this host's clock spares a round trip
        facts = (await self.of([record], now))[record["id"]]
        return judge(facts, self.config, now)[1]

    async def _utilization(
        self, records: list[dict[str, Any]]
    ) -> dict[str, dict[str, list[float]]]:
        """Each session's utilization series from its running kernels' samples (one read
        for all), averaged kernel by kernel for cluster sessions (as 23.03's
        ``UtilizationIdleChecker``; docs/idle.md)."""
        if "utilization" not in self.config.enabled:
            return {r["id"]: {} for r in records}
        kernels = [
            (r["id"], k)
            for r in records
            for k, kernel in r["kernels"].items()
            if kernel["status"] == "RUNNING"
        ]
        raw = await self.store.telemetry.utilization([k for _, k in kernels])
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
        return await self._users.get(user_id)

    async def _load_user_created(self, user_id: str) -> float | None:
        user = await self.tenancy.user(user_id)
        created = user.get("created_ms") if user else None
        return created / 1000 if created else None

    async def _policy(self, access_key: str | None) -> dict[str, Any]:
        """The owner's resource policy, refreshed about once a second."""
        return await self._policies.get(access_key) if access_key else {}

    async def _load_policy(self, access_key: str) -> dict[str, Any]:
        limits = await self.tenancy.limits_of(access_key)
        return dict((limits or {}).get("policy") or {})


def _facts(
    record: dict[str, Any], owner: dict[str, Any], last_access: float | None
) -> SessionFacts:
    policy = owner["policy"]
    occupied = {k: float(v) for k, v in (record.get("occupying_slots") or {}).items()}
    return SessionFacts(
        session_id=record["id"],
        session_type=record["type"],
        created_at=record["created_ms"] / 1000,
        occupied_slots=occupied,
        policy_idle_timeout=float(policy.get("idle_timeout", -1)),
        policy_max_session_lifetime=float(policy.get("max_session_lifetime", 0)),
        last_access=last_access,
        user_created_at=owner.get("user_created_at"),
        utilization_series=owner.get("utilization") or {},
        active_app_connections=int(owner.get("apps", 0)),
    )


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
