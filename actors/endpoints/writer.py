"""The endpoint writer: folds every endpoint's stream, decides, appends.

Hosted by the ``serving`` actor (:mod:`actors.hosts.serving`) beside the reconciler that
appends through it (tests also run it in-process). One writer, and one decision at a time
(a lock), is what keeps an endpoint name unique among its owner's live endpoints and a
route id owned by one endpoint across streams: each endpoint's own stream version still
fences each append, so a second writer started by mistake fails its append instead of
forking an endpoint's history.

At load the writer finds the endpoint streams through the store (``streams_named``), then
reads each: this runs once per start. Each event is folded with the time the log took it
(its position's Redis time): the endpoints' failure memory counts in the log's time, so it
reads the same after a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from actors.domain.commands.endpoints import EndpointCommand
from actors.domain.endpoints import EndpointState, decide, decide_downscale
from actors.runtime.aggregate_writer import AggregateWriter
from events import AnyPayload, RedisEventStore

__all__ = ["EndpointService"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EndpointService(AggregateWriter[EndpointState]):
    def __init__(
        self,
        store: RedisEventStore,
        *,
        actor: str = "endpoints",
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        super().__init__(store, "endpoint-", EndpointState, actor=actor)
        self.clock = clock

    async def _refresh(self, stream: str) -> None:
        """As the base's, with each event's time (``position_ms``) folded in."""
        try:
            endpoint_id: uuid.UUID | None = uuid.UUID(hex=stream.removeprefix(self.prefix))
        except ValueError:
            endpoint_id = None
        after = self.state.version(endpoint_id) if endpoint_id is not None else 0
        for event in await self.store.read_stream(stream, after + 1):
            self.state.apply(event.version, event.data, event.position_ms)

    async def load(self) -> EndpointService:
        await self._load_streams()
        return self

    async def handle(self, command: EndpointCommand) -> list[AnyPayload]:
        """Decide on ``command`` and append what it changes; the events appended (or, for a
        retry of a command that took effect, the ones it appended then)."""
        event = command.event

        def decision() -> list[AnyPayload]:
            if command.downscale:
                route_id = event.route_id  # type: ignore[union-attr]  # checked by the command
                return decide_downscale(self.state, route_id, event.endpoint_id)
            return decide(self.state, event, now=self.clock())

        return await self._decide_and_append(
            event.endpoint_id, command.command_id, command.initiator, decision
        )
