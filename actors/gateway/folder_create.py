"""Folders made: ``POST /folders`` (create) and ``POST /folders/{name}/clone``.

A folder is its event first (the single writer decides whether the name is free and the
owner's ``max_vfolder_count`` allows it), then its directory on the host, made for the
kernels' user (:mod:`.folder_disk`); if the directory cannot be made (or, for a clone,
filled) the folder is trashed and purged again, so no folder is left without its files.
Which host, which project and which quota are checked here, before anything is written:
``local:default`` only, project folders by their domain's admins only, a quota within the
keypair policy's ``max_vfolder_size``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from events.catalogue import VFolderCreated, VFolderPurged, VFolderTrashed
from projections.vfolder_queries import VFolderLookups

from ..domain.errors import (
    DomainError,
    GenericForbidden,
    InvalidAPIParameters,
    VFolderOperationFailed,
)
from ..domain.vfolders import DEFAULT_HOST
from .folder_common import body_of, caller_of, ctx_of, folder_named, volume_of, write
from .folder_disk import clone_budget, clone_tree, make_folder_dir, remove_folder_dir
from .folder_params import CloneFolder, CreateFolder
from .folder_views import created_view
from .folders_access import caller_host_permissions
from .problems import GatewayError

__all__ = ["VFolderCreationFailed", "clone", "create"]


class VFolderCreationFailed(GatewayError):
    status, error_type, title = (
        400,
        "vfolder-creation-failed",
        "Virtual folder creation has failed.",
    )


async def _project_for(request: web.Request, group: str) -> dict[str, Any]:
    """The project a project folder is made in: only a superadmin (any project) or an
    admin of its domain may (as 23.03); a plain user hears the same 403 whether the project
    exists or not, an admin the same 400 for an unknown project and another domain's."""
    ctx, caller = ctx_of(request), caller_of(request)
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
    ctx, caller = ctx_of(request), caller_of(request)
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
    hosts = await caller_host_permissions(ctx_of(request), caller_of(request), project_id)
    if "create-vfolder" not in hosts.get(chosen, frozenset()):
        raise GenericForbidden(f"the storage host {chosen} does not allow you create-vfolder")
    if ctx_of(request).vfolder_root is None:
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
    root = ctx_of(request).vfolder_root
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
    record = await VFolderLookups(ctx_of(request).store).folder(str(event.folder_id))
    return dict(record or {})


async def create(request: web.Request) -> web.Response:
    params = await body_of(request, CreateFolder)
    caller = caller_of(request)
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


async def clone(request: web.Request) -> web.Response:
    """A copy of the folder's tree into a new folder of the caller's. The source must be
    cloneable (or the caller's own) and readable by the caller; the copy keeps symlinks as
    symlinks, skips FIFOs, sockets and devices, writes no holes, and writes at most what the
    source measured just before, within the new folder's quota and the volume's spare room
    (review F1: :func:`.folder_disk.clone_tree`, :func:`.folder_disk.clone_budget`). It runs
    before the answer (no background task: the client then prints that it is complete)."""
    params = await body_of(request, CloneFolder)
    source = await folder_named(request)
    source.require("download")
    caller = caller_of(request)
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
    ctx = ctx_of(request)
    volume = volume_of(request)
    if source.host_path is None:
        raise VFolderOperationFailed("this gateway serves no storage host")
    root = ctx.vfolder_root
    if root is None:
        raise VFolderOperationFailed("this gateway serves no storage host")
    with ctx.file_ops.hold(caller.access_key):
        usage = await volume.measure(source.host_path)  # fresh: it bounds the copy
    if not usage.complete or (event.max_size and usage.bytes > event.max_size):
        raise VFolderOperationFailed(
            f"the folder holds {usage.bytes} bytes"
            + ("" if usage.complete else " or more (too many entries to count)")
            + f"; its clone's quota is {event.max_size} bytes"
        )
    budget = await volume.run(clone_budget, root, usage.bytes, event.max_size)
    if budget < usage.bytes:
        raise VFolderOperationFailed(
            f"the folder holds {usage.bytes} bytes; the volume can spare {budget} for a clone"
        )

    async def copy(target_hex: str) -> None:
        work = functools.partial(clone_tree, root, source.folder_id.hex, target_hex, budget=budget)
        with ctx.file_ops.hold(caller.access_key):
            await volume.run(work)

    record = await _new_folder(request, event, int(policy.get("max_vfolder_count") or 0), fill=copy)
    return web.json_response(created_view(record), status=201)
