"""The session shard: owner of ``session-<uuid>`` streams.

Hosted by the ``sessions:<k>`` Ray actors: shard ``k`` of ``n`` owns the sessions whose
``uuid.int % n == k`` (:func:`shard_of`), and refuses commands for the others, so each
session stream keeps exactly one writer. It activates a session by folding its stream,
serialises commands per session with a lock, decides with
:class:`SessionAggregate`, and appends with the stream's expected version. The scheduler
also appends to session streams (its decisions are ``append_multi`` over the ledger and the
sessions), so every decision first catches up with the stream; a conflict is a reload and
a second look, never a double effect. Commands carry ids: a retry has one effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import structlog

from actors.domain.errors import DomainError, InvalidAPIParameters
from actors.domain.session import ClusterMode, SessionType, validate_creation
from actors.domain.session_aggregate import KernelReport, SessionAggregate
from actors.domain.slots import ResourceSlot
from events import (
    NO_STREAM,
    AnyPayload,
    Event,
    RedisEventStore,
    StreamBatch,
    WrongExpectedVersionError,
    correlated,
    events_for_command,
)
from events.catalogue import (
    KernelCreationSpec,
    SessionCreationSpec,
    SessionEnqueued,
    SessionFailure,
    SessionSchedulingFailed,
    SessionSuccess,
    SessionTerminating,
)

__all__ = [
    "SHARD_REACTS_TO",
    "SessionShard",
    "ShardClient",
    "WrongShardError",
    "catch_up",
    "load_session",
    "session_stream",
    "shard_of",
]

log = structlog.get_logger(__name__)

_RETRIES = 8
SHARD_REACTS_TO = frozenset(
    {
        "session_enqueued",
        "session_scheduled",
        "session_preparing",
        "session_cancelled",
        "session_started",
        "session_terminating",
        "session_terminated",
        "session_success",
        "session_failure",
        "session_status_changed",
        "session_scheduling_failed",
        "kernel_pulling",
    }
)
"""What a shard's actor reads from the log: its reactions and every status change a waiter
may be waiting for."""
_SETTLED = frozenset({"RUNNING", "TERMINATED", "CANCELLED", "ERROR"})
"""Where ``create(wait=...)`` returns: running, or an end (23.03's blocking create)."""


IdleDestroy = (
    tuple[uuid.UUID, str, float | None, uuid.UUID]
    | tuple[uuid.UUID, str, float | None, uuid.UUID, dict[str, Any] | None]
)
"""The reaper's conditional destroy: (session, reason, the last access it judged on,
command id[, its evidence for the log])."""


def _destroy_decision(
    reason: str, evidence: dict[str, Any] | None = None
) -> Callable[[SessionAggregate], list[Any]]:
    def decide(aggregate: SessionAggregate) -> list[Any]:
        events = aggregate.decide_destroy(reason=reason).events
        if evidence is None:
            return events
        return [
            e.model_copy(update={"idle": evidence}) if isinstance(e, SessionTerminating) else e
            for e in events
        ]

    return decide


def _evidence(request: IdleDestroy) -> dict[str, Any] | None:
    return request[4] if len(request) > 4 else None


def _note_decision(last_access: float) -> Callable[[SessionAggregate], list[Any]]:
    return lambda aggregate: aggregate.decide_note_activity(last_access)


async def _on_behalf_of(event: Event, reaction: Coroutine[Any, Any, Any]) -> Any:
    """A reaction under the correlation id of the event it answers."""
    with correlated(event.correlation_id):
        return await reaction


def shard_of(session_id: uuid.UUID, count: int) -> int:
    """The shard that owns a session (design.md: ``uuid.int % N``, N fixed at install)."""
    return session_id.int % count


class WrongShardError(ValueError):
    """A command reached a shard that does not own the session: a routing bug, refused
    rather than letting two writers share a stream."""


def session_stream(session_id: uuid.UUID) -> str:
    return f"session-{session_id}"


async def load_session(store: RedisEventStore, session_id: uuid.UUID) -> SessionAggregate:
    """A session folded from its stream, read-only (for agents and tools)."""
    return await catch_up(store, SessionAggregate(session_id))


async def catch_up(store: RedisEventStore, aggregate: SessionAggregate) -> SessionAggregate:
    """Fold into ``aggregate`` whatever its stream holds past the version it has seen."""
    stream = session_stream(aggregate.session_id)
    for event in await store.read_stream(stream, aggregate.version + 1):
        aggregate.apply(event.data, event.version, event.command_id)
    return aggregate


class ShardClient(Protocol):
    """What agents and the scheduler need from the shard: the shard itself in one process,
    a proxy to its actor on Ray."""

    async def get(self, session_id: uuid.UUID) -> SessionAggregate: ...

    async def report(self, report: KernelReport, *, command_id: uuid.UUID | None = None) -> Any: ...

    async def start_failed(
        self,
        session_id: uuid.UUID,
        *,
        error: dict[str, Any] | None = None,
        command_id: uuid.UUID | None = None,
    ) -> Any: ...

    async def batch_result(self, result: Any, *, command_id: uuid.UUID | None = None) -> Any: ...

    async def scheduling_failed(
        self, failure: Any, *, command_id: uuid.UUID | None = None
    ) -> Any: ...

    async def restart_failed(
        self, session_id: uuid.UUID, msg: str, *, command_id: uuid.UUID | None = None
    ) -> Any: ...

    async def agent_gone(
        self, session_id: uuid.UUID, agent_id: str, *, command_id: uuid.UUID | None = None
    ) -> Any: ...

    async def destroy(
        self,
        session_id: uuid.UUID,
        *,
        forced: bool = False,
        reason: str | None = None,
        command_id: uuid.UUID | None = None,
    ) -> Any: ...


class SessionShard:
    def __init__(
        self,
        store: RedisEventStore,
        *,
        actor: str = "sessions:0",
        index: int = 0,
        count: int = 1,
    ) -> None:
        if not 0 <= index < count:
            raise ValueError(f"shard index {index} is not in 0..{count - 1}")
        self.store = store
        self.actor = actor
        self.index = index
        self.count = count
        self.active: dict[uuid.UUID, SessionAggregate] = {}
        self._locks: defaultdict[uuid.UUID, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._changed: defaultdict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)
        """Sessions someone waits on: set when their stream gets an event."""

    def owns(self, session_id: uuid.UUID) -> bool:
        return shard_of(session_id, self.count) == self.index

    def _check_owner(self, session_id: uuid.UUID) -> None:
        if not self.owns(session_id):
            raise WrongShardError(
                f"session {session_id} belongs to shard {shard_of(session_id, self.count)}, "
                f"not {self.index}"
            )

    async def on_event(self, event: Event) -> None:
        await self.on_events([event])

    async def on_events(self, events: Sequence[Event]) -> None:
        """The shard's reactions to the log (its own sessions only): a scheduled session is
        prepared; a batch session that reported its result is destroyed with
        ``task-finished``; waiters on the session look again. The reactions of a batch run
        concurrently (different sessions) and are finished when this returns, so a follower
        that records its position afterwards never skips one (at-least-once)."""
        reactions: list[Coroutine[Any, Any, Any]] = []
        for event in events:
            data: Any = event.data
            session_id = getattr(data, "session_id", None)
            if not isinstance(session_id, uuid.UUID) or not self.owns(session_id):
                continue
            for changed in self._changed.get(session_id, ()):
                changed.set()
            reaction: Coroutine[Any, Any, Any]
            if event.type == "session_scheduled":
                command = uuid.uuid5(event.event_id, "prepare")
                reaction = self.prepare(session_id, command_id=command)
            elif event.type in ("session_success", "session_failure"):
                command = uuid.uuid5(event.event_id, "finish")
                reaction = self.destroy(session_id, reason="task-finished", command_id=command)
            else:
                continue
            reactions.append(_on_behalf_of(event, reaction))
        for outcome in await asyncio.gather(*reactions, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("shard reaction failed", error=repr(outcome))

    async def _catch_up(self, session_id: uuid.UUID) -> SessionAggregate:
        aggregate = self.active.get(session_id) or SessionAggregate(session_id)
        self.active[session_id] = await catch_up(self.store, aggregate)
        return aggregate

    async def _decide(
        self,
        session_id: uuid.UUID,
        command_id: uuid.UUID | None,
        decide: Callable[[SessionAggregate], list[AnyPayload]],
    ) -> list[AnyPayload]:
        self._check_owner(session_id)
        command = command_id or uuid.uuid4()
        async with self._locks[session_id]:
            for _ in range(_RETRIES):
                aggregate = await self._catch_up(session_id)
                if command in aggregate.commands:
                    return []  # a retry of a command that already took effect
                payloads = decide(aggregate)
                if not payloads:
                    return []
                batch = events_for_command(command, payloads, actor=self.actor)
                try:
                    result = await self.store.append(
                        session_stream(session_id), batch, aggregate.version
                    )
                except WrongExpectedVersionError:
                    continue  # the scheduler (or a retry) wrote first: look again
                if result.duplicate:
                    await self._catch_up(session_id)  # someone else's copy: read what is there
                    self._passivate_if_ended(aggregate)
                else:
                    self._applied(aggregate, payloads, command)
                    log.info(
                        "session events appended",
                        session=str(session_id),
                        events=[p.type for p in payloads],
                    )
                return payloads
        raise RuntimeError(f"session {session_id} kept changing under {_RETRIES} attempts")

    async def _decide_many(
        self,
        decisions: Sequence[tuple[uuid.UUID, uuid.UUID, Callable[[SessionAggregate], list[Any]]]],
    ) -> list[list[AnyPayload]]:
        """Several sessions' decisions in one ``append_multi`` (all or none); if any stream
        moved meanwhile, or a decision refuses, each is decided again on its own."""
        ordered = sorted({sid for sid, _, _ in decisions})
        async with contextlib.AsyncExitStack() as locks:
            for sid in ordered:  # a fixed order: two batches never wait on each other
                self._check_owner(sid)
                await locks.enter_async_context(self._locks[sid])
            aggregates = await asyncio.gather(*(self._catch_up(sid) for sid, _, _ in decisions))
            decided: list[list[AnyPayload]] = []
            batches = []
            fallback = False
            try:
                for (sid, command, decide), aggregate in zip(decisions, aggregates, strict=True):
                    payloads = [] if command in aggregate.commands else decide(aggregate)
                    decided.append(payloads)
                    if payloads:
                        events = events_for_command(command, payloads, actor=self.actor)
                        batches.append(StreamBatch(session_stream(sid), events, aggregate.version))
                if batches:
                    results = await self.store.append_multi(batches)
                    fallback = any(r.duplicate for r in results)  # a retry: read what is there
            except (WrongExpectedVersionError, DomainError):
                fallback = True
        if fallback:  # one at a time, each with its own retries and refusals
            return [
                await self._decide_or_refuse(sid, command, decide)
                for sid, command, decide in decisions
            ]
        for (_, command, _), aggregate, payloads in zip(
            decisions, aggregates, decided, strict=True
        ):
            self._applied(aggregate, payloads, command)
        return decided

    def _applied(
        self, aggregate: SessionAggregate, payloads: list[AnyPayload], command: uuid.UUID
    ) -> None:
        """What we appended is what the stream now ends with: fold it here, no re-read."""
        for payload in payloads:
            aggregate.apply(payload, aggregate.version + 1, command)
        self._passivate_if_ended(aggregate)

    def _passivate_if_ended(self, aggregate: SessionAggregate) -> None:
        if aggregate.ended:
            self.active.pop(aggregate.session_id, None)  # it will not change again

    async def _decide_or_refuse(
        self,
        session_id: uuid.UUID,
        command: uuid.UUID,
        decide: Callable[[SessionAggregate], list[Any]],
    ) -> list[AnyPayload]:
        try:
            return await self._decide(session_id, command, decide)
        except DomainError as exc:
            log.info("decision refused", session=str(session_id), why=str(exc))
            return []

    # ---- commands ----------------------------------------------------------------------------
    async def create(self, **options: Any) -> uuid.UUID:
        """Enqueue a session (validated first: nothing invalid reaches the log)."""
        session_id, batch = await self._enqueued(**options)
        await self.store.append(batch.stream, batch.events, NO_STREAM)
        log.info(
            "session enqueued",
            session=str(session_id),
            name=options.get("name"),
            access_key=options.get("access_key"),
        )
        return session_id

    async def create_many(self, requests: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
        """Enqueue several sessions in one atomic ``append_multi`` (each its own stream):
        a burst of submissions costs one round trip, and all or none are enqueued."""
        enqueued = [await self._enqueued(**options) for options in requests]
        if enqueued:
            await self.store.append_multi([batch for _, batch in enqueued])
            log.info("sessions enqueued", count=len(enqueued))
        return [session_id for session_id, _ in enqueued]

    async def _enqueued(
        self,
        *,
        name: str,
        access_key: str,
        scaling_group: str,
        image: str,
        requested: Sequence[ResourceSlot],
        cluster_size: int = 1,
        cluster_mode: ClusterMode = ClusterMode.SINGLE_NODE,
        session_type: SessionType = SessionType.INTERACTIVE,
        startup_command: str | None = None,
        starts_at: datetime | None = None,
        max_containers_per_session: int = 0,
        dependencies: Sequence[uuid.UUID] = (),
        domain: str = "default",
        user_id: uuid.UUID | None = None,
        project_id: uuid.UUID | None = None,
        session_id: uuid.UUID | None = None,
        command_id: uuid.UUID | None = None,
        preopen_ports: Sequence[int] | None = None,
    ) -> tuple[uuid.UUID, StreamBatch]:
        """A validated ``session_enqueued`` for a new session, ready to append."""
        validate_creation(
            session_type=session_type,
            starts_at="set" if starts_at else None,
            startup_command=startup_command,
            cluster_size=cluster_size,
            max_containers_per_session=max_containers_per_session,
            requested=requested,
        )
        command = command_id or uuid.uuid4()
        sid = session_id or uuid.uuid5(command, "session")
        self._check_owner(sid)
        for dependency in dependencies:  # before the append: no B14 regression
            if await self.store.stream_version(session_stream(dependency)) == 0:
                raise InvalidAPIParameters(
                    f"Unknown session ID or name in dependencies: {dependency}"
                )
        configs = list(requested) * cluster_size if len(requested) == 1 else list(requested)
        kernels = [
            KernelCreationSpec(
                kernel_id=uuid.uuid5(sid, f"kernel-{i}"),
                cluster_role="main" if i == 0 else "sub",
                cluster_idx=1 if i == 0 else i,
                local_rank=i,
                cluster_hostname="main1" if i == 0 else f"sub{i}",
                image=image,
                requested_slots={k: Decimal(v) for k, v in slots.items()},
            )
            for i, slots in enumerate(configs)
        ]
        spec = SessionCreationSpec(
            name=name,
            access_key=access_key,
            user_id=user_id,
            project_id=project_id,
            domain=domain,
            session_type=session_type.value,
            image=image,
            cluster_mode=cluster_mode.value,
            cluster_size=cluster_size,
            scaling_group=scaling_group,
            kernels=kernels,
            starts_at=starts_at,
            startup_command=startup_command,
            dependencies=list(dependencies),
            preopen_ports=list(preopen_ports) if preopen_ports else None,
        )
        event = SessionEnqueued(session_id=sid, creation_id=command.hex[:16], spec=spec)
        batch = events_for_command(command, [event], actor=self.actor)
        return sid, StreamBatch(session_stream(sid), batch, NO_STREAM)

    async def prepare(self, session_id: uuid.UUID, *, command_id: uuid.UUID | None = None) -> bool:
        return bool(await self._decide(session_id, command_id, lambda s: s.decide_prepare()))

    async def report(
        self, report: KernelReport, *, command_id: uuid.UUID | None = None
    ) -> list[AnyPayload]:
        """A kernel's progress, from its agent."""
        return await self._decide(report.session_id, command_id, lambda s: s.decide_report(report))

    async def destroy(
        self,
        session_id: uuid.UUID,
        *,
        forced: bool = False,
        reason: str | None = None,
        command_id: uuid.UUID | None = None,
    ) -> list[AnyPayload]:
        return await self._decide(
            session_id, command_id, lambda s: s.decide_destroy(forced=forced, reason=reason).events
        )

    async def start_failed(
        self,
        session_id: uuid.UUID,
        *,
        error: dict[str, Any] | None = None,
        command_id: uuid.UUID | None = None,
    ) -> list[AnyPayload]:
        return await self._decide(
            session_id, command_id, lambda s: s.decide_start_failed(error=error)
        )

    async def destroy_if_idle(
        self,
        session_id: uuid.UUID,
        reason: str,
        judged_access: float | None,
        *,
        command_id: uuid.UUID | None = None,
    ) -> list[AnyPayload]:
        """The reaper's destroy, re-checked here: a session touched after the reaper judged
        it idle (its read model lagging, a touch in flight) is left alone. Lifetime and
        utilization reclaims do not depend on activity and go ahead."""
        (outcome,) = await self.destroy_many_if_idle(
            [(session_id, reason, judged_access, command_id or uuid.uuid4())]
        )
        return outcome

    async def destroy_many_if_idle(self, requests: Sequence[IdleDestroy]) -> list[list[AnyPayload]]:
        """Several of :meth:`destroy_if_idle` at once: the latest accesses in one read, the
        destroys concurrently (different sessions). The reaper's evidence, when it sends
        one, is recorded on ``session_terminating``."""
        for session_id, *_ in requests:
            self._check_owner(session_id)
        latest = await self.store.redis.mget(
            [self.store.keys.idle_access(str(session_id)) for session_id, *_ in requests]
        )

        def still_idle(request: IdleDestroy, raw: Any) -> bool:
            _, reason, judged, *_ = request
            if reason != "idle-timeout":
                return True
            access = float(raw) if raw else None
            return access is not None and (judged is None or access <= judged)

        chosen = [
            i for i, (r, raw) in enumerate(zip(requests, latest, strict=True)) if still_idle(r, raw)
        ]
        picked = [requests[i] for i in chosen]
        decided = await self._decide_many(
            [(r[0], r[3], _destroy_decision(r[1], _evidence(r))) for r in picked]
        )
        outcomes: list[list[AnyPayload]] = [[] for _ in requests]
        for index, payloads in zip(chosen, decided, strict=True):
            outcomes[index] = payloads
        return outcomes

    async def note_activity_many(
        self, notes: Sequence[tuple[uuid.UUID, float, uuid.UUID]]
    ) -> list[list[AnyPayload]]:
        """The reaper's coalesced activity notes (session, last access, command id): one
        ``session_activity`` each for running sessions used since their last note."""
        return await self._decide_many(
            [(sid, command, _note_decision(last_access)) for sid, last_access, command in notes]
        )

    async def restart(
        self, session_id: uuid.UUID, *, command_id: uuid.UUID | None = None
    ) -> list[AnyPayload]:
        """Restart a RUNNING session's kernels in place (their agents do the work)."""
        return await self._decide(session_id, command_id, lambda s: s.decide_restart())

    async def restart_failed(
        self, session_id: uuid.UUID, msg: str, *, command_id: uuid.UUID | None = None
    ) -> list[AnyPayload]:
        return await self._decide(session_id, command_id, lambda s: s.decide_restart_failed(msg))

    async def agent_gone(
        self, session_id: uuid.UUID, agent_id: str, *, command_id: uuid.UUID | None = None
    ) -> list[AnyPayload]:
        """A lost agent's ``terminate_after`` ran out (see ``decide_agent_gone``)."""
        return await self._decide(session_id, command_id, lambda s: s.decide_agent_gone(agent_id))

    async def wait(
        self, session_id: uuid.UUID, timeout: float, until: frozenset[str] = _SETTLED
    ) -> str:
        """The session's status once it is one of ``until`` or ``timeout`` seconds passed
        (whichever first). Woken by the shard's own log tail, so waiting costs no polling."""
        self._check_owner(session_id)
        changed = asyncio.Event()
        self._changed[session_id].add(changed)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                changed.clear()
                status = (await self.get(session_id)).status.name
                left = deadline - loop.time()
                if status in until or left <= 0:
                    return status
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(left, 1.0))
        finally:
            waiters = self._changed[session_id]
            waiters.discard(changed)
            if not waiters:
                del self._changed[session_id]

    async def scheduling_failed(
        self, failure: SessionSchedulingFailed, *, command_id: uuid.UUID | None = None
    ) -> list[AnyPayload]:
        return await self._decide(
            failure.session_id, command_id, lambda s: s.decide_scheduling_failed(failure)
        )

    async def batch_result(
        self, result: SessionSuccess | SessionFailure, *, command_id: uuid.UUID | None = None
    ) -> list[AnyPayload]:
        return await self._decide(result.session_id, command_id, lambda s: s.decide_result(result))

    async def get(self, session_id: uuid.UUID) -> SessionAggregate:
        self._check_owner(session_id)
        async with self._locks[session_id]:
            return await self._catch_up(session_id)
