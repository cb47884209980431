"""The session shard: owner of ``session-<uuid>`` streams.

Hosted by the ``sessions:<k>`` Ray actors: shard ``k`` of ``n`` owns the sessions whose
``uuid.int % n == k`` (:func:`shard_of`), and refuses commands for the others, so each
session stream keeps exactly one writer. Its one entry for commands is
:meth:`SessionShard.handle`: each command (a frozen value from
:mod:`actors.domain.commands.sessions`) goes to the handler registered for its type. It
activates a session by folding its stream, serialises commands per session with a lock,
decides with :class:`SessionAggregate`, and appends with the stream's expected version. The
scheduler also appends to session streams (its decisions are ``append_multi`` over the
ledger and the sessions), so every decision first catches up with the stream; a conflict is
a reload and a second look, never a double effect. Commands carry ids: a retry has one
effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar, cast

import structlog

from actors.domain.commands.sessions import (
    AgentGone,
    CreateSession,
    CreateSessions,
    Decided,
    DestroyIfIdle,
    DestroyManyIfIdle,
    DestroySession,
    NoteActivities,
    NoteActivity,
    PrepareSession,
    RecordBatchResult,
    ReportKernel,
    ReportKernels,
    RestartFailed,
    RestartSession,
    SchedulingFailed,
    ShardCommand,
    StartFailed,
    WarnIdle,
    WarnIdleMany,
)
from actors.domain.errors import DomainError, InvalidAPIParameters
from actors.domain.session import (
    cluster_configs,
    kernel_creation_specs,
    kernel_id_for,
    validate_creation,
)
from actors.domain.session_aggregate import SessionAggregate
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
from events.catalogue import SessionCreationSpec, SessionEnqueued, SessionIdleWarning
from events.catalogue.session import VFolderMountSpec
from events.server import log_unreachable

__all__ = [
    "SHARD_REACTS_TO",
    "SessionShard",
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
_SHARD_REACTIONS = frozenset({"session_scheduled", "session_success", "session_failure"})
"""The events a shard acts on (:meth:`SessionShard.on_events`); the rest of
:data:`SHARD_REACTS_TO` only wakes waiters."""
_SETTLED = frozenset({"RUNNING", "TERMINATED", "CANCELLED", "ERROR"})
"""Where ``create(wait=...)`` returns: running, or an end (23.03's blocking create)."""

R = TypeVar("R")


def _idle_destroy(
    reason: str, evidence: dict[str, Any] | None
) -> Callable[[SessionAggregate], list[Any]]:
    return lambda aggregate: aggregate.decide_idle_destroy(reason, evidence)


def _note_decision(last_access: float) -> Callable[[SessionAggregate], list[Any]]:
    return lambda aggregate: aggregate.decide_note_activity(last_access)


def _warning_decision(command: WarnIdle) -> Callable[[SessionAggregate], list[Any]]:
    warning = SessionIdleWarning(
        session_id=command.session_id,
        checker=command.checker,
        reason=command.reason,
        deadline=command.deadline,
        remaining=command.remaining,
        last_access=command.last_access,
    )
    return lambda aggregate: aggregate.decide_idle_warning(warning)


def _prepare(aggregate: SessionAggregate) -> list[Any]:
    return aggregate.decide_prepare()


def _restart(aggregate: SessionAggregate) -> list[Any]:
    return aggregate.decide_restart()


async def _on_behalf_of(event: Event, reaction: Coroutine[Any, Any, Any]) -> Any:
    """A reaction under the correlation id of the event it answers."""
    with correlated(event.correlation_id):
        return await reaction


def shard_of(session_id: uuid.UUID, count: int) -> int:
    """The shard that owns a session: ``uuid.int % N``, N fixed at install (docs/architecture.md,
    The actors)."""
    return session_id.int % count


class WrongShardError(ValueError):
    """A command reached a shard that does not own the session: a routing bug, refused
    rather than letting two writers share a stream."""


def session_stream(session_id: uuid.UUID) -> str:
    return f"session-{session_id}"


async def load_session(store: RedisEventStore, session_id: uuid.UUID) -> SessionAggregate:
    """A session folded from its stream, read-only (the router's ``get``, and tools)."""
    return await catch_up(store, SessionAggregate(session_id))


async def catch_up(store: RedisEventStore, aggregate: SessionAggregate) -> SessionAggregate:
    """Fold into ``aggregate`` whatever its stream holds past the version it has seen."""
    stream = session_stream(aggregate.session_id)
    for event in await store.read_stream(stream, aggregate.version + 1):
        aggregate.apply(event.data, event.version, event.command_id)
    return aggregate


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

    def decodes(self, stream: str, event_type: str) -> bool:
        """Whether the shard's follower must decode an event it reads (one of
        :data:`SHARD_REACTS_TO`, on a session of this shard): a reaction always; a status
        change only while someone waits on that session (most sessions have no waiter, and
        decoding every ``session_enqueued`` spec cost a busy shard a sixth of its CPU). A
        waiter that registers after an event went by undecoded still sees it: it reads the
        session's status after registering."""
        if event_type in _SHARD_REACTIONS or not self._changed:
            return event_type in _SHARD_REACTIONS
        try:
            return uuid.UUID(stream.removeprefix("session-")) in self._changed
        except ValueError:
            return True

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
            command: ShardCommand[Decided]
            if event.type == "session_scheduled":
                command = PrepareSession(
                    session_id=session_id, command_id=uuid.uuid5(event.event_id, "prepare")
                )
            elif event.type in ("session_success", "session_failure"):
                command = DestroySession(
                    session_id=session_id,
                    reason="task-finished",
                    command_id=uuid.uuid5(event.event_id, "finish"),
                )
            else:
                continue
            reactions.append(_on_behalf_of(event, self.handle(command)))
        away: Exception | None = None
        for outcome in await asyncio.gather(*reactions, return_exceptions=True):
            if isinstance(outcome, Exception):
                if log_unreachable(outcome):
                    away = outcome
                else:
                    log.error("shard reaction failed", error=repr(outcome))
        if away is not None:  # the follower reacts again once the log is back (idempotent)
            raise away

    def forget(self) -> None:
        """Drop every active session: the log changed under the shard (Redis restarted and
        may have lost its last second), so each is folded afresh from its stream when next
        used. Commands in flight finish on the aggregate they hold; their append is fenced
        by the stream's version like any other."""
        self.active.clear()

    def _behind(self, session_id: uuid.UUID, conflict: WrongExpectedVersionError) -> None:
        """A conflict that says the stream is *shorter* than the version held: the log went
        back under the shard (a lost tail), so the session is folded afresh; an ordinary
        conflict (someone appended) is a catch-up."""
        if conflict.actual < conflict.expected:
            log.warning(
                "session stream behind what the shard held; folding it afresh",
                session=str(session_id),
                held=conflict.expected,
                stream=conflict.actual,
            )
            self.active.pop(session_id, None)

    async def _catch_up(self, session_id: uuid.UUID) -> SessionAggregate:
        aggregate = self.active.get(session_id) or SessionAggregate(session_id)
        self.active[session_id] = await catch_up(self.store, aggregate)
        return aggregate

    async def _decide(
        self,
        session_id: uuid.UUID,
        command: uuid.UUID,
        decide: Callable[[SessionAggregate], list[AnyPayload]],
    ) -> list[AnyPayload]:
        """Decide on the aggregate the shard holds, without reading the stream first: the
        append is fenced by the version it was decided on, so a stream that moved meanwhile
        (the scheduler appends to it too) is a conflict, then a catch-up and a second look.
        Only a decision to append can be taken on what is held; one that appends nothing
        (a retry, a refusal, a report that changes nothing) is confirmed on the caught-up
        stream first, since the events the shard had not seen may change it. That saves
        the read each decision made before its append (a round trip, and a quarter of the
        shard's Redis calls per session)."""
        self._check_owner(session_id)
        async with self._locks[session_id]:
            held = self.active.get(session_id)
            for _ in range(_RETRIES):
                if held is not None:
                    aggregate, held = held, None
                    fresh = False
                else:
                    aggregate = await self._catch_up(session_id)
                    fresh = True
                if command in aggregate.commands:
                    if not fresh:
                        continue
                    return []  # a retry of a command that already took effect
                try:
                    payloads = decide(aggregate)
                except DomainError:
                    if not fresh:
                        continue
                    raise
                if not payloads:
                    if not fresh:
                        continue
                    return []
                batch = events_for_command(command, payloads, actor=self.actor)
                try:
                    result = await self.store.append(
                        session_stream(session_id), batch, aggregate.version
                    )
                except WrongExpectedVersionError as conflict:
                    self._behind(session_id, conflict)
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
            except WrongExpectedVersionError as conflict:
                stream = conflict.stream.removeprefix("session-")
                with contextlib.suppress(ValueError):
                    self._behind(uuid.UUID(stream), conflict)
                fallback = True
            except DomainError:
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
    async def handle(self, command: ShardCommand[R]) -> R:
        """Decide on ``command`` with the handler registered for its type (below); a retry
        of a command that already took effect decides nothing."""
        return cast(R, await self._handle(command))

    @functools.singledispatchmethod
    async def _handle(self, command: ShardCommand[Any]) -> Any:
        raise TypeError(f"a session shard does not handle {type(command).__name__}")

    @_handle.register
    async def _create(self, command: CreateSession) -> uuid.UUID:
        batch = await self._enqueued(command)
        await self.store.append(batch.stream, batch.events, NO_STREAM)
        log.info(
            "session enqueued",
            session=str(command.session_id),
            name=command.name,
            access_key=command.access_key,
        )
        return command.session_id

    @_handle.register
    async def _create_many(self, command: CreateSessions) -> list[uuid.UUID]:
        enqueued = [await self._enqueued(item) for item in command.items]
        if enqueued:
            await self.store.append_multi(enqueued)
            log.info("sessions enqueued", count=len(enqueued))
        return [item.session_id for item in command.items]

    async def _enqueued(self, command: CreateSession) -> StreamBatch:
        """A validated ``session_enqueued`` for a new session, ready to append."""
        validate_creation(
            session_type=command.session_type,
            starts_at="set" if command.starts_at else None,
            startup_command=command.startup_command,
            cluster_size=command.cluster_size,
            max_containers_per_session=command.max_containers_per_session,
            requested=command.requested,
        )
        sid = command.session_id
        self._check_owner(sid)
        # before the append: no B14 regression (docs/upstream.md)
        for dependency in command.dependencies:
            if await self.store.stream_version(session_stream(dependency)) == 0:
                raise InvalidAPIParameters(
                    f"Unknown session ID or name in dependencies: {dependency}"
                )
        configs = cluster_configs(command.cluster_size, command.requested, strict=False)
        spec = SessionCreationSpec(
            name=command.name,
            access_key=command.access_key,
            user_id=command.user_id,
            project_id=command.project_id,
            domain=command.domain,
            session_type=command.session_type.value,
            image=command.image,
            cluster_mode=command.cluster_mode.value,
            cluster_size=command.cluster_size,
            scaling_group=command.scaling_group,
            kernels=kernel_creation_specs(
                [kernel_id_for(sid, i) for i in range(len(configs))],
                configs,
                image=command.image,
                architecture=command.architecture,
                agents=command.agents,
            ),
            architecture=command.architecture,
            starts_at=command.starts_at,
            startup_command=command.startup_command,
            dependencies=list(command.dependencies),
            preopen_ports=list(command.preopen_ports) if command.preopen_ports else None,
            environ=dict(command.environ) if command.environ else None,
            bootstrap_script=command.bootstrap_script or None,
            resource_opts=dict(command.resource_opts) if command.resource_opts else None,
            tag=command.tag,
            callback_url=command.callback_url,
            exec_timeout_s=command.exec_timeout_s or None,
            mounts=[VFolderMountSpec.model_validate(m) for m in command.mounts] or None,
        )
        event = SessionEnqueued(session_id=sid, creation_id=command.command_id.hex[:16], spec=spec)
        batch = events_for_command(command.command_id, [event], actor=self.actor)
        return StreamBatch(session_stream(sid), batch, NO_STREAM)

    @_handle.register
    async def _prepare(self, command: PrepareSession) -> Decided:
        return await self._decide(command.session_id, command.command_id, _prepare)

    @_handle.register
    async def _report(self, command: ReportKernel) -> Decided:
        return await self._decide(
            command.session_id, command.command_id, lambda s: s.decide_report(command.report)
        )

    @_handle.register
    async def _reports(self, command: ReportKernels) -> list[Decided]:
        """In order, one decision each: a later report is decided on what the earlier
        ones appended (``kernel_started`` after its ``kernel_creating``)."""
        return [await self._report(report) for report in command.items]

    @_handle.register
    async def _destroy(self, command: DestroySession) -> Decided:
        return await self._decide(
            command.session_id,
            command.command_id,
            lambda s: s.decide_destroy_events(forced=command.forced, reason=command.reason),
        )

    @_handle.register
    async def _start_failed(self, command: StartFailed) -> Decided:
        return await self._decide(
            command.session_id,
            command.command_id,
            lambda s: s.decide_start_failed(error=command.error),
        )

    @_handle.register
    async def _destroy_if_idle(self, command: DestroyIfIdle) -> Decided:
        (outcome,) = await self.handle(DestroyManyIfIdle(items=(command,)))
        return outcome

    @_handle.register
    async def _destroy_many_if_idle(self, command: DestroyManyIfIdle) -> list[Decided]:
        """The latest accesses in one read, then one ``append_multi`` of the destroys still
        due: an ``idle-timeout`` of a session touched after the reaper judged it (its read
        model lagging, a touch in flight) is dropped; lifetime and utilization reclaims do
        not depend on activity and go ahead."""
        requests = command.items
        for request in requests:
            self._check_owner(request.session_id)
        latest = await self.store.idle.last_accesses([str(r.session_id) for r in requests])

        def still_idle(request: DestroyIfIdle, access: float | None) -> bool:
            if request.reason != "idle-timeout":
                return True
            judged = request.judged_access
            return access is not None and (judged is None or access <= judged)

        chosen = [
            i
            for i, (r, access) in enumerate(zip(requests, latest, strict=True))
            if still_idle(r, access)
        ]
        decided = await self._decide_many(
            [
                (r.session_id, r.command_id, _idle_destroy(r.reason, r.evidence))
                for r in (requests[i] for i in chosen)
            ]
        )
        outcomes: list[Decided] = [[] for _ in requests]
        for index, payloads in zip(chosen, decided, strict=True):
            outcomes[index] = payloads
        return outcomes

    @_handle.register
    async def _note_activity(self, command: NoteActivity) -> Decided:
        (outcome,) = await self.handle(NoteActivities(items=(command,)))
        return outcome

    @_handle.register
    async def _note_activities(self, command: NoteActivities) -> list[Decided]:
        """One ``session_activity`` each for running sessions used since their last note."""
        return await self._decide_many(
            [(n.session_id, n.command_id, _note_decision(n.last_access)) for n in command.items]
        )

    @_handle.register
    async def _warn_idle(self, command: WarnIdle) -> Decided:
        (outcome,) = await self.handle(WarnIdleMany(items=(command,)))
        return outcome

    @_handle.register
    async def _warn_idle_many(self, command: WarnIdleMany) -> list[Decided]:
        """A ``session_idle_warning`` each, for running sessions not yet warned of that
        deadline."""
        return await self._decide_many(
            [(w.session_id, w.command_id, _warning_decision(w)) for w in command.items]
        )

    @_handle.register
    async def _restart(self, command: RestartSession) -> Decided:
        return await self._decide(command.session_id, command.command_id, _restart)

    @_handle.register
    async def _restart_failed(self, command: RestartFailed) -> Decided:
        return await self._decide(
            command.session_id,
            command.command_id,
            lambda s: s.decide_restart_failed(command.msg),
        )

    @_handle.register
    async def _agent_gone(self, command: AgentGone) -> Decided:
        return await self._decide(
            command.session_id,
            command.command_id,
            lambda s: s.decide_agent_gone(command.agent_id),
        )

    @_handle.register
    async def _scheduling_failed(self, command: SchedulingFailed) -> Decided:
        return await self._decide(
            command.session_id,
            command.command_id,
            lambda s: s.decide_scheduling_failed(command.failure),
        )

    @_handle.register
    async def _batch_result(self, command: RecordBatchResult) -> Decided:
        return await self._decide(
            command.session_id, command.command_id, lambda s: s.decide_result(command.result)
        )

    # ---- queries -----------------------------------------------------------------------------
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

    async def get(self, session_id: uuid.UUID) -> SessionAggregate:
        """The shard's own aggregate, caught up (the shard goes on changing it)."""
        self._check_owner(session_id)
        async with self._locks[session_id]:
            return await self._catch_up(session_id)

    async def load(self, session_id: uuid.UUID) -> SessionAggregate:
        """A fresh fold of the session's stream, the caller's to keep: what the router's
        :meth:`~actors.sessions.routing.ShardRouter.load` gives an agent on Ray."""
        return await load_session(self.store, session_id)
