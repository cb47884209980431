"""The gateway's reader of the tenancy streams: revocations take effect the moment their
event is read (docs/admin.md, "Revocation").

One subscription (one Redis connection in a blocking ``XREAD``) reads the keypair and user
events of the log as they are appended; each is folded by :func:`.revocation.change_of`:

- a revocation is applied at once, by :meth:`.auth.Authenticator.revoke`: the keypair or
  user is refused by every later request and every open stream of it is closed (measured
  in ``tests/test_admin_revocation.py``: a few milliseconds after the append);
- what the read model must show first (a restoration, a changed role or rate limit) waits in
  order in a second task until the tenancy read model's checkpoint has passed the event,
  then drops the cached entries (:meth:`.auth.Authenticator.settle`), so the next load reads
  the new record and never the old one.

At start, before the gateway answers anything, the events the read model has not folded yet
are read from the two streams (a keypair deactivated just before a restart, with the
projection behind, is refused from the first request); the subscription then follows from
the head pinned before that read, so nothing falls between.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_right
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

import structlog
from aiohttp import web

from events import RedisEventStore
from events.envelope import Event, Position, position_key

from .revocation import STREAMS, TYPES, Change, change_of

if TYPE_CHECKING:
    from .auth import Authenticator

__all__ = ["RevocationFollower", "follow_revocations"]

log = structlog.get_logger(__name__)

SETTLE_TIMEOUT_S = 30.0
"""How long a deferred change waits for the read model before it is applied anyway (a
projector that is down must not hold a restoration for ever; its cache entry then reloads
whatever the read model says, as before this module)."""
_POLL_S = 0.01
_START_TIMEOUT_S = 10.0
_RETRY_MIN_S = 0.1
_RETRY_MAX_S = 2.0


class RevocationFollower:
    def __init__(self, store: RedisEventStore, auth: Authenticator) -> None:
        self.store = store
        self.auth = auth
        self._deferred: asyncio.Queue[tuple[Position, Change]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.position: Position | None = None
        """The last event read (``None`` before the first)."""

    async def start(self) -> RevocationFollower:
        head: Position | Literal["$"] = "$"
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                head = await self.store.head()  # pinned first: the subscription resumes after it
                for event in await self._unfolded(head):
                    self.apply(event)
        except Exception as exc:  # Redis away at start: follow from the head, refuse as it comes
            log.warning("revocations not caught up at start", error=repr(exc))
        self._tasks = [
            asyncio.create_task(self._follow(head), name="gateway-revocations"),
            asyncio.create_task(self._settle(), name="gateway-revocations-settle"),
        ]
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    def apply(self, event: Event) -> None:
        """Fold one event: revoke now, defer what waits for the read model."""
        change = change_of(event.type, event.data)
        self.position = event.position
        if change is None:
            return
        if change.revokes:
            closed = self.auth.revoke(change, event.position)
            log.info(
                "revoked",
                reason=change.reason,
                streams_closed=closed,
                lag_ms=round(time.time() * 1000 - event.position_ms, 1),
            )
        self._deferred.put_nowait((event.position, change))

    async def _unfolded(self, head: Position) -> list[Event]:
        """The events of :data:`STREAMS` after the read model's checkpoint, up to ``head``."""
        active = await self.store.read_models.active("tenancy")
        if active is None:
            return []  # no read model yet: it will fold everything before it answers
        after = position_key(await active.checkpoint())
        until = position_key(head)
        found: list[Event] = []
        for stream in sorted(STREAMS):
            keys = [position_key(p) for p in await self.store.stream_positions(stream)]
            first = bisect_right(keys, after)  # positions are in version order
            if first == len(keys):
                continue
            for event in await self.store.read_stream(stream, from_version=first + 1):
                if event.type in TYPES and position_key(event.position) <= until:
                    found.append(event)
        return sorted(found, key=lambda e: position_key(e.position))

    async def _follow(self, after: Position | Literal["$"]) -> None:
        """Follow from ``after`` (``"$"``: the head when Redis first answers) for the
        gateway's life: a subscription that fails (Redis restarted, a connection dropped) is
        opened again after the last event applied, so no revocation is skipped and none
        stops taking effect (review F14)."""
        backoff = _RETRY_MIN_S
        while True:
            if self.position is not None and (
                after == "$" or position_key(self.position) > position_key(after)
            ):
                after = self.position
            subscription = self.store.subscribe(
                after, block_ms=1000, types=TYPES, streams=lambda s: s in STREAMS
            )
            try:
                async for event in subscription:
                    backoff = _RETRY_MIN_S
                    try:
                        self.apply(event)
                    except Exception:  # one odd event must not stop every later revocation
                        log.exception("could not apply a tenancy event", position=event.position)
            except Exception as exc:
                log.warning(
                    "revocations: the subscription failed; following again", error=repr(exc)
                )
            finally:
                with contextlib.suppress(Exception):
                    await subscription.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _RETRY_MAX_S)

    async def _settle(self) -> None:
        while True:
            position, change = await self._deferred.get()
            await self._folded(position)
            self.auth.settle(change, position)

    async def _folded(self, position: Position) -> None:
        """Wait until the tenancy read model has folded ``position`` (bounded)."""
        wanted = position_key(position)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                active = await self.store.read_models.active("tenancy")
                if active is None or position_key(await active.checkpoint()) >= wanted:
                    return
            except Exception as exc:  # Redis blip: wait and ask again
                log.warning("read model checkpoint unreadable", error=repr(exc))
            await asyncio.sleep(_POLL_S)
        log.warning("the tenancy read model is behind; applying a change anyway", at=position)


async def follow_revocations(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` of the gateway's application: the follower runs from before the
    first request is answered until the application stops."""
    ctx = app["ctx"]
    follower = await RevocationFollower(ctx.store, ctx.auth).start()
    app["revocations"] = follower
    try:
        yield
    finally:
        await follower.stop()
