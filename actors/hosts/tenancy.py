"""``tenancy``: the single writer of the tenancy streams (see :mod:`actors.tenancy.writer`)
and of the virtual folders' (:mod:`actors.vfolders.writer`).

Commands arrive as the values of :mod:`actors.domain.commands.tenancy`, passed unchanged to
the service's one ``handle``; each keeps its command id, so a retry after ``RayActorError``
has one effect.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import ray

from actors.domain.commands.tenancy import TenancyCommand
from actors.domain.commands.vfolders import VFolderCommand
from actors.runtime.restarts import RestartWatch
from actors.tenancy.writer import TenancyService
from actors.vfolders.writer import VFolderService
from events import RedisEventStore
from events.secrets import SecretBox
from projections.mount_queries import live_sessions_mounting

from ._follower import boot
from ._traced import traced_actor

__all__ = ["TenancyActor"]


@ray.remote(max_restarts=-1)
@traced_actor
class TenancyActor:
    def __init__(self, redis_url: str, master_key_path: str, prefix: str = "kh") -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        box = SecretBox.from_file(Path(master_key_path), create=True)
        self.service = TenancyService(self.store, box)
        self.vfolders = VFolderService(self.store, mounted_by=self._mounting)
        self.restarts = RestartWatch(self.store, self._reload, name="tenancy")
        self._boot = boot(self._load, watch=self.restarts)

    async def _load(self) -> None:
        await self.service.load()
        await self.vfolders.load()

    async def _reload(self) -> None:
        """The log changed under the writers (Redis restarted): both fold afresh."""
        await self.service.load()
        await self.vfolders.reload()

    async def _mounting(self, folder_id: uuid.UUID) -> list[str]:
        """The live sessions that mount a folder (the writer refuses to trash it under
        them), from the sessions read model."""
        return await live_sessions_mounting(self.store, folder_id)

    async def ready(self) -> bool:
        await self._boot
        return True

    async def handle(self, command: TenancyCommand[Any]) -> Any:
        """Run one tenancy command, the value as its caller built it (a conflict with
        another writer is a refresh and a second look, inside the service)."""
        await self._boot
        return await self.service.handle(command)

    async def vfolder(self, command: VFolderCommand) -> list[Any]:
        """Run one folder command (the single writer of the ``vfolder-<id>`` streams)."""
        await self._boot
        return await self.vfolders.handle(command)
