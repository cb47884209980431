"""Noticing that the log changed under an actor, and reloading once.

Actors hold what they folded from the log in memory: stream versions (the expected version
of their next append), positions, aggregates, the ledger. With ``appendfsync everysec`` a
Redis crash loses up to its last second, so after the restart that memory can be *ahead*
of the log: each append then fails with a version conflict, and a decision is taken on
events that no longer exist, until the actor restarts. A :class:`RestartWatch` asks Redis
every ``interval_s`` which process serves the log and where its head is
(:meth:`events.RedisEventStore.server_mark`); when that says the log may have gone back
(:func:`events.server.needs_reload`: a new ``run_id``, or a head behind the one seen) it
runs the actor's ``reload`` once, which reads again from the log what the actor holds.

The first mark is taken before the actor loads (:meth:`RestartWatch.baseline`), so a
restart during the load is not missed; the loop itself starts once the actor is up
(:meth:`RestartWatch.start`), so a reload never races the first load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from events import RedisEventStore
from events.server import ServerMark, needs_reload

from .outage import Outages, until_reachable

__all__ = ["DEFAULT_INTERVAL_S", "RestartWatch"]

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL_S = 1.0
"""How often an actor asks (one ``INFO server`` and one ``XINFO`` a second per actor)."""


class RestartWatch:
    def __init__(
        self,
        store: RedisEventStore,
        reload: Callable[[], Awaitable[None]],
        *,
        name: str,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.store = store
        self.reload = reload
        self.name = name
        self.interval_s = interval_s
        self.seen: ServerMark | None = None
        self.reloads = 0
        """How many times the log changed under this actor and it reloaded."""
        self._task: asyncio.Task[None] | None = None
        self._checking = asyncio.Lock()

    async def baseline(self) -> None:
        """The mark to compare with: taken before the actor reads the log at start."""
        self.seen = await self.store.server_mark()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"{self.name}-restart-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def check(self) -> bool:
        """Ask once; reload if the log changed. Whether it reloaded. One check at a time
        (the loop's and a follower's, :meth:`Follower._follow`): a restart reloads once."""
        async with self._checking:
            return await self._check()

    async def _check(self) -> bool:
        mark = await self.store.server_mark()
        if not needs_reload(self.seen, mark):
            self.seen = mark
            return False
        log.warning(
            "the log changed under this actor (Redis restarted or its data went back); "
            "reloading what it holds from the log",
            actor=self.name,
            run_id=mark.run_id,
            head=mark.head,
            head_before=self.seen.head if self.seen else None,
        )
        await until_reachable(f"{self.name}: reload", self.reload)
        self.seen = mark  # only once reloaded: a reload cut short is tried again
        self.reloads += 1
        return True

    async def _run(self) -> None:
        outages = Outages(f"{self.name}: watching for Redis restarts")
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await asyncio.sleep(outages.failed(exc))
            else:
                outages.succeeded()
            await asyncio.sleep(self.interval_s)
