"""The file routes of a folder, as the official client calls them: ``files`` (list),
``mkdir``, ``delete-files``, ``rename-file``, ``move-file``, and ``request-upload`` /
``request-download``, which answer ``{"token", "url"}`` for the transfer endpoint
(:mod:`.storage_routes`), under ``/folders/{name}/`` and its ``/vfolder`` alias.

Each resolves the folder among those the caller may see (:func:`.folders_access.folder_for`:
someone else's folder is 404, as one that does not exist) and requires what the operation
needs (a permission on the folder and the storage host's grant). Paths are the tenant's
text: split and checked by :func:`actors.storage.paths.parse_path`, then acted on from a
descriptor of the folder's root without following any link (:mod:`actors.storage.tree`),
in the volume's own threads, at most a few per keypair at once (``ctx.file_ops``).

Request bodies are 23.03's (``check_api_params``), answers the shapes its client prints:
the listing keeps the legacy ``files`` JSON string the CLI's ``ls`` reads beside ``items``.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import AliasChoices, Field

from actors.storage.paths import MAX_PATH_BYTES, parse_name, parse_path
from actors.storage.tokens import MAX_UPLOAD_BYTES
from actors.storage.tree import Entry

from ..domain.errors import (
    DomainError,
    GenericForbidden,
    InvalidAPIParameters,
    VFolderOperationFailed,
)
from .auth import Caller
from .context import GatewayContext
from .folders_access import Folder, Op, folder_for
from .params import _Strict, parse, raw_params
from .storage_routes import DOWNLOAD_PATH, UPLOAD_PATH, storage_of

__all__ = ["MAX_DELETE_FILES", "MAX_MKDIR_PATHS", "folder_file_routes"]

MAX_MKDIR_PATHS = 50
"""Directories one ``mkdir`` makes (23.03's limit)."""
MAX_DELETE_FILES = 1000
"""Paths one ``delete-files`` names."""


class ListParams(_Strict):
    path: str = Field(default="", max_length=MAX_PATH_BYTES)


class MkdirParams(_Strict):
    path: str | list[str]
    """One path or several (each bounded below)."""
    parents: bool = True
    exist_ok: bool = False


class DeleteParams(_Strict):
    files: list[str] = Field(max_length=MAX_DELETE_FILES)
    recursive: bool = False


class RenameParams(_Strict):
    target_path: str = Field(max_length=MAX_PATH_BYTES)
    new_name: str = Field(max_length=MAX_PATH_BYTES)
    is_dir: bool = False
    """Sent by old clients, ignored since 22.03 (as there)."""


class MoveParams(_Strict):
    src: str = Field(max_length=MAX_PATH_BYTES)
    dst: str = Field(max_length=MAX_PATH_BYTES)


class UploadParams(_Strict):
    path: str = Field(max_length=MAX_PATH_BYTES)
    size: int = Field(ge=0, le=MAX_UPLOAD_BYTES)


class DownloadParams(_Strict):
    path: str = Field(max_length=MAX_PATH_BYTES, validation_alias=AliasChoices("path", "file"))
    archive: bool = False


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Target:
    """A request's folder, its directory, and who asks."""

    ctx: GatewayContext
    caller: Caller
    folder: Folder
    path: Path

    @property
    def user(self) -> uuid.UUID:
        return uuid.UUID(self.caller.user_id)


async def _folder(request: web.Request, op: Op | None) -> Target:
    """The folder the URL names, with ``op`` required (``None``: read its files, which
    needs a permission on them, more than a manager's view of the folder)."""
    ctx: GatewayContext = request.app["ctx"]
    caller: Caller = request["caller"]
    folder = await folder_for(ctx, caller, request.match_info["name"])
    if op is None:
        if folder.permission not in ("ro", "rw", "wd"):
            raise GenericForbidden("you have no permission on this folder's files")
    else:
        folder.require(op)
    if folder.state.status != "ready":
        raise VFolderOperationFailed(f"the folder {folder.name!r} is in the trash")
    if folder.host_path is None:
        raise VFolderOperationFailed("this gateway serves no storage host")
    return Target(ctx, caller, folder, folder.host_path)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _listed(entries: list[Entry]) -> dict[str, Any]:
    entries = sorted(entries, key=lambda e: e.name)
    return {
        "items": [
            {
                "name": e.name,
                "type": e.kind,
                "size": e.size,
                "mode": oct(stat.S_IMODE(e.mode))[2:][-3:],
                "created": _iso(e.ctime),
                "modified": _iso(e.mtime),
            }
            for e in entries
        ],
        "files": json.dumps(  # what the CLI's ``vfolder ls`` reads
            [
                {
                    "filename": e.name,
                    "size": e.size,
                    "mode": stat.filemode(e.mode),
                    "ctime": e.ctime,
                    "atime": 0,
                    "mtime": e.mtime,
                }
                for e in entries
            ]
        ),
    }


async def list_files(request: web.Request) -> web.Response:
    params = parse(ListParams, await raw_params(request))
    at = await _folder(request, None)
    parts = parse_path(params.path)
    volume, _ = storage_of(request.app).require_volume()
    with at.ctx.file_ops.hold(at.caller.access_key):
        entries = await volume.listing(at.path, parts)
    return web.json_response(_listed(entries))


async def mkdir(request: web.Request) -> web.Response:
    params = parse(MkdirParams, await raw_params(request))
    paths = [params.path] if isinstance(params.path, str) else params.path
    if not paths or len(paths) > MAX_MKDIR_PATHS:
        raise InvalidAPIParameters(f"name 1 to {MAX_MKDIR_PATHS} directories")
    for path in paths:
        if len(path) > MAX_PATH_BYTES:
            raise InvalidAPIParameters(f"a path is longer than {MAX_PATH_BYTES} bytes")
    at = await _folder(request, "write")
    volume, _ = storage_of(request.app).require_volume()
    parsed = [parse_path(p, root_ok=False) for p in paths]  # all checked before any is made
    results: list[dict[str, Any]] = []
    with at.ctx.file_ops.hold(at.caller.access_key):
        for text, parts in zip(paths, parsed, strict=True):
            try:
                await volume.make_dir(
                    at.path,
                    parts,
                    parents=params.parents,
                    exist_ok=params.exist_ok,
                )
            except DomainError as exc:
                if isinstance(params.path, str):
                    raise  # one directory: its refusal is the answer
                results.append({"item": text, "msg": exc.msg or exc.title})
            else:
                results.append({"item": text, "msg": None})
    failed = any(r["msg"] for r in results)
    return web.json_response({"results": results}, status=207 if failed else 201)


async def delete_files(request: web.Request) -> web.Response:
    params = parse(DeleteParams, await raw_params(request))
    if not params.files:
        raise InvalidAPIParameters("files names nothing to delete")
    at = await _folder(request, "delete-files")
    parsed = [parse_path(p, what="files", root_ok=False) for p in params.files]
    volume, _ = storage_of(request.app).require_volume()
    with at.ctx.file_ops.hold(at.caller.access_key):
        for parts in parsed:
            await volume.delete(
                at.folder.folder_id.hex,
                at.path,
                parts,
                recursive=params.recursive,
            )
    return web.json_response({})


async def rename_file(request: web.Request) -> web.Response:
    params = parse(RenameParams, await raw_params(request))
    at = await _folder(request, "write")
    parts = parse_path(params.target_path, what="target_path", root_ok=False)
    new_name = parse_name(params.new_name, "new_name")
    volume, _ = storage_of(request.app).require_volume()
    with at.ctx.file_ops.hold(at.caller.access_key):
        await volume.rename(at.path, parts, new_name)
    return web.json_response({})


async def move_file(request: web.Request) -> web.Response:
    params = parse(MoveParams, await raw_params(request))
    at = await _folder(request, "write")
    src = parse_path(params.src, what="src", root_ok=False)
    dst = parse_path(params.dst, what="dst")
    volume, _ = storage_of(request.app).require_volume()
    with at.ctx.file_ops.hold(at.caller.access_key):
        await volume.move(at.path, src, dst)
    return web.json_response({})


def _url(request: web.Request, path: str) -> str:
    """The transfer endpoint on this gateway, as the client reached it (scheme and host
    of its own request), so it works behind whatever address the client uses."""
    return str(request.url.origin().with_path(path))


async def request_upload(request: web.Request) -> web.Response:
    params = parse(UploadParams, await raw_params(request))
    at = await _folder(request, "upload")
    parts = parse_path(params.path, root_ok=False)
    storage = storage_of(request.app)
    _, transfers = storage.require_volume()
    await transfers.prepare_upload(
        at.folder.folder_id,
        at.path,
        at.folder.state.max_size,
        parts,
        params.size,
    )
    token, _ = storage.signer.issue(
        "upload",
        folder=at.folder.folder_id,
        path="/".join(parts),
        user=at.user,
        access_key=at.caller.access_key,
        size=params.size,
    )
    return web.json_response({"token": token, "url": _url(request, UPLOAD_PATH)})


async def request_download(request: web.Request) -> web.Response:
    params = parse(DownloadParams, await raw_params(request))
    if params.archive:
        raise InvalidAPIParameters(
            "archive: downloading a directory as an archive is not supported"
        )
    at = await _folder(request, "download")
    parts = parse_path(params.path, root_ok=False)
    storage = storage_of(request.app)
    _, transfers = storage.require_volume()
    fd, _ = await transfers.open_download(at.path, parts)
    await transfers.volume.run(os.close, fd)  # refused now (a link, a directory), not at GET
    token, _ = storage.signer.issue(
        "download",
        folder=at.folder.folder_id,
        path="/".join(parts),
        user=at.user,
        access_key=at.caller.access_key,
    )
    return web.json_response({"token": token, "url": _url(request, DOWNLOAD_PATH)})


def folder_file_routes() -> list[web.RouteDef]:
    """The routes, under ``/folders`` and its ``/vfolder`` alias."""
    routes: list[web.RouteDef] = []
    for prefix in ("/folders", "/vfolder"):
        base = prefix + "/{name}"
        routes += [
            web.get(base + "/files", list_files, allow_head=False),
            web.post(base + "/mkdir", mkdir),
            web.delete(base + "/delete-files", delete_files),
            web.post(base + "/rename-file", rename_file),
            web.post(base + "/move-file", move_file),
            web.post(base + "/request-upload", request_upload),
            web.post(base + "/request-download", request_download),
        ]
    return routes
