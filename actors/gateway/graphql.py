"""``POST /admin/gql``: the GraphQL subset the official client asks for (docs/gateway.md):
``keypair``, ``compute_session_list`` and ``compute_session``, parsed and executed for real
by graphql-core, so results carry the requested fields in the requested order.

Every field is scoped as REST is (:mod:`actors.gateway.scope`): a user sees their own
keypair's sessions, a domain admin their domain's, a superadmin all. A document past the
bounds of :mod:`actors.gateway.gql_limits` is refused with a 400 before it runs.

JSONString fields (``status_data``, ``occupying_slots``, ...) are JSON-encoded strings, as
graphene sends them; the CLI's formatters decode them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from graphql import ExecutionResult, GraphQLError, build_schema, execute, validate

from ..domain.errors import DomainError
from .auth import Caller
from .context import LIVE, GatewayContext
from .gql_limits import QueryLimits, QueryTooComplex, measure, parse_bounded
from .params import loads
from .scope import is_domain_admin, visible
from .views import compute_session

__all__ = ["LIMITS", "SCHEMA", "gql"]

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
LIMITS = QueryLimits(default_page=_MAX_PAGE)
_MAX_BODY = 4 * LIMITS.max_bytes
"""The query and its variables (the client's variables are a few short values)."""


class _Root:
    """The query's root value: graphql-core calls a root mapping's callables as resolvers."""

    def __init__(self, ctx: GatewayContext, caller: Caller) -> None:
        self.ctx = ctx
        self.caller = caller

    def as_mapping(self) -> dict[str, Any]:
        return {
            "keypair": self.keypair,
            "compute_session": self.compute_session,
            "compute_session_list": self.compute_session_list,
        }

    async def keypair(
        self, _info: Any, access_key: str | None = None, domain_name: str | None = None
    ) -> dict[str, Any] | None:
        wanted = access_key or self.caller.access_key
        record = await self.ctx.lookups.keypair(wanted)
        own = wanted == self.caller.access_key
        user = await self.ctx.lookups.user(str(record["user_id"])) if record else None
        user = user or {}
        if (
            not own
            and not self.caller.is_superadmin
            and not (
                is_domain_admin(self.caller)
                and record is not None
                and user.get("domain") == self.caller.domain
                and user.get("role") != "superadmin"
            )
        ):
            raise GraphQLError("only an admin may look up other keypairs, in the admin's domain")
        if record is None:
            return None
        return {
            **record,
            "user_id": str(record["user_id"]),
            "secret_key": await self.ctx.auth.secret_of(wanted) if own else None,
            "concurrency_used": await self._concurrency(wanted),
            "user_info": {"email": user.get("email"), "full_name": user.get("full_name")},
        }

    async def _concurrency(self, access_key: str) -> int:
        return (await self.ctx.models.sessions(owner=access_key, statuses=LIVE, limit=1)).total

    async def compute_session(self, _info: Any, id: str) -> dict[str, Any] | None:
        try:
            record = await self.ctx.models.session(str(uuid.UUID(str(id))))
        except ValueError:
            raise GraphQLError(f"not a UUID: {id!r}") from None
        if record is None or not visible(self.caller, record):
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
        self,
        _info: Any,
        limit: int,
        offset: int,
        access_key: str | None = None,
        status: str | None = None,
        domain_name: str | None = None,
        group_id: str | None = None,
        **_ignored: Any,
    ) -> dict[str, Any]:
        if not 1 <= limit <= _MAX_PAGE or offset < 0:
            raise GraphQLError(f"limit must be 1..{_MAX_PAGE} and offset >= 0")
        owner, projects = await self._scope(access_key, domain_name)
        if group_id:
            projects = [group_id] if projects is None or group_id in projects else []
        statuses = [s.strip().upper() for s in status.split(",") if s.strip()] if status else None
        page = await self.ctx.models.sessions(
            owner=owner, statuses=statuses, offset=offset, limit=limit, projects=projects
        )
        return {"items": [self._with_idle_checks(r) for r in page.items], "total_count": page.total}

    async def _scope(
        self, access_key: str | None, domain_name: str | None
    ) -> tuple[str | None, list[str] | None]:
        """The keypair (``None``: any) and the projects (``None``: any) a listing may show:
        a user their own keypair's, a domain admin their domain's projects', a superadmin
        everything (a domain's, when ``domain_name`` is asked for)."""
        caller = self.caller
        if not caller.may_act_for_others:
            if access_key not in (None, caller.access_key):
                raise GraphQLError("only admins may list other keypairs' sessions")
            return caller.access_key, None
        if access_key:
            try:
                await self.ctx.acting_for(caller, access_key)
            except DomainError as exc:
                raise GraphQLError(exc.msg or exc.title) from None
        if caller.is_superadmin:
            if not domain_name:
                return access_key, None
            return access_key, await self.ctx.lookups.projects_in(domain_name)
        if domain_name not in (None, caller.domain):
            raise GraphQLError("a domain admin lists only the sessions of their own domain")
        return access_key, await self.ctx.lookups.projects_in(caller.domain)


async def gql(request: web.Request) -> web.Response:
    raw = await request.content.read(_MAX_BODY + 1)  # never more, whatever it announces
    if len(raw) > _MAX_BODY:
        raise QueryTooComplex(f"the request body is over {_MAX_BODY} bytes")
    try:
        body = loads(raw)  # NaN/Infinity: a 400 problem
        query, variables = body["query"], body.get("variables") or {}
        if not isinstance(query, str) or not isinstance(variables, dict):
            raise TypeError
    except RecursionError:  # variables nested thousands deep
        raise QueryTooComplex("the body is nested too deep") from None
    except (ValueError, KeyError, TypeError):
        return web.json_response(
            {"data": None, "errors": [{"message": "the body must be {query, variables}"}]}
        )
    document = parse_bounded(query, LIMITS)
    if isinstance(document, GraphQLError):  # a syntax error: answered the GraphQL way
        result = ExecutionResult(data=None, errors=[document])
    else:
        measure(document, variables, LIMITS)  # past a bound: a 400 problem, nothing run
        errors = validate(SCHEMA, document)
        if errors:
            result = ExecutionResult(data=None, errors=errors)
        else:
            root = _Root(request.app["ctx"], request["caller"])
            outcome = execute(
                SCHEMA,
                document,
                root_value=root.as_mapping(),
                variable_values=variables,
                operation_name=body.get("operation_name"),
            )
            result = await outcome if not isinstance(outcome, ExecutionResult) else outcome
    answer: dict[str, Any] = {"data": result.data}
    if result.errors:
        answer["errors"] = [error.formatted for error in result.errors]
    return web.json_response(answer, dumps=json.dumps)
