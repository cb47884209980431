"""When will a pending session start? The scheduler's own pass, run forward in simulated time.

From what the scheduler holds when a pass ends (the agents, the ledger's holds, the sessions
still pending), each running session is expected to end after its expected run time, and
the real :func:`~.schedule.schedule_pass` runs at each expected end until every pending
session is placed: the moment one is placed is its estimated start. Arrivals yet to come are
not foreseen (a later session that overtakes is what makes an estimate late).

Expected run times are learned from history (:class:`RunTimes`: per owner and image, then
per image, then the group) and fall back to the session's limits (a batch timeout, the
keypair's maximum lifetime), then to :data:`DEFAULT_RUN_S`. The interval runs the same
forward pass with the shorter and the longer run times the history holds (its quartiles).
"""

from __future__ import annotations

import heapq
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from ..predicates import PredicateContext
from ..scaling_groups import ScalingGroup
from ..session import SessionSpec
from ..statuses import SessionStatus
from .fragmentation import DemandMix
from .ledger import Ledger
from .plugins import ExistingSession, PendingSession
from .schedule import AgentInfo, occupancy_of, schedule_pass

__all__ = [
    "DEFAULT_RUN_S",
    "Estimate",
    "Expected",
    "RunTimes",
    "estimate_starts",
    "moved",
]

DEFAULT_RUN_S = 3600.0
"""A session's expected run time when neither history nor a limit says anything."""
HISTORY = 50
"""Run times kept per owner and image (and per image, and for the group)."""
MIN_SAMPLES = 3
"""Fewer than this many runs is no history to learn from."""
MAX_STEPS = 100
"""Passes a forward run makes (at expected ends; a queue deeper than that is walked several
ends at a time); a session not placed by then has no estimate."""
MAX_PENDING = 1000
"""Pending sessions estimated per round (the oldest; the rest wait for the next round). The
live scheduler's time budget cuts a round short before this does."""

Basis = Literal["history", "limit", "default"]
Judged = tuple[uuid.UUID, str, str, "float | None", "float | None"]
"""A session whose run time is expected: (id, owner, image, limit, run so far or None)."""


@dataclass(frozen=True, slots=True)
class Expected:
    """Run time in seconds: ``mid`` is the estimate, ``low`` and ``high`` its interval."""

    low: float
    mid: float
    high: float
    basis: Basis


@dataclass
class RunTimes:
    """Recent run times (scheduled to ended, seconds), kept per owner and image, per image,
    and for the whole group."""

    by_owner_image: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    by_image: dict[str, deque[float]] = field(default_factory=dict)
    overall: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def add(self, access_key: str, image: str, seconds: float) -> None:
        if not 0 <= seconds < 1e9:
            return
        self.by_owner_image.setdefault((access_key, image), deque(maxlen=HISTORY)).append(seconds)
        self.by_image.setdefault(image, deque(maxlen=HISTORY)).append(seconds)
        self.overall.append(seconds)
        if len(self.by_owner_image) > 10_000:  # bounded: the oldest owner forgotten
            del self.by_owner_image[next(iter(self.by_owner_image))]
        if len(self.by_image) > 1000:
            del self.by_image[next(iter(self.by_image))]

    def pool(self, access_key: str, image: str) -> tuple[str, ...]:
        """Which history a session is judged by: its owner's with its image, else its
        image's, else the group's (the first with :data:`MIN_SAMPLES` runs); ``()`` none."""
        if len(self.by_owner_image.get((access_key, image), ())) >= MIN_SAMPLES:
            return ("owner", access_key, image)
        if len(self.by_image.get(image, ())) >= MIN_SAMPLES:
            return ("image", image)
        return ("group",) if len(self.overall) >= MIN_SAMPLES else ()

    def _runs(self, pool: tuple[str, ...]) -> Sequence[float]:
        if pool[0] == "owner":
            return self.by_owner_image[(pool[1], pool[2])]
        return self.by_image[pool[1]] if pool[0] == "image" else self.overall

    def expected(
        self,
        access_key: str,
        image: str,
        limit_s: float | None,
        *,
        ran_s: float = 0.0,
        running: Sequence[float] = (),
    ) -> Expected:
        """The total run time of a session of ``access_key`` with ``image`` that has run
        ``ran_s`` already: the quartiles of its history's run times given that it lasted
        that long (Kaplan-Meier, with ``running``, the run times so far of the sessions of
        the same history still running, as runs not yet ended: learning from ended runs
        alone would expect every run to be short). Never past ``limit_s``."""
        pool = self.pool(access_key, image)
        if pool:
            curve = km_curve(self._runs(pool), running)
            return self._from_curve(pool, curve, limit_s, ran_s, max(running, default=0.0))
        return self._without_history(limit_s)

    def expectations(self, sessions: Sequence[Judged]) -> dict[uuid.UUID, Expected]:
        """:meth:`expected` for many sessions at once (one curve per history): each as
        (id, owner, image, limit, run so far, None while pending)."""
        running: dict[tuple[str, ...], list[float]] = {}
        for _, access_key, image, _, ran in sessions:
            if ran is not None:
                running.setdefault(self.pool(access_key, image), []).append(ran)
        curves: dict[tuple[str, ...], tuple[Curve, float]] = {}
        found = {}
        for sid, access_key, image, limit_s, ran in sessions:
            pool = self.pool(access_key, image)
            if not pool:
                found[sid] = self._without_history(limit_s)
                continue
            if pool not in curves:  # once per history, not per session
                going = running.get(pool, [])
                curves[pool] = (km_curve(self._runs(pool), going), max(going, default=0.0))
            curve, longest = curves[pool]
            found[sid] = self._from_curve(pool, curve, limit_s, ran or 0.0, longest)
        return found

    def _from_curve(
        self,
        pool: tuple[str, ...],
        curve: Curve,
        limit_s: float | None,
        ran_s: float,
        longest_running: float,
    ) -> Expected:
        """The mean (:func:`curve_mean`) and quartiles past ``ran_s``; where the curve
        never falls that far, twice the run so far or twice the longest run seen, ended or
        still going (what has run long tends to run long; a history most of whose runs
        never ended says "long")."""
        longest = max(max(self._runs(pool)), longest_running)
        beyond = max(2 * ran_s, 2 * longest)
        low, _, high = (q if q is not None else beyond for q in curve_quartiles(curve, ran_s))
        mid = curve_mean(curve, ran_s, beyond)
        if limit_s is not None:
            low, mid, high = (min(v, max(limit_s, ran_s)) for v in (low, mid, high))
        return Expected(low, mid, high, "history")

    @staticmethod
    def _without_history(limit_s: float | None) -> Expected:
        if limit_s is not None and limit_s > 0:
            return Expected(limit_s / 4, limit_s / 2, limit_s, "limit")
        return Expected(DEFAULT_RUN_S / 4, DEFAULT_RUN_S, 4 * DEFAULT_RUN_S, "default")


Curve = list[tuple[float, float]]
"""Kaplan-Meier: (run time, share of runs lasting longer), at each time a run ended."""


def km_quartiles(
    ended: Sequence[float], running: Sequence[float], after: float = 0.0
) -> tuple[float | None, float | None, float | None]:
    """Run-time quartiles of the Kaplan-Meier curve over ``ended`` runs and ``running``
    ones (censored at their time so far), given a run that lasted ``after``: None where the
    curve never falls that far (too few runs ended that long)."""
    return curve_quartiles(km_curve(ended, running), after)


def km_curve(ended: Sequence[float], running: Sequence[float]) -> Curve:
    points = sorted([(t, 1) for t in ended] + [(t, 0) for t in running])
    at_risk = len(points)
    survival = 1.0
    curve: list[tuple[float, float]] = []
    i = 0
    while i < len(points):
        t = points[i][0]
        ended_here = censored_here = 0
        while i < len(points) and points[i][0] == t:
            ended_here += points[i][1]
            censored_here += 1 - points[i][1]
            i += 1
        if ended_here:
            survival *= 1 - ended_here / at_risk
            curve.append((t, survival))
        at_risk -= ended_here + censored_here
    return curve


def _lasted(curve: Curve, after: float) -> float:
    """The share of runs that lasted ``after``."""
    lasted = 1.0
    for t, s in curve:
        if t > after:
            break
        lasted = s
    return lasted


def curve_quartiles(curve: Curve, after: float) -> tuple[float | None, float | None, float | None]:
    lasted = _lasted(curve, after)
    found: list[float | None] = []
    for q in (0.25, 0.5, 0.75):
        target = lasted * (1 - q)
        found.append(next((t for t, s in curve if t > after and s <= target + 1e-12), None))
    return found[0], found[1], found[2]


def curve_mean(curve: Curve, after: float, beyond: float) -> float:
    """The mean run time given a run that lasted ``after``, the share of runs the curve
    never saw end counted at ``beyond``. The mean, not the median, is the estimate: a wait
    is a sum of the runs ahead, and run times are skewed (most short, a few very long), so
    medians would add up to a wait far too short."""
    lasted = _lasted(curve, after)
    if lasted <= 0:
        return beyond
    total, left = 0.0, lasted
    for t, s in curve:
        if t > after:
            total += t * (left - s)
            left = s
    return (total + beyond * left) / lasted


def image_of(spec: SessionSpec) -> str:
    return spec.kernels[0].image if spec.kernels else ""


@dataclass(frozen=True, slots=True)
class Estimate:
    at: datetime | None
    earliest: datetime | None
    latest: datetime | None
    basis: Basis


def _forward(
    *,
    group: ScalingGroup,
    pending: Sequence[PendingSession],
    existing: Sequence[ExistingSession],
    agents: Sequence[AgentInfo],
    ledger: Ledger,
    ctx: PredicateContext,
    ends_s: Mapping[uuid.UUID, float],
    runs_s: Mapping[uuid.UUID, float],
    deadline: Callable[[], bool],
    demand: DemandMix | None,
) -> tuple[dict[uuid.UUID, float], bool]:
    """Seconds from ``ctx.now`` until each pending session is placed (absent: not within
    :data:`MAX_STEPS` expected ends, or the ``deadline`` came first), and whether the run
    went as far as it could (False: cut short, an absent session says nothing).
    ``ledger`` is a copy: changed in place."""
    waiting = {p.spec.session_id: p for p in pending}
    running = {e.spec.session_id: e for e in existing}
    ends = dict(ends_s)
    started: dict[uuid.UUID, float] = {}
    t = 0.0
    for step in range(MAX_STEPS):
        if deadline():
            return started, False
        step_ctx = PredicateContext(
            now=ctx.now + timedelta(seconds=t),
            known_slot_types=ctx.known_slot_types,
            occupancy=occupancy_of(list(running.values())),
            keypair_policies=ctx.keypair_policies,
            project_limits=ctx.project_limits,
            domain_limits=ctx.domain_limits,
            dependencies=ctx.dependencies,
        )
        result = schedule_pass(
            group=group,
            pending=list(waiting.values()),
            existing=list(running.values()),
            agents=agents,
            ctx=step_ctx,
            ledger=ledger,
            demand=demand,
        )
        for decision in result.decisions:
            session = waiting.pop(decision.session_id)
            started[decision.session_id] = t
            running[decision.session_id] = ExistingSession(
                session.spec, SessionStatus.RUNNING, session.spec.requested_slots
            )
            ends[decision.session_id] = t + runs_s.get(decision.session_id, DEFAULT_RUN_S)
        for cancelled in result.cancellations:
            waiting.pop(cancelled.session_id, None)
        if not waiting:
            break
        # A queue deeper than the steps left is walked several ends at a time, so where
        # many sessions run side by side its last session is reached too: one placed at
        # the k-th end is estimated at it, a little late (and the lateness adds up along
        # the queue). Runs one after another still place one session a step: such a
        # queue is reached MAX_STEPS deep.
        k = -(-len(waiting) // (MAX_STEPS - step))
        upcoming = heapq.nsmallest(k, (e for sid, e in ends.items() if sid in running))
        if not upcoming:
            break
        t = max(t, upcoming[-1])
        for sid in [sid for sid, e in ends.items() if e <= t and sid in running]:
            running.pop(sid)
            ledger.release_session(sid)
            ends.pop(sid)
    return started, True


def estimate_starts(
    *,
    group: ScalingGroup,
    pending: Sequence[PendingSession],
    existing: Sequence[ExistingSession],
    agents: Sequence[AgentInfo],
    ledger: Ledger,
    ctx: PredicateContext,
    elapsed_s: Mapping[uuid.UUID, float],
    expected: Mapping[uuid.UUID, Expected],
    deadline: Callable[[], bool] = lambda: False,
    demand: DemandMix | None = None,
) -> dict[uuid.UUID, Estimate]:
    """Each pending session's estimated start and interval. ``elapsed_s``: how long each
    running session has run; ``expected``: every session's expected run time (pending and
    running alike). A running session past its expected run time is expected to run half
    as long again as it has. ``ledger`` is left as it was. ``demand``: the
    ``fragmentation`` selector's mix, as the pass had it. The estimate's own forward run
    goes first, then the interval's two: a session the first did not reach before
    ``deadline`` gets no estimate (it is absent), one it reached gets the interval the others
    found in time; one it could not place within :data:`MAX_STEPS` ends gets ``at=None``."""
    pending = sorted(pending, key=lambda p: (p.spec.created_at, p.spec.session_id.int))[
        :MAX_PENDING
    ]
    outcomes: dict[str, dict[uuid.UUID, float]] = {}
    complete = True
    for pick in ("mid", "low", "high"):
        if deadline():
            break
        runs = {sid: getattr(e, pick) for sid, e in expected.items()}
        ends = {}
        for holder in existing:
            sid = holder.spec.session_id
            run = runs.get(sid, DEFAULT_RUN_S)
            done = elapsed_s.get(sid, 0.0)
            ends[sid] = run - done if run > done else done / 2
        found, whole = _forward(
            group=group,
            pending=pending,
            existing=existing,
            agents=agents,
            ledger=ledger.copy(),
            ctx=ctx,
            ends_s=ends,
            runs_s=runs,
            deadline=deadline,
            demand=demand,
        )
        outcomes[pick] = found
        if pick == "mid":
            complete = whole
    mid = outcomes.get("mid", {})
    estimates = {}
    for session in pending:
        sid = session.spec.session_id
        if sid not in mid and (not complete or not outcomes):
            continue  # not reached in time: no estimate rather than a wrong one

        def moment(found: dict[uuid.UUID, float], sid: uuid.UUID = sid) -> datetime | None:
            return None if sid not in found else ctx.now + timedelta(seconds=found[sid])

        times = [m for m in map(moment, outcomes.values()) if m is not None]
        basis = expected[sid].basis if sid in expected else "default"
        estimates[sid] = Estimate(
            moment(mid), min(times, default=None), max(times, default=None), basis
        )
    return estimates


def moved(old: Estimate | None, new: Estimate, now: datetime) -> bool:
    """Whether ``new`` is worth recording over ``old``: a first estimate, or one that moved
    by more than a minute and more than a fifth of the wait it foresees."""
    if old is None:
        return True
    if (old.at is None) != (new.at is None):
        return True
    if old.at is None or new.at is None:
        return False
    shift = abs((new.at - old.at).total_seconds())
    wait = max((new.at - now).total_seconds(), 0.0)
    return shift > 60 and shift > wait / 5
