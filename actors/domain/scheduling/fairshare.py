"""Fair share over time (docs/fairshare.md): a user's and a project's priority from their
decayed past usage, as Slurm's fair-share factor, Kueue's admission fair sharing and KAI's
time-aware fairness measure it, computed from what the log says ran.

Usage is charged per second a session held its slots, each slot weighted
(``cuda.device`` x 10 by default: a GPU-second costs ten CPU-seconds), and decays with a
half-life: a slot-second an hour ago counts ``2^(-1h / half_life)``. Because the usage
is folded from the log's intervals (a session's start and end), it is exact as of any
time, and recomputed, not migrated, when the weights or the half-life change.

The factor is Slurm's classic ``F = 2^(-U/S)``: ``U`` the owner's share of everyone's
decayed usage, ``S`` its share of the shares (equal here: one each among those counted).
An owner who used nothing has ``F = 1``; one who used everything while two compete has
``F = 2^-2``. A session's priority is its user's factor times its project's; ties go to
the oldest session.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..session import parse_duration

__all__ = [
    "DEFAULT_HALF_LIFE_S",
    "DEFAULT_WEIGHTS",
    "DecayingUsage",
    "FairFactor",
    "FairShareConfig",
    "FairUsage",
    "UsageInterval",
    "charge_rate",
    "decayed",
    "decayed_usage",
    "fair_factors",
    "interval_of_hold",
    "priority_of",
    "usage_of_holds",
]

DEFAULT_HALF_LIFE_S = 7 * 86400.0
"""A week, Slurm's ``PriorityDecayHalfLife`` default."""
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "cpu": 1.0,
    "mem": 0.25,
    "cuda.device": 10.0,
    "cuda.shares": 10.0,
}
"""Charge per second of one unit of each slot (``mem`` per GiB); a slot not named here is
not charged. Slurm's ``TRESBillingWeights`` example: CPU=1, Mem=0.25G."""
MAX_HALF_LIFE_S = 10 * 365 * 86400.0
MAX_WEIGHT = 1e6
GIB = 2**30
WINDOW_HALF_LIVES = 20
"""Usage older than this many half-lives (a millionth of its weight) is not read."""


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("half_life must be a duration (7d, 12h) or seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value[:40]).total_seconds()
        except Exception as exc:  # the API's own refusal, as a config error
            raise ValueError(str(exc)) from None
    raise ValueError("half_life must be a duration (7d, 12h) or seconds")


@dataclass(frozen=True)
class FairShareConfig:
    """A scaling group's ``scheduler_opts.config`` for ``fair_share``: ``half_life`` and
    ``weights`` (slot -> charge per unit-second)."""

    half_life_s: float = DEFAULT_HALF_LIFE_S
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FairShareConfig:
        half_life = _seconds(config.get("half_life", DEFAULT_HALF_LIFE_S))
        if not 60 <= half_life <= MAX_HALF_LIFE_S:  # NaN too
            raise ValueError("half_life must be between a minute and ten years")
        raw = config.get("weights", DEFAULT_WEIGHTS)
        if not isinstance(raw, Mapping) or len(raw) > 64:
            raise ValueError("weights must map at most 64 slot names to numbers")
        weights: dict[str, float] = {}
        for slot, value in raw.items():
            if not isinstance(slot, str) or not 0 < len(slot) <= 64:
                raise ValueError("weights: a slot name is 1 to 64 characters")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"weights[{slot!r}] must be a number")
            if not 0 <= value <= MAX_WEIGHT:
                raise ValueError(f"weights[{slot!r}] must be between 0 and {MAX_WEIGHT:g}")
            weights[slot] = float(value)
        return cls(half_life, weights)

    @property
    def window_s(self) -> float:
        return self.half_life_s * WINDOW_HALF_LIVES


def charge_rate(slots: Mapping[str, Any], weights: Mapping[str, float]) -> float:
    """What holding ``slots`` costs per second (``mem`` counted in GiB)."""
    rate = 0.0
    for slot, amount in slots.items():
        weight = weights.get(slot)
        if not weight:
            continue
        value = float(Decimal(str(amount)))
        if not math.isfinite(value) or value < 0:
            continue
        rate += weight * (value / GIB if slot == "mem" else value)
    return rate


def decayed(
    rate: float, start_s: float, end_s: float | None, now_s: float, half_life_s: float
) -> float:
    """``rate`` charged from ``start_s`` to ``end_s`` (``None``: still running, until
    ``now_s``), each second weighted ``2^(-(now - t) / half_life)``: the closed form of that
    integral, so a year of usage costs what a minute does to compute."""
    end = now_s if end_s is None else min(end_s, now_s)
    if end <= start_s or rate <= 0:
        return 0.0
    k = math.log(2) / half_life_s  # expm1: no cancellation for short runs, long half-lives
    return rate / k * math.exp(-k * (now_s - end)) * -math.expm1(-k * (end - start_s))


@dataclass(frozen=True, slots=True)
class UsageInterval:
    """A session's hold on its slots: who, which project, from when to when (Redis time,
    seconds; ``end_s`` None while it runs)."""

    owner: str
    project: str | None
    start_s: float
    end_s: float | None
    slots: Mapping[str, Any]


@dataclass
class FairUsage:
    """Decayed usage per owner (access key) and per project, as of ``at_s``."""

    users: dict[str, float] = field(default_factory=dict)
    projects: dict[str, float] = field(default_factory=dict)
    at_s: float = 0.0


def decayed_usage(
    intervals: Iterable[UsageInterval], config: FairShareConfig, now_s: float
) -> FairUsage:
    usage = FairUsage(at_s=now_s)
    for interval in intervals:
        rate = charge_rate(interval.slots, config.weights)
        amount = decayed(rate, interval.start_s, interval.end_s, now_s, config.half_life_s)
        usage.users[interval.owner] = usage.users.get(interval.owner, 0.0) + amount
        if interval.project:
            usage.projects[interval.project] = usage.projects.get(interval.project, 0.0) + amount
    return usage


class DecayingUsage:
    """Decayed usage kept up to date as sessions start and end (what-if's replay): the
    same value :func:`decayed_usage` folds from the intervals, advanced in O(owners) per
    step instead of re-read from every interval."""

    def __init__(self, config: FairShareConfig) -> None:
        self.config = config
        self._k = math.log(2) / config.half_life_s
        self.at_s = 0.0
        self._users: dict[str, float] = {}
        self._projects: dict[str, float] = {}
        self._user_rates: dict[str, float] = {}
        self._project_rates: dict[str, float] = {}

    def _advance(self, values: dict[str, float], rates: dict[str, float], dt: float) -> None:
        decay = math.exp(-self._k * dt)
        grow = -math.expm1(-self._k * dt) / self._k
        for name in set(values) | set(rates):
            values[name] = values.get(name, 0.0) * decay + rates.get(name, 0.0) * grow

    def advance(self, now_s: float) -> None:
        dt = now_s - self.at_s
        if dt > 0:
            self._advance(self._users, self._user_rates, dt)
            self._advance(self._projects, self._project_rates, dt)
            self.at_s = now_s

    def held(self, owner: str, project: str | None, slots: Mapping[str, Any], sign: float) -> None:
        """A session started (``sign`` 1) or ended (-1) holding ``slots``, at ``at_s``."""
        rate = charge_rate(slots, self.config.weights) * sign
        self._user_rates[owner] = self._user_rates.get(owner, 0.0) + rate
        if project:
            self._project_rates[project] = self._project_rates.get(project, 0.0) + rate

    def usage(self) -> FairUsage:
        return FairUsage(dict(self._users), dict(self._projects), self.at_s)


@dataclass(frozen=True, slots=True)
class FairFactor:
    """One owner's standing, as ``sprio`` shows it."""

    usage: float
    """Decayed charged usage."""
    usage_share: float
    """``U``: its share of everyone's decayed usage."""
    share: float
    """``S``: its share of the shares."""
    factor: float
    """``2^(-U/S)``."""


def _level(usage: Mapping[str, float], names: Iterable[str]) -> dict[str, FairFactor]:
    counted = sorted(set(names) | set(usage))
    if not counted:
        return {}
    total = sum(usage.values())
    share = 1.0 / len(counted)
    factors = {}
    for name in counted:
        used = usage.get(name, 0.0)
        fraction = used / total if total > 0 else 0.0
        factors[name] = FairFactor(used, fraction, share, 2.0 ** (-fraction / share))
    return factors


def fair_factors(
    usage: FairUsage, owners: Iterable[str], projects: Iterable[str | None]
) -> tuple[dict[str, FairFactor], dict[str, FairFactor]]:
    """Every user's and project's factor: those with usage in the window, and ``owners`` /
    ``projects`` (the ones waiting) even without."""
    return (
        _level(usage.users, owners),
        _level(usage.projects, (p for p in projects if p)),
    )


def interval_of_hold(hold: Mapping[str, Any]) -> UsageInterval | None:
    """A hold as the sessions read model keeps it (``{owner, project, start, end, slots}``,
    times in ms; ``end`` absent while it runs); ``None`` for one without an owner (kept
    before holds named theirs)."""
    if not hold.get("owner"):
        return None
    end = hold.get("end")
    return UsageInterval(
        str(hold["owner"]),
        str(hold["project"]) if hold.get("project") else None,
        hold["start"] / 1000,
        end / 1000 if end is not None else None,
        hold.get("slots") or {},
    )


def priority_of(
    users: Mapping[str, FairFactor],
    projects: Mapping[str, FairFactor],
    owner: str,
    project: str | None,
) -> float:
    """A session's priority: its user's factor times its project's (1 for one not counted)."""
    user = users[owner].factor if owner in users else 1.0
    group = projects.get(project) if project else None
    return user * (group.factor if group is not None else 1.0)


def usage_of_holds(
    holds: Iterable[Mapping[str, Any]], config: FairShareConfig, now_s: float
) -> FairUsage:
    """Decayed usage from holds as the sessions read model keeps them (:func:`interval_of_hold`)."""
    return decayed_usage((i for i in map(interval_of_hold, holds) if i is not None), config, now_s)
