"""``/manager/status`` and the freeze gate (23.03's ``server_status_required``).

A superadmin freezes the manager for maintenance: ``PUT /manager/status {"status":
"frozen"}``. The status is a tenancy event (``manager_status_set`` on the ``config``
stream), so every gateway sees it and it survives restarts. While frozen:
- routes that start something new (creating sessions, rename, commit, abusing reports)
  answer ``503 server-frozen``;
- everything that reads, runs code in or ends a session keeps working.

``force_kill`` also destroys every live session, forced, with reason ``force-terminated``.
"""

from __future__ import annotations

import uuid
from typing import Literal

from aiohttp import web

from ..domain.commands.sessions import DestroySession
from ..domain.commands.tenancy import SetManagerStatus
from ..domain.errors import GenericForbidden
from . import API_VERSION, MANAGER_VERSION
from .admin.base import AdminCall
from .context import LIVE, GatewayContext
from .params import _Strict, parse, raw_params
from .problems import GatewayError

__all__ = [
    "FROZEN_GATED",
    "ServerFrozen",
    "check_frozen",
    "check_frozen_mutation",
    "manager_routes",
]

FROZEN_GATED = frozenset(
    {
        ("POST", "/session"),
        ("POST", "/session/_/create"),
        ("POST", "/session/_/create-from-template"),
        ("POST", "/session/_/create-from-params"),
        ("POST", "/session/{ref}/rename"),
        ("POST", "/session/{ref}/commit"),
        ("GET", "/session/{ref}/abusing-report"),
    }
)
"""23.03's ``ALL_ALLOWED`` routes: only while the manager runs."""


class ServerFrozen(GatewayError):
    status, error_type = 503, "server-frozen"
    title = "The server is frozen due to maintenance. Please try again later."


class StatusParams(_Strict):
    status: Literal["running", "frozen"]
    force_kill: bool = False


async def check_frozen(request: web.Request, ctx: GatewayContext) -> None:
    """Refuse a gated route while the manager is frozen."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    if (request.method, canonical) in FROZEN_GATED and await ctx.manager_status() == "frozen":
        raise ServerFrozen()


async def check_frozen_mutation(ctx: GatewayContext) -> None:
    """Refuse an admin GraphQL mutation while the manager is frozen (as 23.03 does)."""
    if await ctx.manager_status() == "frozen":
        raise ServerFrozen()


async def get_status(request: web.Request) -> web.Response:
    """This gateway as the one manager node, the status, and the sessions not yet ended."""
    ctx: GatewayContext = request.app["ctx"]
    active = (await ctx.models.sessions(statuses=LIVE, limit=1)).total
    status = await ctx.manager_status()
    node = {
        "id": "gateway",
        "num_proc": 1,
        "service_addr": request.host,
        "heartbeat_timeout": 40.0,
        "ssl_enabled": False,
        "active_sessions": active,
        "status": status,
        "version": MANAGER_VERSION,
        "api_version": API_VERSION,
    }
    return web.json_response({"nodes": [node], "status": status, "active_sessions": active})


async def set_status(request: web.Request) -> web.Response:
    ctx: GatewayContext = request.app["ctx"]
    if not request["caller"].is_superadmin:
        raise GenericForbidden("only a superadmin may change the manager status")
    params = parse(StatusParams, await raw_params(request))
    command = SetManagerStatus(status=params.status, force_kill=params.force_kill)
    await AdminCall(ctx, request["caller"], request.remote).tenancy(command)
    ctx.forget_manager_status()
    if params.force_kill:
        await _destroy_all(ctx)
    return web.Response(status=204)


async def _destroy_all(ctx: GatewayContext) -> None:
    """Every live session, forced, once (a maintenance freeze that cannot wait)."""
    ids: list[str] = []
    offset = 0
    while True:
        page = await ctx.models.sessions(statuses=LIVE, offset=offset, limit=100)
        ids += [r["id"] for r in page.items if r["status"] != "TERMINATING"]
        offset += len(page.items)
        if not page.items or offset >= page.total:
            break
    for session_id in ids:
        await ctx.router.handle(
            DestroySession(session_id=uuid.UUID(session_id), forced=True, reason="force-terminated")
        )


def manager_routes() -> list[web.RouteDef]:
    return [web.get("/manager/status", get_status), web.put("/manager/status", set_status)]
