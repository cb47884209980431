"""Virtual folders from Python: :class:`AsyncVFolders` (asyncio) and :class:`VFolders`
(blocking), the calls of the official client's ``backend.ai vfolder`` on ``/folders``.

    from kernelhub import Client
    from kernelhub.sdk.vfolders import VFolders

    with Client() as client:
        folders = VFolders(client)
        folders.create("data")
        folders.upload("data", ["results.csv"], progress=lambda done, total: ...)
        print([f["name"] for f in folders.list()])

A folder is named by its name or its id; another user's folder is :class:`NotFound` exactly
as a missing one. Answers are the gateway's JSON (dicts), as documented in docs/sdk.md.
Uploads and downloads go to the transfer endpoint the gateway names (tus ``PATCH`` chunks,
ranged ``GET``), resuming after a broken connection (:mod:`._folder_transfer`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx

from ._blocking import BlockingTwin
from ._folder_transfer import CHUNK_SIZE, Progress, download_file, upload_file
from .errors import ClientError

if TYPE_CHECKING:
    from .aio import AsyncClient

__all__ = ["AsyncVFolders", "VFolders"]

Record = dict[str, Any]
Records = list[Record]
Names = list[str]
Paths = list[Path]
Permission = Literal["ro", "rw", "wd"]
UsageMode = Literal["general", "model", "data"]


def _path(name: str, tail: str = "") -> str:
    return f"/folders/{quote(name, safe='')}{tail}"


def _remote_name(path: Path, base: Path) -> str:
    """``path`` relative to ``base``, as the folder will name it (the official client's
    rule: a file outside the base directory is refused)."""
    try:
        relative = path.resolve().relative_to(base.resolve())
    except ValueError:
        raise ClientError(f"{path} is not under {base}; pass base_dir") from None
    return relative.as_posix()


def _local_target(dest: Path, remote: str) -> Path:
    """Where a downloaded ``remote`` path lands below ``dest`` (never outside it)."""
    parts = PurePosixPath(remote).parts
    if not parts or remote.startswith("/") or ".." in parts:
        raise ClientError(f"{remote!r} is not a path inside the folder")
    return dest.joinpath(*parts)


class AsyncVFolders:
    """The folder operations over an :class:`~kernelhub.sdk.aio.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.client.request(method, path, json_body=body)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    # ---- folders --------------------------------------------------------------------------
    async def create(
        self,
        name: str,
        *,
        host: str | None = None,
        group: str | None = None,
        usage_mode: UsageMode = "general",
        permission: Permission = "rw",
        quota: int | str = 0,
        cloneable: bool = False,
    ) -> Record:
        """A new folder (a project's with ``group``, for its domain's admins); ``quota`` in
        bytes or with a suffix (``"10g"``), within the keypair policy's bound."""
        body = {
            "name": name,
            "host": host,
            "group": group,
            "usage_mode": usage_mode,
            "permission": permission,
            "quota": quota,
            "cloneable": cloneable,
        }
        answer: Record = await self._json("POST", "/folders", body)
        return answer

    async def list(self, *, all: bool = False) -> list[Record]:
        """The folders the caller may see (``all``: an admin's domain's, a superadmin's all)."""
        answer: list[Record] = await self._json("GET", "/folders", {"all": all})
        return answer

    async def info(self, name: str) -> Record:
        """``numFiles``, ``used_bytes`` (a bounded count: ``usage_complete`` says if whole),
        the caller's ``permission`` and ``is_owner``, ``status``, ``max_size``, ..."""
        answer: Record = await self._json("GET", _path(name))
        return answer

    async def rename(self, name: str, new_name: str) -> None:
        await self._json("POST", _path(name, "/rename"), {"new_name": new_name})

    async def update_options(
        self, name: str, *, permission: Permission | None = None, cloneable: bool | None = None
    ) -> None:
        body = {"permission": permission, "cloneable": cloneable}
        await self._json("POST", _path(name, "/update-options"), body)

    async def delete(self, name: str) -> None:
        """To the trash (``status`` ``delete-pending``): :meth:`restore` or :meth:`purge`."""
        await self._json("DELETE", _path(name))

    async def restore(self, name: str) -> None:
        await self._json("POST", _path(name, "/restore-from-trash"))

    async def purge(self, name: str) -> None:
        """A folder in the trash, gone for good with its files."""
        await self._json("DELETE", _path(name, "/delete-from-trash"))

    async def clone(
        self,
        name: str,
        target_name: str,
        *,
        usage_mode: UsageMode = "general",
        permission: Permission = "rw",
        cloneable: bool = False,
    ) -> Record:
        body = {
            "target_name": target_name,
            "usage_mode": usage_mode,
            "permission": permission,
            "cloneable": cloneable,
        }
        answer: Record = await self._json("POST", _path(name, "/clone"), body)
        return answer

    async def hosts(self) -> Record:
        """``{"default": host, "allowed": [hosts], "volume_info": {...}}``."""
        answer: Record = await self._json("GET", "/folders/_/hosts")
        return answer

    # ---- sharing ---------------------------------------------------------------------------
    async def invite(
        self, name: str, emails: Sequence[str], *, permission: Permission = "ro"
    ) -> Record:
        """``{"invited_ids": [...], "not_found": [...]}``."""
        body = {"perm": permission, "user_ids": [*emails]}
        answer: Record = await self._json("POST", _path(name, "/invite"), body)
        return answer

    async def invitations(self) -> Records:
        """The caller's pending invitations (``id``, ``inviter``, ``vfolder_name``, ``perm``)."""
        answer: Record = await self._json("GET", "/folders/invitations/list")
        invitations: Records = answer["invitations"]
        return invitations

    async def accept_invitation(self, invitation_id: str) -> None:
        await self._json("POST", "/folders/invitations/accept", {"inv_id": invitation_id})

    async def delete_invitation(self, invitation_id: str) -> None:
        """Rejected (by the invitee) or canceled (by the inviter)."""
        await self._json("DELETE", "/folders/invitations/delete", {"inv_id": invitation_id})

    async def share(
        self, name: str, emails: Sequence[str], *, permission: Permission = "ro"
    ) -> Names:
        """A project folder's permission for some of its members (its admins only); a
        user's folder is offered with :meth:`invite` instead."""
        body = {"permission": permission, "emails": [*emails]}
        answer: Record = await self._json("POST", _path(name, "/share"), body)
        shared: Names = answer["shared_emails"]
        return shared

    async def unshare(self, name: str, emails: Sequence[str]) -> Names:
        answer: Record = await self._json("DELETE", _path(name, "/unshare"), {"emails": emails})
        unshared: Names = answer["unshared_emails"]
        return unshared

    async def leave(self, name: str) -> None:
        await self._json("POST", _path(name, "/leave"), {})

    # ---- files -----------------------------------------------------------------------------
    async def files(self, name: str, path: str = ".") -> Records:
        """The entries of a directory: ``name``, ``type`` (FILE, DIRECTORY, SYMLINK),
        ``size``, ``mode``, ``modified``."""
        answer: Record = await self._json("GET", _path(name, "/files"), {"path": path})
        items: Records = answer["items"]
        return items

    async def mkdir(
        self, name: str, path: str, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        body = {"path": path, "parents": parents, "exist_ok": exist_ok}
        await self._json("POST", _path(name, "/mkdir"), body)

    async def delete_files(
        self, name: str, paths: Sequence[str], *, recursive: bool = False
    ) -> None:
        body = {"files": [*paths], "recursive": recursive}
        await self._json("DELETE", _path(name, "/delete-files"), body)

    async def move_file(self, name: str, src: str, dst: str) -> None:
        await self._json("POST", _path(name, "/move-file"), {"src": src, "dst": dst})

    async def upload(
        self,
        name: str,
        paths: Sequence[str | os.PathLike[str]],
        *,
        base_dir: str | os.PathLike[str] | None = None,
        chunk_size: int = CHUNK_SIZE,
        progress: Progress | None = None,
    ) -> Names:
        """Each file to the folder under its path relative to ``base_dir`` (default: the
        working directory), replacing a file there; the names it has in the folder.
        ``progress`` is told (bytes done, bytes in all) across every file."""
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        plan = []
        for given in paths:
            local = Path(given) if Path(given).is_absolute() else base / given
            if not local.is_file():
                raise ClientError(f"{local} is not a file (directories: upload their files)")
            plan.append((local, _remote_name(local, base), local.stat().st_size))
        total = sum(size for _, _, size in plan)
        sent = 0
        names = []
        async with httpx.AsyncClient(timeout=self.client.config.read_timeout_s) as http:
            for local, remote, size in plan:
                ticket = await self._json(
                    "POST", _path(name, "/request-upload"), {"path": remote, "size": size}
                )

                def step(done: int, _all: int, before: int = sent) -> None:
                    if progress:
                        progress(before + done, total)

                await upload_file(
                    http, ticket["url"], ticket["token"], local, size,
                    chunk_size=chunk_size, progress=step,
                )  # fmt: skip
                sent += size
                names.append(remote)
        if progress:
            progress(total, total)
        return names

    async def download(
        self,
        name: str,
        paths: Sequence[str],
        *,
        dest: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> Paths:
        """Each file of the folder into ``dest`` (default: the working directory) under its
        path in the folder; an existing local file is refused unless ``overwrite``."""
        root = Path(dest) if dest is not None else Path.cwd()
        targets = [(remote, _local_target(root, remote)) for remote in paths]
        for _, target in targets:
            if target.exists() and not overwrite:
                raise ClientError(f"{target} exists (pass overwrite=True to replace it)")
        written = []
        async with httpx.AsyncClient(timeout=self.client.config.read_timeout_s) as http:
            for remote, target in targets:
                ticket = await self._json(
                    "POST", _path(name, "/request-download"), {"path": remote}
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                await download_file(http, ticket["url"], ticket["token"], target, progress=progress)
                written.append(target)
        return written


class VFolders(BlockingTwin):
    """The blocking twin of :class:`AsyncVFolders` over a :class:`~kernelhub.sdk.sync.Client`
    (each method run on the client's event loop; delegated, so the two cannot drift)."""

    async_class = AsyncVFolders
