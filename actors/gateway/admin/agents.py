"""Agents in the admin GraphQL schema: what ``backend.ai admin agent list/info`` sends
(23.03's ``agent``, ``agents`` and the paginated ``agent_list``), read from the agents read
model (slots from the ledger) and telemetry (``live_stat``, ``cpu_cur_pct``,
``mem_cur_bytes``: the agent's kernels' live stats, :mod:`projections.live_stats`).

A superadmin's only: anyone else gets 23.03's ``403 insufficient-privilege`` (an agent's
address, capacity and load are the cluster's, not a tenant's). ``agent_list`` takes
``filter``/``order`` in 23.03's mini-languages over the agent's columns
(:data:`.infra_rules.AGENT_FIELDS`; another field is refused with a 400 naming it), in id
order otherwise. Live figures are read only when the query
asks for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from graphql import FieldNode

from projections.live_stats import metric_values, read_kernel_stats

from ..gql_filter import parse_filter, parse_order, select
from ..problems import InsufficientPrivilege
from .base import AdminArea, AdminCall, Resolvers, check_page
from .infra_rules import AGENT_FIELDS, agent_row, agent_view, node_live_stat, parse_agent_status

__all__ = ["AREA"]

_SDL = """
type Agent {
  id: String status: String status_changed: DateTime region: String architecture: String
  scaling_group: String schedulable: Boolean available_slots: JSONString
  occupied_slots: JSONString addr: String first_contact: DateTime lost_at: DateTime
  live_stat: JSONString version: String compute_plugins: JSONString
  hardware_metadata: JSONString local_config: JSONString cpu_cur_pct: Float
  mem_cur_bytes: Float
}

type AgentList { items: [Agent]! total_count: Int! }

extend type Query {
  agent(agent_id: String!): Agent
  agents(status: String, scaling_group: String): [Agent]
  agent_list(
    limit: Int!, offset: Int!, filter: String, order: String, status: String,
    scaling_group: String
  ): AgentList
}
"""

_LIVE = frozenset({"live_stat", "cpu_cur_pct", "mem_cur_bytes"})


def _require(call: AdminCall) -> None:
    if not call.caller.is_superadmin:
        raise InsufficientPrivilege("only a superadmin may see the agents")


def _asked(info: Any) -> set[str]:
    """The fields the query selects on each agent (to read telemetry only when asked); a
    fragment counts as asking for everything."""
    names: set[str] = set()
    for node in getattr(info, "field_nodes", None) or ():
        for selection in node.selection_set.selections if node.selection_set else ():
            if not isinstance(selection, FieldNode):
                return set(_LIVE)
            if selection.name.value == "items" and selection.selection_set:
                for inner in selection.selection_set.selections:
                    if not isinstance(inner, FieldNode):
                        return set(_LIVE)
                    names.add(inner.name.value)
            else:
                names.add(selection.name.value)
    return names


def _resolvers(call: AdminCall) -> Resolvers:
    ctx = call.ctx

    async def live(record: Mapping[str, Any]) -> dict[str, Any]:
        holds: Mapping[str, Mapping[str, Any]] = record.get("holds") or {}
        kernels = sorted(holds)
        measured = await read_kernel_stats(ctx.store, kernels) if kernels else {}
        stats = [metric_values(measured[k], holds[k]) or {} for k in kernels if k in measured]
        raw = await ctx.store.telemetry.agent_devices(str(record["id"]))
        devices = (json.loads(raw) or {}).get("devices") if raw else None
        return node_live_stat(record.get("available_slots") or {}, stats, devices)

    async def views(records: list[Mapping[str, Any]], info: Any) -> list[dict[str, Any]]:
        wanted = bool(_asked(info) & _LIVE)
        return [agent_view(r, await live(r) if wanted else None) for r in records]

    async def selected(status: str | None, scaling_group: str | None) -> list[Mapping[str, Any]]:
        records = await ctx.models.agents(scaling_group or None, parse_agent_status(status))
        return sorted(records, key=lambda r: str(r["id"]))

    async def agent(info: Any, agent_id: str) -> dict[str, Any] | None:
        _require(call)
        record = await ctx.models.agent(agent_id)
        return None if record is None else (await views([record], info))[0]

    async def agents(
        info: Any, status: str | None = None, scaling_group: str | None = None
    ) -> list[dict[str, Any]]:
        _require(call)
        return await views(await selected(status, scaling_group), info)

    async def agent_list(
        info: Any,
        limit: int,
        offset: int,
        filter: str | None = None,
        order: str | None = None,
        status: str | None = None,
        scaling_group: str | None = None,
    ) -> dict[str, Any]:
        _require(call)
        check_page(limit, offset)
        keep = parse_filter(filter, fields=AGENT_FIELDS) if filter else None
        ordering = parse_order(order, fields=AGENT_FIELDS) if order else None
        records = await selected(status, scaling_group)
        if keep is not None or (ordering is not None and ordering.keys):
            rows = [(agent_row(r), r) for r in records]
            records = select(rows, keep, ordering if ordering and ordering.keys else None)
        page = records[offset : offset + limit]
        return {"items": await views(page, info), "total_count": len(records)}

    return {"agent": agent, "agents": agents, "agent_list": agent_list}


AREA = AdminArea("agents", sdl=_SDL, resolvers=_resolvers)
