"""``POST /admin/gql``: the GraphQL subset the official client asks for (wire spec §3.6-§3.8):
``keypair``, ``compute_session_list`` and ``compute_session``, parsed and executed for real
by graphql-core, so results carry the requested fields in the requested order.

JSONString fields (``status_data``, ``occupying_slots``, ...) are JSON-encoded strings, as
graphene sends them; the CLI's formatters decode them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from graphql import GraphQLError, build_schema, graphql

from .auth import Caller
from .context import LIVE, GatewayContext
from .views import compute_session

__all__ = ["SCHEMA", "gql"]

_SDL = """
scalar UUID

type UserInfo { email: String full_name: String }

type KeyPair {
  user_id: String access_key: String secret_key: String is_active: Boolean is_admin: Boolean
  resource_policy: String created_at: String modified_at: String last_used: String
  rate_limit: Int num_queries: Int concurrency_used: Int ssh_public_key: String
  user_info: UserInfo
}

type ComputeContainer {
  id: UUID cluster_role: String cluster_idx: Int cluster_hostname: String local_rank: Int
  session_id: UUID image: String architecture: String registry: String status: String
  status_info: String status_data: String status_changed: String agent: String
  agent_addr: String container_id: String resource_opts: String occupied_slots: String
  preopen_ports: [Int] live_stat: String last_stat: String created_at: String
  terminated_at: String
}

type ComputeSession {
  id: UUID session_id: UUID main_kernel_id: UUID tag: String name: String type: String
  main_kernel_role: String image: String architecture: String registry: String
  cluster_mode: String cluster_size: Int domain_name: String group_name: String
  group_id: UUID user_id: UUID access_key: String status: String status_changed: String
  status_info: String status_data: String status_history: String created_at: String
  terminated_at: String starts_at: String startup_command: String result: String
  exit_code: Int
  abusing_reports: [String] idle_checks: String scaling_group: String service_ports: String
  mounts: [String] occupying_slots: String occupied_slots: String requested_slots: String
  num_queries: Int containers: [ComputeContainer] dependencies: [ComputeSession]
}

type ComputeSessionList { items: [ComputeSession]! total_count: Int! }

type Query {
  keypair(domain_name: String, access_key: String): KeyPair
  compute_session(id: UUID!): ComputeSession
  compute_session_list(
    limit: Int!, offset: Int!, order_key: String, order_asc: Boolean, domain_name: String,
    group_id: String, access_key: String, status: String, filter: String, order: String
  ): ComputeSessionList
}
"""
SCHEMA = build_schema(_SDL)
_MAX_PAGE = 100


class _Root:
    """The query's root value: graphql-core calls a root mapping's callables as resolvers."""

    def __init__(self, ctx: GatewayContext, caller: Caller) -> None:
        self.ctx = ctx
        self.caller = caller

    def as_mapping(self) -> dict[str, Any]:
        return {"keypair": self.keypair, "compute_session": self.compute_session,
                "compute_session_list": self.compute_session_list}  # fmt: skip

    async def keypair(self, _info: Any, access_key: str | None = None,
                      domain_name: str | None = None) -> dict[str, Any] | None:  # fmt: skip
        wanted = access_key or self.caller.access_key
        if wanted != self.caller.access_key and not self.caller.is_superadmin:
            raise GraphQLError("only a superadmin may look up other keypairs")
        record = await self.ctx.lookups.keypair(wanted)
        if record is None:
            return None
        user = await self.ctx.lookups.user(str(record["user_id"])) or {}
        own = wanted == self.caller.access_key
        return {**record, "user_id": str(record["user_id"]),
                "secret_key": await self.ctx.auth.secret_of(wanted) if own else None,
                "concurrency_used": await self._concurrency(wanted),
                "user_info": {"email": user.get("email"),
                              "full_name": user.get("full_name")}}  # fmt: skip

    async def _concurrency(self, access_key: str) -> int:
        return (await self.ctx.models.sessions(owner=access_key, statuses=LIVE, limit=1)).total

    def _visible(self, record: dict[str, Any]) -> bool:
        return record.get("access_key") == self.caller.access_key or self.caller.may_act_for_others

    async def compute_session(self, _info: Any, id: str) -> dict[str, Any] | None:
        try:
            record = await self.ctx.models.session(str(uuid.UUID(str(id))))
        except ValueError:
            raise GraphQLError(f"not a UUID: {id!r}") from None
        if record is None or not self._visible(record):
            return None
        return self._with_idle_checks(record)

    def _with_idle_checks(self, record: dict[str, Any]) -> dict[str, Any]:
        """``idle_checks`` judged fresh, only when the query asks for it (graphql-core calls a
        callable field value as its resolver)."""
        session = compute_session(record)

        async def idle_checks(_info: Any) -> str:
            return json.dumps(await self.ctx.idle.report(record))

        session["idle_checks"] = idle_checks
        return session

    async def compute_session_list(
        self, _info: Any, limit: int, offset: int, access_key: str | None = None,
        status: str | None = None, **_ignored: Any,
    ) -> dict[str, Any]:  # fmt: skip
        if not 1 <= limit <= _MAX_PAGE or offset < 0:
            raise GraphQLError(f"limit must be 1..{_MAX_PAGE} and offset >= 0")
        owner: str | None = self.caller.access_key
        if self.caller.may_act_for_others:
            owner = access_key  # an admin sees everyone's unless a keypair is asked for
        elif access_key not in (None, self.caller.access_key):
            raise GraphQLError("only admins may list other keypairs' sessions")
        statuses = [s.strip().upper() for s in status.split(",") if s.strip()] if status else None
        page = await self.ctx.models.sessions(owner=owner, statuses=statuses, offset=offset,
                                              limit=limit)  # fmt: skip
        return {"items": [self._with_idle_checks(r) for r in page.items],
                "total_count": page.total}  # fmt: skip


async def gql(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        query, variables = body["query"], body.get("variables") or {}
        if not isinstance(query, str) or not isinstance(variables, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return web.json_response(
            {"data": None, "errors": [{"message": "the body must be {query, variables}"}]}
        )
    root = _Root(request.app["ctx"], request["caller"])
    result = await graphql(SCHEMA, query, root_value=root.as_mapping(),
                           variable_values=variables,
                           operation_name=body.get("operation_name"))  # fmt: skip
    answer: dict[str, Any] = {"data": result.data}
    if result.errors:
        answer["errors"] = [error.formatted for error in result.errors]
    return web.json_response(answer, dumps=json.dumps)
