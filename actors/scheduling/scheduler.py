"""The scheduler of one scaling group: owner of the ``alloc-<group>`` ledger stream.

Hosted by the ``scheduler:<group>`` Ray actor (:mod:`actors.hosts.scheduler`). A pass reads
the pending queue and the agents from the read models, confirms each candidate against its
own stream (a lagging projection can never schedule a session twice), runs the pure
``schedule_pass``, and appends each decision as one ``append_multi`` of the ledger
reservation and ``session_scheduled``. The ledger's stream version is the fencing token: if
another scheduler appended meanwhile, the pass stops and starts over from the log.

It also keeps the ledger true to the kernels: ``kernel_started`` settles a hold to the
actual allocation, ``kernel_terminated``/``kernel_cancelled`` release it. What the ledger's
entries mean (the fold, the snapshot, the moves a kernel calls for) and what a placement
appends are pure, in :mod:`actors.domain.scheduling`; this class does the reads and appends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog

from actors.domain.commands.sessions import (
    DestroySession,
    SchedulingFailed,
    SessionClient,
    ShardCommand,
)
from actors.domain.limits import quota_policy
from actors.domain.predicates import PredicateContext
from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import (
    AgentInfo,
    Decision,
    ExistingSession,
    FailedAttempt,
    KeptIndex,
    Ledger,
    PendingSession,
    known_slot_types,
    occupancy_of,
    schedule_pass,
)
from actors.domain.scheduling.estimate import (
    MAX_PENDING as MAX_ESTIMATED,
)
from actors.domain.scheduling.estimate import (
    Estimate,
    Judged,
    RunTimes,
    estimate_starts,
    image_of,
    moved,
    shape_of,
)
from actors.domain.scheduling.fairshare import (
    FairShareConfig,
    FairUsage,
    usage_of_holds,
)
from actors.domain.scheduling.fragmentation import DemandMix, demand_mix
from actors.domain.scheduling.ledger_stream import (
    LEDGER_MOVES,
    LEDGER_SNAPSHOT_SCHEMA,
    LedgerFold,
    ledger_command_id,
    ledger_stream,
    pass_stream,
)
from actors.domain.scheduling.outcomes import (
    failure_report,
    placement_events,
    scheduled_command_id,
    session_command_id,
    status_after,
)
from actors.domain.scheduling.pass_record import OwnerKey, PassInputs, record_pass
from actors.domain.scheduling.records import (
    agent_info_of,
    failure_key,
    recorded_failure,
    scaling_group_of,
    spec_of,
)
from actors.domain.session import SessionResult, SessionSpec
from actors.domain.slots import ResourceSlot
from actors.domain.statuses import AgentStatus, SessionStatus
from actors.scheduling.agent_streams import AgentStreams
from actors.sessions.shard import session_stream
from events import (
    DuplicateBatchError,
    Event,
    RedisEventStore,
    StreamBatch,
    WrongExpectedVersionError,
    correlated,
    events_for_command,
)
from events.catalogue import AllocReserved, SchedulingPass, StartsEstimated
from events.catalogue.scheduling import MAX_ESTIMATES, StartEstimate
from projections.queries import ReadModels
from projections.tenancy_queries import TenancyLookups

__all__ = ["SCHEDULER_REACTS_TO", "WAKES_SCHEDULER", "Scheduler"]

WAKES_SCHEDULER = frozenset(
    {
        "session_enqueued",
        "session_terminated",
        "session_cancelled",
        "agent_started",
        "agent_registered",
        "alloc_released",
    }
)
"""Events after which a pass may find something new to place (work, or room for it)."""

log = structlog.get_logger(__name__)

_LIMITS_TTL_S = 1.0
FAIR_USAGE_REFRESH_S = 5.0
"""How long a ``fair_share`` group's decayed usage is reused before it is read again."""
_AGENT_EVENTS = frozenset({"agent_registered", "agent_started", "agent_terminated"})
SCHEDULER_REACTS_TO = (
    WAKES_SCHEDULER
    | LEDGER_MOVES
    | _AGENT_EVENTS
    | {
        "session_scheduled",
        "session_started",
        "session_terminating",
        "session_status_changed",
    }
)
"""What the scheduler's actor reads from the log (the rest is never decoded there)."""
RECENT_DEMAND = 1000
"""Kernels of the latest sessions seen pending that the ``fragmentation`` selector's mix is
made of."""
ESTIMATE_EVERY_S = 10.0
"""How often the start times of sessions still pending are estimated again (a session
without an estimate gets one after the next pass)."""
ESTIMATE_BUDGET_S = 0.25
"""The most a round of estimates may take (the pass waits for it): a longer queue gets
estimates for the sessions reached, the rest in later rounds."""
ESTIMATE_AT_MOST_EVERY_S = 2.0
"""Even with sessions never estimated (a burst), a round at most this often."""
DECISIONS_PER_APPEND = 100
"""Decisions committed per ``append_multi`` (the ledger plus one stream per session)."""


class Scheduler:
    def __init__(
        self,
        store: RedisEventStore,
        shard: SessionClient,
        scaling_group: str = "default",
        *,
        actor: str | None = None,
    ) -> None:
        self.store = store
        self.shard = shard
        self.group_name = scaling_group
        self.actor = actor or f"scheduler:{scaling_group}"
        self.stream = ledger_stream(scaling_group)
        self.models = ReadModels(store)
        self.tenancy = TenancyLookups(store)
        self.agent_streams = AgentStreams(store)
        self._agent_infos: dict[str, tuple[int, AgentInfo]] = {}
        self.follows_log = False
        """Set by a host that feeds :meth:`on_events` every event in log order before it
        wakes a pass (the Ray actor): agents are then folded from those events, and a
        pass reads nothing about them. Otherwise each pass checks the agents' streams."""
        self.book = LedgerFold()
        """The group's ledger as its stream says (the version is the fencing token)."""
        self.retries: dict[uuid.UUID, int] = {}
        self.last_pending = 0
        """How many pending sessions the last pass saw (a metric)."""
        self._ledger_current = False
        """Whether the in-memory ledger is exactly what the log says (up to its version)."""
        self._specs: dict[uuid.UUID, SessionSpec] = {}
        self._statuses: dict[uuid.UUID, SessionStatus] = {}
        """Specs and statuses of the sessions holding slots (which ones, and how much, the
        ledger says exactly), kept from the log so a pass never re-reads them all."""
        self._limits: dict[tuple[str, Any], tuple[float, dict[str, Any] | None]] = {}
        self._pending_specs: dict[uuid.UUID, SessionSpec] = {}
        self.batch_size = DECISIONS_PER_APPEND
        self._lock = asyncio.Lock()
        self.kept_index = KeptIndex()
        """The agent index from pass to pass: a pass updates the agents whose occupancy
        changed instead of indexing every agent again (rebuilt whenever the ledger is
        reloaded or the group's agents change)."""
        self._recent_demand: deque[ResourceSlot] = deque(maxlen=RECENT_DEMAND)
        """The latest requests seen pending (per kernel): the mix the ``fragmentation``
        selector expects (docs/whatif.md)."""
        self._demand_seen: dict[uuid.UUID, None] = {}
        self._demand_mix: tuple[tuple[tuple[str, str], ...], DemandMix] | None = None
        self._round_robin_last: str | None = None
        self._chain = uuid.uuid4()
        self._recorded_agents: dict[str, int] = {}
        """Agents' stream versions as the chain's last ``scheduling_pass`` recorded them."""
        self._unwritten_pass: SchedulingPass | None = None
        self._pass_id: uuid.UUID | None = None
        self._pass_versions: dict[str, int] = {}
        """The group's agents' stream versions as the pass read them."""
        self._all_versions: dict[str, int] = {}
        self._absent: list[uuid.UUID] = []
        """Sessions the ledger held that the pass did not count (seen ended)."""
        self._pass_now_s = 0.0
        """The pass being committed (each ``session_scheduled`` names it)."""
        self._fair_cache: tuple[FairShareConfig, FairUsage] | None = None
        """A ``fair_share`` group's decayed usage and the config it was folded with."""
        self._owner_limits: dict[OwnerKey, dict[str, Any] | None] = {}
        self.run_times = RunTimes()
        """Run times learned from the sessions seen to end (start-time estimates)."""
        self._scheduled_s: dict[uuid.UUID, float] = {}
        """When each session holding slots was scheduled (log time, seconds)."""
        self._estimates: dict[uuid.UUID, Estimate] = {}
        self._tried: set[uuid.UUID] = set()
        """Pending sessions a round of estimates has tried (reached in time or not)."""
        self._estimated_at = 0.0
        """Round-robin's turn (the agent chosen last), carried from pass to pass; a restart
        begins again from the first agent, as 23.09 does when its stored turn is gone."""

    # ---- the ledger --------------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        return self.book.ledger

    async def _load_ledger(self, agents: list[AgentInfo]) -> None:
        """The ledger from its latest snapshot plus the events after it."""
        capacities = {a.agent_id: a.capacity for a in agents}
        snapshot = await self.store.load_snapshot(self.stream, LEDGER_SNAPSHOT_SCHEMA)
        if snapshot is None:
            self.book = LedgerFold(capacities)
        else:
            self.book = LedgerFold.restore(capacities, snapshot.state, snapshot.version)
        await self._fold_new()
        self._ledger_current = True

    async def _fold_new(self, until: int | None = None) -> None:
        """Fold the ledger stream's entries after the version folded (up to ``until``)."""
        for event in await self.store.read_stream(self.stream, self.book.version + 1, until):
            self.book.apply(event.version, event.data)

    async def _sync_ledger(self, agents: list[AgentInfo]) -> None:
        """Bring the in-memory ledger up to the log: a full load after anything that may
        have left it off the log (a lost race, a failed pass), else capacities refreshed and
        only the new events folded. Snapshots every ``LEDGER_SNAPSHOT_EVERY`` events keep a
        restart from replaying the group's whole history."""
        if not self._ledger_current:
            await self._load_ledger(agents)
        else:
            self.book.set_capacities((a.agent_id, a.capacity) for a in agents)
            await self._fold_new()
        if self.book.snapshot_due():
            await self.store.save_snapshot(
                self.stream, self.book.version, self.book.snapshot(), LEDGER_SNAPSHOT_SCHEMA
            )
            self.book.snapshotted()

    async def _append_ledger(self, payloads: list[Any], command_id: uuid.UUID) -> bool:
        """Append ledger events at the version we hold; False if someone else wrote."""
        batch = events_for_command(command_id, payloads, actor=self.actor)
        try:
            result = await self.store.append(self.stream, batch, self.book.version)
        except WrongExpectedVersionError:
            return False
        await self._fold_new(result.version)
        return True

    # ---- reacting to kernels -------------------------------------------------------------------
    async def on_event(self, event: Event) -> None:
        await self.on_events([event])

    async def on_events(self, events: Sequence[Event]) -> None:
        """Keep the ledger true to the kernels (called with every log event, in order): a
        kernel that ended releases its hold; one that started settles it when the agent
        allocated other than was reserved. One append for a whole batch of events; what the
        ledger already reflects (a replay after a restart) appends nothing."""
        for event in events:
            self._track_status(event)
            if event.type in _AGENT_EVENTS:
                self.agent_streams.apply(event)
        kernel_events = [e for e in events if e.type in LEDGER_MOVES]
        if not kernel_events:
            return
        kernels = [e.data for e in kernel_events]
        command = ledger_command_id(kernel_events[0].event_id, len(kernel_events))
        async with self._lock:
            if not self._ledger_current:  # a fresh actor: know the holds before judging
                await self._reload()
            for _ in range(8):
                payloads = self.book.moves(kernels)
                if not payloads:
                    return
                if await self._append_ledger(payloads, command):
                    return
                await self._reload()

    def _track_status(self, event: Event) -> None:
        data: Any = event.data
        if event.type == "session_scheduled":
            self._scheduled_s.setdefault(data.session_id, event.position_ms / 1000)
            if len(self._scheduled_s) > 1_000_000:  # bounded: the oldest forgotten
                del self._scheduled_s[next(iter(self._scheduled_s))]
            return
        status = status_after(data)
        if status is None:
            return
        if status in (SessionStatus.TERMINATED, SessionStatus.CANCELLED):
            began = self._scheduled_s.pop(data.session_id, None)
            spec = self._specs.get(data.session_id)
            if status is SessionStatus.TERMINATED and began is not None and spec is not None:
                ended = event.position_ms / 1000
                self.run_times.add(
                    spec.access_key, image_of(spec), ended - began, shape_of(spec), ended
                )
            self._statuses.pop(data.session_id, None)
            self._specs.pop(data.session_id, None)
        elif data.session_id in self._specs:
            self._statuses[data.session_id] = status

    async def _existing(self) -> list[ExistingSession]:
        """The sessions holding slots in this group, from the ledger (exact) with their
        specs and statuses (from the log; the read model only for ones not seen yet)."""
        occupying = self.ledger.occupying_by_session()
        unseen = [str(sid) for sid in occupying if sid not in self._specs]
        for record in await self.models.sessions_by_id(unseen):
            sid = uuid.UUID(record["id"])
            self._specs[sid] = spec_of(record)
            self._statuses.setdefault(sid, SessionStatus[record["status"]])
        self._absent = [sid for sid in occupying if sid not in self._specs]
        return [
            ExistingSession(self._specs[sid], self._statuses.get(sid, SessionStatus.RUNNING), held)
            for sid, held in occupying.items()
            if sid in self._specs
        ]

    async def _limits_of(self, access_key: str, project_id: Any) -> dict[str, Any] | None:
        """A keypair's limits, re-read at most once a second (a policy change applies
        within a second; a pass does not read every owner's five records)."""
        now = time.monotonic()
        cached = self._limits.get((access_key, project_id))
        if cached is not None and now - cached[0] < _LIMITS_TTL_S:
            return cached[1]
        limits = await self.tenancy.limits_of(access_key, str(project_id) if project_id else None)
        self._limits[(access_key, project_id)] = (now, limits)
        return limits

    async def _reload(self) -> None:
        self._ledger_current = False
        await self._sync_ledger(await self._agents())

    def forget(self) -> None:
        """The log changed under the scheduler (Redis restarted and may have lost its last
        second): the ledger is loaded again by the next pass, and the agents and the
        sessions it knew are read again (none of them may be what it folded)."""
        self._ledger_current = False
        self.kept_index.forget()
        self.agent_streams = AgentStreams(self.store)
        self._agent_infos.clear()
        self._specs.clear()
        self._statuses.clear()
        self._limits.clear()
        self._chain, self._recorded_agents = uuid.uuid4(), {}

    # ---- a pass --------------------------------------------------------------------------------
    async def _agents(self) -> list[AgentInfo]:
        """This group's agents, from their own streams
        (see :mod:`actors.scheduling.agent_streams`)."""
        streams = self.agent_streams
        if self.follows_log and streams.agents:  # fed in log order by on_events
            if streams.stale:
                await streams.refresh(sorted(streams.stale))
            known = list(streams.agents.values())
        else:
            known = await streams.refresh(await streams.known_ids())
        agents = []
        self._all_versions = {f.agent_id: f.version for f in known}
        self._pass_versions = {}
        for facts in known:
            registration = facts.registration
            if registration is None or registration.scaling_group != self.group_name:
                continue
            cached = self._agent_infos.get(facts.agent_id)
            if cached is None or cached[0] != facts.version:  # rebuilt only when it changed
                alive = facts.status is AgentStatus.ALIVE
                info = agent_info_of(facts.agent_id, registration, alive=alive)
                cached = self._agent_infos[facts.agent_id] = (facts.version, info)
            agents.append(cached[1])
            self._pass_versions[facts.agent_id] = cached[0]
        return agents

    async def _group(self) -> ScalingGroup:
        return scaling_group_of(self.group_name, await self.tenancy.scaling_group(self.group_name))

    async def _read_models_reach(self, position: str, names: tuple[str, ...]) -> None:
        """Wait (bounded: the safety tick covers a stalled projector) until the read models
        have folded the log up to ``position``."""
        if not await self.models.reach(position, names):
            log.warning(
                "read models behind the log; scheduling on what they show", position=position
            )

    async def run_pass(self, now: datetime | None = None, reach: str | None = None) -> int:
        """One pass; returns how many sessions were scheduled. ``reach``: the log position
        of the newest event that woke it (default: the head when the pass begins)."""
        async with self._lock:
            try:
                return await self._run_pass(now, reach)
            except BaseException:
                self._ledger_current = False  # the pass may have reserved what never landed
                raise

    async def _run_pass(self, now: datetime | None, reach: str | None) -> int:
        # The queue must show what woke the pass (or, unasked, all appended before it);
        # agents come from their own streams, so a drain acknowledged before is always seen.
        position = reach or await self.store.head()
        await self._read_models_reach(position, ("sessions",))
        records = {
            r["id"]: r
            for r in (await self.models.pending_queue(self.group_name, limit=100_000)).items
            if r["status"] == "PENDING"
        }
        agents = await self._agents()
        await self._sync_ledger(agents)
        group = await self._group()
        pending, unreadable = [], []
        for record in records.values():  # a record that cannot be read is skipped, not fatal
            try:
                spec = spec_of(record)
            except Exception as exc:
                why = f"its request cannot be read: {type(exc).__name__}: {exc}"[:500]
                log.warning("pending session skipped", session=record["id"], error=why)
                unreadable.append(
                    FailedAttempt(uuid.UUID(record["id"]), "scheduler-error", msg=why)
                )
                continue
            pending.append(PendingSession(spec, self.retries.get(spec.session_id, 0)))
        self._pending_specs = {p.spec.session_id: p.spec for p in pending}
        self.last_pending = len(pending)
        if not pending and not unreadable:
            return 0
        existing = await self._existing()
        ctx = await self._context(pending, existing, agents, now)
        demand = (
            self._expected_demand(pending, ctx) if group.agent_selector == "fragmentation" else None
        )
        turn = self._round_robin_last
        self._pass_now_s = ctx.now.timestamp()
        usage = (
            await self._fair_usage(group, self._pass_now_s)
            if group.scheduler == "fair_share"
            else None
        )
        result = schedule_pass(
            group=group,
            pending=pending,
            existing=existing,
            agents=agents,
            ctx=ctx,
            ledger=self.ledger,
            round_robin_last=turn,
            kept=self.kept_index,
            demand=demand,
            usage=usage,
        )
        self._round_robin_last = result.round_robin_last
        self._unwritten_pass = self._pass_id = None
        if result.decisions:
            self._unwritten_pass = self._pass_record(
                PassInputs(
                    pass_id=uuid.uuid4(),
                    chain=self._chain,
                    position=position,
                    group=group,
                    pending=pending,
                    existing=existing,
                    absent=self._absent,
                    ledger_version=self.book.version,
                    ctx=ctx,
                    owners=self._owner_limits,
                    agents_changed={},
                    agents_full=False,
                    round_robin_last=turn,
                    recent_demand=list(self._recent_demand) if demand is not None else None,
                    decisions=len(result.decisions),
                    fair_usage=usage,
                )
            )
            self._pass_id = self._unwritten_pass.pass_id if self._unwritten_pass else None
        result.failures.extend(unreadable)
        scheduled = await self._commit_all(result.decisions, records)
        for failure in result.failures:
            retries = self.retries[failure.session_id] = self.retries.get(failure.session_id, 0) + 1
            report = failure_report(failure, retries)
            record = records[str(failure.session_id)]
            if failure.status_info == "scheduler-error":
                log.warning(
                    "session skipped by the pass",
                    session=str(failure.session_id),
                    error=failure.msg,
                )
            if recorded_failure(record) != failure_key(report):  # only a change is worth a call
                with correlated(record.get("correlation_id")):
                    await self._for_one(
                        failure.session_id,
                        partial(SchedulingFailed, session_id=failure.session_id, failure=report),
                    )
        for cancel in result.cancellations:
            with correlated(records[str(cancel.session_id)].get("correlation_id")):
                await self._for_one(
                    cancel.session_id,
                    partial(
                        DestroySession, session_id=cancel.session_id, reason=str(cancel.reason)
                    ),
                )
        placed = {d.session_id for d in result.decisions}
        placed.update(c.session_id for c in result.cancellations)
        still = [p for p in pending if p.spec.session_id not in placed]
        await self._estimate(group, still, agents, ctx)
        return scheduled

    async def _for_one(
        self, session_id: uuid.UUID, command: Callable[[], ShardCommand[Any]]
    ) -> None:
        """A command about one session after the pass decided, built and sent here: a refusal
        (the session moved on meanwhile), or a command that cannot be built, is logged, and
        the others still get theirs."""
        try:
            await self.shard.handle(command())
        except Exception as exc:
            log.warning(
                "a call about one session failed",
                session=str(session_id),
                error=f"{type(exc).__name__}: {exc}"[:500],
            )

    async def _context(
        self,
        pending: list[PendingSession],
        existing: list[ExistingSession],
        agents: list[AgentInfo],
        now: datetime | None,
    ) -> PredicateContext:
        known = known_slot_types(agents)
        policies, projects, domains = {}, {}, {}
        owners = {(p.spec.access_key, p.spec.project_id, p.spec.domain) for p in pending}
        self._owner_limits = {}
        for access_key, project_id, domain in owners:  # once per owner, not per session
            limits = await self._limits_of(access_key, project_id)
            self._owner_limits[(access_key, project_id, domain)] = limits
            if limits:
                policies[access_key] = quota_policy(limits["policy"])
                projects[project_id] = limits["project_slots"]
                domains[domain] = limits["domain_slots"]
        dependencies = {}
        for session in pending:
            for dep in session.spec.dependencies:
                record = await self.models.session(str(dep))
                if record is not None:
                    dependencies[dep] = (
                        record["name"] or str(dep),
                        SessionResult(record["result"]),
                    )
        if now is None:
            now = datetime.fromtimestamp(await self.store.clock.now(), UTC)
        return PredicateContext(
            now=now,
            known_slot_types=known,
            occupancy=occupancy_of(existing),
            keypair_policies=policies,
            project_limits=projects,
            domain_limits=domains,
            dependencies=dependencies,
        )

    async def _estimate(
        self,
        group: ScalingGroup,
        pending: list[PendingSession],
        agents: list[AgentInfo],
        ctx: PredicateContext,
    ) -> None:
        """Estimate when the sessions still pending start (every
        :data:`ESTIMATE_EVERY_S`, or at once for one never estimated) and record the
        estimates that are new or moved (docs/whatif.md). An estimate that cannot be made
        or recorded is logged and left for the next round: it never fails the pass."""
        pending = sorted(pending, key=lambda p: (p.spec.created_at, p.spec.session_id.int))
        pending = pending[:MAX_ESTIMATED]  # the oldest: the later ones wait behind them
        waiting = {p.spec.session_id for p in pending}
        for gone in [sid for sid in self._estimates if sid not in waiting]:
            del self._estimates[gone]
        self._tried.intersection_update(waiting)
        fresh = bool(waiting - self._tried)  # never tried (one tried and not reached waits)
        clock = time.monotonic()
        since = clock - self._estimated_at
        due = since >= ESTIMATE_EVERY_S or (fresh and since >= ESTIMATE_AT_MOST_EVERY_S)
        if not pending or not due:
            return
        self._estimated_at = clock
        self._tried.update(waiting)
        try:
            existing = await self._existing()
            now_s = ctx.now.timestamp()
            elapsed = {
                e.spec.session_id: max(0.0, now_s - self._scheduled_s.get(e.spec.session_id, now_s))
                for e in existing
            }
            expected = self.run_times.expectations(
                [self._judged(e.spec, elapsed[e.spec.session_id]) for e in existing]
                + [self._judged(p.spec, None) for p in pending],
                now=now_s,
            )
            found = estimate_starts(
                group=group,
                pending=pending,
                existing=existing,
                agents=agents,
                ledger=self.ledger,
                ctx=ctx,
                elapsed_s=elapsed,
                expected=expected,
                deadline=lambda: time.monotonic() - clock > ESTIMATE_BUDGET_S,
                demand=self._demand_mix[1]
                if group.agent_selector == "fragmentation" and self._demand_mix
                else None,
            )
            changed = [
                (sid, new)
                for sid, new in found.items()
                if moved(self._estimates.get(sid), new, ctx.now)
            ]
            for start in range(0, len(changed), MAX_ESTIMATES):
                chunk = changed[start : start + MAX_ESTIMATES]
                payload = StartsEstimated(
                    scaling_group=self.group_name,
                    estimates=[
                        StartEstimate(
                            session_id=sid,
                            at=e.at,
                            earliest=e.earliest,
                            latest=e.latest,
                            basis=e.basis,
                        )
                        for sid, e in chunk
                    ],
                )
                command = uuid.uuid5(self._chain, f"estimate@{clock}:{start}")
                batch = events_for_command(command, [payload], actor=self.actor)
                await self.store.append(f"estimate-{self.group_name}", batch, None)
                self._estimates.update(chunk)
        except Exception as exc:
            log.warning("start times not estimated", error=f"{type(exc).__name__}: {exc}"[:500])

    def _judged(self, spec: SessionSpec, ran_s: float | None) -> Judged:
        """A session as its run time is expected: its owner, image, shape, its keypair's session
        lifetime (the limit), and how long it ran so far (None: pending)."""
        limits = self._owner_limits.get((spec.access_key, spec.project_id, spec.domain)) or {}
        policy = limits.get("policy") or {}
        lifetime = policy.get("max_session_lifetime") if isinstance(policy, dict) else None
        limit = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else None
        return (spec.session_id, spec.access_key, image_of(spec), shape_of(spec), limit, ran_s)

    async def _fair_usage(self, group: ScalingGroup, now_s: float) -> FairUsage:
        """The group's decayed usage per user and project (``fair_share``), folded from the
        sessions read model's holds (``group:<name>``), at most every
        ``FAIR_USAGE_REFRESH_S``: usage moves by the second, a ranking hardly does."""
        config = FairShareConfig.from_config(group.scheduler_config)
        cached = self._fair_cache
        if (
            cached is not None
            and cached[0] == config
            and now_s - cached[1].at_s < FAIR_USAGE_REFRESH_S
        ):
            return cached[1]
        since_ms = int((now_s - config.window_s) * 1000)
        raw = await self.models.usage_intervals(f"group:{group.name}", since_ms)
        usage = usage_of_holds(raw, config, now_s)
        self._fair_cache = (config, usage)
        return usage

    def _expected_demand(self, pending: list[PendingSession], ctx: PredicateContext) -> DemandMix:
        """The recent requests (the last :data:`RECENT_DEMAND` kernels seen pending), as
        the ``fragmentation`` selector's mix; rebuilt only when a new one was seen."""
        added = False
        for session in pending:
            if session.spec.session_id in self._demand_seen:
                continue
            self._demand_seen[session.spec.session_id] = None
            if len(self._demand_seen) > 4 * RECENT_DEMAND:
                del self._demand_seen[next(iter(self._demand_seen))]
            self._recent_demand.extend(k.requested_slots for k in session.spec.kernels)
            added = True
        known = tuple(sorted((k, str(v)) for k, v in ctx.known_slot_types.items()))
        if added or self._demand_mix is None or self._demand_mix[0] != known:
            mix = demand_mix(self._recent_demand, ctx.known_slot_types)
            self._demand_mix = (known, mix)
        return self._demand_mix[1]

    def _pass_record(self, inputs: PassInputs) -> SchedulingPass | None:
        """The pass's ``scheduling_pass``. The agents listed are the group's (and those
        that left it since the chain's last record), at the versions the pass read, when
        they moved since that record (all of them on the chain's first). A record that
        cannot be built is logged, and the pass commits without one: the audit names its
        decisions unrecorded rather than the pass failing."""
        versions = dict(self._pass_versions)
        versions.update(
            (a, self._all_versions.get(a, v))
            for a, v in self._recorded_agents.items()
            if a not in versions  # left the group: the version that says so
        )
        full = not self._recorded_agents
        changed = {
            a: v for a, v in sorted(versions.items()) if full or self._recorded_agents.get(a) != v
        }
        try:
            return record_pass(
                dataclasses.replace(inputs, agents_changed=changed, agents_full=full)
            )
        except (ValueError, TypeError) as exc:
            log.warning("pass not recorded", error=f"{type(exc).__name__}: {exc}"[:500])
            return None

    def _pass_batches(self) -> list[StreamBatch]:
        """The pass's record, for the first append of its decisions (its own stream, in the
        same ``append_multi``: it lands with them or not at all)."""
        record = self._unwritten_pass
        if record is None:
            return []
        events = events_for_command(
            uuid.uuid5(record.pass_id, "record"), [record], actor=self.actor
        )
        return [StreamBatch(pass_stream(self.group_name), events, None)]

    def _pass_written(self, batches: list[StreamBatch]) -> None:
        """An append with ``batches`` landed: the record (if among them) is written, and the
        chain's agents are those it listed (unless the chain began again meanwhile)."""
        record = self._unwritten_pass
        if record is None or not batches:
            return
        self._unwritten_pass = None
        if record.recorded and record.chain == self._chain:
            if record.agents_full:
                self._recorded_agents = {}
            self._recorded_agents.update((a.agent_id, a.version) for a in record.agents)

    def _decision_events(
        self, decision: Decision, record: dict[str, Any], version: int
    ) -> tuple[AllocReserved, StreamBatch, uuid.UUID]:
        """The ledger reservation, the session's batch (at ``version``) and the command id
        of one decision."""
        session_id = decision.reservation.session_id
        command = scheduled_command_id(session_id, version)
        reserved, scheduled = placement_events(
            decision.reservation,
            self.group_name,
            record["creation_id"] or "",
            pass_id=self._pass_id,
        )
        session = StreamBatch(
            session_stream(session_id),
            events_for_command(
                session_command_id(command),
                [scheduled],
                actor=self.actor,
                correlation_id=record.get("correlation_id"),
            ),
            version,
        )
        return reserved, session, command

    async def _commit_all(self, decisions: list[Decision], records: dict[str, Any]) -> int:
        """Commit decisions ``batch_size`` at a time, each batch one ``append_multi`` of the
        ledger (the fencing token) and every session's stream at the version the read model
        showed. A conflict in a batch (a session changed meanwhile) retries its decisions one
        by one against their streams; a conflict on the ledger (another scheduler) ends the
        pass, and the next one starts from the log."""
        committed = 0
        for start in range(0, len(decisions), self.batch_size):
            chunk = decisions[start : start + self.batch_size]
            parts = [
                self._decision_events(
                    d, records[str(d.session_id)], records[str(d.session_id)]["stream_version"]
                )
                for d in chunk
            ]
            ledger = StreamBatch(
                self.stream,
                events_for_command(
                    ledger_command_id(parts[0][2], len(parts)),
                    [p[0] for p in parts],
                    actor=self.actor,
                ),
                self.book.version,
            )
            with_record = self._pass_batches()
            try:
                await self.store.append_multi([*with_record, ledger, *(p[1] for p in parts)])
            except DuplicateBatchError:
                if not with_record:
                    raise
                # Everything but this pass's own record is stored: a rival scheduler on the
                # same ledger committed these very decisions (their ids are the commands').
                # Nothing was written; as when the ledger moved, the next pass starts anew.
                log.info("a rival scheduler committed these decisions", stream=self.stream)
                self._ledger_current = False
                return committed
            except WrongExpectedVersionError as exc:
                if exc.stream == self.stream:
                    log.info("the ledger moved under the pass", stream=exc.stream)
                    self._ledger_current = False
                    return committed
                for decision in chunk:
                    outcome = await self._commit_one(decision, records[str(decision.session_id)])
                    if outcome is None:
                        return committed
                    committed += outcome
                continue
            self._committed(chunk)
            self._pass_written(with_record)
            self._log_scheduled(chunk, records)
            committed += len(chunk)
        return committed

    @staticmethod
    def _log_scheduled(decisions: list[Decision], records: dict[str, Any]) -> None:
        """One line per committed batch, naming each session and the API call behind it
        (``kh trace`` finds a correlation id in ``correlation_ids`` too)."""
        chosen = [records[str(d.session_id)] for d in decisions]
        log.info(
            "sessions scheduled",
            sessions=[r["id"] for r in chosen],
            correlation_ids=[r.get("correlation_id") for r in chosen],
            agents=[sorted({a.agent_id for a in d.reservation.allocations}) for d in decisions],
        )

    def _committed(self, decisions: list[Decision]) -> None:
        self.book.committed(len(decisions))  # one ledger entry per decision
        for decision in decisions:  # their holds are in the ledger since the pass reserved them
            self.retries.pop(decision.session_id, None)
            spec = self._pending_specs.get(decision.session_id)
            if spec is not None:
                self._specs[decision.session_id] = spec
                self._statuses[decision.session_id] = SessionStatus.SCHEDULED
            self._scheduled_s.setdefault(decision.session_id, self._pass_now_s)

    async def _commit_one(self, decision: Decision, record: dict[str, Any]) -> int | None:
        """One decision at the session's current stream version: 1 if committed, 0 if the
        session is no longer pending (its reservation is dropped with a reload), ``None`` if
        the ledger moved (stop)."""
        session_id = decision.session_id
        aggregate = await self.shard.get(session_id)
        if aggregate.status is not SessionStatus.PENDING:
            self._ledger_current = False  # the in-memory reservation never lands
            return 0
        reserved, session, scheduled = self._decision_events(decision, record, aggregate.version)
        ledger = StreamBatch(
            self.stream,
            events_for_command(ledger_command_id(scheduled, 1), [reserved], actor=self.actor),
            self.book.version,
        )
        with_record = self._pass_batches()
        try:
            await self.store.append_multi([*with_record, ledger, session])
        except WrongExpectedVersionError as exc:
            log.info("scheduling decision lost a race", session=str(session_id), stream=exc.stream)
            self._ledger_current = False
            return None if exc.stream == self.stream else 0
        self._committed([decision])
        self._pass_written(with_record)
        self._log_scheduled([decision], {str(session_id): record})
        return 1
