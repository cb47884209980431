"""``/folders`` (and its 23.03 alias ``/vfolder``): virtual folders' metadata, as the
official client's ``vfolder`` commands call it — info, rename, delete (to the trash),
restore, purge, the hosts, update-options, and the routes of every ``/folders`` module:
create and clone (:mod:`.folder_create`), the listing (:mod:`.folder_listing`), invitations
and shares (:mod:`.folder_sharing`); the files under ``/folders/{name}/`` are the storage
routes' (:mod:`.folder_files`).

Every route that names a folder resolves it with :func:`.folders_access.folder_for`, among
the folders the caller may see, so another tenant's folder answers exactly as a missing one
(404 "No such virtual folder."); what the caller may then do is :meth:`Folder.require`. A
change is a proposed event run at the single vfolder writer (:func:`write_vfolder`), which
decides whether the folders as the log says allow it (the name free, the count under the
policy's ``max_vfolder_count``) and waits until the read model shows it.

The trash is 23.09's: ``DELETE /folders/{name}`` moves a folder to the trash (``status``
``delete-pending``: still listed, no longer mountable; refused while a live session mounts
it), ``POST /folders/{name}/restore-from-trash`` brings it back, ``DELETE
/folders/{name}/delete-from-trash`` (or ``POST /folders/{name}/purge``) removes it and its
files for good. 23.09's id-body forms are served too: ``POST /folders/restore-from-trash``,
``POST /folders/purge`` and ``DELETE /folders/delete-from-trash`` with ``{"id"}``.

What the client has and kernelhub cannot honour is refused with a 400 that says why:
storage-proxy mounts and fstab, performance metrics, quotas of unmanaged folders, changing
a folder's owner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from actors.agents.safe_fs import Refused
from events.catalogue import (
    VFolderPurged,
    VFolderRenamed,
    VFolderRestored,
    VFolderTrashed,
    VFolderUpdated,
)
from projections.vfolder_queries import VFolderLookups

from ..domain.errors import ObjectNotFound, VFolderAlreadyExists
from ..domain.vfolders import DEFAULT_HOST
from .folder_common import body_of, caller_of, ctx_of, folder_named, volume_of, write
from .folder_create import clone, create
from .folder_disk import remove_folder_dir
from .folder_listing import list_folders
from .folder_params import DeleteById, RenameFolder, UpdateOptions
from .folder_sharing import sharing_routes
from .folder_views import info_view
from .folders_access import Folder, caller_host_permissions, visible_folders
from .problems import GatewayError, InsufficientPrivilege
from .storage_routes import storage_of

__all__ = ["FOLDER_PREFIXES", "MAX_SHARES_CHECKED", "folder_routes"]

MAX_SHARES_CHECKED = 1000
"""Users a rename checks the new name for (a folder's shares are bounded by its events')."""

FOLDER_PREFIXES = ("/folders", "/vfolder")
"""The client's prefix and 23.03's module name (the same routes under both)."""


class NotOffered(GatewayError):
    status, error_type, title = 400, "generic-bad-request", "Bad request."


# ---- one folder ---------------------------------------------------------------------------------
async def info(request: web.Request) -> web.Response:
    await body_of(request, _NoParams)
    folder = await folder_named(request)
    folder.require("see")
    files = used = 0
    complete = True
    if folder.host_path is not None and folder.record.get("status") == "ready":
        ctx = ctx_of(request)
        try:  # one walk per folder per couple of seconds, however often it is asked
            with ctx.file_ops.hold(caller_of(request).access_key):
                usage = await volume_of(request).quota.usage(folder.folder_id.hex, folder.host_path)
            files, used, complete = usage.files, usage.bytes, usage.complete
        except (ObjectNotFound, Refused):
            complete = False  # its directory is missing or unreadable: nothing to count
    return web.json_response(info_view(folder, files, used, complete))


async def rename(request: web.Request) -> web.Response:
    """The new name must be free among the caller's folders (as 23.03's client says: the ones
    they own and the ones shared with them) and among those of every user the folder is
    shared with: renamed onto an invitee's own folder's name, it would shadow that folder
    for them (review F2)."""
    params = await body_of(request, RenameFolder)
    folder = await folder_named(request)
    folder.require("manage")
    await _name_free(request, folder, params.new_name)
    await write(request, VFolderRenamed(folder_id=folder.folder_id, name=params.new_name))
    return web.Response(status=201)


async def _name_free(request: web.Request, folder: Folder, name: str) -> None:
    ctx = ctx_of(request)
    lookups = VFolderLookups(ctx.store)
    own = str(folder.folder_id)
    taken = [r for r in await visible_folders(ctx, caller_of(request)) if r.get("name") == name]
    for user in sorted(folder.state.shares, key=str)[:MAX_SHARES_CHECKED]:
        records = await lookups.owned_by(str(user)) + await lookups.shared_with(str(user))
        taken += [r for r in records if r.get("name") == name]
    if any(str(r.get("folder_id")) != own for r in taken):
        raise VFolderAlreadyExists(
            f"{name!r} is taken among your folders or those of a user this folder is shared with"
        )


async def update_options(request: web.Request) -> web.Response:
    params = await body_of(request, UpdateOptions)
    folder = await folder_named(request)
    folder.require("manage")
    if params.permission is not None or params.cloneable is not None:
        event = VFolderUpdated(
            folder_id=folder.folder_id, permission=params.permission, cloneable=params.cloneable
        )
        await write(request, event)
    return web.Response(status=201)


async def _trash(request: web.Request, folder: Folder) -> web.Response:
    folder.require("delete")
    await write(request, VFolderTrashed(folder_id=folder.folder_id))
    return web.Response(status=204)


async def _restore(request: web.Request, folder: Folder) -> web.Response:
    folder.require("delete")
    await write(request, VFolderRestored(folder_id=folder.folder_id))
    return web.Response(status=204)


async def _purge(request: web.Request, folder: Folder) -> web.Response:
    """The folder's end: the event first, then its directory (never following a link in
    it). A crash between the two leaves a directory no folder names; a purge of a folder
    already purged is a 404, so the operator removes such a directory by hand (docs)."""
    folder.require("delete")
    await write(request, VFolderPurged(folder_id=folder.folder_id))
    root = ctx_of(request).vfolder_root
    if root is not None:
        volume = volume_of(request)
        try:
            await volume.run(remove_folder_dir, root, folder.folder_id.hex)
        finally:
            volume.quota.forget_usage(folder.folder_id.hex)
            await storage_of(request.app).forget(folder.folder_id)  # its unfinished uploads
    return web.Response(status=204)


async def delete(request: web.Request) -> web.Response:
    await body_of(request, _NoParams)
    return await _trash(request, await folder_named(request))


async def delete_by_id(request: web.Request) -> web.Response:
    params = await body_of(request, DeleteById)
    return await _trash(request, await folder_named(request, params.id))


async def restore(request: web.Request) -> web.Response:
    await body_of(request, _NoParams)
    return await _restore(request, await folder_named(request))


async def restore_by_id(request: web.Request) -> web.Response:
    params = await body_of(request, DeleteById)
    return await _restore(request, await folder_named(request, params.id))


async def purge(request: web.Request) -> web.Response:
    await body_of(request, _NoParams)
    return await _purge(request, await folder_named(request))


async def purge_by_id(request: web.Request) -> web.Response:
    params = await body_of(request, DeleteById)
    return await _purge(request, await folder_named(request, params.id))


# ---- hosts and types ----------------------------------------------------------------------------
async def hosts(request: web.Request) -> web.Response:
    """The hosts the caller may use (of those kernelhub serves: ``local:default``)."""
    await body_of(request, _NoParams)
    allowed = await caller_host_permissions(ctx_of(request), caller_of(request))
    usable = [h for h in sorted(allowed) if h == DEFAULT_HOST and allowed[h]]
    info: dict[str, Any] = {
        h: {"backend": "vfs", "capabilities": [], "usage": None} for h in usable
    }
    return web.json_response({"default": DEFAULT_HOST, "allowed": usable, "volume_info": info})


async def all_hosts(request: web.Request) -> web.Response:
    await body_of(request, _NoParams)
    if not caller_of(request).is_superadmin:
        raise InsufficientPrivilege("only a superadmin lists every storage host")
    return web.json_response({"default": DEFAULT_HOST, "allowed": [DEFAULT_HOST]})


async def allowed_types(request: web.Request) -> web.Response:
    await body_of(request, _NoParams)
    return web.json_response(["user", "group"])


class _NoParams(BaseModel):
    """A route that reads no parameters: any sent is refused, naming it (never ignored)."""

    model_config = {"extra": "forbid"}


def _not_offered(what: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def refuse(request: web.Request) -> web.Response:
        raise NotOffered(what)

    return refuse


_STORAGE_PROXY = (
    "kernelhub has no storage proxy: its one host, local:default, is a directory of the "
    "gateway's machine, so there are no mounts, fstab or performance metrics to show"
)
_REFUSED = (
    ("GET", "/_/fstab", _STORAGE_PROXY),
    ("GET", "/_/mounts", _STORAGE_PROXY),
    ("POST", "/_/mounts", _STORAGE_PROXY),
    ("DELETE", "/_/mounts", _STORAGE_PROXY),
    ("GET", "/_/perf-metric", _STORAGE_PROXY),
    ("GET", "/_/quota", "quotas of unmanaged folders: kernelhub has no unmanaged folders"),
    ("POST", "/_/quota", "quotas of unmanaged folders: kernelhub has no unmanaged folders"),
    ("POST", "/_/change-ownership", "changing a folder's owner is not supported by kernelhub"),
    ("GET", "/_/shared", "the shared-folder listing is not supported: use GET /folders"),
    ("POST", "/_/shared", "use POST /folders/{name}/share to change a user's permission"),
)


def folder_routes() -> list[web.RouteDef]:
    """Every ``/folders`` route, under both prefixes; fixed paths before ``{name}`` ones, so
    a folder named ``purge`` is still found by ``GET /folders/purge``."""
    routes: list[web.RouteDef] = []
    for prefix in FOLDER_PREFIXES:
        routes += [
            web.post(prefix, create),
            web.get(prefix, list_folders),
            web.delete(prefix, delete_by_id),
            web.get(f"{prefix}/_/hosts", hosts),
            web.get(f"{prefix}/_/all_hosts", all_hosts),
            web.get(f"{prefix}/_/all-hosts", all_hosts),
            web.get(f"{prefix}/_/allowed_types", allowed_types),
            web.get(f"{prefix}/_/allowed-types", allowed_types),
            web.post(f"{prefix}/purge", purge_by_id),
            web.post(f"{prefix}/restore-from-trash", restore_by_id),
            web.delete(f"{prefix}/delete-from-trash", purge_by_id),
            *(
                web.route(method, f"{prefix}{path}", _not_offered(why))
                for method, path, why in _REFUSED
            ),
            *sharing_routes(prefix),
            web.get(f"{prefix}/{{name}}", info),
            web.delete(f"{prefix}/{{name}}", delete),
            web.post(f"{prefix}/{{name}}/rename", rename),
            web.post(f"{prefix}/{{name}}/update-options", update_options),
            web.post(f"{prefix}/{{name}}/restore-from-trash", restore),
            web.post(f"{prefix}/{{name}}/purge", purge),
            web.delete(f"{prefix}/{{name}}/delete-from-trash", purge),
            web.post(f"{prefix}/{{name}}/clone", clone),
        ]
    return routes
