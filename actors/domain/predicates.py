"""Scheduling predicates, in 23.03's order (``manager/scheduler/predicates.py``): may this
session start now?

Upstream keeps a Redis counter for concurrency that a failing later predicate then has to
repair by recomputation; here concurrency and occupancy are *derived from state*
(:class:`Occupancy`, built from the sessions that hold resources and updated as a pass
places sessions), so there is nothing to roll back.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .session import SessionResult, SessionSpec, SessionType
from .slots import DefaultForUnspecified, ResourceSlot, SlotType, cap_from

__all__ = [
    "PREDICATE_ORDER",
    "Occupancy",
    "PredicateContext",
    "PredicateResult",
    "QuotaPolicy",
    "check_predicates",
]


@dataclass(frozen=True, slots=True)
class PredicateResult:
    name: str
    passed: bool
    message: str | None = None


@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    """The parts of a keypair resource policy the predicates read."""

    total_resource_slots: Mapping[str, Any] = field(default_factory=dict)
    default_for_unspecified: DefaultForUnspecified = DefaultForUnspecified.UNLIMITED
    max_concurrent_sessions: int = 0
    """0 = unlimited."""
    max_concurrent_sftp_sessions: int = 1


@dataclass
class Occupancy:
    """What is in use now, per keypair / project / domain: resources of sessions in a
    user-resource-occupying status, and how many such sessions each keypair runs.
    Private (SYSTEM-role) sessions count only towards the sftp concurrency."""

    keypair: dict[str, ResourceSlot] = field(default_factory=lambda: defaultdict(ResourceSlot))
    project: dict[uuid.UUID | None, ResourceSlot] = field(
        default_factory=lambda: defaultdict(ResourceSlot)
    )
    domain: dict[str, ResourceSlot] = field(default_factory=lambda: defaultdict(ResourceSlot))
    sessions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sftp_sessions: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, session: SessionSpec, slots: ResourceSlot | None = None) -> None:
        if session.is_private:
            self.sftp_sessions[session.access_key] += 1
            return
        used = session.requested_slots if slots is None else slots
        self.sessions[session.access_key] += 1
        self.keypair[session.access_key] = self.keypair[session.access_key] + used
        self.project[session.project_id] = self.project[session.project_id] + used
        self.domain[session.domain] = self.domain[session.domain] + used

    def remove(self, session: SessionSpec, slots: ResourceSlot | None = None) -> None:
        """What :meth:`add` added, taken back (a session that ended: what-if's replays)."""
        if session.is_private:
            self.sftp_sessions[session.access_key] -= 1
            return
        used = session.requested_slots if slots is None else slots
        self.sessions[session.access_key] -= 1
        self.keypair[session.access_key] = self.keypair[session.access_key] - used
        self.project[session.project_id] = self.project[session.project_id] - used
        self.domain[session.domain] = self.domain[session.domain] - used

    @classmethod
    def of(cls, sessions: Sequence[SessionSpec]) -> Occupancy:
        occupancy = cls()
        for session in sessions:
            occupancy.add(session)
        return occupancy


@dataclass
class PredicateContext:
    now: datetime
    known_slot_types: Mapping[str, SlotType]
    occupancy: Occupancy
    keypair_policies: Mapping[str, QuotaPolicy] = field(default_factory=dict)
    project_limits: Mapping[uuid.UUID | None, Mapping[str, Any]] = field(default_factory=dict)
    domain_limits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dependencies: Mapping[uuid.UUID, tuple[str, SessionResult]] = field(default_factory=dict)
    """Every session id a pending one may depend on -> (name, result)."""

    def policy(self, access_key: str) -> QuotaPolicy:
        return self.keypair_policies.get(access_key, QuotaPolicy())


def _reserved_time(session: SessionSpec, ctx: PredicateContext) -> str | None:
    if session.session_type is not SessionType.BATCH or session.starts_at is None:
        return None
    return None if ctx.now >= session.starts_at else "Before start time"


def _dependencies(session: SessionSpec, ctx: PredicateContext) -> str | None:
    waiting = []
    for dep in session.dependencies:
        name, result = ctx.dependencies.get(dep, ("?", SessionResult.UNDEFINED))
        if result is not SessionResult.SUCCESS:
            waiting.append(f"{name} ({dep})")
    if not waiting:
        return None
    return f"Waiting dependency sessions to finish as success. ({', '.join(waiting)})"


def _concurrency(session: SessionSpec, ctx: PredicateContext) -> str | None:
    policy = ctx.policy(session.access_key)
    if session.is_private:
        limit = policy.max_concurrent_sftp_sessions
        used = ctx.occupancy.sftp_sessions[session.access_key]
    else:
        limit = policy.max_concurrent_sessions
        used = ctx.occupancy.sessions[session.access_key]
    if limit > 0 and used >= limit:
        return f"You cannot run more than {limit} concurrent sessions"
    return None


def _quota_message(kind: str, limit: ResourceSlot, ctx: PredicateContext) -> str:
    shown = " ".join(f"{k}={v}" for k, v in limit.to_humanized(ctx.known_slot_types).items())
    return f"Your {kind} resource quota is exceeded. ({shown})"


def _within(
    used: ResourceSlot, session: SessionSpec, limit: ResourceSlot, ctx: PredicateContext
) -> bool:
    known = ctx.known_slot_types
    total = used.normalize(known) + session.requested_slots.normalize(known)
    return total <= limit


def _keypair_limit(session: SessionSpec, ctx: PredicateContext) -> str | None:
    policy = ctx.policy(session.access_key)
    limit = cap_from(
        policy.total_resource_slots, ctx.known_slot_types, policy.default_for_unspecified
    )
    if _within(ctx.occupancy.keypair[session.access_key], session, limit, ctx):
        return None
    return _quota_message("keypair", limit, ctx)


def _group_limit(session: SessionSpec, ctx: PredicateContext) -> str | None:
    limit = cap_from(ctx.project_limits.get(session.project_id, {}), ctx.known_slot_types)
    if _within(ctx.occupancy.project[session.project_id], session, limit, ctx):
        return None
    return _quota_message("group", limit, ctx)


def _domain_limit(session: SessionSpec, ctx: PredicateContext) -> str | None:
    limit = cap_from(ctx.domain_limits.get(session.domain, {}), ctx.known_slot_types)
    if _within(ctx.occupancy.domain[session.domain], session, limit, ctx):
        return None
    return _quota_message("domain", limit, ctx)


Predicate = Callable[[SessionSpec, PredicateContext], "str | None"]

PREDICATE_ORDER: tuple[tuple[str, Predicate, bool], ...] = (
    ("reserved_time", _reserved_time, False),
    ("dependencies", _dependencies, False),
    ("concurrency", _concurrency, False),
    ("keypair_resource_limit", _keypair_limit, True),
    ("user_group_resource_limit", _group_limit, True),
    ("domain_resource_limit", _domain_limit, True),
)
"""(name, check, quota-only): quota predicates do not apply to private sessions."""


def check_predicates(session: SessionSpec, ctx: PredicateContext) -> list[PredicateResult]:
    """Every applicable predicate, in order; all run (status_data lists passed and failed)."""
    results = []
    for name, check, quota_only in PREDICATE_ORDER:
        if quota_only and session.is_private:
            continue
        try:
            message = check(session, ctx)
        except Exception as exc:  # a predicate that breaks counts as failed, as upstream
            message = repr(exc)
        results.append(PredicateResult(name, message is None, message))
    return results
