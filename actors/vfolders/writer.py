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

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import structlog

from actors.domain.commands.vfolders import VFolderCommand
from actors.domain.errors import VFolderOperationFailed
from actors.domain.vfolders import VFolderState, decide, stream_of
from events import AnyPayload, RedisEventStore, WrongExpectedVersionError, events_for_command

__all__ = ["MountedBy", "VFolderService"]

log = structlog.get_logger(__name__)

MountedBy = Callable[[uuid.UUID], Awaitable[list[str]]]
"""The live sessions that mount a folder (a folder is not trashed under them)."""

_RETRIES = 4


async def _no_mounts(_folder_id: uuid.UUID) -> list[str]:
    return []


class VFolderService:
    def __init__(
        self,
        store: RedisEventStore,
        *,
        actor: str = "tenancy",
        mounted_by: MountedBy | None = None,
    ) -> None:
        self.store = store
        self.actor = actor
        self.state = VFolderState()
        self.mounted_by = mounted_by or _no_mounts
        self._lock = asyncio.Lock()

    async def load(self) -> VFolderService:
        self.state = VFolderState()
        for stream in await self.store.streams_named("vfolder-"):
            await self._refresh(stream)
        return self

    async def _refresh(self, stream: str) -> None:
        folder_id = _folder_of(stream)
        after = self.state.version(folder_id) if folder_id is not None else 0
        for event in await self.store.read_stream(stream, after + 1):
            self.state.apply(event.version, event.data)

    async def handle(self, command: VFolderCommand) -> list[AnyPayload]:
        """Decide on ``command`` and append what it changes; the events appended (or, for a
        retry of a command that took effect, the ones it appended then)."""
        event = command.event
        stream = stream_of(event.folder_id)
        async with self._lock:
            for _ in range(_RETRIES):
                await self._refresh(stream)
                payloads = decide(self.state, event, max_count=command.max_count)
                if not payloads:
                    return await self._retried(command, stream)
                if event.type in ("vfolder_trashed", "vfolder_purged"):
                    users = await self.mounted_by(event.folder_id)
                    if users:
                        raise VFolderOperationFailed(
                            "the folder is mounted by a live session "
                            f"({', '.join(users[:3])}); terminate it first"
                        )
                batch = events_for_command(
                    command.command_id, payloads, actor=self.actor, initiator=command.initiator
                )
                try:
                    result = await self.store.append(
                        stream, batch, self.state.version(event.folder_id)
                    )
                except WrongExpectedVersionError:
                    continue  # another writer appended: read it and decide again
                await self._refresh(stream)
                if result.duplicate:
                    return await self._retried(command, stream)
                return payloads
        raise RuntimeError(f"folder stream {stream} kept changing under {_RETRIES} attempts")

    async def _retried(self, command: VFolderCommand, stream: str) -> list[AnyPayload]:
        """What ``command`` appended before, if it did (a retry changes nothing now)."""
        return [
            e.data
            for e in await self.store.read_stream(stream)
            if e.command_id == command.command_id
        ]


def _folder_of(stream: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(hex=stream.removeprefix("vfolder-"))
    except ValueError:
        return None
