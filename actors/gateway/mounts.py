"""``config.mounts`` and ``config.mount_map`` of a session create: the folders resolved and
checked before anything is appended.

Each name (or id) is resolved among the folders the session's *owner* may see
(:func:`.folders_access.folder_for`: another tenant's folder is 404 "No such virtual
folder.", exactly as one that does not exist), and must be mountable by them
(``require("mount")``: at least ``ro`` on it, the storage host's ``mount-in-session``,
and the folder not in the trash). A project's folder mounts only in a session of that
project (23.03 leaves it out silently; kernelhub refuses, naming it). Paths follow
:mod:`actors.domain.mount_paths`.

The answer is 23.03's ``VFolderMount`` JSON per folder (``VFolderMountSpec`` in the
session's creation event): ``vfid`` is the folder id's hex (a ``VFolderID`` without a quota
scope), ``vfsubpath`` always ``"."``, ``mount_perm`` the owner's permission on it.
"""

from __future__ import annotations

from typing import Any

from ..domain.errors import GenericForbidden, InvalidAPIParameters
from ..domain.mount_paths import mount_plan, place, vfolder_mount_spec
from ..domain.vfolders import at_least
from .auth import Caller
from .context import GatewayContext
from .folders_access import Folder, folder_for
from .params import CreateConfig

__all__ = ["mounts_still_allowed", "session_mounts"]


async def _owner(ctx: GatewayContext, caller: Caller, access_key: str) -> Caller:
    """Whose folders the session mounts: its owner's (an admin creating a session for a
    user mounts the user's folders, as 23.03 does with the owner's scope)."""
    if access_key == caller.access_key:
        return caller
    entry = await ctx.auth.cache.get(access_key)
    if entry is None:
        raise InvalidAPIParameters("config.mounts: the session's owner cannot be resolved")
    return entry[1]


async def session_mounts(
    ctx: GatewayContext,
    caller: Caller,
    access_key: str,
    project_id: str,
    config: CreateConfig | None,
) -> list[dict[str, Any]]:
    """The session's mounts, resolved and checked (empty when none is asked for); a 400
    naming the field, 404 for a folder the owner may not see, 403 for one they may not
    mount."""
    plans = mount_plan(config.mounts if config else None, config.mount_map if config else None)
    if not plans:
        return []
    owner = await _owner(ctx, caller, access_key)
    folders: list[Folder] = []
    for plan in plans:
        folder = await folder_for(ctx, owner, plan.ref)
        folder.require("mount")
        if any(f.folder_id == folder.folder_id for f in folders):
            raise InvalidAPIParameters(f"config.mounts: {plan.ref!r} names a folder twice")
        group = folder.record.get("group")
        if group is not None and str(group) != str(project_id):
            raise InvalidAPIParameters(
                f"config.mounts: {plan.ref!r} is another project's folder: it mounts only "
                "in that project's sessions"
            )
        if folder.host_path is None:
            raise InvalidAPIParameters("config.mounts: this installation serves no folders")
        folders.append(folder)
    paths = place(plans, [f.name for f in folders])
    return [
        vfolder_mount_spec(
            folder.name,
            folder.folder_id,
            str(folder.host_path),
            path,
            str(folder.permission),
            str(folder.record.get("usage_mode") or "general"),
        )
        for folder, path in zip(folders, paths, strict=True)
    ]


async def mounts_still_allowed(ctx: GatewayContext, caller: Caller, record: dict[str, Any]) -> None:
    """Before a restart binds a session's folders again: its owner must still be allowed
    each one, at the permission it was mounted with (a share withdrawn or lowered since,
    a folder trashed, a project left: refused, naming the folder). A running session keeps
    what it mounted, as in 23.03; a restart is a new bind and is judged as one (review F10)."""
    mounts = record.get("mounts") or []
    if not mounts:
        return
    owner = await _owner(ctx, caller, str(record["access_key"]))
    for mount in mounts:
        folder = await folder_for(ctx, owner, str(mount["vfid"]))
        folder.require("mount")
        if not at_least(folder.permission, mount["mount_perm"]):  # type: ignore[arg-type]
            raise GenericForbidden(
                f"the folder {folder.name!r} was mounted {mount['mount_perm']}; its owner's "
                f"permission is now {folder.permission}: create a new session to mount it"
            )
