"""Inference endpoints as the gateway and the inference proxy look them up (from the
``tenancy`` read model, where endpoint events are folded: see
:mod:`projections.models.tenancy`). A record holds its routes (``routes``: route id ->
``{route_id, session_id, status, traffic_ratio, created_at}``); a destroyed endpoint has
none."""

from __future__ import annotations

from events import RedisEventStore
from events.keys import TenancyIndexes as Index
from events.readmodels import Generation

from .base import Record

__all__ = ["MAX_LISTED_ENDPOINTS", "EndpointLookups"]

MAX_LISTED_ENDPOINTS = 10_000
"""The most endpoints one listing reads."""


class EndpointLookups:
    def __init__(self, store: RedisEventStore) -> None:
        self.storage = store.read_models

    async def _active(self) -> Generation | None:
        return await self.storage.active("tenancy")

    async def endpoint(self, endpoint_id: str) -> Record | None:
        active = await self._active()
        return None if active is None else await active.record("endpoint", str(endpoint_id))

    async def _in(self, key: str) -> list[Record]:
        active = await self._active()
        if active is None:
            return []
        ids = (await active.members(key))[:MAX_LISTED_ENDPOINTS]
        return await active.records("endpoint", ids) if ids else []

    async def owned_by(self, user_id: str) -> list[Record]:
        return await self._in(Index.endpoints_of("user", str(user_id)))

    async def of_project(self, project_id: str) -> list[Record]:
        return await self._in(Index.endpoints_of("project", str(project_id)))

    async def every(self) -> list[Record]:
        return await self._in(Index.every("endpoint"))
