"""Idle and lifetime checks (23.03's ``manager/idle.py``; docs/idle.md): configuration and the
pure judgment of one session.

23.03's ``idle.py`` mixes judgment, Redis I/O and reporting; here the judgment is a set of
functions over plain facts (times in seconds, Redis time), and the callers do the I/O: the
reaper with its deadlines, the agent with its utilization samples. Each checker returns a
:class:`Judgment`; :func:`judge` runs them in registration order (``session_lifetime``
first, always) and names the reason of the first that wants the session gone — one
termination however many fire, while every checker still reports.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .session import parse_duration

__all__ = [
    "CHECKER_OF",
    "IDLE_TIMEOUT_VALUE",
    "IdleConfig",
    "IdleWarning",
    "Judgment",
    "Review",
    "SessionFacts",
    "UtilizationConfig",
    "activity_note_id",
    "calculate_remaining_time",
    "idle_reclaim_id",
    "idle_warning_id",
    "judge",
    "network_timeout",
    "review",
    "session_lifetime",
    "utilization",
    "utilization_idle",
]

IDLE_TIMEOUT_VALUE = -1.0
"""What a report shows once the time is up."""
MAX_WARNING_LEAD_S = 7 * 86400.0
"""A week: a warning further ahead than that is no warning."""
CHECK_INTERVAL_S = 15.0
"""23.03's ``DEFAULT_CHECK_INTERVAL``: the utilization window is counted in these."""
_CHECKERS = ("network_timeout", "utilization")
_SLOT_METRICS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu_util",),
    "mem": ("mem",),
    "cuda": ("cuda_util", "cuda_mem"),
    "atom": ("atom_mem",),
}


def _seconds(value: str | float | int) -> float:
    return value if isinstance(value, int | float) else parse_duration(value).total_seconds()


class UtilizationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    time_window: float = Field(600.0, alias="time-window")
    initial_grace_period: float = Field(300.0, alias="initial-grace-period")
    thresholds_check_operator: Literal["and", "or"] = Field(
        "and", alias="thresholds-check-operator"
    )
    resource_thresholds: dict[str, float | None] = Field(
        default_factory=dict, alias="resource-thresholds"
    )
    """Metric -> average percent below which it counts as idle (``None``: not judged)."""
    interval: float = Field(CHECK_INTERVAL_S, alias="sample-interval", gt=0)
    """kernelhub: how often agents sample (23.03 fixes it at 15 s); the window holds
    ``time_window / interval`` samples."""

    @field_validator("time_window", "initial_grace_period", "interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return _seconds(value)

    @field_validator("resource_thresholds", mode="before")
    @classmethod
    def _thresholds(cls, value: Any) -> dict[str, float | None]:
        """23.03's shape is ``{metric: {"average": percent}}``; a bare number is accepted."""
        out: dict[str, float | None] = {}
        for metric, spec in (value or {}).items():
            average = spec.get("average") if isinstance(spec, Mapping) else spec
            out[metric] = None if average is None else float(average)
        return out


class IdleConfig(BaseModel):
    """``config/idle``: which checkers are enabled and how each is configured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: tuple[str, ...] = ()
    network_threshold: float = 600.0
    """``checkers.network_timeout.threshold`` (default 10 min)."""
    utilization: UtilizationConfig = Field(default_factory=UtilizationConfig)
    user_initial_grace_period: float | None = None
    warning_lead: float = Field(0.0, ge=0, le=MAX_WARNING_LEAD_S)
    """``warning-lead``: how long before a reclaim the session gets a ``session_idle_warning``
    (0: none). kernelhub's; 23.03 reclaims without a word."""
    warnings: tuple[str, ...] = ()
    """What was accepted but deserves a loud word (the old ``timeout`` name, unknown names)."""

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> IdleConfig:
        """From the etcd-shaped dict: ``enabled`` (comma separated) and ``checkers.<name>``.
        The pre-23.3.1 name ``timeout`` is taken as ``network_timeout``, with a warning:
        upstream silently disables the checker on an old config."""
        warnings: list[str] = []
        names = [n.strip() for n in str(raw.get("enabled", "")).split(",") if n.strip()]
        enabled: list[str] = []
        for name in names:
            if name == "timeout":
                warnings.append("idle checker 'timeout' is now 'network_timeout': enabled as such")
                name = "network_timeout"
            if name not in _CHECKERS:
                warnings.append(f"unknown idle checker {name!r} ignored")
                continue
            if name not in enabled:
                enabled.append(name)
        checkers = dict(raw.get("checkers") or {})
        if "timeout" in checkers and "network_timeout" not in checkers:
            warnings.append("idle checker config 'timeout' read as 'network_timeout'")
            checkers["network_timeout"] = checkers.pop("timeout")
        network = checkers.get("network_timeout") or {}
        grace = (checkers.get("user_grace_period") or {}).get("user_initial_grace_period")
        lead = raw.get("warning-lead", 0)
        if isinstance(lead, bool) or not isinstance(lead, int | float | str):
            raise ValueError("warning-lead must be a duration (10m) or seconds")
        lead_s = _seconds(lead) if lead else 0.0
        threshold = _seconds(network.get("threshold", "10m"))
        if "network_timeout" in enabled and 0 < threshold <= lead_s:
            raise ValueError(
                "warning-lead must be shorter than the network_timeout threshold "
                "(or every look would warn)"
            )
        return cls(
            enabled=tuple(enabled),
            network_threshold=threshold,
            utilization=UtilizationConfig.model_validate(checkers.get("utilization") or {}),
            user_initial_grace_period=None if grace is None else _seconds(grace),
            warning_lead=lead_s,
            warnings=tuple(warnings),
        )


@dataclass(frozen=True)
class SessionFacts:
    """One running session as the checkers see it (times: Redis time, unix seconds)."""

    session_id: str
    session_type: str
    created_at: float
    occupied_slots: Mapping[str, float]
    user_created_at: float | None = None
    policy_idle_timeout: float = -1
    """The keypair policy's ``idle_timeout``: negative = use the checker's setting."""
    policy_max_session_lifetime: float = 0
    """Seconds; 0 = unlimited."""
    last_access: float | None = None
    """Last activity; ``None`` or 0 = the timer is off (never set, or an app is connected)."""
    active_app_connections: int = 0
    utilization_series: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Metric -> recent samples (percent), newest last, as the agent keeps them."""


@dataclass(frozen=True)
class Judgment:
    checker: str
    alive: bool
    remaining: float | None
    """Seconds left (``IDLE_TIMEOUT_VALUE`` once up), or ``None`` when not measured."""
    remaining_time_type: Literal["expire_after", "grace_period"]
    reason: str
    extra: dict[str, Any] | None = None

    def report(self) -> dict[str, Any]:
        """The shape of 23.03's ``get_idle_check_report`` entry."""
        return {
            "remaining": self.remaining,
            "remaining_time_type": self.remaining_time_type,
            "extra": self.extra,
        }


def calculate_remaining_time(
    now: float, idle_baseline: float, timeout_period: float, grace_period_end: float | None = None
) -> float:
    baseline = idle_baseline if grace_period_end is None else max(idle_baseline, grace_period_end)
    return baseline - now + timeout_period


def _shown(remaining: float) -> float:
    return remaining if remaining > 0 else IDLE_TIMEOUT_VALUE


def _grace_end(facts: SessionFacts, config: IdleConfig) -> float | None:
    if facts.user_created_at is None or config.user_initial_grace_period is None:
        return None
    return facts.user_created_at + config.user_initial_grace_period


def network_timeout(facts: SessionFacts, config: IdleConfig, now: float) -> Judgment:
    """Alive while an app is connected, for batch sessions, with the timer off, or while
    ``remaining >= 0`` (23.03's boundary: exactly at the deadline is still alive)."""

    def verdict(alive: bool, remaining: float | None = None) -> Judgment:
        return Judgment("network_timeout", alive, remaining, "expire_after", "idle-timeout")

    if facts.session_type == "batch" or facts.active_app_connections > 0:
        return verdict(True)
    if not facts.last_access:
        return verdict(True)
    timeout = (
        facts.policy_idle_timeout if facts.policy_idle_timeout >= 0 else config.network_threshold
    )
    if timeout <= 0 or math.isinf(timeout):
        return verdict(True)
    remaining = calculate_remaining_time(now, facts.last_access, timeout, _grace_end(facts, config))
    return verdict(remaining >= 0, _shown(remaining))


def session_lifetime(facts: SessionFacts, config: IdleConfig, now: float) -> Judgment:
    """Alive while ``remaining > 0`` (strictly, unlike the network checker)."""
    lifetime = facts.policy_max_session_lifetime
    if lifetime <= 0:
        return Judgment("session_lifetime", True, None, "expire_after", "idle-session-lifetime")
    remaining = calculate_remaining_time(now, facts.created_at, lifetime, _grace_end(facts, config))
    return Judgment(
        "session_lifetime",
        remaining > 0,
        _shown(remaining),
        "expire_after",
        "idle-session-lifetime",
    )


def _judged_metrics(
    occupied: Mapping[str, float], thresholds: Mapping[str, float | None]
) -> dict[str, float]:
    """Metrics with a threshold whose resource the session was allocated (``cuda.device`` and
    ``cuda.shares`` both count as ``cuda``; an unallocated accelerator is not judged)."""
    allocated: dict[str, float] = {}
    for slot, amount in occupied.items():
        prefix = slot.split(".", 1)[0]
        allocated[prefix] = allocated.get(prefix, 0) + float(amount)
    excluded = {
        m for prefix, metrics in _SLOT_METRICS.items() if not allocated.get(prefix) for m in metrics
    }
    return {m: t for m, t in thresholds.items() if t is not None and m not in excluded}


def utilization_idle(
    averages: Mapping[str, float], thresholds: Mapping[str, float], operator: str
) -> bool:
    """Whether the session is idle by its averages. ``and`` (default): idle only when every
    judged metric is under its threshold; ``or``: idle when any one is. Nothing judged: not
    idle."""
    if not thresholds:
        return False
    used = [averages.get(m, 0.0) >= t for m, t in thresholds.items()]
    return not any(used) if operator == "and" else not all(used)


def utilization(facts: SessionFacts, config: IdleConfig, now: float) -> Judgment:
    settings = config.utilization
    window = facts.policy_idle_timeout if facts.policy_idle_timeout >= 0 else settings.time_window
    window_size = int(window / settings.interval)

    def verdict(
        alive: bool, remaining: float | None, extra: dict[str, Any] | None = None
    ) -> Judgment:
        return Judgment("utilization", alive, remaining, "grace_period", "idle-utilization", extra)

    if window_size <= 0:
        return verdict(True, None)
    grace_end = _grace_end(facts, config)
    start_from = facts.created_at if grace_end is None else max(grace_end, facts.created_at)
    total_grace_end = start_from + settings.initial_grace_period
    remaining = _shown(calculate_remaining_time(now, facts.created_at, window, total_grace_end))
    if now <= total_grace_end:
        return verdict(True, remaining)  # no sampling during the grace period
    judged = _judged_metrics(facts.occupied_slots, settings.resource_thresholds)
    series = {m: list(facts.utilization_series.get(m, ()))[-window_size:] for m in judged}
    averages = {m: sum(s) / len(s) for m, s in series.items() if s}
    extra = {
        "thresholds_check_operator": settings.thresholds_check_operator,
        "resources": {m: (averages.get(m), t) for m, t in judged.items()},
    }
    if any(len(s) < window_size for s in series.values()):
        return verdict(True, remaining, extra)  # not enough data: no decision yet
    idle = utilization_idle(averages, judged, settings.thresholds_check_operator)
    return verdict(not idle, remaining, extra)


def judge(
    facts: SessionFacts, config: IdleConfig, now: float
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """Every enabled checker on one session: ``(reason to terminate or None, reports)``.
    Inference sessions are never idle-checked (B12, docs/upstream.md)."""
    if facts.session_type == "inference":
        return None, {}
    judgments = [session_lifetime(facts, config, now)]
    if "network_timeout" in config.enabled:
        judgments.append(network_timeout(facts, config, now))
    if "utilization" in config.enabled:
        judgments.append(utilization(facts, config, now))
    reason = next((j.reason for j in judgments if not j.alive), None)
    return reason, {j.checker: j.report() for j in judgments}


# ---- the reaper's review of one running session ---------------------------------------------
CHECKER_OF = {
    "idle-timeout": "network_timeout",
    "idle-session-lifetime": "session_lifetime",
    "idle-utilization": "utilization",
}
"""The checker behind each reclaim reason (named in the reclaim's evidence)."""


def idle_reclaim_id(session_id: uuid.UUID, reason: str) -> uuid.UUID:
    """The command id of reclaiming a session for ``reason``: once per session and reason,
    however many reapers (or restarts of one) judge it."""
    return uuid.uuid5(session_id, f"idle/{reason}")


def idle_warning_id(session_id: uuid.UUID, checker: str, deadline: float) -> uuid.UUID:
    """The command id of warning a session that ``checker`` reclaims it at ``deadline``:
    once per deadline (activity that moves the deadline earns a new warning later)."""
    return uuid.uuid5(session_id, f"idle-warning/{checker}@{deadline!r}")


def activity_note_id(session_id: uuid.UUID, last_access: float) -> uuid.UUID:
    """The command id of noting a session's activity in the log: once per access time (a
    repeat after a restart is a no-op)."""
    return uuid.uuid5(session_id, f"activity@{last_access!r}")


WARNED_CHECKERS = {"session_lifetime": "idle-session-lifetime", "network_timeout": "idle-timeout"}
"""The checkers whose reclaim has a deadline to warn of. ``utilization`` has none: it
reclaims when a window of samples averages under its thresholds, which the next sample
may change either way."""


@dataclass(frozen=True, slots=True)
class IdleWarning:
    """A reclaim ahead: ``checker`` reclaims the session at ``deadline`` unless (for the
    network timer) it is used first."""

    checker: str
    reason: str
    deadline: float
    remaining: float


@dataclass(frozen=True, slots=True)
class Review:
    """What one look at a running session decided."""

    reports: dict[str, dict[str, Any]]
    """Each checker's report (what ``idleChecks`` shows)."""
    reclaim: str | None = None
    """The reason to reclaim it (``None``: it stays)."""
    evidence: dict[str, Any] | None = None
    """What explains the reclaim, for the log (the checker, its reports, the last access
    judged on, the judgment's time)."""
    note: float | None = None
    """A last access worth noting in the log (``session_activity``), if any."""
    next_check: float | None = None
    """When to look again (``None`` after a reclaim, or when nothing measures the session:
    a touch brings it back)."""
    warning: IdleWarning | None = None
    """A reclaim within the configured lead time (the soonest, if several)."""


def review(
    facts: SessionFacts,
    config: IdleConfig,
    now: float,
    *,
    running_since: float,
    noted: float | None,
) -> Review:
    """Judge a running session and say what follows: reclaim it (with its evidence), or
    keep it, noting its activity when that explains something, and look again at the
    earliest moment a verdict could change."""
    reason, reports = judge(facts, config, now)
    if reason is not None:
        evidence = {
            "checker": CHECKER_OF[reason],
            "reports": reports,
            "last_access": facts.last_access,
            "judged_at": now,
        }
        return Review(reports, reclaim=reason, evidence=evidence)
    note = None
    if _worth_noting(facts.last_access, running_since, reports, noted):
        note = facts.last_access
    waits = [r["remaining"] for r in reports.values() if (r["remaining"] or 0) > 0]
    if "utilization" in reports:  # samples keep coming: look again each interval
        waits.append(config.utilization.interval)
    warning = _warning(reports, config.warning_lead, now)
    lead = config.warning_lead
    if lead > 0:  # and again when a deadline comes within the lead
        waits += [
            remaining - lead
            for checker, report in reports.items()
            if checker in WARNED_CHECKERS
            and (remaining := report.get("remaining")) is not None
            and remaining > lead
        ]
    return Review(
        reports, note=note, next_check=now + min(waits) if waits else None, warning=warning
    )


def _warning(reports: dict[str, dict[str, Any]], lead: float, now: float) -> IdleWarning | None:
    """The soonest deadline within ``lead`` of a checker that has one (none with no lead)."""
    if lead <= 0:
        return None
    ahead = [  # the deadline to the millisecond: the same from one look to the next
        IdleWarning(checker, WARNED_CHECKERS[checker], round(now + remaining, 3), remaining)
        for checker, report in reports.items()
        if checker in WARNED_CHECKERS
        and (remaining := report.get("remaining")) is not None
        and 0 < remaining <= lead
    ]
    return min(ahead, key=lambda w: w.remaining, default=None)


def _worth_noting(
    last_access: float | None,
    running_since: float,
    reports: dict[str, dict[str, Any]],
    noted: float | None,
) -> bool:
    """Activity goes into the log where it explains something: the network timer measures
    the session, and it was used after it started (``session_started`` says that much) and
    after the last note."""
    if last_access is None or (reports.get("network_timeout") or {}).get("remaining") is None:
        return False
    return last_access > max(running_since, noted or 0.0)
