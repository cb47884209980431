"""What every actor shell shares: booting from the constructor, and following the log.

Ray runs an async actor's ``__init__`` inside its event loop, so loops started there make a
restarted actor (``max_restarts=-1``) resume its work by itself, without anyone calling it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from events import Event, RedisEventStore, Subscription, correlated

__all__ = ["Follower", "boot"]

log = structlog.get_logger(__name__)


def boot(coro: Any) -> asyncio.Task[None]:
    """Start an actor's loops from its constructor (see the module docstring)."""
    return asyncio.get_event_loop().create_task(coro)


class Follower:
    """Runs ``self.react`` for every event, resuming after a restart from the last position
    it recorded: reactions are at-least-once, and idempotent (their command ids derive from
    the event's id), so nothing an actor was told before it died is lost."""

    store: RedisEventStore
    follower_name: str
    interests: frozenset[str] | None = None
    """The event types ``react`` cares about (``None``: all); others are never decoded."""

    def follows_stream(self, stream: str) -> bool:
        """Whether events of ``stream`` concern this actor (all, unless narrowed)."""
        return True

    _boot: asyncio.Task[None]
    _subscription: Subscription | None = None
    _task: asyncio.Task[None] | None = None

    async def _start_following(self) -> None:
        after = await self.store.followers.get(self.follower_name)
        if after is None:
            after = await self.store.head()
            await self.store.followers.set(self.follower_name, after)
        self._subscription = self.store.subscribe(
            after, block_ms=200, types=self.interests, streams=self.follows_stream
        )
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        """React to what the log holds, a buffered batch at a time, and record the position
        once per batch (a restart replays at most one batch: reactions are idempotent)."""
        subscription = self._subscription
        assert subscription is not None
        async for event in subscription:
            batch = [event, *subscription.take_buffered()]
            await self.react_many(batch)
            await self.store.followers.set(self.follower_name, batch[-1].position)

    async def react_many(self, events: list[Event]) -> None:
        for event in events:
            try:
                with correlated(event.correlation_id):  # what it does is on that event's behalf
                    await self.react(event)
            except Exception:  # one failed reaction must not stop the actor following the log
                log.exception("reaction failed", actor=self.follower_name, position=event.position)

    async def react(self, event: Event) -> None:
        raise NotImplementedError

    async def ready(self) -> bool:
        """Returns once the actor has rebuilt from the log and follows it."""
        await asyncio.shield(self._boot)
        return True
