"""The gateway's aiohttp application: routes, and the middlewares every request goes
through (problem bodies for every error, the API version check, HMAC authentication, the
per-peer limit on failed authentications, the cap on open streams).

``GET /`` (the version probe) is the only route open without a signature; it answers a
signed request too (``backend.ai config`` sends both).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from actors.runtime.outage import Outages
from events.correlation import correlated, parse_correlation
from events.server import log_unreachable

from ..domain.errors import DomainError, GenericBadRequest
from . import API_VERSION, MANAGER_VERSION
from .admin_rest import admin_rest_routes
from .apps import app_routes
from .auth import Caller
from .context import GatewayContext
from .events import event_routes
from .folder_files import folder_file_routes
from .folders import folder_routes
from .graphql import gql
from .login import login_routes
from .manager import check_frozen, manager_routes
from .open_streams import remember_response
from .openapi import openapi_document
from .params import MAX_JSON_BODY
from .problems import (
    RETRY_AFTER_S,
    AuthorizationFailed,
    InternalServerError,
    InvalidAuthParameters,
    LogUnreachable,
    MethodNotAllowed,
    ServiceRestarting,
    URLNotFound,
    problem,
)
from .ratelimit import UNAUTHENTICATED_LIMIT, WINDOW_S, PeerRateLimited, RateLimitExceeded
from .resources import resource_routes
from .revocation_follower import follow_revocations
from .services import service_routes
from .serving_proxy import SERVING_PATHS, install_serving, serving_routes
from .sessions import session_routes
from .storage_routes import STORAGE_PUBLIC, install_storage
from .stream_limits import is_stream
from .streams import stream_routes
from .terminal import terminal_routes

__all__ = ["API_VERSION", "CORRELATION_HEADER", "MANAGER_VERSION", "make_app"]

log = structlog.get_logger(__name__)

_VERSION = re.compile(r"^v([4-7])\.(\d{8})$")
_PUBLIC = frozenset(
    {
        ("GET", "/"),
        ("GET", ""),
        ("HEAD", "/"),
        ("GET", "/openapi.json"),
        ("POST", "/auth/authorize"),  # an e-mail and password instead of a signature
        *STORAGE_PUBLIC,  # transfers: their ?token= is the credential
    }
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


CORRELATION_HEADER = "X-Correlation-ID"


@web.middleware
async def measured(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each request under its correlation id (the caller's ``X-Correlation-ID`` when it is
    a UUID, else a new one; answered in the same header) through every actor it reaches;
    each answer counted by route (the route's pattern, so ids never make new series),
    method and status, timed, and logged."""
    started = time.perf_counter()
    supplied = parse_correlation(request.headers.get(CORRELATION_HEADER))
    with correlated(supplied or uuid.uuid4()) as correlation_id:
        request["correlation_id"] = correlation_id
        response = await handler(request)
        elapsed = time.perf_counter() - started
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        observe = request.app["ctx"].observe
        if observe is not None:
            observe(route, request.method, response.status, elapsed)
        caller = request.get("caller")
        log.info(
            "request",
            method=request.method,
            route=route,
            status=response.status,
            ms=round(elapsed * 1000, 2),
            access_key=caller.access_key if caller is not None else None,
        )
    return response


async def _answer_correlation(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, streams too (their headers go before the middleware sees them)."""
    correlation_id = request.get("correlation_id")
    if correlation_id is not None:
        response.headers[CORRELATION_HEADER] = str(correlation_id)


_OUTAGE_KEY = web.AppKey("log_outages", Outages)


def actor_restarting(error: BaseException) -> bool:
    """Whether ``error`` is Ray saying an actor died or cannot be reached right now (the
    routers' own retries ran out while Ray restarts it): a 503 to retry, not a bug."""
    from ray.exceptions import ActorUnavailableError, RayActorError

    return isinstance(error, RayActorError | ActorUnavailableError)


def _restarting_now(error: BaseException) -> bool:
    from ray.exceptions import ActorUnavailableError

    return isinstance(error, ActorUnavailableError)


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a Backend.AI problem body: never a traceback, never HTML. Every
    answer, errors too, says where its keypair stands against the rate limit.

    While the log cannot be reached (:func:`events.server.log_unreachable`: Redis down,
    restarting, loading, stopped and timing out, here or in an actor the request reached)
    every request that needs it is a 503 with ``Retry-After``, logged once per outage; the
    next request after Redis is back goes through (the pool connects again by itself)."""
    outages = request.app[_OUTAGE_KEY]
    try:
        response = await handler(request)
    except DomainError as exc:
        response = problem(exc)
    except web.HTTPNotFound:
        response = problem(URLNotFound(request.path))
    except web.HTTPMethodNotAllowed:
        response = problem(MethodNotAllowed(f"{request.method} {request.path}"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem(GenericBadRequest(exc.reason or "Bad request."))
    except Exception as exc:
        if log_unreachable(exc):
            outages.failed(exc)
            response = problem(LogUnreachable(), headers={"Retry-After": str(RETRY_AFTER_S)})
        elif actor_restarting(exc):
            # unavailable: Ray is restarting it; died: no restart came within the routers'
            # retries (restarts used up, its node gone), which an operator must hear about
            level = log.warning if _restarting_now(exc) else log.error
            level("request failed: an actor is unavailable", path=request.path, error=repr(exc))
            response = problem(ServiceRestarting(), headers={"Retry-After": str(RETRY_AFTER_S)})
        else:
            log.exception("request failed", method=request.method, path=request.path)
            response = problem(InternalServerError())
    else:
        if outages.down and response.status < 500:
            outages.succeeded()
    if not response.prepared:  # a stream (websocket, SSE) sent its headers already
        limit, remaining = request.get("rate", (UNAUTHENTICATED_LIMIT, UNAUTHENTICATED_LIMIT))
        response.headers.update(
            {
                "Server": "BackendAI",
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Window": str(WINDOW_S),
            }
        )
    return response


@web.middleware
async def authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The API version header, then the signature; public routes answer anyone. The
    inference proxy's routes (matched routes, never a path prefix) are not signed: their
    credential is the endpoint's token (:mod:`.serving_proxy`), and the caller's
    ``Authorization`` carries it."""
    if (request.method, request.path) in _PUBLIC and "Authorization" not in request.headers:
        return await handler(request)
    resource = request.match_info.route.resource
    if resource is not None and resource.canonical in SERVING_PATHS:
        return await handler(request)
    version = request.headers.get("X-BackendAI-Version") or request.headers.get("X-Sorna-Version")
    if version is not None and not _VERSION.match(version):
        raise GenericBadRequest("Unsupported API version.")
    ctx: GatewayContext = request.app["ctx"]
    caller = request["caller"] = await _authenticate(request, ctx)
    count = await ctx.rate_limiter.hit(caller.access_key)
    limit = int(caller.keypair.get("rate_limit", UNAUTHENTICATED_LIMIT))
    request["rate"] = (limit, max(0, limit - count))
    if count > limit:
        raise RateLimitExceeded(f"{count} requests in {WINDOW_S} s; the limit is {limit}")
    await check_frozen(request, ctx)
    return await handler(request)


async def _authenticate(request: web.Request, ctx: GatewayContext) -> Caller:
    """The caller, or the refusal; a peer's failures are counted, and past its allowance
    (:class:`actors.gateway.ratelimit.PeerLimiter`) it gets 429s, its requests checked
    against cached keypairs only (a flood of made-up keys reaches no Redis)."""
    peer = request.remote or "unknown"
    over = ctx.peers.over(peer)
    try:
        return await ctx.auth.authenticate(request, cached_only=over)
    except (AuthorizationFailed, InvalidAuthParameters) as exc:
        allowed = ctx.peers.fail(peer)
        request["rate"] = (ctx.peers.limit, ctx.peers.remaining(peer))
        if over or not allowed:
            raise PeerRateLimited(
                f"too many failed authentications from {peer}; the limit "
                f"is {ctx.peers.limit} in {WINDOW_S} s"
            ) from exc
        raise


@web.middleware
async def streams_capped(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A slot among the open streams (:mod:`.stream_limits`) for the whole life of an SSE or
    websocket request; past the keypair's cap or the gateway's, a 429 before it opens. The
    stream is tracked meanwhile: revoking its keypair or user closes it (:mod:`.open_streams`)."""
    caller = request.get("caller")
    info = request.match_info.route.resource
    route = info.canonical if info is not None else ""
    if caller is None or not is_stream(route, request.method, request.headers.get("Upgrade")):
        return await handler(request)
    ctx: GatewayContext = request.app["ctx"]
    with ctx.streams.hold(caller.access_key), ctx.auth.track_stream(request, caller):
        return await handler(request)


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": API_VERSION, "manager": MANAGER_VERSION})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def announcement(request: web.Request) -> web.Response:
    return web.json_response({"enabled": False, "message": ""})


def make_app(ctx: GatewayContext) -> web.Application:
    app = web.Application(
        middlewares=[measured, problems, authenticated, streams_capped],
        client_max_size=MAX_JSON_BODY,  # over it: read() raises 413, a 400 problem
    )
    app["ctx"] = ctx
    app[_OUTAGE_KEY] = Outages("gateway requests")
    app.on_response_prepare.append(_answer_correlation)
    app.on_response_prepare.append(remember_response)  # a revoked websocket is closed
    app.cleanup_ctx.append(follow_revocations)  # revocations from the log, before any request
    app.add_routes(
        [
            web.get("/", version),
            web.get("/openapi.json", openapi),
            web.get("/manager/announcement", announcement),
            web.post("/admin/gql", gql),
            *session_routes(),
            *stream_routes(),
            *event_routes(),
            *app_routes(),
            *resource_routes(),
            *manager_routes(),
            *terminal_routes(),
            *admin_rest_routes(),
            *login_routes(),
            *folder_routes(),
            *folder_file_routes(),
            *service_routes(),
            *serving_routes(),
        ]
    )
    install_storage(app)
    install_serving(app)
    return app
