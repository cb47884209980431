"""A replica's health probe: one HTTP ``GET`` of the model definition's health-check path,
through the kernel runner's app tunnel (containers have no network), to the model
service's port. 2xx is healthy; anything else, no answer in time, or no tunnel is not.

The tunnel is the gateway's (:func:`actors.gateway.apps.tunnel_of` finds the kernel's
socket through its agent, :func:`~actors.gateway.apps.open_tunnel` connects to it refusing
a socket that is not the kernel's own): reused, not copied. The answer comes from the
tenant's server, so only its status line is read, bounded in size and time.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from actors.agents.kernel_sockets import KernelSocket
from actors.gateway.apps import AppNotFound, open_tunnel, tunnel_of
from events.catalogue.endpoint import HEALTH_PATH_PATTERN

__all__ = ["MAX_STATUS_LINE", "Probe", "probe_health", "tunnel_target"]

MAX_STATUS_LINE = 256
"""The most of the server's answer read: its status line."""
_STATUS = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})(?: |$)")
_PATH = re.compile(HEALTH_PATH_PATTERN)


@dataclass(frozen=True)
class Probe:
    """One probe's outcome (``at``: wall-clock seconds, for the report)."""

    at: float
    ok: bool
    status: int | None = None
    """The HTTP status answered, if any."""
    error: str | None = None
    """Why it failed, in words (bounded)."""

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "ok": self.ok, "status": self.status, "error": self.error}


@dataclass(frozen=True)
class _RouterOnly:
    """What :func:`tunnel_of` reads of a gateway context: the session router."""

    router: Any


async def tunnel_target(router: Any, session_id: uuid.UUID) -> KernelSocket:
    """The replica's app tunnel, as its agent names it."""
    return await tunnel_of(_RouterOnly(router), str(session_id))


async def _status_line(reader: asyncio.StreamReader) -> bytes:
    """The answer's first line, read no further than :data:`MAX_STATUS_LINE` bytes."""
    data = b""
    while b"\n" not in data and len(data) < MAX_STATUS_LINE:
        chunk = await reader.read(MAX_STATUS_LINE - len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def _failed(error: str) -> Probe:
    return Probe(at=time.time(), ok=False, error=error[:512])


async def probe_health(target: KernelSocket, port: int, path: str, timeout_s: float) -> Probe:
    """``GET path`` on the kernel's ``port`` through its tunnel, within ``timeout_s``."""
    if not _PATH.match(path):  # the event bounds it; never put a line break into a request
        return _failed(f"the health-check path {path[:64]!r} is not a plain path")
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await open_tunnel(
                target, f"tcp {port}", "the model service", answer_timeout=timeout_s
            )
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: kernelhub-probe\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                await writer.drain()
                line = await _status_line(reader)
            finally:
                writer.close()
    except AppNotFound as exc:
        return _failed(exc.msg or str(exc))
    except TimeoutError:
        return _failed(f"no answer within {timeout_s:g} s")
    except (OSError, ValueError) as exc:
        return _failed(f"the probe failed: {exc}")
    match = _STATUS.match(line)
    if match is None:
        return _failed("the answer is not HTTP/1.x")
    status = int(match.group(1))
    if 200 <= status < 300:
        return Probe(at=time.time(), ok=True, status=status)
    return Probe(at=time.time(), ok=False, status=status, error=f"HTTP {status}")
