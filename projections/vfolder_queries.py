"""Virtual folders as the gateway looks them up (from the ``tenancy`` read model, where
folder events are folded: see :mod:`projections.models.tenancy`)."""

from __future__ import annotations

from events import RedisEventStore
from events.keys import TenancyIndexes as Index
from events.readmodels import Generation

from .base import Record

__all__ = ["MAX_LISTED", "VFolderLookups"]

MAX_LISTED = 10_000
"""The most folders one listing reads (a user's, a project's, an admin's)."""


class VFolderLookups:
    def __init__(self, store: RedisEventStore) -> None:
        self.storage = store.read_models

    async def _active(self) -> Generation | None:
        return await self.storage.active("tenancy")

    async def folder(self, folder_id: str) -> Record | None:
        active = await self._active()
        return None if active is None else await active.record("vfolder", str(folder_id))

    async def _in(self, key: str, kind: str = "vfolder") -> list[Record]:
        active = await self._active()
        if active is None:
            return []
        ids = (await active.members(key))[:MAX_LISTED]
        return await active.records(kind, ids) if ids else []

    async def owned_by(self, user_id: str) -> list[Record]:
        return await self._in(Index.vfolders_of("user", str(user_id)))

    async def of_project(self, project_id: str) -> list[Record]:
        return await self._in(Index.vfolders_of("group", str(project_id)))

    async def shared_with(self, user_id: str) -> list[Record]:
        return await self._in(Index.vfolders_of("shared", str(user_id)))

    async def every(self) -> list[Record]:
        return await self._in(Index.every("vfolder"))

    async def invitations_for(self, user_id: str) -> list[Record]:
        return await self._in(Index.invitations_for(str(user_id)), "invitation")

    async def invitation(self, invitation_id: str) -> Record | None:
        active = await self._active()
        return None if active is None else await active.record("invitation", invitation_id)
