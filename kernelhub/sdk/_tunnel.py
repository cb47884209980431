"""``forward_app``: a local TCP listener whose connections reach an app in a session, each
through its own ``/stream/session/{id}/tcpproxy`` websocket (as ``backend.ai app`` does).

httpx speaks no websockets, so this one piece uses aiohttp's client (a dependency of the
client install for it); the request is signed the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import aiohttp

from ._wire import STREAM_CONTENT_TYPE, USER_AGENT, signed_headers
from .errors import NotFound

if TYPE_CHECKING:
    from .aio import AsyncSession

__all__ = ["forward_app"]

_CHUNK = 65536
_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"


@asynccontextmanager
async def forward_app(
    session: AsyncSession, app: str, host: str, port: int
) -> AsyncIterator[tuple[str, int]]:
    """Listen on ``host:port`` (0: a free port) while the block runs; yields the address."""
    if app not in {a.name for a in await session.apps()}:
        raise NotFound(
            404,
            {
                "type": "object-not-found",
                "title": "No such app service.",
                "msg": f"{app!r} is not served by session {session.name}",
            },
        )
    config = session.client.config
    endpoint = urlsplit(config.endpoint)
    path = f"/stream/session/{session.id}/tcpproxy?{urlencode({'app': app})}"
    url = f"{config.endpoint.replace('http', 'ws', 1)}{path}"
    http = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers = signed_headers(
            "GET", path, endpoint.netloc, STREAM_CONTENT_TYPE, config.access_key, config.secret_key
        )
        try:
            async with http.ws_connect(url, headers=headers, max_msg_size=0) as ws:
                await _pump(reader, writer, ws)
        except (aiohttp.ClientError, OSError):
            with contextlib.suppress(OSError):
                writer.write(_REFUSED)  # as the official client answers a failed tunnel
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, host, port)
    try:
        bound = server.sockets[0].getsockname()
        yield str(bound[0]), int(bound[1])
    finally:
        server.close()
        await http.close()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: aiohttp.ClientWebSocketResponse
) -> None:
    async def upstream() -> None:
        while data := await reader.read(_CHUNK):
            await ws.send_bytes(data)
        await ws.close()

    async def downstream() -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                writer.write(message.data)
                await writer.drain()

    tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
