"""``GET /folders``: the folders a caller may see, in 23.03's list shape.

A user sees their own folders, those shared with them and their projects' (``all`` changes
nothing for them: it is already everything they may see). With ``all``, a domain admin sees
every folder of their domain and a superadmin every folder. ``group_id`` narrows to one
project's folders; ``owner_user_email`` to one user's (an admin's question about a user
they administer; anyone may ask it about themselves). A project or user the caller may not
look at answers the same empty list as one that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from projections.vfolder_queries import VFolderLookups

from ..domain.errors import GenericForbidden, InvalidAPIParameters
from .auth import Caller
from .context import GatewayContext
from .folder_params import ListFolders
from .folder_views import list_view, mine
from .folders_access import visible_folders
from .params import parse, raw_params

__all__ = ["folders_in_scope", "list_folders"]


async def folders_in_scope(
    ctx: GatewayContext, caller: Caller, *, every: bool
) -> list[dict[str, Any]]:
    """What the caller may list: their visible folders, or with ``every`` (admins) their
    domain's (a superadmin's: all)."""
    if every and caller.role == "superadmin":
        return list(await VFolderLookups(ctx.store).every())
    if every and caller.role == "admin":
        return [
            r for r in await VFolderLookups(ctx.store).every() if r.get("domain") == caller.domain
        ]
    return list(await visible_folders(ctx, caller))


async def _owner_id(ctx: GatewayContext, caller: Caller, email: str) -> str | None:
    if email == (caller.user or {}).get("email"):
        return caller.user_id
    if caller.role not in ("admin", "superadmin"):
        raise GenericForbidden("only an admin lists another user's folders")
    user = await ctx.lookups.user_by_email(email)
    if user is None:
        return None
    if caller.role != "superadmin" and (
        user.get("domain") != caller.domain or user.get("role") == "superadmin"
    ):
        return None  # not a user this admin administers: as one that does not exist
    return str(user["user_id"])


async def list_folders(request: web.Request) -> web.Response:
    ctx: GatewayContext = request.app["ctx"]
    caller: Caller = request["caller"]
    params = parse(ListFolders, await raw_params(request))
    records: list[dict[str, Any]]
    if params.owner_user_email is not None:
        owner = await _owner_id(ctx, caller, params.owner_user_email)
        records = [] if owner is None else list(await VFolderLookups(ctx.store).owned_by(owner))
        if owner not in (None, caller.user_id) and caller.role != "superadmin":
            records = [r for r in records if r.get("domain") == caller.domain]
    else:
        records = await folders_in_scope(ctx, caller, every=params.all)
    if params.group_id is not None:
        try:
            wanted = str(uuid.UUID(params.group_id))
        except ValueError:
            raise InvalidAPIParameters(f"group_id: not a UUID: {params.group_id[:64]!r}") from None
        records = [r for r in records if str(r.get("group") or "") == wanted]
    projects = [
        uuid.UUID(str(p["project_id"])) for p in await ctx.lookups.projects_of(caller.user_id)
    ]
    names: dict[str, str | None] = {}
    answer = []
    for record in sorted(records, key=lambda r: (str(r.get("created_at")), str(r["name"]))):
        permission, owner_flag = mine(record, caller, projects)
        group = str(record.get("group") or "")
        if group and group not in names:
            project = await ctx.lookups.project(group)
            names[group] = str(project["name"]) if project else None
        answer.append(
            list_view(
                record,
                permission,
                owner_flag,
                user_email=record.get("creator") if record.get("user") else None,
                group_name=names.get(group) if group else None,
            )
        )
    return web.json_response(answer)
