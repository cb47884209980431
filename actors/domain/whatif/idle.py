"""Idle policy what-if: the recorded activity replayed under another idle or lifetime
checker, to see what a tighter policy would reclaim before adopting it (docs/idle.md,
"What if").

The log knows when each session started and ended, who asked for it and for which image,
and its activity as the reaper noted it (``session_activity``: the last access at each
judgment, coalesced). Replayed under ``network_timeout`` with another threshold, a session
is reclaimed at the first gap in its known activity longer than the threshold; under
``session_lifetime``, once that long has passed since it was created (as the checker counts;
the new-user grace period is not replayed). For each reclaim: the slot-hours it would
have freed (until its recorded end), and whether its owner **came back** within a window:
activity on that session after the reclaim (an execution it would have refused) or a new
session of the same owner on the same image (a user starting over). That share is the
false-positive estimate an admin needs before tightening a policy.

Known activity is a lower bound: between two notes there may have been accesses the log
does not hold (a note says only the last access at each judgment, and judgments come at
the recorded threshold). A threshold tighter than the recorded one may therefore find
gaps that were not there: the reclaims are an upper bound, the came-back share a lower one.
Pure: the caller feeds events in log order (:class:`LogActivity`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

__all__ = ["IDLE_INTERESTS", "IdleReport", "IdleSession", "LogActivity", "idle_what_if"]

IDLE_INTERESTS = frozenset(
    {
        "session_enqueued",
        "session_started",
        "session_activity",
        "session_terminated",
        "session_cancelled",
    }
)
MAX_SESSIONS = 1_000_000
MAX_NOTES = 10_000
"""Activity notes kept per session (the latest win: a long session's early ones matter least)."""


@dataclass
class IdleSession:
    session_id: str
    owner: str
    image: str
    session_type: str
    slots: dict[str, float]
    created_s: float
    started_s: float | None = None
    ended_s: float | None = None
    end_reason: str | None = None
    activity: list[float] = field(default_factory=list)


class LogActivity:
    """Folds events (in log order) into :class:`IdleSession` records; times are the log's
    clock (positions, seconds), accesses as the reaper noted them (Redis time, seconds)."""

    def __init__(self, scaling_group: str | None = None) -> None:
        self.scaling_group = scaling_group
        self.sessions: dict[str, IdleSession] = {}
        self.last_s = 0.0
        self.skipped = 0

    def apply(self, event: Any) -> None:
        at = event.position_ms / 1000
        self.last_s = max(self.last_s, at)
        data = event.data
        if event.type == "session_enqueued":
            spec = data.spec
            if spec is None or self.scaling_group not in (None, spec.scaling_group):
                return
            if len(self.sessions) >= MAX_SESSIONS:
                self.skipped += 1
                return
            slots: dict[str, float] = {}
            for kernel in spec.kernels:
                for name, value in kernel.requested_slots.items():
                    slots[name] = slots.get(name, 0.0) + float(Decimal(str(value)))
            image = spec.kernels[0].image if spec.kernels else ""
            self.sessions[str(data.session_id)] = IdleSession(
                str(data.session_id), spec.access_key, image, str(spec.session_type), slots, at
            )
            return
        session = self.sessions.get(str(data.session_id))
        if session is None:
            return
        if event.type == "session_started":
            session.started_s = at
        elif event.type == "session_activity":
            if len(session.activity) >= MAX_NOTES:
                del session.activity[0]
            session.activity.append(float(data.last_access))
        elif event.type in ("session_terminated", "session_cancelled"):
            session.ended_s = at
            reason = getattr(data, "reason", "") or ""
            session.end_reason = str(getattr(reason, "value", reason))


@dataclass(frozen=True, slots=True)
class Reclaim:
    session_id: str
    owner: str
    at_s: float
    freed_s: float
    came_back: bool


@dataclass
class IdleReport:
    checker: str
    threshold_s: float
    came_back_s: float
    judged: int = 0
    """Sessions the checker measures (started; batch ones not network-checked; inference never)."""
    reclaims: list[Reclaim] = field(default_factory=list)
    slot_hours: dict[str, float] = field(default_factory=dict)
    recorded: int = 0
    """Sessions the record ended for this checker's reason."""

    @property
    def came_back(self) -> int:
        return sum(1 for r in self.reclaims if r.came_back)

    def as_json(self) -> dict[str, Any]:
        return {
            "checker": self.checker,
            "threshold_s": self.threshold_s,
            "came_back_window_s": self.came_back_s,
            "sessions_judged": self.judged,
            "would_reclaim": len(self.reclaims),
            "recorded_reclaims": self.recorded,
            "slot_hours_freed": {k: round(v, 3) for k, v in sorted(self.slot_hours.items())},
            "came_back": self.came_back,
            "came_back_share": round(self.came_back / len(self.reclaims), 3)
            if self.reclaims
            else None,
        }


_REASON = {"network_timeout": "idle-timeout", "session_lifetime": "idle-session-lifetime"}


def _reclaim_at(session: IdleSession, checker: str, threshold: float, end: float) -> float | None:
    start = session.started_s
    assert start is not None
    if checker == "session_lifetime":  # counted from creation, as the checker counts it
        deadline = session.created_s + threshold
        return max(deadline, start) if end > deadline else None
    known = sorted(a for a in session.activity if start <= a <= end)
    last = start
    for moment in [*known, end]:
        if moment - last > threshold:
            return last + threshold
        last = max(last, moment)
    return None


def idle_what_if(
    sessions: Iterable[IdleSession],
    checker: Literal["network_timeout", "session_lifetime"],
    threshold_s: float,
    came_back_s: float,
    horizon_s: float,
) -> IdleReport:
    """Which sessions ``checker`` at ``threshold_s`` would have reclaimed, what that frees,
    and how many owners came back within ``came_back_s`` (module doc)."""
    report = IdleReport(checker, threshold_s, came_back_s)
    everyone = list(sessions)
    starts_by: dict[tuple[str, str], list[float]] = {}
    for s in everyone:
        starts_by.setdefault((s.owner, s.image), []).append(s.created_s)
    for times in starts_by.values():
        times.sort()
    for session in everyone:
        if session.started_s is None or session.session_type == "inference":
            continue
        if checker == "network_timeout" and session.session_type == "batch":
            continue
        report.judged += 1
        if session.end_reason == _REASON[checker]:
            report.recorded += 1
        end = session.ended_s if session.ended_s is not None else horizon_s
        at = _reclaim_at(session, checker, threshold_s, end)
        if at is None:
            continue
        freed = end - at
        for name, amount in session.slots.items():
            report.slot_hours[name] = report.slot_hours.get(name, 0.0) + amount * freed / 3600
        used_again = any(at < a <= at + came_back_s for a in session.activity)
        times = starts_by[(session.owner, session.image)]
        first = bisect.bisect_right(times, at)
        restarted = first < len(times) and times[first] <= at + came_back_s
        report.reclaims.append(
            Reclaim(session.session_id, session.owner, at, freed, used_again or restarted)
        )
    return report
