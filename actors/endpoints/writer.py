"""The endpoint writer: folds every endpoint's stream, decides, appends.

Not hosted by a Ray actor yet (the reconciler that will host it comes next); run in-process
by tests. One writer, and one decision at a time (a lock), is what keeps an endpoint name
unique among its owner's live endpoints and a route id owned by one endpoint across
streams: each endpoint's own stream version still fences each append, so a second writer
started by mistake fails its append instead of forking an endpoint's history.

At load the writer finds the endpoint streams through the store (``streams_named``), then
reads each: this runs once per start.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from actors.domain.commands.endpoints import EndpointCommand
from actors.domain.endpoints import EndpointState, decide, stream_of
from events import AnyPayload, RedisEventStore, WrongExpectedVersionError, events_for_command

__all__ = ["EndpointService"]

log = structlog.get_logger(__name__)

_RETRIES = 4


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EndpointService:
    def __init__(
        self,
        store: RedisEventStore,
        *,
        actor: str = "endpoints",
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self.actor = actor
        self.state = EndpointState()
        self.clock = clock
        self._lock = asyncio.Lock()

    async def load(self) -> EndpointService:
        self.state = EndpointState()
        for stream in await self.store.streams_named("endpoint-"):
            await self._refresh(stream)
        return self

    async def _refresh(self, stream: str) -> None:
        endpoint_id = _endpoint_of(stream)
        after = self.state.version(endpoint_id) if endpoint_id is not None else 0
        for event in await self.store.read_stream(stream, after + 1):
            self.state.apply(event.version, event.data)

    async def handle(self, command: EndpointCommand) -> list[AnyPayload]:
        """Decide on ``command`` and append what it changes; the events appended (or, for a
        retry of a command that took effect, the ones it appended then)."""
        event = command.event
        stream = stream_of(event.endpoint_id)
        async with self._lock:
            for _ in range(_RETRIES):
                await self._refresh(stream)
                payloads = decide(self.state, event, now=self.clock())
                if not payloads:
                    return await self._retried(command, stream)
                batch = events_for_command(
                    command.command_id, payloads, actor=self.actor, initiator=command.initiator
                )
                try:
                    result = await self.store.append(
                        stream, batch, self.state.version(event.endpoint_id)
                    )
                except WrongExpectedVersionError:
                    continue  # another writer appended: read it and decide again
                await self._refresh(stream)
                if result.duplicate:
                    return await self._retried(command, stream)
                return payloads
        raise RuntimeError(f"endpoint stream {stream} kept changing under {_RETRIES} attempts")

    async def _retried(self, command: EndpointCommand, stream: str) -> list[AnyPayload]:
        """What ``command`` appended before, if it did (a retry changes nothing now)."""
        return [
            e.data
            for e in await self.store.read_stream(stream)
            if e.command_id == command.command_id
        ]


def _endpoint_of(stream: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(hex=stream.removeprefix("endpoint-"))
    except ValueError:
        return None
