"""``sessions:<k>``: one session shard (see :mod:`actors.sessions.shard`) as a Ray actor."""

from __future__ import annotations

import uuid
from typing import Any

import ray

from actors.domain.commands.sessions import (
    CreateSession,
    CreateSessions,
    SessionBatch,
    ShardCommand,
)
from actors.runtime.metrics import ActorMetrics
from actors.runtime.restarts import RestartWatch
from actors.sessions.shard import SHARD_REACTS_TO, SessionShard
from events import Event, RedisEventStore

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
        self.selects = self.shard.decodes
        self.metrics = ActorMetrics(
            "kernelhub_session_commands_total", "kernelhub_session_events_total"
        )
        self.restarts = RestartWatch(self.store, self._reload, name=self.follower_name)
        self._boot = boot(self._start_following, watch=self.restarts)

    async def _reload(self) -> None:
        """The log changed under the shard: its sessions are folded afresh when next used."""
        self.shard.forget()

    def follows_stream(self, stream: str) -> bool:
        """Only this shard's sessions: the other shards' are never decoded here."""
        if not stream.startswith("session-"):
            return True
        try:
            return self.shard.owns(uuid.UUID(stream[len("session-") :]))
        except ValueError:
            return True

    def _count(self, command: ShardCommand[Any], result: Any) -> None:
        """The command (each item of a batch of decisions) and the events it appended."""
        commands, events = "kernelhub_session_commands_total", "kernelhub_session_events_total"
        if isinstance(command, CreateSession | CreateSessions):
            self.metrics.inc(commands, command=command.verb)
            enqueued = len(result) if isinstance(result, list) else 1
            self.metrics.inc(events, enqueued, type="session_enqueued")
            return
        for decided in result if isinstance(command, SessionBatch) else [result]:
            self.metrics.inc(commands, command=command.verb)
            for event in decided:
                self.metrics.inc(events, type=event.type)

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()

    async def react_many(self, events: list[Event]) -> None:
        await self.shard.on_events(events)

    async def handle(self, command: ShardCommand[Any]) -> Any:
        """The shard's one entry for commands: the value as the router sent it."""
        result = await self.shard.handle(command)
        self._count(command, result)
        return result

    async def wait(
        self, session_id: uuid.UUID, timeout: float, until: list[str] | None = None
    ) -> str:
        sid = uuid.UUID(str(session_id))
        if until is None:
            return await self.shard.wait(sid, timeout)
        return await self.shard.wait(sid, timeout, frozenset(until))

    async def status(self, session_id: uuid.UUID | str) -> str:
        return (await self.shard.get(uuid.UUID(str(session_id)))).status.name
