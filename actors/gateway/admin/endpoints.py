"""Inference endpoints in the GraphQL schema: ``endpoint(endpoint_id)`` (what ``backend.ai
service info`` and ``get-endpoint`` send) and ``endpoint_list`` (``service list``), with the
fields of the client's ``service_fields`` and ``routing_fields`` (23.3.5's ``Endpoint`` and
``Routing`` types, ``model_mount_destiation`` spelt as 23.3.5 spells it).

Scoped as ``/services``: a user sees their own endpoints, a domain admin those of their
domain (not a superadmin's), a superadmin all (:func:`..serving_access.may_act_on`). An
endpoint out of scope is absent (``endpoint`` answers null), never an error that says it
exists. ``filter`` and ``order`` take 23.03's mini-languages over :data:`ENDPOINT_FIELDS`.

What kernelhub does not keep answers null: ``startup_command`` and ``callback_url`` (refused
at create), ``bootstrap_script`` (kept in the log only, not in listings), ``destroyed_at``
(a destroyed endpoint leaves the read model).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from projections.endpoint_queries import EndpointLookups

from ..gql_filter import FieldSpec, moment_of, parse_filter, parse_order, select
from ..serving_access import may_act_on, service_endpoint
from .base import AdminArea, AdminCall, Resolvers, check_page
from .people_views import parse_uuid

__all__ = ["AREA", "ENDPOINT_FIELDS"]

_SDL = """
type Routing {
  routing_id: UUID endpoint: String session: UUID status: String traffic_ratio: Float
  created_at: DateTime error_data: JSONString
}

type Endpoint {
  endpoint_id: UUID image: String domain: String project: String resource_group: String
  resource_slots: JSONString url: String model: UUID model_version: Int
  model_mount_destiation: String model_mount_destination: String
  created_user: UUID session_owner: UUID tag: String startup_command: String
  bootstrap_script: String callback_url: String environ: JSONString name: String
  resource_opts: JSONString desired_session_count: Int cluster_mode: String
  cluster_size: Int open_to_public: Boolean created_at: DateTime destroyed_at: DateTime
  routings: [Routing] retries: Int status: String
}

type EndpointList { items: [Endpoint]! total_count: Int! }

extend type Query {
  endpoint(endpoint_id: UUID!): Endpoint
  endpoint_list(
    limit: Int!, offset: Int!, filter: String, order: String, domain_name: String,
    group_id: UUID, user_uuid: UUID, project: UUID
  ): EndpointList
}
"""

ENDPOINT_FIELDS: Mapping[str, FieldSpec] = {
    "endpoint_id": FieldSpec("str"),
    "name": FieldSpec("str"),
    "image": FieldSpec("str"),
    "domain": FieldSpec("str"),
    "project": FieldSpec("str"),
    "resource_group": FieldSpec("str"),
    "model": FieldSpec("str"),
    "session_owner": FieldSpec("str"),
    "created_user": FieldSpec("str"),
    "tag": FieldSpec("str"),
    "cluster_mode": FieldSpec("str"),
    "cluster_size": FieldSpec("int"),
    "desired_session_count": FieldSpec("int"),
    "open_to_public": FieldSpec("str"),
    "status": FieldSpec("str"),
    "created_at": FieldSpec("time"),
}
"""What ``endpoint_list``'s ``filter`` and ``order`` may name."""


def _routings(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    endpoint_id = str(record["endpoint_id"])
    routes = sorted(
        (record.get("routes") or {}).values(),
        key=lambda r: (str(r.get("created_at")), str(r.get("route_id"))),
    )
    return [
        {
            "routing_id": str(r["route_id"]),
            "endpoint": endpoint_id,
            "session": str(r["session_id"]),
            "status": r.get("status"),
            "traffic_ratio": float(r.get("traffic_ratio") or 0),
            "created_at": r.get("created_at"),
            "error_data": None,
        }
        for r in routes
    ]


def endpoint_view(record: Mapping[str, Any], url: str) -> dict[str, Any]:
    owner = str(record.get("owner"))
    destination = record.get("model_mount_destination")
    return {
        "endpoint_id": str(record["endpoint_id"]),
        "image": record.get("image"),
        "domain": record.get("domain"),
        "project": str(record.get("project_id")),
        "resource_group": record.get("scaling_group"),
        "resource_slots": json.dumps(record.get("resource_slots") or {}),
        "url": url,
        "model": str(record.get("model")),
        "model_version": record.get("model_version"),
        "model_mount_destiation": destination,
        "model_mount_destination": destination,
        "created_user": owner,
        "session_owner": owner,
        "tag": record.get("tag"),
        "startup_command": None,
        "bootstrap_script": None,
        "callback_url": None,
        "environ": json.dumps(record.get("environ") or {}),
        "name": record.get("name"),
        "resource_opts": json.dumps(record.get("resource_opts") or {}),
        "desired_session_count": record.get("desired_session_count"),
        "cluster_mode": record.get("cluster_mode"),
        "cluster_size": record.get("cluster_size"),
        "open_to_public": bool(record.get("open_to_public")),
        "created_at": record.get("created_at"),
        "destroyed_at": None,
        "routings": _routings(record),
        "retries": 0,
        "status": str(record.get("status") or "live").upper(),
    }


def _row(view: Mapping[str, Any]) -> dict[str, Any]:
    row = {name: view.get(name) for name in ENDPOINT_FIELDS}
    row["open_to_public"] = "true" if view.get("open_to_public") else "false"
    row["created_at"] = moment_of(view.get("created_at"))
    return row


def _resolvers(call: AdminCall) -> Resolvers:
    ctx, caller = call.ctx, call.caller
    lookups = EndpointLookups(ctx.store)

    async def in_scope() -> list[Mapping[str, Any]]:
        if caller.role in ("admin", "superadmin"):
            records = await lookups.every()
        else:
            records = await lookups.owned_by(caller.user_id)
        return [r for r in records if await may_act_on(ctx, caller, dict(r))]

    def view(record: Mapping[str, Any]) -> dict[str, Any]:
        return endpoint_view(record, service_endpoint(ctx, None, record["endpoint_id"]))

    async def endpoint(_info: Any, endpoint_id: Any) -> dict[str, Any] | None:
        wanted = parse_uuid("endpoint_id", endpoint_id)
        record = await lookups.endpoint(wanted)
        if record is None or not await may_act_on(ctx, caller, dict(record)):
            return None
        return view(record)

    async def endpoint_list(
        _info: Any,
        limit: int,
        offset: int,
        filter: str | None = None,
        order: str | None = None,
        domain_name: str | None = None,
        group_id: Any = None,
        user_uuid: Any = None,
        project: Any = None,
    ) -> dict[str, Any]:
        check_page(limit, offset)
        keep = parse_filter(filter, fields=ENDPOINT_FIELDS) if filter else None
        ordering = parse_order(order, fields=ENDPOINT_FIELDS) if order else None
        records = await in_scope()
        if domain_name is not None:
            records = [r for r in records if r.get("domain") == domain_name]
        for name, value, key in (
            ("group_id", group_id, "project_id"),
            ("project", project, "project_id"),
            ("user_uuid", user_uuid, "owner"),
        ):
            if value is not None:
                wanted = parse_uuid(name, value)
                records = [r for r in records if str(r.get(key)) == wanted]
        records.sort(key=lambda r: (str(r.get("created_at")), str(r.get("endpoint_id"))))
        shown = [view(r) for r in records]
        if keep is not None or (ordering is not None and ordering.keys):
            rows = [(_row(v), v) for v in shown]
            shown = select(rows, keep, ordering if ordering and ordering.keys else None)
        return {"items": shown[offset : offset + limit], "total_count": len(shown)}

    return {"endpoint": endpoint, "endpoint_list": endpoint_list}


AREA = AdminArea("endpoints", sdl=_SDL, resolvers=_resolvers)
