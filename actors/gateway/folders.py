"""``/folders`` (and its 23.03 alias ``/vfolder``): virtual folders' metadata, as the
official client's ``vfolder`` commands call it — create, list, info, rename, delete (to the
trash), restore, purge, the hosts, update-options, clone. Invitations and shares are
:mod:`.folder_sharing`; the files under ``/folders/{name}/`` are the storage routes'.

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

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from actors.agents.safe_fs import OverLimit
from actors.storage.volume import Volume
from events.catalogue import (
    VFolderCreated,
    VFolderPurged,
    VFolderRenamed,
    VFolderRestored,
    VFolderTrashed,
    VFolderUpdated,
)
from projections.vfolder_queries import VFolderLookups

from ..domain.errors import (
    DomainError,
    GenericForbidden,
    InvalidAPIParameters,
    VFolderOperationFailed,
)
from ..domain.vfolders import DEFAULT_HOST
from .auth import Caller
from .context import GatewayContext
from .folder_disk import clone_tree, make_folder_dir, remove_folder_dir
from .folder_listing import list_folders
from .folder_params import (
    CloneFolder,
    CreateFolder,
    DeleteById,
    RenameFolder,
    UpdateOptions,
)
from .folder_sharing import sharing_routes
from .folder_views import created_view, info_view
from .folders_access import Folder, caller_host_permissions, folder_for, write_vfolder
from .params import parse, raw_params
from .problems import GatewayError, InsufficientPrivilege
from .storage_routes import storage_of

__all__ = ["FOLDER_PREFIXES", "VFolderCreationFailed", "folder_routes"]

M = TypeVar("M", bound=BaseModel)
FOLDER_PREFIXES = ("/folders", "/vfolder")
"""The client's prefix and 23.03's module name (the same routes under both)."""


class VFolderCreationFailed(GatewayError):
    status, error_type, title = (
        400,
        "vfolder-creation-failed",
        "Virtual folder creation has failed.",
    )


class NotOffered(GatewayError):
    status, error_type, title = 400, "generic-bad-request", "Bad request."


def _ctx(request: web.Request) -> GatewayContext:
    ctx: GatewayContext = request.app["ctx"]
    return ctx


def _caller(request: web.Request) -> Caller:
    caller: Caller = request["caller"]
    return caller


async def body_of(request: web.Request, model: type[M]) -> M:
    """The request's JSON body (or query string) as ``model``: unknown keys and bad values
    are a 400 naming the field."""
    return parse(model, await raw_params(request))


def volume_of(request: web.Request) -> Volume:
    return storage_of(request.app).require_volume()[0]


async def folder_named(request: web.Request, ref: str | None = None) -> Folder:
    name = request.match_info["name"] if ref is None else ref
    return await folder_for(_ctx(request), _caller(request), name)


async def write(request: web.Request, event: Any, *, max_count: int = 0) -> list[Any]:
    return await write_vfolder(
        _ctx(request), _caller(request), event, max_count=max_count, peer=request.remote
    )


# ---- create -------------------------------------------------------------------------------------
async def _project_for(request: web.Request, group: str) -> dict[str, Any]:
    """The project a project folder is made in: only a superadmin (any project) or an
    admin of its domain may (as 23.03); a plain user hears the same 403 whether the project
    exists or not, an admin the same 400 for an unknown project and another domain's."""
    ctx, caller = _ctx(request), _caller(request)
    if caller.role not in ("admin", "superadmin"):
        raise GenericForbidden("only a domain admin or a superadmin creates project folders")
    try:
        project = await ctx.lookups.project(str(uuid.UUID(group)))
    except ValueError:
        project = await ctx.lookups.project_by_name(caller.domain, group)
    if project is None or (
        not caller.is_superadmin and str(project.get("domain")) != caller.domain
    ):
        raise InvalidAPIParameters(f"group: no project {group!r} in your domain")
    return dict(project)


async def _policy(request: web.Request) -> dict[str, Any]:
    ctx, caller = _ctx(request), _caller(request)
    name = caller.keypair.get("resource_policy")
    return dict(await ctx.lookups.policy(str(name)) or {}) if name else {}


def _max_size(quota: int, policy: dict[str, Any], field: str = "quota") -> int:
    """The folder's quota: what was asked, within the keypair policy's ``max_vfolder_size``
    (0: no bound); none asked, the policy's bound."""
    bound = int(policy.get("max_vfolder_size") or 0)
    if bound and quota > bound:
        raise InvalidAPIParameters(
            f"{field}: {quota} bytes is over your policy's max_vfolder_size of {bound} bytes"
        )
    return quota or bound


async def _check_host(
    request: web.Request, host: str | None, project_id: uuid.UUID | None, field: str = "host"
) -> str:
    """The storage host a folder is made on: ``local:default`` (the one kernelhub serves),
    which the caller's domain, keypair policy (and project) must allow ``create-vfolder``."""
    chosen = host or DEFAULT_HOST
    if chosen != DEFAULT_HOST:
        raise InvalidAPIParameters(f"{field}: kernelhub serves one storage host, {DEFAULT_HOST}")
    hosts = await caller_host_permissions(_ctx(request), _caller(request), project_id)
    if "create-vfolder" not in hosts.get(chosen, frozenset()):
        raise GenericForbidden(f"the storage host {chosen} does not allow you create-vfolder")
    if _ctx(request).vfolder_root is None:
        raise VFolderOperationFailed("this gateway serves no storage host")
    return chosen


async def _new_folder(
    request: web.Request,
    event: VFolderCreated,
    max_count: int,
    fill: Callable[[str], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Append ``event``, then make its directory (and ``fill`` it); if that fails, the
    folder is trashed and purged again, so no folder is left without its files."""
    await write(request, event, max_count=max_count)
    volume = volume_of(request)
    root = _ctx(request).vfolder_root
    assert root is not None  # _check_host refused otherwise
    folder_hex = event.folder_id.hex
    try:
        await volume.run(make_folder_dir, root, folder_hex)
        if fill is not None:
            await fill(folder_hex)
    except (DomainError, OSError) as exc:
        await write(request, VFolderTrashed(folder_id=event.folder_id))
        await write(request, VFolderPurged(folder_id=event.folder_id))
        await volume.run(remove_folder_dir, root, folder_hex)
        why = exc.msg if isinstance(exc, DomainError) else (exc.strerror or str(exc))
        raise VFolderCreationFailed(why) from None
    record = await VFolderLookups(_ctx(request).store).folder(str(event.folder_id))
    return dict(record or {})


async def create(request: web.Request) -> web.Response:
    params = await body_of(request, CreateFolder)
    caller = _caller(request)
    project = await _project_for(request, params.group) if params.group else None
    project_id = uuid.UUID(str(project["project_id"])) if project else None
    host = await _check_host(request, params.host, project_id)
    policy = await _policy(request)
    email = str((caller.user or {}).get("email") or caller.access_key)
    try:
        event = VFolderCreated(
            folder_id=uuid.uuid4(),
            name=params.name,
            host=host,
            domain=str(project["domain"]) if project else caller.domain,
            ownership_type="group" if project else "user",
            user=None if project else uuid.UUID(caller.user_id),
            group=project_id,
            creator=email[:256],
            usage_mode=params.usage_mode,
            permission=params.permission,
            max_size=_max_size(params.quota, policy),
            cloneable=params.cloneable,
        )
    except ValidationError as exc:
        raise InvalidAPIParameters(str(exc.errors()[0].get("msg"))) from None
    max_count = 0 if project else int(policy.get("max_vfolder_count") or 0)
    record = await _new_folder(request, event, max_count)
    return web.json_response(created_view(record), status=201)


# ---- one folder ---------------------------------------------------------------------------------
async def info(request: web.Request) -> web.Response:
    folder = await folder_named(request)
    folder.require("see")
    files = used = 0
    complete = True
    if folder.host_path is not None and folder.record.get("status") == "ready":
        try:
            usage = await volume_of(request).measure(folder.host_path)
            files, used, complete = usage.files, usage.bytes, usage.complete
        except DomainError:
            complete = False  # its directory is missing or unreadable: nothing to count
    return web.json_response(info_view(folder, files, used, complete))


async def rename(request: web.Request) -> web.Response:
    params = await body_of(request, RenameFolder)
    folder = await folder_named(request)
    folder.require("manage")
    await write(request, VFolderRenamed(folder_id=folder.folder_id, name=params.new_name))
    return web.Response(status=201)


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
    root = _ctx(request).vfolder_root
    if root is not None:
        volume = volume_of(request)
        try:
            await volume.run(remove_folder_dir, root, folder.folder_id.hex)
        except OverLimit as exc:
            raise VFolderOperationFailed(
                f"the folder is purged, but its files were not all removed: {exc.msg}"
            ) from None
        finally:
            volume.quota.forget_usage(folder.folder_id.hex)
    return web.Response(status=204)


async def delete(request: web.Request) -> web.Response:
    return await _trash(request, await folder_named(request))


async def delete_by_id(request: web.Request) -> web.Response:
    params = await body_of(request, DeleteById)
    return await _trash(request, await folder_named(request, params.id))


async def restore(request: web.Request) -> web.Response:
    return await _restore(request, await folder_named(request))


async def restore_by_id(request: web.Request) -> web.Response:
    params = await body_of(request, DeleteById)
    return await _restore(request, await folder_named(request, params.id))


async def purge(request: web.Request) -> web.Response:
    return await _purge(request, await folder_named(request))


async def purge_by_id(request: web.Request) -> web.Response:
    params = await body_of(request, DeleteById)
    return await _purge(request, await folder_named(request, params.id))


async def clone(request: web.Request) -> web.Response:
    """A copy of the folder's tree into a new folder of the caller's. The source must be
    cloneable (or the caller's own) and readable by the caller; the copy keeps symlinks as
    symlinks and skips FIFOs, sockets and devices (:func:`.folder_disk.clone_tree`). It runs
    before the answer (no background task: the client then prints that it is complete)."""
    params = await body_of(request, CloneFolder)
    source = await folder_named(request)
    source.require("download")
    caller = _caller(request)
    host = await _check_host(request, params.target_host or source.state.host, None, "target_host")
    policy = await _policy(request)
    event = VFolderCreated(
        folder_id=uuid.uuid4(),
        name=params.target_name,
        host=host,
        domain=caller.domain,
        ownership_type="user",
        user=uuid.UUID(caller.user_id),
        creator=str((caller.user or {}).get("email") or caller.access_key)[:256],
        usage_mode=params.usage_mode,
        permission=params.permission,
        max_size=_max_size(params.quota, policy),
        cloneable=params.cloneable,
        cloned_from=source.folder_id,
    )
    root = _ctx(request).vfolder_root
    volume = volume_of(request)

    async def copy(target_hex: str) -> None:
        await volume.run(clone_tree, root, source.folder_id.hex, target_hex)

    record = await _new_folder(request, event, int(policy.get("max_vfolder_count") or 0), fill=copy)
    return web.json_response(created_view(record), status=201)


# ---- hosts and types ----------------------------------------------------------------------------
async def hosts(request: web.Request) -> web.Response:
    """The hosts the caller may use (of those kernelhub serves: ``local:default``)."""
    await body_of(request, _NoParams)
    allowed = await caller_host_permissions(_ctx(request), _caller(request))
    usable = [h for h in sorted(allowed) if h == DEFAULT_HOST and allowed[h]]
    info: dict[str, Any] = {
        h: {"backend": "vfs", "capabilities": [], "usage": None} for h in usable
    }
    return web.json_response({"default": DEFAULT_HOST, "allowed": usable, "volume_info": info})


async def all_hosts(request: web.Request) -> web.Response:
    await body_of(request, _NoParams)
    if not _caller(request).is_superadmin:
        raise InsufficientPrivilege("only a superadmin lists every storage host")
    return web.json_response({"default": DEFAULT_HOST, "allowed": [DEFAULT_HOST]})


async def allowed_types(request: web.Request) -> web.Response:
    await body_of(request, _NoParams)
    return web.json_response(["user", "group"])


class _NoParams(BaseModel):
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
