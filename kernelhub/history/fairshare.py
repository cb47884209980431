"""``kh fairshare [--as-of T]``: each user's and project's fair-share factors in a scaling
group, and where each pending session ranks, the way Slurm's ``sprio`` shows them
(docs/fairshare.md).

Folded afresh from the log up to the cutoff by the read models' own code (the sessions'
holds, the group's settings then), so an earlier ranking is reproduced exactly, and a
different half-life or weights (``--half-life``, ``--weight``) recomputes it from the same
history: usage is never stored, only the sessions' starts and ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from actors.domain.scheduling.fairshare import (
    FairFactor,
    FairShareConfig,
    FairUsage,
    UsageInterval,
    decayed_usage,
    fair_factors,
    priority_of,
    usage_of_holds,
)
from actors.domain.scheduling.records import scaling_group_of
from events import RedisEventStore
from projections.models import SessionsProjection, TenancyProjection

from .asof import fold_events, stored_events_until
from .positions import Cutoff

__all__ = ["fairshare_report", "intervals_of", "live_rank", "rank_pending"]


def intervals_of(sessions: list[dict[str, Any]], group: str, since_s: float) -> list[UsageInterval]:
    """The holds of ``group``'s sessions (from running to ended, or still running) that the
    scheduler reads: owned, and ended at ``since_s`` or later."""
    return [
        UsageInterval(
            str(r["access_key"]),
            str(r["project_id"]) if r.get("project_id") else None,
            r["running_since_ms"] / 1000,
            r["ended_ms"] / 1000 if r.get("ended_ms") is not None else None,
            r.get("usage_slots") or r.get("requested_slots") or {},
        )
        for r in sessions
        if r.get("scaling_group") == group
        and r.get("access_key")
        and r.get("running_since_ms") is not None
        and (r.get("ended_ms") is None or r["ended_ms"] / 1000 >= since_s)
    ]


async def fairshare_report(
    store: RedisEventStore,
    cutoff: Cutoff,
    at_ms: int,
    group: str,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The factors and the pending ranking of ``group`` as of ``cutoff``, usage decayed to
    ``at_ms`` (the cutoff's time, or the log's clock now)."""
    events = await stored_events_until(store, cutoff)
    working = fold_events([SessionsProjection(), TenancyProjection()], events)
    sessions = [
        r
        for (kind, _), r in working["sessions"].current.items()
        if kind == "session" and r is not None
    ]
    settings = scaling_group_of(group, working["tenancy"].get("sgroup", group))
    base = dict(settings.scheduler_config) if settings.scheduler == "fair_share" else {}
    config = FairShareConfig.from_config({**base, **overrides})
    now_s = at_ms / 1000
    usage = decayed_usage(intervals_of(sessions, group, now_s - config.window_s), config, now_s)
    waiting = sorted(
        (r for r in sessions if r.get("status") == "PENDING" and r.get("scaling_group") == group),
        key=lambda r: (r.get("created_ms") or 0, r["id"]),
    )
    users, project_factors, ranked = rank_pending(usage, waiting)
    return {
        "as_of": cutoff.shown,
        "at": at_ms,
        "group": group,
        "scheduler": settings.scheduler,
        "half_life_s": config.half_life_s,
        "weights": dict(config.weights),
        "users": {name: asdict(f) for name, f in sorted(users.items())},
        "projects": {name: asdict(f) for name, f in sorted(project_factors.items())},
        "pending": [
            {
                "rank": rank,
                "session": r["id"],
                "name": r.get("name"),
                "owner": r.get("access_key"),
                "project": r.get("project_id"),
                "priority": priority,
            }
            for rank, (r, priority) in enumerate(ranked, 1)
        ],
    }


def rank_pending(
    usage: FairUsage, waiting: list[dict[str, Any]]
) -> tuple[dict[str, FairFactor], dict[str, FairFactor], list[tuple[dict[str, Any], float]]]:
    """The factors of the users and projects waiting (and of those with usage), and the
    waiting sessions (oldest first) in the order ``fair_share`` tries them, with their
    priorities: the plugin's rule on read-model records."""
    owners = {str(r.get("access_key")) for r in waiting}
    projects = {str(r["project_id"]) for r in waiting if r.get("project_id")}
    users, project_factors = fair_factors(usage, owners, projects)
    scored = [
        (
            r,
            priority_of(
                users,
                project_factors,
                str(r.get("access_key")),
                str(r["project_id"]) if r.get("project_id") else None,
            ),
        )
        for r in waiting
    ]
    order = sorted(range(len(scored)), key=lambda i: (-scored[i][1], i))
    return users, project_factors, [scored[i] for i in order]


async def live_rank(store: RedisEventStore, session_id: str, now_ms: int) -> dict[str, Any] | None:
    """Where a PENDING session of a ``fair_share`` group ranks now, from the read models as
    the scheduler reads them (``kh why``): its rank, priority, and who is ahead of it.
    ``None`` when the session is not pending in such a group."""
    from projections.queries import ReadModels
    from projections.tenancy_queries import TenancyLookups

    models = ReadModels(store)
    record = await models.session(session_id)
    if record is None or record.get("status") != "PENDING" or not record.get("scaling_group"):
        return None
    group = str(record["scaling_group"])
    settings = scaling_group_of(group, await TenancyLookups(store).scaling_group(group))
    if settings.scheduler != "fair_share":
        return None
    config = FairShareConfig.from_config(settings.scheduler_config)
    now_s = now_ms / 1000
    raw = await models.usage_intervals(f"group:{group}", int((now_s - config.window_s) * 1000))
    usage = usage_of_holds(raw, config, now_s)
    queue = (await models.pending_queue(group, limit=100_000)).items
    waiting = [r for r in queue if r.get("status") == "PENDING"]  # as the scheduler reads it
    _, _, ranked = rank_pending(usage, waiting)
    place = next((n for n, (r, _) in enumerate(ranked) if r["id"] == session_id), None)
    if place is None:
        return None
    return {
        "rank": place + 1,
        "of": len(ranked),
        "priority": ranked[place][1],
        "ahead": [
            {
                "session": r["id"],
                "name": r.get("name"),
                "owner": r.get("access_key"),
                "priority": priority,
            }
            for r, priority in ranked[:place][:5]
        ],
    }
