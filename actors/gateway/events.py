"""``GET /events/session``: session and kernel events as server-sent events, from the log
tail (23.03's ``api/events.py``, what ``backend.ai session events`` reads).

Only the caller's own sessions (an admin may name another keypair with ``ownerAccessKey``,
or ``owner_access_key`` as the 23.03 client spells it), filtered by session id or name,
project and scope. When the watched session ends the stream says ``server_close`` and
closes (the reference never does, which leaves ``backend.ai events`` running forever).

Every stream reads the one tail of the log the gateway keeps (:mod:`.log_tail`), so open
streams hold no Redis connection of their own; how many a keypair may hold open is capped
before the handler runs (:mod:`.stream_limits`, applied in ``app.py``). When the caller's
keypair or user is revoked the stream ends at once with ``server_close`` and
``{"reason": ...}`` (:mod:`.open_streams`): the official client stops there rather than
reconnecting.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from ..domain.errors import ObjectNotFound
from .context import DEAD, GatewayContext
from .log_tail import Listener, LogTail
from .open_streams import current_stream

log = structlog.get_logger(__name__)

__all__ = ["FORWARDED", "event_routes"]

FORWARDED = frozenset(
    {
        "session_enqueued",
        "session_scheduled",
        "session_started",
        "session_cancelled",
        "session_terminating",
        "session_terminated",
        "session_success",
        "session_failure",
        "kernel_preparing",
        "kernel_pulling",
        "kernel_creating",
        "kernel_started",
        "kernel_cancelled",
        "kernel_terminating",
        "kernel_terminated",
        "session_idle_warning",
    }
)
"""The 15 event names 23.03 forwards, and kernelhub's ``session_idle_warning`` (a reclaim
ahead: ``reason``, ``checker`` and ``reclaimAt``); ``kernel_preparing`` is told for each
kernel of a session when it is prepared (kernelhub's log has ``session_preparing`` for
that)."""
_FROM_LOG = (FORWARDED - {"kernel_preparing"}) | {"session_preparing"}
_ENDS = frozenset({"session_terminated", "session_cancelled", "session_success", "session_failure"})
_PING_S = 15.0


@dataclass
class _Watch:
    access_key: str | None
    """None: every keypair (a superadmin watching all)."""
    session_id: str | None
    name: str | None
    project_id: str | None
    scope: str


def _params(request: web.Request) -> dict[str, str]:
    query = request.query
    return {
        "name": query.get("sessionName") or query.get("name") or "*",
        "session_id": query.get("sessionId") or "",
        "owner": query.get("ownerAccessKey") or query.get("owner_access_key") or "",
        "group": query.get("group") or query.get("groupName") or "*",
        "scope": query.get("scope") or "*",
    }


class _Sessions:
    """What an event needs from its session's record (name, owner, kernels), cached per
    stream: a session's name and owner never change."""

    def __init__(self, models: Any) -> None:
        self.models = models
        self._records: dict[str, dict[str, Any]] = {}

    async def get(self, session_id: str) -> dict[str, Any] | None:
        record = self._records.get(session_id)
        if record is None:
            for _ in range(50):  # the projection may be a step behind the log tail
                record = await self.models.session(session_id)
                if record is not None:
                    break
                await asyncio.sleep(0.02)
            if record is None:
                return None
            self._records[session_id] = record
        return record


def _matches(watch: _Watch, record: dict[str, Any], kind: str) -> bool:
    in_scope = watch.scope == "*" or kind.startswith(watch.scope + "_")
    return in_scope and _watches(watch, record)


def _watches(watch: _Watch, record: dict[str, Any]) -> bool:
    if watch.access_key is not None and record.get("access_key") != watch.access_key:
        return False
    if watch.session_id is not None:
        return str(record.get("id")) == watch.session_id
    if watch.name is not None and record.get("name") != watch.name:
        return False
    return watch.project_id is None or str(record.get("project_id")) == watch.project_id


def _payloads(kind: str, data: Any, record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    base = {
        "reason": str(getattr(data, "reason", "") or ""),
        "sessionName": record.get("name"),
        "ownerAccessKey": record.get("access_key"),
        "sessionId": str(record.get("id")),
        "exitCode": getattr(data, "exit_code", None),
    }
    kernels = record.get("kernels") or {}
    if kind == "session_preparing":
        return [("kernel_preparing", {**base, **_kernel(k)}) for k in kernels.values()]
    if kind == "session_idle_warning":
        reclaim_at = datetime.fromtimestamp(data.deadline, UTC).isoformat().replace("+00:00", "Z")
        return [(kind, {**base, "checker": data.checker, "reclaimAt": reclaim_at})]
    kernel_id = getattr(data, "kernel_id", None)
    if kernel_id is not None:
        return [(kind, {**base, **_kernel(kernels.get(str(kernel_id), {"id": str(kernel_id)}))})]
    return [(kind, base)]


def _kernel(kernel: dict[str, Any]) -> dict[str, Any]:
    return {
        "kernelId": str(kernel.get("id")),
        "clusterRole": kernel.get("cluster_role"),
        "clusterIdx": kernel.get("cluster_idx"),
    }


async def _send(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    await response.write(f"event: {event}\r\ndata: {json.dumps(data)}\r\n\r\n".encode())


async def session_events(request: web.Request) -> web.StreamResponse:
    ctx, caller = request.app["ctx"], request["caller"]
    params = _params(request)
    access_key: str | None = await ctx.acting_for(caller, params["owner"] or None)
    if caller.is_superadmin and not params["owner"] and not params["session_id"]:
        access_key = None if params["name"] == "*" else access_key
    project_id = None
    if params["group"] != "*":
        project = await ctx.lookups.project_by_name(caller.domain, params["group"])
        if project is None:
            raise ObjectNotFound("user group (or project)")
        project_id = str(project["project_id"])
    session_id = None
    if params["session_id"]:
        try:
            session_id = str(uuid.UUID(params["session_id"]))
        except ValueError:
            session_id = params["session_id"]  # matches nothing: streams nothing
    watch = _Watch(
        access_key,
        session_id,
        None if params["name"] == "*" else params["name"],
        project_id,
        params["scope"],
    )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    stream = current_stream(request)
    async with _tail(ctx).listen() as listener:  # before the check: no end goes unseen
        if stream is not None:
            stream.on_revoke(lambda _reason: listener.end())
        await response.prepare(request)
        watched = await _watched(ctx, watch)
        if watched is not None and watched.get("status") in DEAD:
            await _send(response, "server_close", {})  # it ended before the watch began
            return response
        try:
            await _forward(response, listener, watch, watched, _Sessions(ctx.models))
            if stream is not None and stream.reason is not None:
                await _send(response, "server_close", {"reason": stream.reason})
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the client left
        except Exception:  # the stream is open: end it, never answer a 500 after the headers
            log.exception("session event stream failed")
    return response


def _tail(ctx: GatewayContext) -> LogTail:
    """The gateway's one tail of the log, made on the first stream."""
    if ctx.log_tail is None:
        ctx.log_tail = LogTail(
            ctx.store, types=_FROM_LOG, streams=lambda s: s.startswith("session-")
        )
    return ctx.log_tail


async def _forward(
    response: web.StreamResponse,
    listener: Listener,
    watch: _Watch,
    watched: dict[str, Any] | None,
    sessions: _Sessions,
) -> None:
    """The watched events to the client until the watched session ends, the client leaves,
    or the listener is dropped (it fell behind: the client reconnects)."""
    while True:
        try:
            event = await asyncio.wait_for(listener.get(), _PING_S)
        except TimeoutError:
            await response.write(b": ping\r\n\r\n")
            continue
        if event is None:
            return
        session_id = getattr(event.data, "session_id", None)
        record = None if session_id is None else await sessions.get(str(session_id))
        told = "kernel_preparing" if event.type == "session_preparing" else event.type
        if record is None or not _matches(watch, record, told):
            continue
        for name, data in _payloads(event.type, event.data, record):
            await _send(response, name, data)
        if watched is not None and event.type in _ENDS:
            await _send(response, "server_close", {})
            return


async def _watched(ctx: Any, watch: _Watch) -> dict[str, Any] | None:
    """The one session the stream watches (by id, or by name for a keypair), if any."""
    if watch.session_id is not None:
        record = await ctx.models.session(watch.session_id)
        return record if record is not None and _watches(watch, record) else None
    if watch.name is not None and watch.access_key is not None:
        found: dict[str, Any] | None = await ctx.models.session_by_name(
            watch.access_key, watch.name
        )
        return found
    return None


def event_routes() -> list[web.RouteDef]:
    return [web.get("/events/session", session_events)]
