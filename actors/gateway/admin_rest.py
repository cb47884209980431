"""REST pieces of the admin surface that the client and web UIs call (23.03's
``api/scaling_group.py``, ``api/etcd.py`` and ``api/auth.py``):

- ``GET /scaling-groups?group=`` — the scaling groups the caller may use in a project: the
  union of those associated with their domain, the project and their keypair (active ones),
  less the non-public ones unless the caller is an admin (23.03.5). The project must be one
  the caller may create sessions in (a member's, or any of their domain for an admin): an
  unknown project and another tenant's read the same, so the listing tells nobody which
  groups another project was given. 23.03 answered for any project name of the domain.
- ``GET /scaling-groups/{name}/wsproxy-version`` — kernelhub has no wsproxy, so a group the
  caller may use answers 23.03's answer for a group without one, ``{"wsproxy_version":
  "v1"}``; any other name is ``404 No such scaling group.``.
- ``GET /config/resource-slots`` — every slot type the cluster knows, with its unit (the
  create route's own :func:`actors.gateway.sessions._known_slots`).
- ``GET /auth/role`` — ``{global_role, domain_role, group_role}``; with ``?group=<id>`` the
  caller must be a member (``404`` otherwise, as 23.03): the same 404 for an unknown project
  and for another domain's.
- The agent watcher (``/resource/watcher...``) and image import (``/image/import``) the
  client also calls: refused with a message that says why (kernelhub has neither).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .admin.images import REGISTER_HINT
from .admin.infra_rules import INVALID_GROUP, project_refusal
from .context import GatewayContext
from .problems import GatewayError, InsufficientPrivilege
from .sessions import _known_slots

__all__ = ["admin_rest_routes"]


class _BadRequest(GatewayError):
    status, error_type, title = 400, "invalid-api-params", "Missing or invalid API parameters."


class _GenericNotFound(GatewayError):
    status, error_type, title = 404, "generic-not-found", "Not found."


class _ScalingGroupNotFound(GatewayError):
    status, error_type, title = 404, "object-not-found", "No such scaling group."


class _NotOffered(GatewayError):
    status, error_type, title = 400, "generic-bad-request", "Bad request."


def _ctx(request: web.Request) -> GatewayContext:
    ctx: GatewayContext = request.app["ctx"]
    return ctx


def _only(request: web.Request, *names: str) -> dict[str, str]:
    """The query's parameters, refusing any this route does not read (never ignored)."""
    unknown = sorted(set(request.query) - set(names))
    if unknown:
        raise _BadRequest(
            f"unknown parameter {', '.join(unknown)} (this route reads: "
            f"{', '.join(names) or 'none'})"
        )
    return {k: request.query[k] for k in names if k in request.query}


def _group_param(params: Mapping[str, str]) -> str | None:
    """23.03's ``group`` (aliases ``group_id``, ``group_name``)."""
    given = [params[k] for k in ("group", "group_id", "group_name") if k in params]
    if len(given) > 1:
        raise _BadRequest("give one of group, group_id and group_name")
    return given[0] if given else None


async def _project_for(request: web.Request, group: str) -> Mapping[str, Any]:
    """The project ``group`` (an id, or a name in the caller's domain) names, if the caller
    may create sessions in it; the same 400 otherwise, whether it exists or not."""
    ctx, caller = _ctx(request), request["caller"]
    try:
        project = await ctx.lookups.project(str(uuid.UUID(group)))
    except ValueError:
        project = await ctx.lookups.project_by_name(caller.domain, group)
    refusal = project_refusal(caller, caller.user_id, project)
    if refusal is not None or project is None:
        raise _BadRequest(refusal or INVALID_GROUP)
    return project


async def _usable(request: web.Request, group: str | None) -> list[dict[str, Any]]:
    """The active scaling groups the caller may use (in ``group``'s project when given), the
    non-public ones only for admins."""
    ctx, caller = _ctx(request), request["caller"]
    project = await _project_for(request, group) if group else None
    domain = str(project.get("domain")) if project else caller.domain
    project_id = str(project.get("project_id") or project.get("id")) if project else None
    groups = await ctx.lookups.allowed_scaling_groups(domain, project_id, caller.access_key)
    if not caller.may_act_for_others:
        groups = [g for g in groups if g.get("is_public", True)]
    return groups


async def list_available(request: web.Request) -> web.Response:
    group = _group_param(_only(request, "group", "group_id", "group_name"))
    if not group:
        raise _BadRequest("group is required (a project id or name)")
    groups = await _usable(request, group)
    return web.json_response({"scaling_groups": [{"name": g["name"]} for g in groups]})


async def wsproxy_version(request: web.Request) -> web.Response:
    group = _group_param(_only(request, "group", "group_id", "group_name"))
    name = request.match_info["name"]
    if not any(g["name"] == name for g in await _usable(request, group or None)):
        raise _ScalingGroupNotFound()
    return web.json_response({"wsproxy_version": "v1"})


async def resource_slots(request: web.Request) -> web.Response:
    _only(request)
    known = await _known_slots(_ctx(request), set())
    return web.json_response({name: str(unit) for name, unit in sorted(known.items())})


async def role(request: web.Request) -> web.Response:
    params = _only(request, "group")
    ctx, caller = _ctx(request), request["caller"]
    group_role = None
    if params.get("group"):
        try:
            project_id = str(uuid.UUID(params["group"]))
        except ValueError:
            raise _BadRequest(f"group: {params['group']!r} is not a UUID") from None
        project = await ctx.lookups.project(project_id)
        members = {str(m) for m in (project or {}).get("members") or ()}
        if caller.user_id not in members:
            raise _GenericNotFound("No such user group or you are not the member of the group.")
        group_role = "user"  # 23.03 has no per-project roles yet
    return web.json_response(
        {
            "global_role": "superadmin" if caller.is_superadmin else "user",
            "domain_role": "admin" if caller.may_act_for_others else "user",
            "group_role": group_role,
        }
    )


async def watcher(request: web.Request) -> web.Response:
    if not request["caller"].is_superadmin:
        raise InsufficientPrivilege("only a superadmin may reach the agent watcher")
    raise _NotOffered(
        "kernelhub's agents have no watcher: they run as Ray actors of the cluster; "
        "`kh status` shows them and `kh down`/`kh up` restart them"
    )


async def image_import(request: web.Request) -> web.Response:
    raise _NotOffered(f"kernelhub builds no images from an import form: {REGISTER_HINT}")


def admin_rest_routes() -> list[web.RouteDef]:
    return [
        web.get("/scaling-groups", list_available),
        web.get("/scaling-groups/{name}/wsproxy-version", wsproxy_version),
        web.get("/config/resource-slots", resource_slots),
        web.get("/auth/role", role),
        web.get("/resource/watcher", watcher),
        web.post("/resource/watcher/agent/start", watcher),
        web.post("/resource/watcher/agent/stop", watcher),
        web.post("/resource/watcher/agent/restart", watcher),
        web.get("/image/import", image_import),
        web.post("/image/import", image_import),
    ]
