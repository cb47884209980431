"""Reaching the ``sessions:<k>`` shard actors: every command routed by its session id.

Ray actor calls are at-most-once and a ``RayActorError`` may come after the method ran
(docs/architecture.md, Commands and idempotency), so a command has its id *before* the
first attempt (it is a frozen value, see :mod:`actors.domain.commands.sessions`) and the same
value is sent again while the owning actor restarts: the shard recognises a retry by that
id, so a command has one effect however often it is delivered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, cast

import structlog

from actors.domain.commands.sessions import (
    DestroySession,
    SessionBatch,
    SessionCommand,
    ShardCommand,
)
from actors.domain.errors import GenericBadRequest, GenericForbidden, ObjectNotFound
from actors.domain.session_aggregate import SessionAggregate
from actors.sessions.execution import RayAgent, SessionExecution
from actors.sessions.shard import load_session, shard_of
from events import RedisEventStore
from events.correlation import correlation_kwargs
from projections.queries import ReadModels

__all__ = ["ShardRouter", "dependants_of"]

log = structlog.get_logger(__name__)

_RETRY_FOR_S = 60.0
R = TypeVar("R")


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
    """The shards as one :class:`~actors.domain.commands.sessions.SessionClient`: reads fold
    the stream here (read-only), commands go to the owning actor."""

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

    def actor_for(self, session_id: uuid.UUID) -> Any:
        """The handle of the actor of the shard that owns ``session_id``."""
        k = shard_of(session_id, len(self.handles))
        if self.handles[k] is None:
            import ray

            self.handles[k] = ray.get_actor(f"sessions:{k}", namespace=self.namespace)
        return self.handles[k]

    async def _call(self, target: uuid.UUID, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the owning shard, retrying (the same arguments: a command keeps its id) while
        it is unreachable or restarting."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RETRY_FOR_S
        delay = 0.05
        while True:
            try:
                handle = self.actor_for(target)
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

    async def handle(self, command: ShardCommand[R]) -> R:
        """Send ``command`` to the shard that owns its session (a batch: each shard its
        share, in parallel, the replies back in item order)."""
        if isinstance(command, SessionBatch):
            return cast(R, await self._per_shard(command))
        if not isinstance(command, SessionCommand):
            raise TypeError(f"{type(command).__name__} names no session to route by")
        return cast(R, await self._call(command.session_id, "handle", command))

    async def _per_shard(self, batch: SessionBatch[Any, Any]) -> list[Any]:
        groups: dict[int, list[int]] = {}
        for index, item in enumerate(batch.items):
            groups.setdefault(shard_of(item.session_id, len(self.handles)), []).append(index)
        replies = await asyncio.gather(
            *(
                self._call(
                    batch.items[group[0]].session_id,
                    "handle",
                    batch.model_copy(update={"items": tuple(batch.items[i] for i in group)}),
                )
                for group in groups.values()
            )
        )
        ordered: list[Any] = [None] * len(batch.items)
        for group, reply in zip(groups.values(), replies, strict=True):
            for index, outcome in zip(group, reply, strict=True):
                ordered[index] = outcome
        return ordered

    async def destroy_dependants(self, command: DestroySession) -> None:
        """After ``command``: destroy, concurrently, every session that depends on its
        session, transitively (23.03 #893, ``recursive``: refusals and unknown dependants are
        dropped). Each destroy's id derives from ``command``'s, so a retry repeats none."""
        dependants = await dependants_of(ReadModels(self.store), command.session_id)

        async def one(dependant: uuid.UUID) -> None:
            try:
                await self.handle(command.for_dependant(dependant))
            except (GenericForbidden, ObjectNotFound) as exc:
                log.info("dependant not destroyed", session=str(dependant), why=str(exc))

        await asyncio.gather(*(one(d) for d in dependants))

    # ---- queries -----------------------------------------------------------------------------
    async def get(self, session_id: uuid.UUID) -> SessionAggregate:
        return await load_session(self.store, session_id)

    async def load(self, session_id: uuid.UUID) -> SessionAggregate:
        return await load_session(self.store, session_id)

    async def wait(
        self, session_id: uuid.UUID, timeout: float, until: Iterable[str] | None = None
    ) -> str:
        """The status once it is one of ``until`` (default: RUNNING or an end), or whatever
        it is after ``timeout`` seconds."""
        wanted = sorted(until) if until is not None else None
        return str(await self._call(session_id, "wait", session_id, timeout, wanted))

    async def status(self, session_id: uuid.UUID) -> str:
        return str(await self._call(session_id, "status", session_id))
