"""``POST /admin/gql``: the GraphQL subset the official client asks for (docs/gateway.md):
``keypair``, ``compute_session_list`` and ``compute_session``, parsed and executed for real
by graphql-core, so results carry the requested fields in the requested order.

Every field is scoped as REST is (:mod:`actors.gateway.scope`): a user sees their own
keypair's sessions, a domain admin their domain's, a superadmin all. A document past the
bounds of :mod:`actors.gateway.gql_limits` is refused with a 400 before it runs.

JSONString fields (``status_data``, ``occupying_slots``, ...) are JSON-encoded strings, as
graphene sends them; the CLI's formatters decode them.

``compute_session_list`` answers what it is asked: ``status`` (a comma list of statuses),
``group_id``, ``access_key``, ``domain_name``, and ``filter``/``order`` in 23.03's
mini-languages (:mod:`actors.gateway.gql_filter`), applied within the caller's scope; the
older ``order_key``/``order_asc`` pair is read as an order. What cannot be honoured (an
unknown field, status or operator) is refused with a 400 problem naming it, never ignored.
``group_name`` is the project's name, ``dependencies`` the sessions a session waits for (those
the caller may see), and each container's ``live_stat``/``last_stat`` its agent's telemetry
(:mod:`projections.live_stats`), read for the whole page at once and only when asked for.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    build_schema,
    execute,
    validate,
)

from events.server import log_unreachable
from projections.live_stats import KernelTelemetry, metric_values, read_kernel_stats
from projections.queries import TooManyToScan

from ..domain.errors import DomainError
from .admin import AREAS, AdminCall
from .admin.keypairs import keypair_view
from .admin.roles import administering
from .auth import Caller
from .context import GatewayContext
from .gql_filter import (
    FILTER_FIELDS,
    Filter,
    Order,
    QueryLanguageError,
    fields_needing_lookup,
    legacy_order,
    parse_filter,
    parse_order,
    select,
    session_row,
)
from .gql_limits import QueryLimits, QueryTooComplex, measure, parse_bounded
from .manager import check_frozen_mutation
from .params import loads
from .scope import is_domain_admin, visible
from .views import compute_session

__all__ = ["LIMITS", "SCHEMA", "gql"]

_SDL = """
scalar UUID
scalar JSONString
scalar BigInt
scalar DateTime

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
  mounts: [String] vfolder_mounts: [String]
  occupying_slots: String occupied_slots: String requested_slots: String
  num_queries: Int containers: [ComputeContainer] dependencies: [ComputeSession]
  estimated_start_at: String estimated_start_interval: [String] estimate_basis: String
  idle_warning: String
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


def _joined_sdl() -> str:
    """The sessions' SDL above and every admin area's fragment (:mod:`.admin`)."""
    fragments = [area.sdl for area in AREAS]
    mutations = any("extend type Mutation" in f for f in fragments)
    return "\n".join([_SDL, "type Mutation" if mutations else "", *fragments])


SCHEMA = build_schema(_joined_sdl())
_MAX_PAGE = 100
LIMITS = QueryLimits(default_page=_MAX_PAGE)
_MAX_BODY = 4 * LIMITS.max_bytes
"""The query and its variables (the client's variables are a few short values)."""
_MAX_SCAN = 5_000
"""The most sessions one filtered or ordered listing reads (after the scope, ``status`` and
``group_id`` narrowed them through their indexes); past it the caller is asked to narrow."""
_STATUSES = FILTER_FIELDS["status"].names


class _Telemetry:
    """Kernels' telemetry for one request: the first container that asks reads it for
    every kernel the listing holds, in one round trip."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.wanted: set[str] = set()
        self.known: dict[str, KernelTelemetry] = {}
        self._lock = asyncio.Lock()

    def want(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.wanted.update(str(k) for k in record.get("kernels") or {})

    async def of(self, kernel_id: str) -> KernelTelemetry:
        async with self._lock:
            if kernel_id not in self.known:
                batch = sorted((self.wanted | {kernel_id}) - set(self.known))
                self.known.update(await read_kernel_stats(self.ctx.store, batch))
        return self.known.get(kernel_id, (None, None))


class _Root:
    """The query's root value: graphql-core calls a root mapping's callables as resolvers."""

    def __init__(self, ctx: GatewayContext, caller: Caller, peer: str | None = None) -> None:
        self.ctx = ctx
        self.caller = caller
        self.admin = AdminCall(ctx, administering(caller), peer)
        self.telemetry = _Telemetry(ctx)
        self._projects: dict[str, str | None] = {}
        self._users: dict[str, dict[str, Any]] = {}

    def as_mapping(self) -> dict[str, Any]:
        mapping: dict[str, Any] = {
            "keypair": self.keypair,
            "compute_session": self.compute_session,
            "compute_session_list": self.compute_session_list,
        }
        for area in AREAS:
            mapping.update(area.resolvers(self.admin))
        return mapping

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
                is_domain_admin(self.admin.caller)  # by role, as every admin area
                and record is not None
                and user.get("domain") == self.caller.domain
                and user.get("role") != "superadmin"
            )
        ):
            raise GraphQLError("only an admin may look up other keypairs, in the admin's domain")
        if record is None:
            return None
        # 23.03's shape (``user_id`` is the owner's e-mail, as ``admin keypair info`` prints
        # it); the secret only for its owner
        return keypair_view(self.admin, dict(record), dict(user))

    async def compute_session(self, _info: Any, id: str) -> dict[str, Any] | None:
        try:
            record = await self.ctx.models.session(str(uuid.UUID(str(id))))
        except ValueError:
            raise GraphQLError(f"not a UUID: {id!r}") from None
        if record is None or not visible(self.caller, record):
            return None
        self.telemetry.want([record])
        return self._view(record)

    def _view(self, record: dict[str, Any]) -> dict[str, Any]:
        """A ``ComputeSession``; what costs a read (``idle_checks``, ``group_name``,
        ``dependencies``, the containers' stats) is read only when the query asks for it
        (graphql-core calls a callable field value as its resolver)."""
        session = compute_session(record)

        async def idle_checks(_info: Any) -> str:
            return json.dumps(await self.ctx.idle.report(record))

        async def group_name(_info: Any) -> str | None:
            return await self._project_name(record.get("project_id"))

        async def dependencies(_info: Any) -> list[dict[str, Any]]:
            wanted = [str(d) for d in record.get("dependencies") or ()]
            found = {r["id"]: r for r in await self.ctx.models.sessions_by_id(wanted)}
            shown = [found[d] for d in wanted if d in found and visible(self.caller, found[d])]
            self.telemetry.want(shown)
            return [self._view(r) for r in shown]

        session.update(idle_checks=idle_checks, group_name=group_name, dependencies=dependencies)
        for container in session["containers"]:
            kernel = (record.get("kernels") or {}).get(str(container["id"])) or {}
            live, last = self._stats(str(container["id"]), kernel)
            container.update(live_stat=live, last_stat=last)
        return session

    def _stats(
        self, kernel_id: str, kernel: dict[str, Any]
    ) -> tuple[Callable[[Any], Awaitable[str | None]], Callable[[Any], Awaitable[str | None]]]:
        """``live_stat`` while the kernel is not over; ``last_stat`` whenever telemetry still
        keeps its last measurement (23.03 keeps it in the row at termination)."""

        async def measured() -> str | None:
            values = metric_values(
                await self.telemetry.of(kernel_id), kernel.get("occupied_slots") or {}
            )
            return None if values is None else json.dumps(values)

        async def live_stat(_info: Any) -> str | None:
            if kernel.get("status") in ("TERMINATED", "CANCELLED"):
                return None
            return await measured()

        async def last_stat(_info: Any) -> str | None:
            return await measured()

        return live_stat, last_stat

    async def _project_name(self, project_id: Any) -> str | None:
        if not project_id:
            return None
        key = str(project_id)
        if key not in self._projects:
            project = await self.ctx.lookups.project(key)
            self._projects[key] = str(project["name"]) if project and project.get("name") else None
        return self._projects[key]

    async def _user(self, user_id: Any) -> dict[str, Any]:
        if not user_id:
            return {}
        key = str(user_id)
        if key not in self._users:
            self._users[key] = dict(await self.ctx.lookups.user(key) or {})
        return self._users[key]

    async def compute_session_list(
        self,
        _info: Any,
        limit: int,
        offset: int,
        access_key: str | None = None,
        status: str | None = None,
        domain_name: str | None = None,
        group_id: str | None = None,
        filter: str | None = None,
        order: str | None = None,
        order_key: str | None = None,
        order_asc: bool | None = None,
    ) -> dict[str, Any]:
        if not 1 <= limit <= _MAX_PAGE or offset < 0:
            raise GraphQLError(f"limit must be 1..{_MAX_PAGE} and offset >= 0")
        if order and order_key:
            raise QueryLanguageError("order", "give order or order_key, not both")
        keep = parse_filter(filter) if filter else None
        ordering = parse_order(order or legacy_order(order_key, order_asc) or "")
        sort = ordering if ordering.keys else None
        statuses = _statuses(status)
        owner, projects = await self._scope(access_key, domain_name)
        if group_id:
            projects = [group_id] if projects is None or group_id in projects else []
        if keep is None and sort is None:
            page = await self.ctx.models.sessions(
                owner=owner, statuses=statuses, offset=offset, limit=limit, projects=projects
            )
            total, items = page.total, page.items
        else:
            total, items = await self._selected(owner, statuses, projects, keep, sort)
            items = items[offset : offset + limit]
        self.telemetry.want(items)
        return {"items": [self._view(r) for r in items], "total_count": total}

    async def _selected(
        self,
        owner: str | None,
        statuses: list[str] | None,
        projects: list[str] | None,
        keep: Filter | None,
        order: Order | None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Every session of the scope that passes ``keep``, in ``order`` (newest first among
        equals), read from the narrowest index, at most :data:`_MAX_SCAN` of them."""
        try:
            candidates = await self.ctx.models.session_candidates(
                owner=owner,
                statuses=statuses,
                projects=projects,
                bound=_MAX_SCAN,
                # a plain user's refusal counts (and their wait scans) their own sessions
                # only, never another tenant's or project's
                by_owner=not self.caller.may_act_for_others,
            )
        except TooManyToScan as exc:
            raise QueryLanguageError(
                "filter",
                f"{exc.count} sessions to filter or order, over the bound of {exc.bound}: "
                "narrow the listing with status, group_id or access_key",
            ) from None
        looked_up = fields_needing_lookup(keep, order)
        rows = []
        for record in candidates:
            group = None
            if "group_name" in looked_up:
                group = await self._project_name(record.get("project_id"))
            user = None
            if looked_up & {"user_email", "full_name"}:
                user = await self._user(record.get("user_id"))
            rows.append((session_row(record, group, user), record))
        chosen = select(rows, keep, order)
        return len(chosen), chosen

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


def _statuses(status: str | None) -> list[str] | None:
    """The comma list the client sends (``PENDING,RUNNING``), names checked: a misspelt one
    is refused rather than matching nothing."""
    if not status:
        return None
    names = [s.strip().upper() for s in status.split(",") if s.strip()]
    unknown = [n for n in names if n not in _STATUSES]
    if unknown:
        raise QueryLanguageError(
            "status", f"unknown status {', '.join(unknown)} (statuses: {', '.join(_STATUSES)})"
        )
    return names or None


_VARIABLE = re.compile(r"^Variable '\$(\w+)' got invalid value ")
_PATH = re.compile(r" at '([\w.\[\]]+)'$")
_REPRESENT = re.compile(r"( cannot represent [^:]*?): .*$", re.S)
_FOUND = re.compile(r"^(Expected value of type '[^']*'), found .*$", re.S)
_ENUM_VALUE = re.compile(r"^Value .* does not exist in '([^']*)' enum\.?$", re.S)


def _reason(message: str) -> str:
    """A coercion or validation reason without the value it quotes."""
    message = _REPRESENT.sub(r"\1.", message)
    message = _FOUND.sub(r"\1, found something else.", message)
    return _ENUM_VALUE.sub(r"The value is not in the '\1' enum.", message)


def _without_values(error: GraphQLError) -> dict[str, Any]:
    """The error as answered, without the values it would quote: graphql-core repeats an
    invalid variable or literal whole (a ``create_user`` with one wrong key would answer
    the password it carried), so only the variable, the path and the reason are kept."""
    formatted = dict(error.formatted)
    message = error.message
    variable = _VARIABLE.match(message)
    original = error.original_error
    if variable and isinstance(original, GraphQLError) and message.endswith(original.message):
        prefix = message[: len(message) - len(original.message) - 2]
        path = _PATH.search(prefix)
        where = f" at '{path.group(1)}'" if path else ""
        message = f"Variable '${variable.group(1)}' got an invalid value{where}; "
        message += _reason(original.message)
    else:
        message = _reason(message)
    formatted["message"] = message
    return formatted


def _is_mutation(document: DocumentNode, operation_name: Any) -> bool:
    """Whether the operation that will run is a mutation (23.03 refuses those while the
    manager is frozen, and only those)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [o for o in operations if o.name and o.name.value == operation_name] or operations
    return any(o.operation == OperationType.MUTATION for o in chosen[:1])


def _refusal(result: ExecutionResult) -> DomainError | None:
    """A resolver's refusal of what it was asked (a bad filter): answered as a problem
    (400) rather than buried in ``errors``."""
    for error in result.errors or ():
        if isinstance(error.original_error, DomainError):
            return error.original_error
    return None


def _raise_outage(result: ExecutionResult) -> None:
    """A resolver that failed because the log cannot be reached fails the request (a 503
    with ``Retry-After``, by the ``problems`` middleware) rather than a 200 whose ``errors``
    would name Redis's address."""
    for error in result.errors or ():
        if error.original_error is not None and log_unreachable(error.original_error):
            raise error.original_error


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
            ctx: GatewayContext = request.app["ctx"]
            if _is_mutation(document, body.get("operation_name")):
                await check_frozen_mutation(ctx)
            root = _Root(ctx, request["caller"], request.remote)
            outcome = execute(
                SCHEMA,
                document,
                root_value=root.as_mapping(),
                variable_values=variables,
                operation_name=body.get("operation_name"),
            )
            result = await outcome if not isinstance(outcome, ExecutionResult) else outcome
            refusal = _refusal(result)
            if refusal is not None:
                raise refusal
            _raise_outage(result)
    answer: dict[str, Any] = {"data": result.data}
    if result.errors:
        answer["errors"] = [_without_values(error) for error in result.errors]
    return web.json_response(answer, dumps=json.dumps)
