"""Who else may use a folder: invitations (a user's folder, 23.03's ``vfolder invite``),
direct shares (``vfolder share``: a project folder's user-specific permission, set by the
project's domain admins, for its members; a user's folder is offered only by invitation),
unshare, and leaving a folder shared with one.

Users are named by e-mail, and only users the caller could name anyway count: the caller's
domain's (a superadmin's: any), active. An unknown e-mail and another domain's user are the
same "not found": the answer never tells whether an address exists elsewhere. An invitation
is the invitee's to accept or reject and the inviter's to cancel; to anyone else it does not
exist (404, as a missing one).
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from events.catalogue import (
    VFolderInvitationAnswered,
    VFolderInvited,
    VFolderShared,
    VFolderUnshared,
)
from projections.vfolder_queries import VFolderLookups

from ..domain.errors import (
    GenericForbidden,
    InvalidAPIParameters,
    ObjectNotFound,
    VFolderAlreadyExists,
)
from .auth import Caller
from .context import GatewayContext
from .folder_params import (
    AcceptInvitation,
    InviteUsers,
    LeaveFolder,
    ShareFolder,
    UnshareFolder,
)
from .folder_views import invitation_view
from .folders_access import Folder, folder_for, visible_folders, write_vfolder
from .params import parse, raw_params

__all__ = ["sharing_routes"]


class InvitationNotFound(ObjectNotFound):
    def __init__(self, msg: str = "") -> None:
        super().__init__("vfolder invitation", msg)


def _ctx(request: web.Request) -> GatewayContext:
    ctx: GatewayContext = request.app["ctx"]
    return ctx


def _caller(request: web.Request) -> Caller:
    caller: Caller = request["caller"]
    return caller


async def _write(request: web.Request, event: Any) -> list[Any]:
    return await write_vfolder(_ctx(request), _caller(request), event, peer=request.remote)


async def _users(request: web.Request, emails: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The active users the caller may name, by e-mail (each once), and the e-mails that
    name none of them."""
    ctx, caller = _ctx(request), _caller(request)
    found: dict[str, Any] = {}
    missing: list[str] = []
    for email in dict.fromkeys(emails):
        user = await ctx.lookups.user_by_email(email)
        if (
            user is None
            or user.get("status", "active") != "active"
            or (not caller.is_superadmin and user.get("domain") != caller.domain)
        ):
            missing.append(email)
        else:
            found[email] = user
    return found, missing


def _require_sharer(folder: Folder, host_permission: str) -> None:
    if not folder.manager:
        raise GenericForbidden("only the folder's owner (or its project's admins) may do this")
    if host_permission not in folder.host_perms:
        raise GenericForbidden(
            f"the storage host {folder.state.host} does not allow you {host_permission}"
        )


async def invite(request: web.Request) -> web.Response:
    params = parse(InviteUsers, await raw_params(request))
    caller = _caller(request)
    folder = await folder_for(_ctx(request), caller, request.match_info["name"])
    _require_sharer(folder, "invite-others")
    if folder.state.ownership_type != "user":
        raise InvalidAPIParameters(
            "a project folder is shared with `vfolder share`, not invited to"
        )
    users, missing = await _users(request, params.user_ids)
    for email, user in users.items():
        if str(user["user_id"]) == str(folder.state.user):
            raise InvalidAPIParameters(f"user_ids: {email} owns this folder")
        if uuid.UUID(str(user["user_id"])) in folder.state.shares:
            raise VFolderAlreadyExists(f"{email} already shares this folder")
    invited = []
    me = (caller.user or {}).get("email") or caller.access_key
    for email, user in users.items():
        appended = await _write(
            request,
            VFolderInvited(
                folder_id=folder.folder_id,
                invitation_id=uuid.uuid4(),
                inviter=uuid.UUID(caller.user_id),
                inviter_email=str(me)[:256],
                invitee=uuid.UUID(str(user["user_id"])),
                invitee_email=email,
                permission=params.perm,
            ),
        )
        if appended:  # nothing appended: an invitation to them is pending already
            invited.append(email)
    return web.json_response({"invited_ids": invited, "not_found": missing}, status=201)


async def invitations(request: web.Request) -> web.Response:
    ctx, caller = _ctx(request), _caller(request)
    lookups = VFolderLookups(ctx.store)
    answer = []
    for invitation in await lookups.invitations_for(caller.user_id):
        folder = await lookups.folder(str(invitation["folder_id"]))
        answer.append(invitation_view(dict(invitation), folder.get("name") if folder else None))
    return web.json_response({"invitations": answer})


async def _invitation(request: web.Request) -> tuple[dict[str, Any], str]:
    """The invitation named, and the caller's part in it (``invitee`` or ``inviter``)."""
    params = parse(AcceptInvitation, await raw_params(request))
    caller = _caller(request)
    found = await VFolderLookups(_ctx(request).store).invitation(params.inv_id)
    if found is not None:
        if str(found.get("invitee")) == caller.user_id:
            return dict(found), "invitee"
        if str(found.get("inviter")) == caller.user_id:
            return dict(found), "inviter"
    raise InvitationNotFound()


async def accept(request: web.Request) -> web.Response:
    invitation, role = await _invitation(request)
    if role != "invitee":
        raise InvitationNotFound()
    ctx, caller = _ctx(request), _caller(request)
    folder = await VFolderLookups(ctx.store).folder(str(invitation["folder_id"]))
    name = (folder or {}).get("name")
    if any(r.get("name") == name for r in await visible_folders(ctx, caller)):
        raise VFolderAlreadyExists(f"you already have a folder named {name!r}")
    await _write(
        request,
        VFolderInvitationAnswered(
            folder_id=uuid.UUID(str(invitation["folder_id"])),
            invitation_id=uuid.UUID(str(invitation["invitation_id"])),
            state="accepted",
        ),
    )
    return web.json_response({})


async def delete_invitation(request: web.Request) -> web.Response:
    """Rejected by its invitee, or canceled by its inviter."""
    invitation, role = await _invitation(request)
    await _write(
        request,
        VFolderInvitationAnswered(
            folder_id=uuid.UUID(str(invitation["folder_id"])),
            invitation_id=uuid.UUID(str(invitation["invitation_id"])),
            state="rejected" if role == "invitee" else "canceled",
        ),
    )
    return web.json_response({})


async def _members(ctx: GatewayContext, user_id: str) -> set[str]:
    return {str(p["project_id"]) for p in await ctx.lookups.projects_of(user_id)}


async def share(request: web.Request) -> web.Response:
    """A user-specific permission on a project folder, set by its admins for members of its
    project (who see the folder already: the share changes only what they may do with it).
    A user's folder is offered by invitation instead, which its invitee accepts: a share
    without consent would put a folder into someone's namespace, shadowing their own folder
    of that name or catching what they upload to it (review F2)."""
    params = parse(ShareFolder, await raw_params(request))
    ctx = _ctx(request)
    folder = await folder_for(ctx, _caller(request), request.match_info["name"])
    _require_sharer(folder, "set-user-specific-permission")
    if folder.state.ownership_type != "group":
        raise InvalidAPIParameters(
            "a user's folder is shared by invitation (vfolder invite), which its invitee "
            "accepts; share sets a project folder's permission for one of its members"
        )
    users, missing = await _users(request, params.emails)
    project = str(folder.state.group)
    missing += [
        e for e, u in users.items() if project not in await _members(ctx, str(u["user_id"]))
    ]
    if missing:
        raise InvalidAPIParameters(
            f"emails: not users this folder can be shared with: {', '.join(missing[:10])}"
        )
    for user in users.values():
        await _write(
            request,
            VFolderShared(
                folder_id=folder.folder_id,
                user_id=uuid.UUID(str(user["user_id"])),
                permission=params.permission,
            ),
        )
    return web.json_response({"shared_emails": list(users)}, status=201)


async def unshare(request: web.Request) -> web.Response:
    params = parse(UnshareFolder, await raw_params(request))
    folder = await folder_for(_ctx(request), _caller(request), request.match_info["name"])
    _require_sharer(folder, "set-user-specific-permission")
    users, _missing = await _users(request, params.emails)
    by_id = {uuid.UUID(str(u["user_id"])): e for e, u in users.items()}
    shared = [u for u in by_id if u in folder.state.shares]
    if shared:
        await _write(request, VFolderUnshared(folder_id=folder.folder_id, user_ids=shared))
    return web.json_response({"unshared_emails": [by_id[u] for u in shared]})


async def leave(request: web.Request) -> web.Response:
    """The caller stops sharing a folder shared with them (``shared_user_uuid``: another
    user, removed by the folder's manager, as 23.09)."""
    params = parse(LeaveFolder, await raw_params(request))
    caller = _caller(request)
    folder = await folder_for(_ctx(request), caller, request.match_info["name"])
    who = params.shared_user_uuid or caller.user_id
    try:
        user = uuid.UUID(who)
    except ValueError:
        raise InvalidAPIParameters("shared_user_uuid: not a UUID") from None
    if str(user) != caller.user_id:
        _require_sharer(folder, "set-user-specific-permission")
    elif folder.state.ownership_type == "user" and str(folder.state.user) == caller.user_id:
        raise InvalidAPIParameters("you own this folder: delete it instead of leaving it")
    if user not in folder.state.shares:
        raise InvalidAPIParameters("the folder is not shared with this user; nothing to leave")
    await _write(request, VFolderUnshared(folder_id=folder.folder_id, user_ids=[user]))
    return web.json_response({})


def sharing_routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(f"{prefix}/invitations/list", invitations),
        web.post(f"{prefix}/invitations/accept", accept),
        web.delete(f"{prefix}/invitations/delete", delete_invitation),
        web.post(f"{prefix}/{{name}}/invite", invite),
        web.post(f"{prefix}/{{name}}/share", share),
        web.delete(f"{prefix}/{{name}}/unshare", unshare),
        web.post(f"{prefix}/{{name}}/leave", leave),
    ]
