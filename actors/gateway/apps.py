"""Apps of a session and the tunnel to them (``backend.ai app``): ``/stream/session/{ref}/apps``
lists them, the ``tcpproxy`` websocket carries one TCP connection to one of them.

Containers have no network, so a connection goes through the kernel runner's app tunnel
(its ``proxy.sock`` in the run dir the agent shares with the kernel, see
``kernelhub.in_kernel.kernel_runner.tunnel``): the gateway connects to that socket, asks for
the app's port, and then copies bytes between the websocket's binary frames and the socket.
The socket is a path on the agent's host, so this reaches kernels on the gateway's own node (the
embedded installation); a multi-node cluster needs a relay on each node (not built yet).

The run dir is the tenant's to write: the agent answers where the socket is *and* who must
listen there, and the connection is made with :func:`actors.agents.kernel_sockets.connect`,
which refuses a planted symlink and any listener outside the kernel (another tenant's
kernel). A fake server of the kernel's own can still answer: what is read from it before
the copying starts (the answer line) is capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from pydantic import AliasChoices, Field

from actors.idle.facts import APP_REFRESH_S
from actors.idle.reaper import app_closed, app_opened

from ..agents.kernel_sockets import KernelSocket, SocketRefused
from ..agents.kernel_sockets import connect as connect_kernel
from ..domain.errors import GenericBadRequest, InvalidAPIParameters, ObjectNotFound
from ..domain.service_ports import (
    SERVICE_PORTS_LABEL,
    InvalidServiceConfig,
    image_service_ports,
    service_ports_json,
)
from .params import Name, Script, _Strict, parse, raw_params
from .problems import InternalServerError

log = structlog.get_logger(__name__)

__all__ = ["AppNotFound", "app_routes", "apps_of", "image_apps", "open_tunnel", "tunnel_of"]

_CHUNK = 65536
MAX_ANSWER = 256
ANSWER_TIMEOUT_S = 30.0
"""How long the tunnel may take to connect and answer: the runner tries the app's port for
up to 15 s before it answers; a tenant's fake tunnel that never answers would otherwise hold
a gateway connection and one of the keypair's stream slots for good."""
"""The tunnel's answer line (``ok``, ``error <why>``) is at most this long."""


class AppNotFound(ObjectNotFound):
    def __init__(self, msg: str = "") -> None:
        super().__init__("app service", msg)


_WARNED: set[tuple[str, str]] = set()
"""The images whose refused label was logged (a few at most: only the catalogue's admins add
images, and no new one with a bad label gets in)."""


def image_apps(image: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The apps an image's ``ai.backend.service-ports`` label declares, as the API answers
    them (:func:`~actors.domain.service_ports.service_ports_json`).

    The catalogue refuses an image whose label does not parse, but an image registered
    before it did so is still in the log (and sessions may run on it): such an image is kept
    and offers no apps, with a warning naming it, rather than apps no kernel can serve."""
    labels = image.get("labels") or {}
    try:
        return service_ports_json(image_service_ports(labels))
    except InvalidServiceConfig as exc:
        label = str(labels.get(SERVICE_PORTS_LABEL, ""))
        if (str(image.get("name")), label) not in _WARNED:  # once per image, not per request
            _WARNED.add((str(image.get("name")), label))
            log.warning(
                "image service-ports label refused: its apps are not offered",
                image=image.get("name"),
                label=label[:256],
                error=exc.msg,
            )
        return []


async def apps_of(ctx: Any, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The image's service ports, then the session's pre-opened ports (named by number)."""
    apps = image_apps(await ctx.lookups.image(str(record.get("image", ""))) or {})
    apps += [
        {"name": str(port), "protocol": "preopen", "ports": [int(port)]}
        for port in record.get("preopen_ports") or []
    ]
    return apps


async def tunnel_of(ctx: Any, session_id: str) -> KernelSocket:
    """The session's app tunnel, as its agent names it (the socket and its kernel)."""
    answer = await ctx.router.execution.call(uuid.UUID(session_id), "app_tunnel")
    return KernelSocket.from_wire(answer)


async def open_tunnel(
    target: KernelSocket,
    request_line: str,
    what: str,
    answer_timeout: float = ANSWER_TIMEOUT_S,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection through the kernel runner's tunnel, past its ``ok``; 404 (in words)
    when the runner cannot be reached, refuses, is not the kernel's own, or does not answer
    within ``answer_timeout`` seconds."""
    try:
        reader, writer = await asyncio.wait_for(
            connect_kernel(target, limit=_CHUNK), answer_timeout
        )
    except SocketRefused as exc:
        raise AppNotFound(f"the kernel's app tunnel is refused: {exc}") from None
    except TimeoutError:
        raise AppNotFound(
            f"the kernel's app tunnel did not accept within {answer_timeout:g} s"
        ) from None
    except OSError as exc:
        raise AppNotFound(f"the kernel's app tunnel is unreachable: {exc}") from None
    try:
        writer.write(f"{request_line}\n".encode())
        answer = await asyncio.wait_for(_answer_line(reader), answer_timeout)
    except TimeoutError:
        writer.close()
        raise AppNotFound(
            f"the kernel's app tunnel did not answer within {answer_timeout:g} s"
        ) from None
    except (OSError, ValueError) as exc:
        writer.close()
        raise AppNotFound(f"the kernel's app tunnel failed: {exc}") from None
    if answer != "ok":
        writer.close()
        raise AppNotFound(f"{what} is not available ({answer})")
    return reader, writer


async def _answer_line(reader: asyncio.StreamReader) -> str:
    """The tunnel's one-line answer, read no further than :data:`MAX_ANSWER` bytes."""
    line = bytearray()
    while len(line) <= MAX_ANSWER:
        byte = await reader.read(1)
        if not byte or byte == b"\n":
            return line.decode(errors="replace").strip()
        line += byte
    raise ValueError(f"its answer is longer than {MAX_ANSWER} bytes")


async def list_apps(request: web.Request) -> web.Response:
    ctx = request.app["ctx"]
    record = await ctx.session(
        request["caller"], request.match_info["ref"], request.query.get("owner_access_key")
    )
    return web.json_response(await apps_of(ctx, record))


class StartServiceParams(_Strict):
    app: Name = Field(min_length=1, validation_alias=AliasChoices("app", "service"))
    port: int | None = Field(None, ge=1024, le=65535)
    envs: Script | None = None
    """A JSON object as a string (23.03's shape)."""
    arguments: Script | None = None
    login_session_token: Name | None = None


def _json_object(name: str, text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidAPIParameters(f"{name} must be a JSON object (as a string)")
    return value


async def _app(ctx: Any, record: dict[str, Any], name: str) -> dict[str, Any]:
    app = next((a for a in await apps_of(ctx, record) if a["name"] == name), None)
    if app is None:
        raise AppNotFound(f"the session has no app {name!r}")
    return app


async def _start_service(
    ctx: Any,
    record: dict[str, Any],
    app: dict[str, Any],
    port: int,
    envs: dict[str, Any],
    arguments: dict[str, Any],
) -> None:
    """Start the app's service in the kernel (pre-opened ports need nothing started);
    a failure is 23.03's 500 "Failed to launch the app service"."""
    if app["protocol"] == "preopen":
        return
    result = await ctx.router.execution.call(
        uuid.UUID(record["id"]),
        "start_service",
        app["name"],
        port,
        {"protocol": app["protocol"], "envs": envs, "arguments": arguments},
    )
    if (result or {}).get("status") == "failed":
        raise ServiceLaunchFailed(f"Failed to launch the app service: {result.get('error')}")


class ServiceLaunchFailed(InternalServerError):
    pass


async def start_service(request: web.Request) -> web.Response:
    """``POST /session/{ref}/start-service``: the app's service started in the kernel. There
    is no wsproxy in kernelhub: connections go through this gateway's ``tcpproxy``, whose
    address is the ``wsproxy_addr`` answered."""
    ctx = request.app["ctx"]
    params = parse(StartServiceParams, await raw_params(request))
    record = await ctx.session(
        request["caller"], request.match_info["ref"], request.query.get("owner_access_key")
    )
    app = await _app(ctx, record, params.app)
    port = params.port if params.port is not None else app["ports"][0]
    if port not in app["ports"]:
        raise InvalidAPIParameters(f"app {params.app!r} has no port {port}")
    await _start_service(
        ctx,
        record,
        app,
        port,
        _json_object("envs", params.envs),
        _json_object("arguments", params.arguments),
    )
    return web.json_response({"token": uuid.uuid4().hex, "wsproxy_addr": f"http://{request.host}"})


async def tcpproxy(request: web.Request) -> web.StreamResponse:
    ctx = request.app["ctx"]
    record = await ctx.session(
        request["caller"], request.match_info["ref"], request.query.get("owner_access_key")
    )
    name = request.query.get("app", "")
    ws = web.WebSocketResponse(autoping=True, heartbeat=30.0)
    if not ws.can_prepare(request).ok:  # before any work: a plain GET is no stream (uncapped)
        raise GenericBadRequest("an app tunnel needs a websocket upgrade")
    app = await _app(ctx, record, name)
    await _start_service(
        ctx,
        record,
        app,
        app["ports"][0],
        _json_object("envs", request.query.get("envs")),
        _json_object("arguments", request.query.get("arguments")),
    )
    target = await tunnel_of(ctx, record["id"])
    reader, writer = await open_tunnel(target, f"tcp {app['ports'][0]}", f"app {name!r}")
    try:
        await ws.prepare(request)
    except BaseException:  # a failed handshake closes the tunnel now, not at GC
        writer.close()
        raise
    session_id, connection = record["id"], uuid.uuid4().hex
    held = asyncio.create_task(_hold_idle_timer(ctx, session_id, connection))

    async def downstream() -> None:  # the app -> the client
        while chunk := await reader.read(_CHUNK):
            await ws.send_bytes(chunk)
        await ws.close()

    sending = asyncio.create_task(downstream())
    try:
        async for message in ws:  # the client -> the app
            if message.type == WSMsgType.BINARY:
                writer.write(message.data)
                await writer.drain()
            elif message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    except (ConnectionResetError, BrokenPipeError):
        pass
    except Exception:  # the socket is open: close it, never answer a 500 after the upgrade
        log.exception("app tunnel failed", app=name)
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()
        await asyncio.wait([sending], timeout=5)
        sending.cancel()
        held.cancel()
        writer.close()
        await ws.close()
        with contextlib.suppress(Exception):  # Redis away: the connection goes stale instead
            await app_closed(ctx.store, session_id, connection)
    return ws


async def _hold_idle_timer(ctx: Any, session_id: str, connection: str) -> None:
    """An open app connection holds its session's network timer (as 23.03's
    ``NetworkTimeoutIdleChecker`` counts one; docs/idle.md): announced
    when it opens and again every ``APP_REFRESH_S`` while it stays open."""
    while True:
        try:
            await app_opened(ctx.store, session_id, connection)
        except Exception as exc:  # telemetry: a Redis blip must not cut the connection
            log.warning("app connection not announced", session=session_id, error=repr(exc))
        await asyncio.sleep(APP_REFRESH_S)


def app_routes() -> list[web.RouteDef]:
    return [
        web.post("/session/{ref}/start-service", start_service),
        web.get("/stream/session/{ref}/apps", list_apps),
        web.get("/stream/session/{ref}/tcpproxy", tcpproxy),
        web.get("/stream/session/{ref}/httpproxy", tcpproxy),
    ]
