"""``sessions:<k>``: one session shard (see :mod:`actors.sessions.shard`) as a Ray actor."""

from __future__ import annotations

import uuid
from typing import Any

import ray

from actors.runtime.metrics import ActorMetrics
from actors.sessions.shard import SHARD_REACTS_TO, SessionShard
from events import Event, RedisEventStore

from ..domain.session_aggregate import KernelReport
from ._follower import Follower, boot
from ._traced import traced_actor

__all__ = ["SessionsActor"]


@ray.remote(max_restarts=-1)
@traced_actor
class SessionsActor(Follower):
    def __init__(self, redis_url: str, prefix: str = "kh", index: int = 0, count: int = 1) -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        self.follower_name = f"sessions:{index}"
        self.interests = SHARD_REACTS_TO
        self.shard = SessionShard(self.store, actor=self.follower_name, index=index, count=count)
        self.metrics = ActorMetrics(
            "kernelhub_session_commands_total", "kernelhub_session_events_total"
        )
        self._boot = boot(self._start_following())

    def follows_stream(self, stream: str) -> bool:
        """Only this shard's sessions: the other shards' are never decoded here."""
        if not stream.startswith("session-"):
            return True
        try:
            return self.shard.owns(uuid.UUID(stream[len("session-") :]))
        except ValueError:
            return True

    def _count(self, command: str, events: list[Any]) -> list[str]:
        self.metrics.inc("kernelhub_session_commands_total", command=command)
        for event in events:
            self.metrics.inc("kernelhub_session_events_total", type=event.type)
        return [e.type for e in events]

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()

    async def react_many(self, events: list[Event]) -> None:
        await self.shard.on_events(events)

    async def create(self, **options: Any) -> str:
        session_id = str(await self.shard.create(**options))
        self._count("create", [])
        self.metrics.inc("kernelhub_session_events_total", type="session_enqueued")
        return session_id

    async def create_many(self, requests: list[dict[str, Any]]) -> list[str]:
        session_ids = await self.shard.create_many(requests)
        self._count("create_many", [])
        self.metrics.inc(
            "kernelhub_session_events_total", len(session_ids), type="session_enqueued"
        )
        return [str(s) for s in session_ids]

    async def wait(
        self, session_id: uuid.UUID, timeout: float, until: list[str] | None = None
    ) -> str:
        sid = uuid.UUID(str(session_id))
        if until is None:
            return await self.shard.wait(sid, timeout)
        return await self.shard.wait(sid, timeout, frozenset(until))

    async def destroy(
        self,
        session_id: uuid.UUID | str,
        forced: bool = False,
        reason: str | None = None,
        command_id: uuid.UUID | str | None = None,
    ) -> list[str]:
        command = uuid.UUID(str(command_id)) if command_id else None
        events = await self.shard.destroy(
            uuid.UUID(str(session_id)), forced=forced, reason=reason, command_id=command
        )
        return self._count("destroy", events)

    async def destroy_many_if_idle(self, requests: list[Any]) -> list[list[str]]:
        outcomes = await self.shard.destroy_many_if_idle(requests)
        return [self._count("destroy_if_idle", events) for events in outcomes]

    async def note_activity_many(
        self, notes: list[tuple[uuid.UUID, float, uuid.UUID]]
    ) -> list[list[str]]:
        outcomes = await self.shard.note_activity_many(notes)
        return [self._count("note_activity", events) for events in outcomes]

    async def restart(self, session_id: uuid.UUID, command_id: uuid.UUID) -> list[str]:
        return self._count("restart", await self.shard.restart(session_id, command_id=command_id))

    async def report(self, report: KernelReport, command_id: uuid.UUID | None = None) -> list[str]:
        return self._count("report", await self.shard.report(report, command_id=command_id))

    async def start_failed(
        self,
        session_id: uuid.UUID,
        command_id: uuid.UUID | None = None,
        error: dict[str, Any] | None = None,
    ) -> list[str]:
        events = await self.shard.start_failed(session_id, error=error, command_id=command_id)
        return self._count("start_failed", events)

    async def restart_failed(
        self, session_id: uuid.UUID, msg: str, command_id: uuid.UUID | None = None
    ) -> list[str]:
        events = await self.shard.restart_failed(session_id, msg, command_id=command_id)
        return self._count("restart_failed", events)

    async def agent_gone(
        self, session_id: uuid.UUID, agent_id: str, command_id: uuid.UUID | None = None
    ) -> list[str]:
        events = await self.shard.agent_gone(session_id, agent_id, command_id=command_id)
        return self._count("agent_gone", events)

    async def batch_result(self, result: Any, command_id: uuid.UUID | None = None) -> list[str]:
        return self._count(
            "batch_result", await self.shard.batch_result(result, command_id=command_id)
        )

    async def scheduling_failed(
        self, failure: Any, command_id: uuid.UUID | None = None
    ) -> list[str]:
        events = await self.shard.scheduling_failed(failure, command_id=command_id)
        return self._count("scheduling_failed", events)

    async def status(self, session_id: uuid.UUID | str) -> str:
        return (await self.shard.get(uuid.UUID(str(session_id)))).status.name
