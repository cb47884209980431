"""The inference proxy: ``/serving/{endpoint_id}[/{tail}]``, any method, forwarded to a
HEALTHY replica of the endpoint through its kernel runner's tunnel (containers keep
``--network none``; :func:`.apps.open_tunnel`), as HTTP/1.1.

- **Who may call.** A public endpoint (``open_to_public``) answers anyone. A private one needs
  ``Authorization: BackendAI <token>`` (or ``Bearer <token>``) with a token of *this*
  endpoint, unexpired (:mod:`.serving_tokens`); anything else is 401, and so is a made-up
  endpoint id without a valid token, so a caller without a token cannot tell which ids
  exist. This path is not signed with a keypair (``app.py`` exempts it): the token is the
  credential, and it is never passed on to the replica.
- **Where it goes.** A HEALTHY route of the endpoint, picked at random weighted by its
  ``traffic_ratio`` (none: 503 "no healthy replica"); the endpoint is read from the tenancy
  read model at most every :data:`RESOLVE_TTL_S`. Connections to each route are kept alive
  and reused (:class:`_Pool`), so a request usually costs no tunnel set-up at all. A
  connection that fails before the replica answered a byte is tried again: a kept-alive one
  the replica had closed is replaced by a new one, a tunnel that would not open is tried
  once more on another route where there is one (three tries at most).
- **What is passed.** The request body, streamed (:class:`.serving_http.Upload`: up to
  16 MiB, 413 past it; 408 when it comes slower than 64 KiB/s after 10 s; only its first
  64 KiB kept, so only a body that small is ever sent again to another replica), the
  headers but hop-by-hop ones, ``Authorization``, ``Cookie``, forwarding claims and
  ``X-BackendAI-*``; ``X-Forwarded-For/Proto`` added. At most :data:`MAX_IN_FLIGHT`
  requests at once in the whole gateway worker, :data:`MAX_IN_FLIGHT_PER_ENDPOINT` per
  endpoint (503 past either). The replica is
  the tenant's code and is not trusted: its status line and headers are read within
  :data:`MAX_RESPONSE_HEAD` bytes and :data:`MAX_RESPONSE_HEADERS` headers (502 otherwise),
  malformed headers dropped, its body streamed (never held whole), each read within
  :data:`STALL_S` and the answer's head within :data:`ANSWER_S` (504). It answers on the
  gateway's own origin, so it may not set cookies there (``Set-Cookie`` dropped) and what
  it sends is sandboxed (``Content-Security-Policy: sandbox``, ``X-Content-Type-Options:
  nosniff``); headers that would act on that origin (``Clear-Site-Data``, CORS,
  ``Refresh``, ``WWW-Authenticate``, ...: :data:`.serving_http.NOT_ANSWERED`) are dropped.
- **Metrics.** Each answer is counted per endpoint and status, timed, and failures counted by
  reason (:attr:`GatewayContext.observe_serving`, the gateway actor's metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from actors.agents.kernel_sockets import KernelSocket
from projections.endpoint_queries import EndpointLookups

from ..domain.errors import DomainError, EndpointNotFound
from .apps import open_tunnel, tunnel_of
from .context import GatewayContext
from .problems import GatewayError
from .serving_http import (
    BAD_VALUE,
    MAX_RESPONSE_HEAD,
    STALL_S,
    Answer,
    BodyTooLarge,
    ReplicaFailed,
    ReplicaTimeout,
    Upload,
    UploadTooSlow,
    forwarded,
    parse_head,
    read_body,
)
from .serving_tokens import PURPOSE, EndpointTokens, InvalidEndpointToken

__all__ = [
    "ANSWER_S",
    "MAX_IN_FLIGHT",
    "SERVING_PATHS",
    "InFlight",
    "ServingProxy",
    "install_serving",
    "serving_routes",
]

log = structlog.get_logger(__name__)

ANSWER_S = float(os.environ.get("KH_SERVING_TIMEOUT_S") or 300.0)
"""How long a replica may take to start answering (a model may think for minutes)."""
TUNNEL_S = 20.0
RESOLVE_TTL_S = 0.5
TUNNEL_TTL_S = 30.0
IDLE_S = 30.0
"""How long an unused kept-alive connection to a replica is kept."""
MAX_IDLE_PER_ROUTE = 64
MAX_IN_FLIGHT_PER_ENDPOINT = 128
"""Requests one endpoint may have under way at once; more answer 503 (one endpoint's
callers cannot take every connection the gateway has)."""
MAX_IN_FLIGHT = 256
"""Requests the whole gateway (this worker) proxies at once; more answer 503 (review S12: a
tenant's 16 endpoints x 512 slow requests would take every descriptor the gateway has)."""
_CACHE_BOUND = 10_000
_AUTH = re.compile(r"^(?:BackendAI|Bearer)\s+(\S+)$", re.IGNORECASE)

SERVING_PATHS = frozenset({"/serving/{endpoint_id}", "/serving/{endpoint_id}/{tail}"})
"""The proxy's route patterns (``app.py`` exempts them from keypair signing)."""


class TokenRequired(GatewayError):
    status, error_type = 401, "auth-failed"
    title = "This endpoint needs a valid token: Authorization: BackendAI <token>."


class NoHealthyReplica(GatewayError):
    status, error_type = 503, "service-unavailable"
    title = "No healthy replica serves this endpoint now."


class TooBusy(GatewayError):
    status, error_type = 503, "service-unavailable"
    title = "Too many requests to this endpoint are under way."


class GatewayBusy(TooBusy):
    title = "The gateway is busy: too many requests to endpoints are under way."


class ReplicaUnreachable(ReplicaFailed):
    title = "No replica of this endpoint could be reached."


_REASONS: dict[type[GatewayError], str] = {
    NoHealthyReplica: "no-replica",
    ReplicaFailed: "bad-answer",
    ReplicaUnreachable: "connect",
    ReplicaTimeout: "timeout",
    BodyTooLarge: "too-large",
    TooBusy: "busy",
    GatewayBusy: "busy",
    UploadTooSlow: "timeout",
}
"""The ``reason`` of ``kernelhub_serving_errors_total`` for each failure (a refused token
is no failure: it is counted by its status)."""


class _Unsent(Exception):
    """The replica answered nothing: the request may go elsewhere."""


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used_at: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    def alive(self) -> bool:
        return (
            _drained(self)
            and not self.reader.at_eof()
            and not self.writer.is_closing()
            and time.monotonic() - self.used_at < IDLE_S
        )


def _drained(conn: _Conn) -> bool:
    """Nothing is buffered past the answer just read. A kept-alive connection with bytes
    waiting would hand them to the next caller as *its* answer (review S8): such a
    connection, like one after a HEAD, 204 or 304 answer (whose body a sloppy server may
    send anyway), is closed, never pooled."""
    return not getattr(conn.reader, "_buffer", b"")


class InFlight:
    """Requests under way, in the whole gateway worker and per endpoint: past
    :data:`MAX_IN_FLIGHT` a request is :class:`GatewayBusy`, past
    :data:`MAX_IN_FLIGHT_PER_ENDPOINT` for its endpoint :class:`TooBusy` (both 503)."""

    def __init__(
        self, total: int = MAX_IN_FLIGHT, per_endpoint: int = MAX_IN_FLIGHT_PER_ENDPOINT
    ) -> None:
        self.total, self.per_endpoint = total, per_endpoint
        self.count = 0
        self.counts: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, key: str) -> Iterator[None]:
        if self.count >= self.total:
            raise GatewayBusy()
        if self.counts.get(key, 0) >= self.per_endpoint:
            raise TooBusy()
        self.count += 1
        self.counts[key] = self.counts.get(key, 0) + 1
        try:
            yield
        finally:
            self.count -= 1
            self.counts[key] -= 1
            if not self.counts[key]:
                del self.counts[key]


class _Pool:
    """Kept-alive connections to each route's replica (last used, first reused)."""

    def __init__(self) -> None:
        self.idle: dict[str, deque[_Conn]] = {}

    def take(self, route_id: str) -> _Conn | None:
        queue = self.idle.get(route_id)
        while queue:
            conn = queue.pop()
            if conn.alive():
                return conn
            conn.close()
        return None

    def give(self, route_id: str, conn: _Conn) -> None:
        queue = self.idle.setdefault(route_id, deque())
        conn.used_at = time.monotonic()
        queue.append(conn)
        while len(queue) > MAX_IDLE_PER_ROUTE:
            queue.popleft().close()

    def sweep(self) -> None:
        for route_id in list(self.idle):
            queue = self.idle[route_id]
            kept = deque(c for c in queue if c.alive())
            for conn in queue:
                if conn not in kept:
                    conn.close()
            if kept:
                self.idle[route_id] = kept
            else:
                del self.idle[route_id]

    def close(self) -> None:
        for queue in self.idle.values():
            for conn in queue:
                conn.close()
        self.idle.clear()


def _pick(routes: list[dict[str, Any]], avoid: set[str]) -> dict[str, Any] | None:
    """A HEALTHY route not in ``avoid``, at random weighted by traffic ratio (a ratio of 0
    takes no traffic); ``None`` when there is none."""
    healthy = [
        r
        for r in routes
        if r.get("status") == "HEALTHY"
        and str(r.get("route_id")) not in avoid
        and float(r.get("traffic_ratio") or 0) > 0
    ]
    if not healthy:
        return None
    weights = [float(r.get("traffic_ratio") or 0) for r in healthy]
    return random.choices(healthy, weights)[0]


def _target(request: web.Request) -> str:
    """The path and query the replica is asked for: what follows ``/serving/<id>``, as the
    caller encoded it."""
    path, question, query = request.raw_path.partition("?")
    rest = path.split("/", 3)  # "", "serving", id, tail
    target = "/" + (rest[3] if len(rest) > 3 else "")
    if question:
        target += "?" + query
    if any(c <= " " or c == "\x7f" for c in target) or len(target) > 16384:
        raise ReplicaFailed("the request target cannot be forwarded")  # pragma: no cover
    return target


def _token_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    match = _AUTH.match(header.strip())
    return match.group(1) if match else None


class ServingProxy:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.lookups = EndpointLookups(ctx.store)
        self.tokens = EndpointTokens(ctx.auth.secrets.derive(PURPOSE))
        self.pool = _Pool()
        self._endpoints: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._tunnels: dict[str, tuple[float, KernelSocket]] = {}
        self.in_flight = InFlight()

    # ---- lookups ---------------------------------------------------------------------------
    async def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        now = time.monotonic()
        cached = self._endpoints.get(endpoint_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = await self.lookups.endpoint(endpoint_id)
        if len(self._endpoints) >= _CACHE_BOUND:
            self._endpoints.clear()
        self._endpoints[endpoint_id] = (now + RESOLVE_TTL_S, record)
        return record

    async def _tunnel(self, session_id: str) -> KernelSocket:
        now = time.monotonic()
        cached = self._tunnels.get(session_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        target = await tunnel_of(self.ctx, session_id)
        if len(self._tunnels) >= _CACHE_BOUND:
            self._tunnels.clear()
        self._tunnels[session_id] = (now + TUNNEL_TTL_S, target)
        return target

    async def _connect(
        self, route: dict[str, Any], port: int, *, fresh: bool = False
    ) -> tuple[_Conn, bool]:
        """A connection to the route's replica: a kept-alive one (unless ``fresh``), else a
        new tunnel. A new one that fails raises :class:`_Unsent`."""
        conn = None if fresh else self.pool.take(str(route["route_id"]))
        if conn is not None:
            return conn, True
        session_id = str(route["session_id"])
        try:
            target = await self._tunnel(session_id)
            reader, writer = await open_tunnel(
                target, f"tcp {port}", f"the replica {session_id}", TUNNEL_S
            )
        except (DomainError, OSError, TimeoutError) as exc:
            self._tunnels.pop(session_id, None)
            raise _Unsent(f"the tunnel did not open: {exc}") from None
        return _Conn(reader, writer), False

    # ---- one exchange ----------------------------------------------------------------------
    def _head(self, request: web.Request, target: str, upload: Upload) -> bytes:
        lines = [f"{request.method} {target} HTTP/1.1", f"Host: {request.host}"]
        for name, value in request.headers.items():
            if not forwarded(name) or BAD_VALUE.search(value):
                continue
            lines.append(f"{name}: {value}")
        claimed = request.headers.get("X-Forwarded-For")
        peer = request.remote or "unknown"
        lines.append(f"X-Forwarded-For: {claimed + ', ' if claimed else ''}{peer}")
        lines.append(f"X-Forwarded-Proto: {request.scheme}")
        framing = upload.header()
        if framing is not None:
            lines.append(framing)
        elif request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    async def _exchange(self, conn: _Conn, head: bytes, upload: Upload, method: str) -> Answer:
        """Send the request (its body streamed while the replica may already answer) and
        read the answer's head. :class:`_Unsent` when the replica answered nothing (closed,
        reset). An answer that comes before the body was all sent ends the upload, and the
        connection is not kept."""
        sender: asyncio.Task[None] | None = None
        reading: asyncio.Future[bytes] | None = None
        try:
            conn.writer.write(head + upload.kept)
            await asyncio.wait_for(conn.writer.drain(), STALL_S)
            reading = asyncio.ensure_future(conn.reader.readuntil(b"\r\n\r\n"))
            if not upload.ended:
                sender = asyncio.create_task(self._send_rest(conn, upload))
                await asyncio.wait({reading, sender}, return_when=asyncio.FIRST_COMPLETED)
                if sender.done():
                    sender.result()  # the caller's failure (too slow, too large) stops it all
            raw = await asyncio.wait_for(reading, ANSWER_S)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _Unsent("the replica closed the connection") from None
            raise ReplicaFailed("the replica's answer ended in its headers") from None
        except asyncio.LimitOverrunError:
            raise ReplicaFailed(
                f"the replica's answer headers are larger than {MAX_RESPONSE_HEAD} bytes"
            ) from None
        except (ConnectionError, BrokenPipeError) as exc:
            raise _Unsent(f"the connection failed: {exc}") from None
        finally:
            if reading is not None and not reading.done():
                reading.cancel()
            if sender is not None and not sender.done():
                sender.cancel()
        answer = parse_head(raw, method)
        if not upload.ended:
            answer.keep_alive = False  # the rest of the body is not sent: never reused
        return answer

    async def _send_rest(self, conn: _Conn, upload: Upload) -> None:
        """The body past :attr:`Upload.kept`, to the replica as it comes. A replica that
        stops reading or closes only stops this (its answer, or its silence, decides)."""
        try:
            async for piece in upload.rest():
                conn.writer.write(piece)
                await asyncio.wait_for(conn.writer.drain(), STALL_S)
        except (ConnectionError, BrokenPipeError, TimeoutError):
            return  # the replica's answer (or its silence, within ANSWER_S) decides

    # ---- the handler -----------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        status, error = 500, "internal"
        try:
            response = await self._serve(request, request.match_info["endpoint_id"])
            status, error = response.status, ""
            return response
        except GatewayError as exc:
            status, error = type(exc).status, _REASONS.get(type(exc), "")
            raise
        except DomainError:
            status, error = 404, ""
            raise
        finally:
            observe = self.ctx.observe_serving
            if observe is not None:
                # an endpoint that exists, or "unknown": made-up ids make no new series
                endpoint = request.get("serving_endpoint", "unknown")
                with contextlib.suppress(Exception):
                    observe(endpoint, status, time.perf_counter() - started, error or None)

    async def _serve(self, request: web.Request, ref: str) -> web.StreamResponse:
        try:
            endpoint_id = uuid.UUID(ref) if len(ref) <= 64 else None
        except ValueError:
            endpoint_id = None
        record = None if endpoint_id is None else await self.endpoint(str(endpoint_id))
        if record is None or not record.get("open_to_public"):
            token = _token_of(request)
            if token is None or endpoint_id is None:
                raise TokenRequired()
            try:
                self.tokens.verify(token, endpoint_id, now=time.time())
            except InvalidEndpointToken as exc:
                log.info("serving token refused", endpoint=str(endpoint_id), why=str(exc))
                raise TokenRequired() from None
        if record is None or endpoint_id is None:
            raise EndpointNotFound()
        request["serving_endpoint"] = str(endpoint_id)
        service = record.get("service") or {}
        port = int(service.get("port") or 0)
        routes = list((record.get("routes") or {}).values())
        if not port or _pick(routes, set()) is None:
            raise NoHealthyReplica()
        key = str(endpoint_id)
        with self.in_flight.slot(key):
            upload = Upload(request.content, request.content_length)
            await upload.start()
            return await self._forward(request, routes, port, upload)

    async def _forward(
        self, request: web.Request, routes: list[dict[str, Any]], port: int, upload: Upload
    ) -> web.StreamResponse:
        head = self._head(request, _target(request), upload)
        avoid: set[str] = set()
        last: _Unsent | None = None
        for _attempt in range(3):
            route = _pick(routes, avoid) or (_pick(routes, set()) if last else None)
            if route is None:
                raise NoHealthyReplica()
            route_id = str(route["route_id"])
            try:
                # a body that cannot be sent twice never rides a kept-alive connection the
                # replica may have closed meanwhile: a new tunnel fails before sending
                conn, reused = await self._connect(route, port, fresh=not upload.replayable)
            except _Unsent as exc:
                last = exc
                avoid.add(route_id)
                continue
            try:
                answer = await self._exchange(conn, head, upload, request.method)
            except _Unsent as exc:
                conn.close()
                if not upload.replayable:
                    # more than the kept part was sent: the body cannot be sent again
                    raise ReplicaFailed(f"the replica did not answer ({exc})") from None
                last = exc
                if not reused:
                    avoid.add(route_id)
                continue
            except TimeoutError:
                conn.close()
                raise ReplicaTimeout() from None
            except BaseException:
                conn.close()
                raise
            return await self._relay(request, route_id, conn, answer)
        log.warning("replica unreachable", why=str(last))
        raise ReplicaUnreachable(f"no replica could be reached ({last})")

    async def _relay(
        self, request: web.Request, route_id: str, conn: _Conn, answer: Answer
    ) -> web.StreamResponse:
        """The answer's head to the caller, then its body as it arrives; the connection
        back to the pool when the answer was read whole and may be kept."""
        response = web.StreamResponse(status=answer.status, reason=answer.reason or None)
        for name, value in answer.headers:
            response.headers.add(name, value)
        response.headers["Content-Security-Policy"] = "sandbox"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if answer.length is not None:
            response.content_length = answer.length
        body = read_body(conn.reader, answer)
        try:
            # the first piece before the head goes out: a body broken from its start (a bad
            # chunk size) is a clean 502, not a cut answer
            first: bytes | None = await anext(body, None)
        except (ReplicaFailed, asyncio.IncompleteReadError):
            conn.close()
            raise ReplicaFailed("the replica's answer body is malformed") from None
        except TimeoutError:
            conn.close()
            raise ReplicaTimeout("the replica's answer body stalled") from None
        except BaseException:
            conn.close()
            raise
        complete = False
        try:
            await response.prepare(request)
            if first is not None:
                await asyncio.wait_for(response.write(first), STALL_S)
                async for chunk in body:
                    await asyncio.wait_for(response.write(chunk), STALL_S)
            complete = True
            await response.write_eof()
        except (ReplicaFailed, TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            response.force_close()
            if request.transport is not None:
                request.transport.abort()  # a short answer: the caller sees it cut
        finally:
            if complete and answer.keep_alive and not answer.bodiless and _drained(conn):
                self.pool.give(route_id, conn)
            else:
                conn.close()
        return response

    def close(self) -> None:
        self.pool.close()


SERVING_PROXY = web.AppKey("kh_serving_proxy", ServingProxy)


async def _proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    proxy = app[SERVING_PROXY] = ServingProxy(app["ctx"])

    async def sweep() -> None:
        while True:
            await asyncio.sleep(IDLE_S / 3)
            proxy.pool.sweep()

    sweeper = asyncio.create_task(sweep())
    yield
    sweeper.cancel()
    proxy.close()


def install_serving(app: web.Application) -> None:
    app.cleanup_ctx.append(_proxy_ctx)


async def _handle(request: web.Request) -> web.StreamResponse:
    return await request.app[SERVING_PROXY].handle(request)


def serving_routes() -> list[web.RouteDef]:
    return [
        web.route("*", "/serving/{endpoint_id}", _handle),
        web.route("*", "/serving/{endpoint_id}/{tail:.*}", _handle),
    ]
