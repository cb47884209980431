"""A single writer of one stream per aggregate (``<prefix><id hex>``): what the vfolder
and endpoint writers share.

It folds every stream of its prefix at load (found through the store's
``streams_named``), and runs one decision at a time (a lock): that is what keeps a rule
that spans aggregates (a name unique among its owner's) true, while each aggregate's own
stream version still fences every append, so a second writer started by mistake fails
its append instead of forking a history. A command's retry (same command id) is answered
from the log with what it appended the first time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from events import AnyPayload, RedisEventStore, WrongExpectedVersionError, events_for_command
from events.envelope import Initiator

__all__ = ["AggregateState", "AggregateWriter"]

_RETRIES = 4


class AggregateState(Protocol):
    def version(self, aggregate_id: uuid.UUID) -> int: ...

    def apply(self, version: int, event: AnyPayload) -> None: ...


S = TypeVar("S", bound=AggregateState)


class AggregateWriter(Generic[S]):
    def __init__(
        self, store: RedisEventStore, prefix: str, new_state: Callable[[], S], *, actor: str
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.actor = actor
        self._new_state = new_state
        self.state = new_state()
        self._lock = asyncio.Lock()

    def stream_of(self, aggregate_id: uuid.UUID) -> str:
        return f"{self.prefix}{aggregate_id.hex}"

    async def _load_streams(self) -> None:
        self.state = self._new_state()
        for stream in await self.store.streams_named(self.prefix):
            await self._refresh(stream)

    async def reload(self) -> None:
        """Fold every stream afresh, between two decisions: the log changed under the writer
        (Redis restarted and may have lost its last second, leaving versions held here
        ahead of the streams)."""
        async with self._lock:
            await self._load_streams()

    async def _refresh(self, stream: str) -> None:
        try:
            aggregate_id: uuid.UUID | None = uuid.UUID(hex=stream.removeprefix(self.prefix))
        except ValueError:
            aggregate_id = None
        after = self.state.version(aggregate_id) if aggregate_id is not None else 0
        for event in await self.store.read_stream(stream, after + 1):
            self.state.apply(event.version, event.data)

    async def _decide_and_append(
        self,
        aggregate_id: uuid.UUID,
        command_id: uuid.UUID,
        initiator: Initiator | None,
        decide: Callable[[], list[AnyPayload]],
        before_append: Callable[[list[AnyPayload]], Awaitable[None]] | None = None,
    ) -> list[AnyPayload]:
        """Decide (on the aggregate's stream read afresh) and append; the events appended
        (or, for a retry of a command that took effect, the ones it appended then).
        ``before_append`` may refuse what was decided, from outside the log."""
        stream = self.stream_of(aggregate_id)
        async with self._lock:
            for _ in range(_RETRIES):
                await self._refresh(stream)
                payloads = decide()
                if not payloads:
                    return await self._retried(command_id, stream)
                if before_append is not None:
                    await before_append(payloads)
                batch = events_for_command(
                    command_id, payloads, actor=self.actor, initiator=initiator
                )
                try:
                    result = await self.store.append(
                        stream, batch, self.state.version(aggregate_id)
                    )
                except WrongExpectedVersionError as conflict:
                    if conflict.actual < conflict.expected:  # the log went back under us
                        await self._load_streams()
                    continue  # another writer appended: read it and decide again
                await self._refresh(stream)
                if result.duplicate:
                    return await self._retried(command_id, stream)
                return payloads
        raise RuntimeError(f"stream {stream} kept changing under {_RETRIES} attempts")

    async def _retried(self, command_id: uuid.UUID, stream: str) -> list[AnyPayload]:
        """What the command appended before, if it did (a retry changes nothing now)."""
        return [e.data for e in await self.store.read_stream(stream) if e.command_id == command_id]
