"""The vfolder writer: folds every folder's stream, decides, appends.

Hosted by the ``tenancy`` Ray actor (:mod:`actors.hosts.tenancy`, method ``vfolder``), or
run in-process by tests. One writer, and one decision at a time (a lock), is what keeps a
folder name unique among its owner's folders across streams: each folder's own stream
version still fences each append, so a second writer started by mistake fails its
append instead of forking a folder's history.

At load the writer finds the folder streams by their index keys (one ``SCAN`` of
``<prefix>:s:vfolder-*``), then reads each: folders are few per user, and this runs once
per actor start.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from actors.domain.commands.vfolders import VFolderCommand
from actors.domain.errors import VFolderOperationFailed
from actors.domain.vfolders import VFolderState, decide
from actors.runtime.aggregate_writer import AggregateWriter
from events import AnyPayload, RedisEventStore

__all__ = ["MountedBy", "VFolderService"]

MountedBy = Callable[[uuid.UUID], Awaitable[list[str]]]
"""The live sessions that mount a folder (a folder is not trashed under them)."""


async def _no_mounts(_folder_id: uuid.UUID) -> list[str]:
    return []


class VFolderService(AggregateWriter[VFolderState]):
    def __init__(
        self,
        store: RedisEventStore,
        *,
        actor: str = "tenancy",
        mounted_by: MountedBy | None = None,
    ) -> None:
        super().__init__(store, "vfolder-", VFolderState, actor=actor)
        self.mounted_by = mounted_by or _no_mounts

    async def load(self) -> VFolderService:
        await self._load_streams()
        return self

    async def handle(self, command: VFolderCommand) -> list[AnyPayload]:
        """Decide on ``command`` and append what it changes; the events appended (or, for a
        retry of a command that took effect, the ones it appended then)."""
        event = command.event

        async def not_under_a_session(_payloads: list[AnyPayload]) -> None:
            if event.type not in ("vfolder_trashed", "vfolder_purged"):
                return
            users = await self.mounted_by(event.folder_id)
            if users:
                raise VFolderOperationFailed(
                    "the folder is mounted by a live session "
                    f"({', '.join(users[:3])}); terminate it first"
                )

        return await self._decide_and_append(
            event.folder_id,
            command.command_id,
            command.initiator,
            lambda: decide(self.state, event, max_count=command.max_count),
            not_under_a_session,
        )
