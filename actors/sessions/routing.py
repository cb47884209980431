"""Reaching the ``sessions:<k>`` shard actors: every command routed by session id.

Ray actor calls are at-most-once and a ``RayActorError`` may come after the method ran
(design.md), so each command gets its id *before* the first attempt and is retried with the
same id while the owning actor restarts: the shard recognises a retry by that id, so a
command has one effect however often it is delivered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog

from actors.domain.errors import GenericBadRequest, GenericForbidden, ObjectNotFound
from actors.domain.session_aggregate import KernelReport, SessionAggregate
from actors.sessions.execution import RayAgent, SessionExecution
from actors.sessions.shard import load_session, shard_of
from events import RedisEventStore
from events.correlation import correlation_kwargs
from projections.queries import ReadModels

__all__ = ["ShardRouter", "dependants_of"]

log = structlog.get_logger(__name__)

_RETRY_FOR_S = 60.0


async def dependants_of(models: ReadModels, session_id: uuid.UUID) -> list[uuid.UUID]:
    """Every session that depends on ``session_id``, transitively, nearest first."""
    seen: dict[uuid.UUID, None] = {}
    frontier = [session_id]
    while frontier:
        found = [uuid.UUID(d) for s in frontier for d in await models.dependants(str(s))]
        frontier = [d for d in found if d not in seen and d != session_id]
        seen.update(dict.fromkeys(frontier))
    return list(seen)


class ShardRouter:
    """The shards as one :class:`~actors.sessions.shard.ShardClient`: reads fold the stream here
    (read-only), writes go to the owning actor."""

    def __init__(self, store: RedisEventStore, handles: Sequence[Any]) -> None:
        if not handles:
            raise ValueError("a router needs at least one shard")
        self.store = store
        self.handles: list[Any] = list(handles)
        self.namespace: str | None = None
        self._execution: SessionExecution | None = None
        self.agent_actors: dict[str, Any] = {}
        """Agent id -> the actor hosting it, where known; others are found by name."""

    @classmethod
    def named(cls, store: RedisEventStore, count: int, namespace: str) -> ShardRouter:
        """Shards found by name (``sessions:<k>``) when first used. Actors pass names, not
        handles, to each other: constructor arguments held in the object store can go out
        of scope once the driver that created a detached actor exits, and a restart would
        then fail (ray-project/ray#53727)."""
        router = cls(store, [None] * count)
        router.namespace = namespace
        return router

    @property
    def execution(self) -> SessionExecution:
        """Code, files and logs of sessions: calls to the agent actor (``agent:<id>``) that
        runs each session's main kernel."""
        if self._execution is None:
            import ray

            namespace = self.namespace
            handles: dict[str, RayAgent] = {}

            def agent(agent_id: str) -> RayAgent:
                if agent_id not in handles:
                    try:
                        actor = self.agent_actors.get(agent_id) or ray.get_actor(
                            f"agent:{agent_id}", namespace=namespace
                        )
                    except ValueError:
                        raise GenericBadRequest(
                            f"agent {agent_id} runs no code (a simulated agent?)"
                        ) from None
                    handles[agent_id] = RayAgent(actor, agent_id)
                return handles[agent_id]

            self._execution = SessionExecution(self.store, agent)
        return self._execution

    def handle(self, session_id: uuid.UUID) -> Any:
        k = shard_of(session_id, len(self.handles))
        if self.handles[k] is None:
            import ray

            self.handles[k] = ray.get_actor(f"sessions:{k}", namespace=self.namespace)
        return self.handles[k]

    async def _call(self, target: uuid.UUID, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the owning shard, retrying (same arguments, hence the same command id) while
        it is unreachable or restarting."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RETRY_FOR_S
        delay = 0.05
        while True:
            try:
                handle = self.handle(target)
            except ValueError:  # not registered (yet): being created or restarted
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(delay)
                continue
            try:
                return await getattr(handle, method).remote(*args, **kwargs, **correlation_kwargs())
            except (RayActorError, ActorUnavailableError) as exc:
                if loop.time() > deadline:
                    raise
                log.info("shard unavailable; retrying", method=method, error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    @staticmethod
    def _with_ids(options: dict[str, Any]) -> dict[str, Any]:
        """A create request with its command id and session id fixed (the session id from
        the command id), so the right shard gets it and a retry finds its first attempt."""
        request = dict(options)
        command = request.pop("command_id", None) or uuid.uuid4()
        session_id = request.pop("session_id", None) or uuid.uuid5(command, "session")
        return {**request, "session_id": session_id, "command_id": command}

    async def _per_shard(
        self, method: str, items: Sequence[Any], session_of: Callable[[Any], uuid.UUID]
    ) -> list[Any]:
        """One call of ``method`` per owning shard, in parallel, each with its share of
        ``items`` (a list); the shards' per-item replies, back in ``items`` order."""
        groups: dict[int, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(shard_of(session_of(item), len(self.handles)), []).append(index)
        replies = await asyncio.gather(
            *(
                self._call(session_of(items[g[0]]), method, [items[i] for i in g])
                for g in groups.values()
            )
        )
        ordered: list[Any] = [None] * len(items)
        for group, reply in zip(groups.values(), replies, strict=True):
            for index, outcome in zip(group, reply, strict=True):
                ordered[index] = outcome
        return ordered

    # ---- commands from users ------------------------------------------------------------------
    async def create(self, **options: Any) -> uuid.UUID:
        """Enqueue a session (see :meth:`_with_ids`)."""
        request = self._with_ids(options)
        await self._call(request["session_id"], "create", **request)
        return uuid.UUID(str(request["session_id"]))

    async def create_many(self, requests: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
        """Enqueue many sessions, one ``append_multi`` per owning shard (in parallel); the
        ids are in request order."""
        prepared = [self._with_ids(options) for options in requests]
        await self._per_shard("create_many", prepared, lambda r: r["session_id"])
        return [r["session_id"] for r in prepared]

    async def wait(
        self, session_id: uuid.UUID, timeout: float, until: Iterable[str] | None = None
    ) -> str:
        """The status once it is one of ``until`` (default: RUNNING or an end), or whatever
        it is after ``timeout`` seconds."""
        wanted = sorted(until) if until is not None else None
        return str(await self._call(session_id, "wait", session_id, timeout, wanted))

    async def status(self, session_id: uuid.UUID) -> str:
        return str(await self._call(session_id, "status", session_id))

    async def restart(
        self, session_id: uuid.UUID, *, command_id: uuid.UUID | None = None
    ) -> list[str]:
        result = await self._call(session_id, "restart", session_id, command_id or uuid.uuid4())
        return list(result)

    async def destroy(
        self,
        session_id: uuid.UUID,
        *,
        forced: bool = False,
        reason: str | None = None,
        command_id: uuid.UUID | None = None,
        recursive: bool = False,
    ) -> list[str]:
        """Destroy a session; ``recursive`` also destroys, concurrently, every session that
        depends on it (23.03 #893: refusals and unknown dependants are dropped)."""
        command = command_id or uuid.uuid4()
        types = list(await self._call(session_id, "destroy", session_id, forced, reason, command))
        if recursive:
            dependants = await dependants_of(ReadModels(self.store), session_id)

            async def one(dependant: uuid.UUID) -> None:
                try:
                    await self._call(
                        dependant,
                        "destroy",
                        dependant,
                        forced,
                        reason,
                        uuid.uuid5(command, f"dependant/{dependant}"),
                    )
                except (GenericForbidden, ObjectNotFound) as exc:
                    log.info("dependant not destroyed", session=str(dependant), why=str(exc))

            await asyncio.gather(*(one(d) for d in dependants))
        return types

    # ---- the ShardClient protocol (agents, scheduler, liveness) -------------------------------
    async def get(self, session_id: uuid.UUID) -> SessionAggregate:
        return await load_session(self.store, session_id)

    async def report(self, report: KernelReport, *, command_id: uuid.UUID | None = None) -> Any:
        return await self._call(report.session_id, "report", report, command_id or uuid.uuid4())

    async def start_failed(
        self,
        session_id: uuid.UUID,
        *,
        error: dict[str, Any] | None = None,
        command_id: uuid.UUID | None = None,
    ) -> Any:
        return await self._call(
            session_id, "start_failed", session_id, command_id or uuid.uuid4(), error
        )

    async def restart_failed(
        self, session_id: uuid.UUID, msg: str, *, command_id: uuid.UUID | None = None
    ) -> Any:
        return await self._call(
            session_id, "restart_failed", session_id, msg, command_id or uuid.uuid4()
        )

    async def agent_gone(
        self, session_id: uuid.UUID, agent_id: str, *, command_id: uuid.UUID | None = None
    ) -> Any:
        return await self._call(
            session_id, "agent_gone", session_id, agent_id, command_id or uuid.uuid4()
        )

    async def destroy_many_if_idle(self, requests: Sequence[Any]) -> list[Any]:
        """The reaper's conditional destroys, one call per owning shard, in parallel."""
        return await self._per_shard("destroy_many_if_idle", requests, lambda r: r[0])

    async def note_activity_many(
        self, notes: Sequence[tuple[uuid.UUID, float, uuid.UUID]]
    ) -> list[Any]:
        """The reaper's coalesced activity notes, one call per owning shard."""
        return await self._per_shard("note_activity_many", notes, lambda n: n[0])

    async def batch_result(self, result: Any, *, command_id: uuid.UUID | None = None) -> Any:
        return await self._call(
            result.session_id, "batch_result", result, command_id or uuid.uuid4()
        )

    async def scheduling_failed(self, failure: Any, *, command_id: uuid.UUID | None = None) -> Any:
        return await self._call(
            failure.session_id, "scheduling_failed", failure, command_id or uuid.uuid4()
        )
