"""When will a pending session start? The scheduler's own pass, run forward in simulated time.

From what the scheduler holds when a pass ends (the agents, the ledger's holds, the sessions
still pending), each running session is expected to end after a run time drawn from its
history, and the real :func:`~.schedule.schedule_pass` runs at each expected end until every
pending session is placed: the moment one is placed is its start in that run. :data:`DRAWS`
such runs, each over other draws, make the estimate (their median start) and its interval
(their tenth to ninetieth percentile): a wait is a race between independent ends, which
expected values get wrong (the first of two runs to end is sooner than either's mean).
Arrivals yet to come are not foreseen (a later session that overtakes is what makes an
estimate late).

Run times are learned from history (:class:`RunTimes`: per owner, image and shape, then per
owner and image, per image, the group). A session without any takes its limits (the
keypair's maximum lifetime) or :data:`DEFAULT_RUN_S`: a shorter, an expected and a longer
run time. The first forward run takes every session's expected run time: when the time
budget allows no more, its starts are the estimates.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from ..predicates import PredicateContext
from ..scaling_groups import ScalingGroup
from ..session import SessionSpec
from ..statuses import USER_RESOURCE_OCCUPYING_SESSION_STATUSES, SessionStatus
from .fragmentation import DemandMix
from .kept_index import KeptIndex
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
    "shape_of",
]

DRAWS = 16
"""Forward runs of an estimate where the history says how long runs take, each over run
times drawn from it (:func:`draw_levels`); the estimate is their median start."""
MIN_DRAWS = 4
"""Drawn forward runs an estimate needs before their median replaces the expected run's
start (the live budget may allow fewer than :data:`DRAWS`)."""
DEFAULT_RUN_S = 3600.0
"""A session's expected run time when neither history nor a limit says anything."""
HISTORY = 50
"""Run times kept per history (:data:`Pool`)."""
MIN_SAMPLES = 3
"""Fewer than this many runs is no history to learn from."""
MAX_STEPS = 1000
"""Passes a forward run makes (at expected ends; a queue deeper than that is walked several
ends at a time); a session not placed by then has no estimate."""
MAX_PENDING = 1000
"""Pending sessions estimated per round (the oldest; the rest wait for the next round). The
live scheduler's time budget cuts a round short before this does."""

Basis = Literal["history", "limit", "default"]
Judged = tuple[uuid.UUID, str, str, str, "float | None", "float | None"]
"""A session whose run time is expected: (id, owner, image, shape, limit, run so far or
None)."""
Pool = tuple[str, ...]
"""A history: ("shape", owner, image, shape), ("owner", owner, image), ("image", image)
or ("group",)."""
MAX_POOLS = 20_000
"""Histories kept (the one that grew longest ago forgotten first)."""


def _pools(access_key: str, image: str, shape: str) -> tuple[Pool, ...]:
    return (
        ("shape", access_key, image, shape),
        ("owner", access_key, image),
        ("image", image),
        ("group",),
    )


@dataclass(frozen=True, slots=True)
class Expected:
    """Run time in seconds: ``mid`` is the estimate, ``low`` and ``high`` its interval."""

    low: float
    mid: float
    high: float
    basis: Basis
    draws: tuple[float, ...] = ()
    """Run times drawn from the history, one per forward run (:data:`DRAWS`; empty: no
    history, every run takes ``mid``)."""


@dataclass
class RunTimes:
    """Recent run times (scheduled to ended, seconds), kept per owner, image and shape (what
    the session asks for: its kernels and accelerators), per owner and image, per image,
    and for the whole group. The shape comes first because it tells runs apart that owner
    and image do not: on a shared cluster an eight-GPU job and a notebook of the same owner
    and image are different work (on the Alibaba trace, where owners are four service
    classes, the one-GPU runs of a class last from a minute to months, its eight-GPU ones
    hours at most)."""

    runs: dict[Pool, deque[float]] = field(default_factory=dict)
    ended_at: dict[Pool, deque[float]] = field(default_factory=dict)
    """When each kept run ended (where the caller said: :meth:`cohort`)."""

    def add(
        self,
        access_key: str,
        image: str,
        seconds: float,
        shape: str = "",
        ended_at: float | None = None,
    ) -> None:
        if not 0 <= seconds < 1e9:
            return
        for pool in _pools(access_key, image, shape):
            kept = self.runs.pop(pool, None)  # back in at the end: the latest to grow
            ends = self.ended_at.pop(pool, None)
            if kept is None or ends is None:
                kept, ends = deque(maxlen=HISTORY), deque(maxlen=HISTORY)
            self.runs[pool], self.ended_at[pool] = kept, ends
            if len(self.runs) > MAX_POOLS:  # bounded: the history that grew longest ago
                stale = next(iter(self.runs))
                del self.runs[stale], self.ended_at[stale]
            kept.append(seconds)
            if ended_at is not None:
                ends.append(ended_at)
            else:
                ends.clear()  # the window is unknown until the history is whole again

    def cohort(
        self, pool: Pool, running: Sequence[float], now: float | None
    ) -> tuple[list[float], list[float]]:
        """The runs a curve is drawn from: the sessions that *started* since the oldest kept
        run ended, those that ended and those still running. Without the window the running
        sessions would be length-biased: at any moment the sessions still running are
        mostly long ones (a service up for months is running whenever one looks; a
        ten-minute job rarely), and counting all of them beside the last few ended runs
        makes every new session look like a service. Without ``now`` or end times (or
        with too few runs in the window), every kept run and every running session."""
        runs, ends = self.runs[pool], self.ended_at.get(pool, ())
        if now is None or len(ends) != len(runs):
            return list(runs), list(running)
        since = min(ends)
        ended = [r for r, e in zip(runs, ends, strict=True) if e - r >= since]
        going = [r for r in running if now - r >= since]
        if len(ended) < MIN_SAMPLES:
            return list(runs), list(running)
        return ended, going

    @property
    def overall(self) -> Sequence[float]:
        return self.runs.get(("group",), ())

    def pool(self, access_key: str, image: str, shape: str = "") -> Pool | None:
        """Which history a session is judged by: the first of its owner's with its image
        and shape, its owner's with its image, its image's, the group's that holds
        :data:`MIN_SAMPLES` runs; None: none does."""
        for pool in _pools(access_key, image, shape):
            if len(self.runs.get(pool, ())) >= MIN_SAMPLES:
                return pool
        return None

    def expected(
        self,
        access_key: str,
        image: str,
        limit_s: float | None,
        *,
        ran_s: float = 0.0,
        running: Sequence[float] = (),
        seed: int = 0,
        shape: str = "",
    ) -> Expected:
        """The total run time of a session of ``access_key`` with ``image`` (and ``shape``)
        that has run ``ran_s`` already: the quartiles of its history's run times given that
        it lasted that long (Kaplan-Meier, with ``running``, the run times so far of the
        sessions of the same history still running, as runs not yet ended: learning from
        ended runs alone would expect every run to be short), and runs drawn from that
        distribution at the session's own levels (``seed``, :func:`draw_levels`: give each
        session its own, or their draws move together). Never past ``limit_s``. One
        session, all the history: :meth:`expectations` is what the scheduler asks, with
        the window of :meth:`cohort`."""
        pool = self.pool(access_key, image, shape)
        if pool is None:
            return self._without_history(limit_s)
        curve = km_curve(self.runs[pool], running)
        size = len(self.runs[pool]) + len(running)
        return self._from_curve(
            pool, curve, limit_s, ran_s, max(running, default=0.0), draw_levels(seed), size
        )

    def expectations(
        self, sessions: Sequence[Judged], now: float | None = None
    ) -> dict[uuid.UUID, Expected]:
        """What :meth:`expected` says, for many sessions at once (one curve per history): each as
        (id, owner, image, shape, limit, run so far, None while pending); each session's
        draws seeded by its id. ``now`` (on the clock of ``ended_at``): each curve from its
        history's :meth:`cohort`."""
        pools = {s[0]: self.pool(s[1], s[2], s[3]) for s in sessions}
        running: dict[Pool, list[float]] = {}
        for sid, *_, ran in sessions:
            pool = pools[sid]
            if ran is not None and pool is not None:
                running.setdefault(pool, []).append(ran)
        curves: dict[Pool, tuple[Curve, float]] = {}
        sizes: dict[Pool, int] = {}
        found = {}
        for sid, _, _, _, limit_s, ran in sessions:
            pool = pools[sid]
            if pool is None:
                found[sid] = self._without_history(limit_s)
                continue
            if pool not in curves:  # once per history, not per session
                going = running.get(pool, [])
                ended, censored = self.cohort(pool, going, now)
                curves[pool] = (km_curve(ended, censored), max(going, default=0.0))
                sizes[pool] = len(ended) + len(censored)
            curve, longest = curves[pool]
            found[sid] = self._from_curve(
                pool, curve, limit_s, ran or 0.0, longest, draw_levels(sid.int), sizes[pool]
            )
        return found

    def _from_curve(
        self,
        pool: tuple[str, ...],
        curve: Curve,
        limit_s: float | None,
        ran_s: float,
        longest_running: float,
        levels: Sequence[float] = (),
        runs: int = 0,
    ) -> Expected:
        """The mean (:func:`curve_mean`) and quartiles past ``ran_s``; where the curve
        never falls that far, twice the run so far or twice the longest run seen, ended or
        still going (what has run long tends to run long; a history most of whose runs
        never ended says "long"). ``draws``: the run times at ``levels`` (:func:`curve_draws`)."""
        longest = max(max(self.runs[pool]), longest_running)
        beyond = max(2 * ran_s, 2 * longest)
        low, _, high = (q if q is not None else beyond for q in curve_quartiles(curve, ran_s))
        mid = curve_mean(curve, ran_s, beyond)
        draws = curve_draws(curve, ran_s, levels, runs)
        if limit_s is not None:
            cap = max(limit_s, ran_s)
            low, mid, high = (min(v, cap) for v in (low, mid, high))
            draws = [min(v, cap) for v in draws]
        return Expected(low, mid, high, "history", tuple(draws))

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


def draw_levels(seed: int, draws: int = DRAWS) -> list[float]:
    """``draws`` levels of a distribution, one from each of as many equally likely slices
    (their middles), in an order of the session's own (``seed``): a Latin hypercube, so
    that a few forward runs see a session's short and long runs alike while two sessions'
    runs stay independent of each other (the same order for all would make one forward run
    all short runs, another all long ones: the interval of the old low/high runs, far too
    wide, and a median that misses what a queue is, a race between independent ends)."""
    levels = [(i + 0.5) / draws for i in range(draws)]
    random.Random(seed).shuffle(levels)
    return levels


def curve_draws(curve: Curve, after: float, levels: Sequence[float], runs: int = 0) -> list[float]:
    """The run times at ``levels`` (shares of runs, 0 to 1) of the curve's distribution
    given a run that lasted ``after``. Past the curve's end (runs no ended run was as long
    as: still going, or longer than the history) the tail is a Pareto one of index 1
    from where the curve ends: what has run t tends to run as long again (half the runs that
    got that far last twice as long, a tenth ten times). A curve made of ``runs`` runs
    keeps at least one chance in ``runs + 1`` for a run longer than any of them: a few
    ended runs do not prove that none runs longer."""
    lasted = _lasted(curve, after)
    ahead = [(t, s) for t, s in curve if t > after]
    floor = max(after, ahead[-1][0] if ahead else after, 1.0)
    seen = ahead[-1][1] / lasted if ahead and lasted > 0 else 1.0
    tail = seen
    if runs and lasted > 0:
        tail = min(1.0, max(seen, 1 / ((runs + 1) * lasted)))
    found = []
    for level in levels:
        if level < 1 - tail:
            # the curve's levels squeezed below the (widened) tail
            target = lasted * (1 - level * (1 - seen) / (1 - tail))
            found.append(next(t for t, s in ahead if s <= target + 1e-12))
        else:
            within = (level - (1 - tail)) / tail if tail > 0 else 0.0
            found.append(floor / max(1.0 - within, 1e-3))
    return found


def image_of(spec: SessionSpec) -> str:
    return spec.kernels[0].image if spec.kernels else ""


def shape_of(spec: SessionSpec) -> str:
    """What a session asks for, as its run-time history tells it apart: how many kernels,
    and the accelerators of its first (``2x cuda.device=1``); CPU and memory are left out,
    which users set loosely and which say less about how long the work runs. An amount of
    nothing is left out too (as a slot not asked for), and so is one no agent could hold
    (the log may keep a request from before the gateway bounded them: its shape must not
    be a megabyte of digits, nor fail)."""
    if not spec.kernels:
        return ""
    slots = spec.kernels[0].requested_slots
    amounts = []
    for name in sorted(slots):
        amount = slots[name]
        if "." in name and amount.is_finite() and amount > 0 and abs(amount.adjusted()) <= 12:
            amounts.append(f"{name}={format(amount.normalize(), 'f')}")
    return f"{len(spec.kernels)}x {','.join(amounts)}".strip()


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
    # the index is kept from step to step as the scheduler keeps it from pass to pass (over
    # the same tuple of agents and the one ledger): a step then costs what changed
    kept, candidates = KeptIndex(), tuple(agents)
    # the usage quotas count, kept as sessions start (the pass adds them) and end (taken
    # back here) rather than summed afresh at every step
    occupancy = occupancy_of(list(running.values()))
    ends = dict(ends_s)
    started: dict[uuid.UUID, float] = {}
    t = 0.0
    for step in range(MAX_STEPS):
        if deadline():
            return started, False
        step_ctx = PredicateContext(
            now=ctx.now + timedelta(seconds=t),
            known_slot_types=ctx.known_slot_types,
            occupancy=occupancy,
            keypair_policies=ctx.keypair_policies,
            project_limits=ctx.project_limits,
            domain_limits=ctx.domain_limits,
            dependencies=ctx.dependencies,
        )
        result = schedule_pass(
            group=group,
            pending=list(waiting.values()),
            existing=list(running.values()),
            agents=candidates,
            ctx=step_ctx,
            ledger=ledger,
            kept=kept,
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
            ended = running.pop(sid)
            if ended.status in USER_RESOURCE_OCCUPYING_SESSION_STATUSES:
                occupancy.remove(ended.spec, ended.occupying)
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
    ``fragmentation`` selector's mix, as the pass had it.

    The first forward run takes the expected run times. Where run times were drawn
    (:attr:`Expected.draws`), one more run per draw follows: with :data:`MIN_DRAWS` of them done,
    the estimate is their median start and the interval their tenth to ninetieth
    percentile (a session placed in fewer than half of them has ``at=None``). Otherwise (no
    draws, or ``deadline`` came first) the estimate is the first run's start and the
    interval spans what the runs done found (without draws: the shorter and the longer run
    times). Runs stop at ``deadline``: a run cut short says nothing of the sessions it did
    not reach; when not even the first ran whole, only the sessions it reached are
    estimated."""
    pending = sorted(pending, key=lambda p: (p.spec.created_at, p.spec.session_id.int))[
        :MAX_PENDING
    ]
    count = max((len(e.draws) for e in expected.values()), default=0)
    scenarios = [{sid: e.mid for sid, e in expected.items()}]  # the expected run times
    if count:
        drawn = {sid: _drawn(sid, e) for sid, e in expected.items()}
        scenarios += [{sid: d[i % len(d)] for sid, d in drawn.items()} for i in range(count)]
    else:
        scenarios += [
            {sid: getattr(e, pick) for sid, e in expected.items()} for pick in ("low", "high")
        ]
    outcomes: list[dict[uuid.UUID, float]] = []
    partial: dict[uuid.UUID, float] | None = None
    for runs in scenarios:
        if deadline():
            break
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
        if not whole:
            if not outcomes:
                partial = found
            break
        outcomes.append(found)
    if not outcomes and partial is None:
        return {}
    estimates = {}
    for session in pending:
        sid = session.spec.session_id
        basis = expected[sid].basis if sid in expected else "default"
        if not outcomes:
            assert partial is not None
            if sid in partial:
                at = ctx.now + timedelta(seconds=partial[sid])
                estimates[sid] = Estimate(at, at, at, basis)
            continue  # not reached in time: no estimate rather than a wrong one
        times = [found.get(sid) for found in outcomes]
        if count and len(times) - 1 >= min(MIN_DRAWS, count):
            at_s, earliest_s, latest_s = _spread(times[1:])
        else:  # the expected run's start; what other runs found in time, its interval
            at_s = times[0]
            known = [t for t in times if t is not None]
            earliest_s, latest_s = min(known, default=None), max(known, default=None)

        def moment(seconds: float | None) -> datetime | None:
            return None if seconds is None else ctx.now + timedelta(seconds=seconds)

        estimates[sid] = Estimate(moment(at_s), moment(earliest_s), moment(latest_s), basis)
    return estimates


def _drawn(sid: uuid.UUID, expected: Expected) -> tuple[float, ...]:
    """A session's drawn run times; one without draws (no history: its limit or the
    default) takes its shorter, expected or longer run time by its own levels, so that it
    widens the interval as it did when every session had three runs."""
    if expected.draws:
        return expected.draws
    return tuple(
        expected.low if level < 0.25 else expected.high if level >= 0.75 else expected.mid
        for level in draw_levels(sid.int)
    )


def _spread(times: Sequence[float | None]) -> tuple[float | None, float | None, float | None]:
    """The median and the tenth and ninetieth percentiles of the forward runs' starts,
    a run that never placed the session counting as later than any (None where the share
    falls among those: the median is None when fewer than half placed it)."""
    ordered = sorted(times, key=lambda t: float("inf") if t is None else t)
    n = len(ordered)

    def rank(share: float) -> float | None:
        return ordered[min(n - 1, max(0, math.ceil(share * n) - 1))]

    low, high = ordered[(n - 1) // 2], ordered[n // 2]
    middle = low if low is None or high is None else (low + high) / 2
    return middle, rank(0.1), rank(0.9)


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
