"""``/resource``: presets, whether they fit now, and usage over a period (23.03's
``api/resource.py``).

Everything is read from projections: what a keypair or project occupies is the sum of its
live sessions' ``occupying_slots``, what a scaling group has left comes from its ALIVE
agents in the agents read model, usage from the sessions projection's usage intervals.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from events._canonical import decimal_to_plain
from events.correlation import correlation_kwargs

from ..domain.errors import InvalidAPIParameters
from ..domain.statuses import AGENT_RESOURCE_OCCUPYING_SESSION_STATUSES
from .context import GatewayContext
from .params import raw_params
from .problems import InsufficientPrivilege

__all__ = ["resource_routes"]

_OCCUPYING = sorted(s.name for s in AGENT_RESOURCE_OCCUPYING_SESSION_STATUSES)
"""Statuses whose sessions hold slots on agents (a PENDING one holds none yet)."""
_INFINITY = Decimal("Infinity")


def _plain(slots: dict[str, Decimal]) -> dict[str, str]:
    """Slots as the API writes them: plain decimal strings, ``Infinity`` for no limit."""
    return {k: decimal_to_plain(v) for k, v in sorted(slots.items())}


def _decimals(raw: dict[str, Any] | None) -> dict[str, Decimal]:
    return {k: Decimal(str(v)) for k, v in (raw or {}).items()}


def _sub(left: dict[str, Decimal], right: dict[str, Decimal]) -> dict[str, Decimal]:
    return {k: left.get(k, _INFINITY) - right.get(k, Decimal(0)) for k in left.keys() | right}


def _min(*slot_maps: dict[str, Decimal]) -> dict[str, Decimal]:
    keys = set().union(*slot_maps)
    return {k: min(m.get(k, _INFINITY) for m in slot_maps) for k in keys}


async def _occupied(ctx: GatewayContext, **filters: Any) -> dict[str, Decimal]:
    page = await ctx.models.sessions(statuses=_OCCUPYING, limit=10_000, **filters)
    total: dict[str, Decimal] = {}
    for record in page.items:
        for slot, value in (record.get("occupying_slots") or {}).items():
            total[slot] = total.get(slot, Decimal(0)) + Decimal(str(value))
    return total


def _limits(declared: dict[str, Any] | None, known: set[str]) -> dict[str, Decimal]:
    """Declared limits, Infinity for every slot type not declared (UNLIMITED)."""
    limits = {slot: _INFINITY for slot in known}
    limits.update(_decimals(declared))
    return limits


def _preset(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": record["name"],
        "shared_memory": record.get("shared_memory"),
        "resource_slots": _plain(_decimals(record.get("resource_slots"))),
    }


async def presets(request: web.Request) -> web.Response:
    ctx: GatewayContext = request.app["ctx"]
    return web.json_response({"presets": [_preset(p) for p in await ctx.lookups.presets()]})


async def check_presets(request: web.Request) -> web.Response:
    ctx: GatewayContext = request.app["ctx"]
    caller = request["caller"]
    params = await raw_params(request)
    project = await ctx.lookups.project_by_name(
        caller.domain, str(params.get("group") or "default")
    )
    if project is None:
        raise InvalidAPIParameters(f"unknown group {params.get('group')!r}")
    allowed = [
        g["name"]
        for g in await ctx.lookups.allowed_scaling_groups(
            caller.domain, str(project["project_id"]), caller.access_key
        )
    ]
    wanted = params.get("scaling_group")
    if wanted and wanted not in allowed:
        raise InvalidAPIParameters(f"scaling group {wanted!r} is not allowed here")
    groups = [wanted] if wanted else allowed
    limits = await ctx.lookups.limits_of(caller.access_key, str(project["project_id"])) or {}
    per_group = {}
    for name in groups:
        slots = await ctx.models.scaling_group_slots(name)
        per_group[name] = {
            "using": _decimals(slots["occupied"]),
            "remaining": _decimals(slots["available"]),
        }
    known = {"cpu", "mem"}.union(*(set(g["remaining"]) for g in per_group.values()))
    keypair_limits = _limits((limits.get("policy") or {}).get("total_resource_slots"), known)
    keypair_using = await _occupied(ctx, owner=caller.access_key)
    group_limits = _limits(limits.get("project_slots"), known)
    group_using = await _occupied(ctx, project=str(project["project_id"]))
    sgroup_remaining: dict[str, Decimal] = {}
    for group in per_group.values():
        for slot, value in group["remaining"].items():
            sgroup_remaining[slot] = sgroup_remaining.get(slot, Decimal(0)) + value
    keypair_remaining = _sub(keypair_limits, keypair_using)
    group_remaining = _sub(group_limits, group_using)
    fits = _min(
        keypair_remaining, group_remaining, {k: sgroup_remaining.get(k, Decimal(0)) for k in known}
    )
    answer_presets = []
    for record in await ctx.lookups.presets():
        wanted_slots = _decimals(record.get("resource_slots"))
        allocatable = all(
            value <= fits.get(slot, Decimal(0)) for slot, value in wanted_slots.items() if value > 0
        )
        answer_presets.append({**_preset(record), "allocatable": allocatable})
    return web.json_response(
        {
            "keypair_limits": _plain(keypair_limits),
            "keypair_using": _plain(keypair_using),
            "keypair_remaining": _plain(keypair_remaining),
            "group_limits": _plain(group_limits),
            "group_using": _plain(group_using),
            "group_remaining": _plain(group_remaining),
            "scaling_group_remaining": _plain(sgroup_remaining),
            "scaling_groups": {
                name: {"using": _plain(g["using"]), "remaining": _plain(g["remaining"])}
                for name, g in per_group.items()
            },
            "presets": answer_presets,
        }
    )


def _day(value: str, name: str) -> int:
    try:
        return int(datetime.strptime(value, "%Y%m%d").replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        raise InvalidAPIParameters(f"{name} must be YYYYMMDD, not {value!r}") from None


async def usage_period(request: web.Request) -> web.Response:
    """Slot-seconds per 15-minute bin of a project (``group_id``) or the caller's keypair."""
    ctx: GatewayContext = request.app["ctx"]
    caller = request["caller"]
    query = request.query
    start = _day(query.get("start_date", ""), "start_date")
    end = _day(query.get("end_date", ""), "end_date") + 86_400_000
    if end <= start:
        raise InvalidAPIParameters("end_date is before start_date")
    group = query.get("group_id")
    if group and not caller.is_superadmin:
        raise InsufficientPrivilege("only a superadmin reads a project's usage")
    scope = f"project:{group}" if group else f"keypair:{caller.access_key}"
    bins = await ctx.models.usage(scope, start, end, int(time.time() * 1000))
    return web.json_response(
        [
            {
                "start": datetime.fromtimestamp(b.start_ms / 1000, UTC).isoformat(),
                "num_sessions": b.num_sessions,
                "slot_seconds": b.slot_seconds,
            }
            for b in bins
        ]
    )


async def recalculate_usage(request: web.Request) -> web.Response:
    """What sessions, agents and keypairs occupy is a projection: recalculating it is
    folding those read models again from the log (23.03 recounts rows)."""
    if not request["caller"].is_superadmin:
        raise InsufficientPrivilege("only a superadmin recalculates usage")
    import ray

    ctx: GatewayContext = request.app["ctx"]
    projector = ray.get_actor("projector", namespace=ctx.router.namespace)
    await projector.rebuild.remote(["sessions", "agents"], **correlation_kwargs())
    return web.json_response({})


def resource_routes() -> list[web.RouteDef]:
    return [
        web.post("/resource/recalculate-usage", recalculate_usage),
        web.get("/resource/presets", presets),
        web.post("/resource/check-presets", check_presets),
        web.get("/resource/usage/period", usage_period),
    ]
