"""What every actor shell shares: booting from the constructor, and following the log.

Ray runs an async actor's ``__init__`` inside its event loop, so loops started there make a
restarted actor (``max_restarts=-1``) resume its work by itself, without anyone calling it.
An actor (re)started while Redis is away waits for it (:func:`boot`), and one whose log
changed under it (Redis restarted and lost its last second) reloads once
(:class:`~actors.runtime.restarts.RestartWatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from actors.runtime.outage import Outages, until_reachable
from actors.runtime.restarts import RestartWatch
from events import Event, RedisEventStore, Subscription, correlated
from events.server import log_unreachable

__all__ = ["Follower", "boot"]

log = structlog.get_logger(__name__)


def boot(
    start: Callable[[], Awaitable[None]], *, watch: RestartWatch | None = None
) -> asyncio.Task[None]:
    """Start an actor from its constructor (see the module docstring): ``start`` is run
    until it gets through while the log is away (so it must be safe to run again after a
    partial start), with ``watch``'s baseline taken before and its loop started after."""

    async def run() -> None:
        name = watch.name if watch is not None else "actor"
        if watch is not None:
            await until_reachable(f"{name}: start", watch.baseline)
        await until_reachable(f"{name}: start", start)
        if watch is not None:
            watch.start()

    return asyncio.get_event_loop().create_task(run())


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

    selects: Callable[[str, str], bool] | None = None
    """A last say on an event (its stream and type) before it is decoded, when set."""

    _boot: asyncio.Task[None]
    _subscription: Subscription | None = None
    _task: asyncio.Task[None] | None = None
    restarts: RestartWatch | None = None
    """The actor's watch for Redis restarts: checked before the first batch read after the
    subscription had to reconnect, so no reaction is decided on memory the restart made
    stale (the watch's own loop may only ask a second later)."""

    async def _start_following(self) -> None:
        """Follow from the recorded position (safe to call again: a boot retried after an
        outage does not follow twice)."""
        if self._task is not None:
            return
        after = await self.store.followers.get(self.follower_name)
        if after is None:
            after = await self.store.head()
            await self.store.followers.set(self.follower_name, after)
        self._subscription = self.store.subscribe(
            after,
            block_ms=200,
            types=self.interests,
            streams=self.follows_stream,
            select=self.selects,
        )
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        """React to what the log holds, a buffered batch at a time, and record the position
        once per batch (a restart replays at most one batch: reactions are idempotent).

        While the log is away a batch whose reactions failed on it is reacted to again once
        it is back (reactions are idempotent), and its position recorded then; any other
        failure of a batch is logged and the actor follows on. Nothing ends this loop but
        the actor."""
        subscription = self._subscription
        assert subscription is not None
        outages = Outages(f"{self.follower_name}: following the log")
        reconnects = subscription.reconnects
        async for event in subscription:
            batch = [event, *subscription.take_buffered()]
            if subscription.reconnects != reconnects and self.restarts is not None:
                reconnects = subscription.reconnects
                await until_reachable(f"{self.follower_name}: restart check", self.restarts.check)
            while True:
                try:
                    await self.react_many(batch)
                    await self.store.followers.set(self.follower_name, batch[-1].position)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not log_unreachable(exc):
                        outages.failed(exc)
                        with contextlib.suppress(Exception):  # a best effort: replayed if not
                            await self.store.followers.set(self.follower_name, batch[-1].position)
                        break
                    await asyncio.sleep(outages.failed(exc))
                    continue
                outages.succeeded()
                break

    async def react_many(self, events: list[Event]) -> None:
        """Each event's reaction; one that failed because the log is away fails the batch
        (it is reacted to again once the log is back: reactions are idempotent)."""
        for event in events:
            try:
                with correlated(event.correlation_id):  # what it does is on that event's behalf
                    await self.react(event)
            except Exception as exc:  # one failed reaction must not stop the actor following
                if log_unreachable(exc):
                    raise
                log.exception("reaction failed", actor=self.follower_name, position=event.position)

    async def react(self, event: Event) -> None:
        raise NotImplementedError

    async def ready(self) -> bool:
        """Returns once the actor has rebuilt from the log and follows it."""
        await asyncio.shield(self._boot)
        return True
