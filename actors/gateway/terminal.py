"""``/stream/session/{ref}/pty``: a terminal in the session over a websocket (23.03's
``api/stream.py``).

From the client, text frames of JSON:
- ``{"type": "stdin", "chars": <base64>}``;
- ``{"type": "resize", "rows": r, "cols": c}``;
- ``{"type": "ping"}``;
- ``{"type": "restart"}``, which starts a fresh shell.

To the client: ``{"type": "out", "data": <base64>}``. The socket closes when the shell
exits.

Containers have no network, so the terminal goes through the kernel runner's app tunnel
(``pty <rows> <cols>``, then frames: :mod:`kernelhub.in_kernel.kernel_runner.terminal`), as app
connections do, and is reached the same verified way (:func:`.apps.open_tunnel`). A frame
from the kernel larger than :data:`MAX_FRAME` ends the terminal before its body is read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from ..agents.kernel_sockets import KernelSocket
from ..domain.errors import GenericBadRequest
from .apps import open_tunnel, tunnel_of

__all__ = ["terminal_routes"]

log = structlog.get_logger(__name__)

_HEADER = struct.Struct(">cI")
_ROWS, _COLS = 24, 80
MAX_FRAME = 2**20
"""The largest terminal frame read from a kernel (its runner sends output in 64 KiB reads)."""


class FrameTooLarge(ValueError):
    """The kernel announced a frame past :data:`MAX_FRAME`."""


class _Terminal:
    """One shell behind the tunnel: frames in, output frames out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.output: asyncio.Task[None] | None = None

    def follow(self, ws: web.WebSocketResponse) -> _Terminal:
        """Send its output to ``ws`` (closed when the shell exits)."""
        self.output = asyncio.create_task(_output(self, ws))
        return self

    @classmethod
    async def open(cls, target: KernelSocket, rows: int, cols: int) -> _Terminal:
        return cls(*await open_tunnel(target, f"pty {rows} {cols}", "a terminal"))

    async def send(self, kind: bytes, payload: bytes) -> None:
        self.writer.write(_HEADER.pack(kind, len(payload)) + payload)
        await self.writer.drain()

    async def frames(self) -> Any:
        """(kind, payload) until the runner closes; :class:`FrameTooLarge` (the connection
        closed, nothing of it read) for a frame past the cap."""
        while True:
            try:
                header = await self.reader.readexactly(_HEADER.size)
                kind, size = _HEADER.unpack(header)
                if size > MAX_FRAME:
                    self.close()
                    raise FrameTooLarge(
                        f"the kernel's terminal sent a frame of {size} bytes (at most {MAX_FRAME})"
                    )
                payload = await self.reader.readexactly(size) if size else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            yield kind, payload

    def close(self) -> None:
        self.writer.close()

    async def stop(self) -> None:
        self.close()
        if self.output is not None:
            self.output.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.output


async def pty(request: web.Request) -> web.StreamResponse:
    ctx = request.app["ctx"]
    record = await ctx.session(
        request["caller"], request.match_info["ref"], request.query.get("owner_access_key")
    )
    ws = web.WebSocketResponse(autoping=True, heartbeat=30.0)
    if not ws.can_prepare(request).ok:
        raise GenericBadRequest("a terminal needs a websocket upgrade")
    path = await tunnel_of(ctx, record["id"])
    terminal = await _Terminal.open(path, _ROWS, _COLS)
    try:
        await ws.prepare(request)
    except BaseException:
        terminal.close()
        raise
    terminal.follow(ws)
    try:
        async for message in ws:
            if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
            if message.type != WSMsgType.TEXT:
                continue
            command = _command(str(message.data))
            if command is None:
                continue
            kind = command.get("type")
            if kind == "stdin":
                await terminal.send(b"d", base64.b64decode(command.get("chars", "")))
            elif kind == "resize":
                rows, cols = int(command.get("rows", _ROWS)), int(command.get("cols", _COLS))
                await terminal.send(b"r", f"{rows} {cols}".encode())
            elif kind == "restart":  # a fresh shell on the same socket
                await terminal.stop()
                terminal = (await _Terminal.open(path, _ROWS, _COLS)).follow(ws)
    except (ConnectionError, ValueError, TypeError) as exc:
        log.info("terminal closed", session=record["id"], why=repr(exc))
    except Exception:  # the socket is open: close it, never a 500 after the upgrade
        log.exception("terminal failed", session=record["id"])
    finally:
        await terminal.stop()
        await ws.close()
    return ws


def _command(text: str) -> dict[str, Any] | None:
    try:
        command = json.loads(text)
    except ValueError:
        return None
    return command if isinstance(command, dict) else None


async def _output(terminal: _Terminal, ws: web.WebSocketResponse) -> None:
    """The shell's output to the client; the socket closes when the shell exits (or sends
    what is not a frame)."""
    try:
        async for kind, payload in terminal.frames():
            if kind == b"d":
                data = base64.b64encode(payload).decode()
                await ws.send_str(json.dumps({"type": "out", "data": data}))
            elif kind == b"x":
                break
    except FrameTooLarge as exc:
        log.warning("terminal closed", why=str(exc))
    if not ws.closed:
        await ws.close()


def terminal_routes() -> list[web.RouteDef]:
    return [web.get("/stream/session/{ref}/pty", pty)]
