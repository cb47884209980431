"""Uploads and downloads of one file each, the protocol-free half of the transfer endpoint
(:mod:`actors.gateway.storage_routes` speaks HTTP and tus around it).

An upload is a token's declared ``size`` bytes written in order, across as many PATCHes as
the client likes (resuming where the staged file ends), into a staging file outside the
folder (:mod:`.staging`); the PATCH that completes it syncs the file and renames it into the
folder (:meth:`.tree.Tree.place`: no link followed, parents made). Each PATCH is admitted
against the quota (:mod:`.quota`) for the upload's whole size before it reads a byte, writes
at most what remains of the declared size, reads its body in pieces of at most
:data:`BUFFER` bytes, and gives up on a client silent for :data:`IDLE_S`. One PATCH per
upload at a time; :data:`~.staging.MAX_STAGED_PER_FOLDER` unfinished uploads per folder.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from ..domain.errors import DomainError
from .errors import BodyCut, IdleBody, OffsetConflict, TooLarge, TooManyUploads
from .staging import MAX_STAGED_PER_FOLDER, OffsetMismatch, Staged
from .tokens import Claims
from .tree import Tree
from .volume import Volume

__all__ = ["BUFFER", "IDLE_S", "Read", "Transfers"]

BUFFER = 1 << 20
"""Bytes of a PATCH body held in memory before they are written."""
IDLE_S = 120.0
"""A PATCH body that sends nothing for this long is abandoned (what arrived stays staged)."""

Read = Callable[[int], Awaitable[bytes]]


class Transfers:
    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self._busy: set[str] = set()

    async def prepare_upload(
        self, folder: uuid.UUID, path: Path, max_size: int, parts: Sequence[str], size: int
    ) -> None:
        """``request-upload``: refuse what the quota cannot take now; a 0-byte file is made
        at once (the client sends no PATCH for it)."""
        key = folder.hex
        await self.volume.on_tree(path, lambda t: t.check_upload(parts))
        async with self.volume.quota.lock(key):
            others = await self.volume.run(self.volume.staging.others, key, "")
            await self.volume.quota.admit(key, path, max_size, size, others=others)
        if size == 0:
            await self.volume.on_tree(path, lambda t: t.create_empty(parts))
            self.volume.quota.forget_usage(key)

    async def offset(self, claims: Claims) -> int:
        size = claims.size or 0
        return await self.volume.run(
            self.volume.staging.offset, claims.folder.hex, claims.upload_id, size
        )

    async def receive(
        self,
        claims: Claims,
        path: Path,
        max_size: int,
        parts: Sequence[str],
        *,
        offset: int,
        length: int,
        read: Read,
    ) -> int:
        """One PATCH: ``length`` bytes at ``offset``; the upload's offset after it."""
        size, key, upload = claims.size or 0, claims.folder.hex, claims.upload_id
        if upload in self._busy:
            raise OffsetConflict("another request is uploading to this token now")
        self._busy.add(upload)
        try:
            staging = self.volume.staging
            if await self.volume.run(staging.completed, key, upload):
                if offset == size and length == 0:
                    return size
                raise OffsetConflict(f"the upload is complete at offset {size}")
            if offset > size or length > size - offset:
                raise TooLarge(f"the upload declared {size} bytes; this PATCH goes past them")
            async with self.volume.quota.lock(key):
                others = await self.volume.run(staging.others, key, upload)
                if len(others) >= MAX_STAGED_PER_FOLDER:
                    raise TooManyUploads(
                        f"the folder has {len(others)} unfinished uploads, the most allowed"
                    )
                await self.volume.quota.admit(
                    key, path, max_size, size, others=others, upload_id=upload
                )
            try:
                staged = await self.volume.run(staging.open, key, upload, offset)
            except OffsetMismatch as exc:
                raise OffsetConflict(f"the upload is at {exc.actual} bytes, not {offset}") from None
            try:
                at = await self._write(staged, offset, offset + length, read)
                if at == size:
                    await self.volume.run(self._complete, staged, path, parts)
                    self.volume.quota.finished(key, upload)
                return at
            finally:
                staged.close()  # two close(2)s: never left undone by a cancellation
        finally:
            self._busy.discard(upload)

    async def _write(self, staged: Staged, at: int, end: int, read: Read) -> int:
        """The body's bytes written from ``at`` until ``end`` or the body ends; where the
        upload stands (a body cut short leaves what arrived, for a resume). Pieces are
        gathered up to :data:`BUFFER` bytes and written with one ``pwritev`` (no copy)."""
        pending: list[bytes] = []
        held = 0
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as idle:
                while at + held < end:
                    idle.reschedule(loop.time() + IDLE_S)
                    chunk = await read(min(BUFFER - held, end - at - held))
                    if not chunk:
                        break
                    pending.append(chunk)
                    held += len(chunk)
                    if held >= BUFFER:
                        at += await self.volume.run(_pwrite_all, staged.fd, pending, at)
                        pending, held = [], 0
        except TimeoutError:
            at += await self._flush(staged, pending, at)
            raise IdleBody(f"nothing arrived for {IDLE_S:.0f} s; resume from {at}") from None
        except ConnectionError:
            at += await self._flush(staged, pending, at)
            raise BodyCut(f"the connection dropped; resume from {at}") from None
        except DomainError:  # the reader refused to go on (access withdrawn, too slow)
            await self._flush(staged, pending, at)
            raise
        except asyncio.CancelledError:  # the server cancels a handler whose client left
            await asyncio.shield(self._flush(staged, pending, at))
            raise
        return at + await self._flush(staged, pending, at)

    async def _flush(self, staged: Staged, pending: list[bytes], at: int) -> int:
        """What arrived and is not written yet, written at ``at``; how many bytes."""
        if not pending:
            return 0
        return await self.volume.run(_pwrite_all, staged.fd, pending, at)

    def _complete(self, staged: Staged, path: Path, parts: Sequence[str]) -> None:
        with Tree.opened(path) as tree:
            if tree.owner is not None:
                os.fchown(staged.fd, tree.owner.uid, tree.owner.gid)
            os.fchmod(staged.fd, 0o644)
            os.fsync(staged.fd)
            tree.place(staged.dir_fd, staged.name, parts)
        self.volume.staging.finish(staged)

    async def open_download(self, path: Path, parts: Sequence[str]) -> tuple[int, os.stat_result]:
        """The regular file ``parts`` opened for reading (the caller closes it)."""
        return await self.volume.on_tree(path, lambda t: t.open_file(parts))

    async def read_at(self, fd: int, offset: int, size: int) -> bytes:
        return await self.volume.run(os.pread, fd, size, offset)


def _pwrite_all(fd: int, pieces: list[bytes], offset: int) -> int:
    """``pieces`` written in order at ``offset`` (``pwritev``, again for a short write)."""
    total = sum(len(p) for p in pieces)
    views = [memoryview(p) for p in pieces]
    left = total
    while left:
        written = os.pwritev(fd, views, offset)
        offset, left = offset + written, left - written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
    return total
