"""The scheduler of one scaling group: owner of the ``alloc-<group>`` ledger stream.

A plain class for now (the ``scheduler`` Ray actor wraps it next). A pass reads the
pending queue and the agents from the read models, confirms each candidate against its own
stream (a lagging projection can never schedule a session twice), runs the pure
``schedule_pass``, and appends each decision as one ``append_multi`` of the ledger
reservation and ``session_scheduled``. The ledger's stream version is the fencing token: if
another scheduler appended meanwhile, the pass stops and starts over from the log.

It also keeps the ledger true to the kernels: ``kernel_started`` settles a hold to the
actual allocation, ``kernel_terminated``/``kernel_cancelled`` release it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog

from events import (
    Event,
    RedisEventStore,
    StreamBatch,
    WrongExpectedVersionError,
    events_for_command,
    position_key,
)
from events.catalogue import (
    Allocation,
    AllocReleased,
    AllocReserved,
    AllocSettled,
    KernelPlacement,
    PredicateFailure,
    SessionScheduled,
    SessionSchedulingFailed,
)
from projections.queries import ReadModels
from projections.tenancy_queries import TenancyLookups

from .domain.limits import quota_policy
from .domain.predicates import PredicateContext
from .domain.scaling_groups import ScalingGroup
from .domain.scheduling import (
    AgentInfo,
    ExistingSession,
    Ledger,
    PendingSession,
    occupancy_of,
    schedule_pass,
)
from .domain.session import (
    ClusterMode,
    KernelRole,
    KernelSpec,
    SessionResult,
    SessionSpec,
    SessionType,
)
from .domain.slots import INTRINSIC_SLOTS, ResourceSlot, SlotType
from .domain.statuses import AGENT_RESOURCE_OCCUPYING_SESSION_STATUSES, SessionStatus
from .sessions import ShardClient, session_stream

__all__ = ["WAKES_SCHEDULER", "Scheduler"]

WAKES_SCHEDULER = frozenset({
    "session_enqueued", "session_terminated", "session_cancelled", "agent_started",
    "agent_registered", "alloc_released",
})  # fmt: skip
"""Events after which a pass may find something new to place (work, or room for it)."""

log = structlog.get_logger(__name__)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _slots(values: dict[str, str]) -> ResourceSlot:
    return ResourceSlot({k: Decimal(v) for k, v in values.items()})


def _spec_of(record: dict[str, Any]) -> SessionSpec:
    """A pending session as the policy sees it, from its read-model record."""
    kernels = tuple(
        KernelSpec(
            kernel_id=uuid.UUID(k["id"]),
            cluster_role=k["cluster_role"],
            cluster_idx=k["cluster_idx"],
            local_rank=k["local_rank"],
            cluster_hostname=k["cluster_hostname"],
            requested_slots=_slots(k["requested_slots"]),
            image=k["image"],
            architecture=k["architecture"],
            role=KernelRole(k["role"]),
            agent=k["agent"],
        )
        for k in sorted(record["kernels"].values(), key=lambda k: k["local_rank"])
    )
    starts_at = record.get("starts_at")
    return SessionSpec(
        session_id=uuid.UUID(record["id"]),
        name=record["name"] or record["id"],
        access_key=record["access_key"] or "",
        kernels=kernels,
        created_at=datetime.fromtimestamp(record["created_ms"] / 1000, UTC),
        session_type=SessionType(record["type"]),
        cluster_mode=ClusterMode(record["cluster_mode"]),
        user_id=uuid.UUID(record["user_id"]) if record.get("user_id") else None,
        project_id=uuid.UUID(record["project_id"]) if record.get("project_id") else None,
        domain=record["domain"] or "default",
        scaling_group=record["scaling_group"],
        dependencies=tuple(uuid.UUID(d) for d in record["dependencies"]),
        starts_at=datetime.fromisoformat(starts_at.replace("Z", "+00:00")) if starts_at else None,
        startup_command=record.get("startup_command"),
        creation_id=record["creation_id"] or "",
    )


class Scheduler:
    def __init__(
        self,
        store: RedisEventStore,
        shard: ShardClient,
        scaling_group: str = "default",
        *,
        actor: str | None = None,
    ) -> None:
        self.store = store
        self.shard = shard
        self.group_name = scaling_group
        self.actor = actor or f"scheduler:{scaling_group}"
        self.stream = f"alloc-{scaling_group}"
        self.models = ReadModels(store)
        self.tenancy = TenancyLookups(store)
        self.ledger = Ledger()
        self.ledger_version = 0
        self.holds: dict[uuid.UUID, tuple[uuid.UUID, str]] = {}
        """kernel -> (session, agent) of every live hold, for settling and releasing."""
        self.retries: dict[uuid.UUID, int] = {}
        self.last_pending = 0
        """How many pending sessions the last pass saw (a metric)."""
        self._lock = asyncio.Lock()

    # ---- the ledger --------------------------------------------------------------------------
    async def _load_ledger(self, agents: list[AgentInfo]) -> None:
        self.ledger = Ledger({a.agent_id: a.capacity for a in agents})
        self.holds = {}
        events = await self.store.read_stream(self.stream)
        for event in events:
            self._fold(event)
        self.ledger_version = events[-1].version if events else 0

    def _fold(self, event: Event) -> None:
        data = event.data
        if isinstance(data, AllocReserved):
            for a in data.allocations:
                if a.agent_id not in self.ledger.capacity:  # an agent gone from the read side
                    self.ledger.set_capacity(a.agent_id, ResourceSlot())
            fresh = [a for a in data.allocations if self.ledger.held(a.kernel_id) is None]
            self.ledger.apply_reservation(
                data.session_id, [(a.kernel_id, a.agent_id, ResourceSlot(a.slots)) for a in fresh]
            )
            self.holds.update(
                {a.kernel_id: (data.session_id, a.agent_id) for a in data.allocations}
            )
        elif isinstance(data, AllocSettled) and self.ledger.held(data.kernel_id) is not None:
            self.ledger.settle(data.kernel_id, ResourceSlot(data.actual))
        elif isinstance(data, AllocReleased):
            self.ledger.release(data.kernel_id)
            self.holds.pop(data.kernel_id, None)
        self.ledger_version = event.version

    async def _append_ledger(self, payload: Any, command_id: uuid.UUID) -> bool:
        """Append one ledger event at the version we hold; False if someone else wrote."""
        batch = events_for_command(command_id, [payload], actor=self.actor)
        try:
            result = await self.store.append(self.stream, batch, self.ledger_version)
        except WrongExpectedVersionError:
            return False
        for event in await self.store.read_stream(
            self.stream, self.ledger_version + 1, result.version
        ):
            self._fold(event)
        return True

    # ---- reacting to kernels -------------------------------------------------------------------
    async def on_event(self, event: Event) -> None:
        """Settle and release holds as kernels start and end (called for every log event)."""
        data = event.data
        kernel_id = getattr(data, "kernel_id", None)
        if kernel_id is None or event.type not in (
            "kernel_started",
            "kernel_terminated",
            "kernel_cancelled",
        ):
            return
        async with self._lock:
            for _ in range(8):
                hold = self.holds.get(kernel_id)
                if hold is None:
                    return
                session_id, agent_id = hold
                held = self.ledger.held(kernel_id) or ResourceSlot()
                command = uuid.uuid5(event.event_id, "ledger")
                if event.type == "kernel_started":
                    payload: Any = AllocSettled(
                        session_id=session_id,
                        kernel_id=kernel_id,
                        agent_id=agent_id,
                        actual=dict(held),
                    )
                else:
                    payload = AllocReleased(
                        session_id=session_id,
                        kernel_id=kernel_id,
                        agent_id=agent_id,
                        slots=dict(held),
                    )
                if await self._append_ledger(payload, command):
                    return
                await self._reload()

    async def _reload(self) -> None:
        agents = await self._agents()
        await self._load_ledger(agents)

    # ---- a pass --------------------------------------------------------------------------------
    async def _agents(self) -> list[AgentInfo]:
        return [
            AgentInfo(
                a["id"],
                _slots(a["available_slots"]),
                architecture=a["architecture"],
                schedulable=a["schedulable"],
                alive=a["status"] == "ALIVE",
            )
            for a in await self.models.agents(self.group_name)
        ]

    async def _group(self) -> ScalingGroup:
        record = await self.tenancy.scaling_group(self.group_name) or {}
        return ScalingGroup(
            self.group_name,
            scheduler=record.get("scheduler", "fifo"),
            pending_timeout=float(record.get("pending_timeout", 0)),
            scheduler_config=record.get("scheduler_config") or {},
            agent_selector=record.get("agent_selector"),
        )

    async def _projections_caught_up(self, timeout_s: float = 2.0) -> None:
        """Read what was appended before the pass began: wait (bounded, the safety tick
        covers a stalled projector) until the sessions and agents read models reach the log
        head as it is now, so a drain or an enqueue just acknowledged is never missed."""
        head = position_key(await self.store.head())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        keys = [self.store.keys.projection_status(name) for name in ("sessions", "agents")]
        while loop.time() < deadline:
            pipe = self.store.redis.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, "checkpoint")
            reached = await pipe.execute()
            if all(r is not None and position_key(_text(r)) >= head for r in reached):
                return
            await asyncio.sleep(0.005)

    async def run_pass(self, now: datetime | None = None) -> int:
        """One pass; returns how many sessions were scheduled."""
        async with self._lock:
            await self._projections_caught_up()
            agents = await self._agents()
            await self._load_ledger(agents)
            group = await self._group()
            pending_records = (
                await self.models.pending_queue(self.group_name, limit=100_000)
            ).items
            pending = []
            for record in pending_records:
                aggregate = await self.shard.get(uuid.UUID(record["id"]))
                if aggregate.status is SessionStatus.PENDING:  # the stream, not the projection
                    spec = _spec_of(record)
                    pending.append(PendingSession(spec, self.retries.get(spec.session_id, 0)))
            self.last_pending = len(pending)
            if not pending:
                return 0
            occupying = [s.name for s in AGENT_RESOURCE_OCCUPYING_SESSION_STATUSES]
            existing = [
                ExistingSession(
                    _spec_of(r), SessionStatus[r["status"]], _slots(r["occupying_slots"])
                )
                for r in (
                    await self.models.sessions(
                        scaling_group=self.group_name, statuses=occupying, limit=100_000
                    )
                ).items
            ]
            ctx = await self._context(pending, existing, agents, now)
            result = schedule_pass(
                group=group,
                pending=pending,
                existing=existing,
                agents=agents,
                ctx=ctx,
                ledger=self.ledger,
            )
            scheduled = 0
            for decision in result.decisions:
                if not await self._commit(decision):
                    break  # the ledger moved under us: the next pass starts from the log
                scheduled += 1
                self.retries.pop(decision.session_id, None)
            for failure in result.failures:
                retries = self.retries[failure.session_id] = (
                    self.retries.get(failure.session_id, 0) + 1
                )
                await self.shard.scheduling_failed(
                    SessionSchedulingFailed(
                        session_id=failure.session_id,
                        status_info=failure.status_info,
                        retries=retries,
                        failed_predicates=[
                            PredicateFailure(name=n, msg=m) for n, m in failure.failed_predicates
                        ],
                        passed_predicates=list(failure.passed_predicates),
                        msg=failure.msg,
                    )
                )
            for cancel in result.cancellations:
                await self.shard.destroy(cancel.session_id, reason=str(cancel.reason))
            return scheduled

    async def _context(
        self,
        pending: list[PendingSession],
        existing: list[ExistingSession],
        agents: list[AgentInfo],
        now: datetime | None,
    ) -> PredicateContext:
        known: dict[str, SlotType] = dict(INTRINSIC_SLOTS)
        for agent in agents:
            for slot in agent.capacity:
                known.setdefault(slot, SlotType.COUNT)
        policies, projects, domains = {}, {}, {}
        for session in pending:
            spec = session.spec
            limits = await self.tenancy.limits_of(
                spec.access_key, str(spec.project_id) if spec.project_id else None
            )
            if limits:
                policies[spec.access_key] = quota_policy(limits["policy"])
                projects[spec.project_id] = limits["project_slots"]
                domains[spec.domain] = limits["domain_slots"]
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
            seconds, micros = await self.store.redis.time()
            now = datetime.fromtimestamp(seconds + micros / 1e6, UTC)
        return PredicateContext(
            now=now,
            known_slot_types=known,
            occupancy=occupancy_of(existing),
            keypair_policies=policies,
            project_limits=projects,
            domain_limits=domains,
            dependencies=dependencies,
        )

    async def _commit(self, decision: Any) -> bool:
        reservation = decision.reservation
        session_id = reservation.session_id
        aggregate = await self.shard.get(session_id)
        command = uuid.uuid5(session_id, f"scheduled@{aggregate.version}")
        reserved = AllocReserved(
            session_id=session_id,
            scaling_group=self.group_name,
            allocations=[
                Allocation(
                    kernel_id=a.kernel_id,
                    agent_id=a.agent_id,
                    slots=dict(a.slots),
                    free_before=dict(a.free_before),
                )
                for a in reservation.allocations
            ],
        )
        scheduled = SessionScheduled(
            session_id=session_id,
            creation_id=aggregate.creation_id,
            reason="scheduled",
            scaling_group=self.group_name,
            placements=[
                KernelPlacement(kernel_id=a.kernel_id, agent_id=a.agent_id)
                for a in reservation.allocations
            ],
        )
        try:
            await self.store.append_multi(
                [
                    StreamBatch(
                        self.stream,
                        events_for_command(command, [reserved], actor=self.actor),
                        self.ledger_version,
                    ),
                    StreamBatch(
                        session_stream(session_id),
                        events_for_command(
                            uuid.uuid5(command, "session"), [scheduled], actor=self.actor
                        ),
                        aggregate.version,
                    ),
                ]
            )
        except WrongExpectedVersionError as exc:
            log.info("scheduling decision lost a race", session=str(session_id), stream=exc.stream)
            return False
        self.ledger_version += 1
        self.holds.update({a.kernel_id: (session_id, a.agent_id) for a in reservation.allocations})
        return True
