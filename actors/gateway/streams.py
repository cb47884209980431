"""``/stream/session/{ref}/execute``: code over a websocket, as ``backend.ai run`` does it
(its last step). The whole socket is one run: the client's first text frame says
what to run, the server sends one JSON frame per partial result until ``finished``, and a
``waiting-input`` is answered by the client's next (raw text) frame."""

from __future__ import annotations

import json
import uuid
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from ..domain.errors import DomainError

__all__ = ["stream_routes"]

log = structlog.get_logger(__name__)

_FLUSH_S = 0.2
_FIELDS = ("status", "console", "exitCode", "options", "files")


def _frame(result: dict[str, Any]) -> str:
    frame = {key: result.get(key) for key in _FIELDS}
    frame["console"] = list(frame["console"] or [])  # the client iterates it: never null
    return json.dumps(frame)


async def _next_text(ws: web.WebSocketResponse) -> str | None:
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            return str(message.data)
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            return None
    return None


async def _error(ws: web.WebSocketResponse, msg: str) -> web.WebSocketResponse:
    await ws.send_str(json.dumps({"status": "error", "msg": msg}))
    await ws.close()
    return ws


async def execute(request: web.Request) -> web.StreamResponse:
    ctx = request.app["ctx"]
    record = await ctx.session(
        request["caller"], request.match_info["ref"], request.query.get("owner_access_key")
    )
    sid, execution = uuid.UUID(record["id"]), ctx.router.execution
    ws = web.WebSocketResponse(autoping=True, heartbeat=30.0)
    await ws.prepare(request)
    first = await _next_text(ws)
    if first is None:
        return ws
    try:
        request_body = json.loads(first)
        mode = request_body.get("mode")
        code = str(request_body.get("code") or "")
        options = dict(request_body.get("options") or {})
    except (ValueError, AttributeError, TypeError):
        return await _error(ws, "Invalid API parameters: the first frame is not a JSON object")
    if mode not in ("query", "batch"):
        return await _error(ws, f"Invalid API parameters: mode {mode!r} (query or batch)")
    run_id = uuid.uuid4().hex
    try:
        result = await execution.execute(sid, run_id, mode, code, options, _FLUSH_S)
        while True:
            if result.get("console") or result.get("status") != "continued":
                await ws.send_str(_frame(result))
            status = result.get("status")
            if status == "finished" or ws.closed:
                break
            if status == "waiting-input":
                line = await _next_text(ws)
                if line is None:
                    break
                result = await execution.execute(sid, run_id, "input", line, {}, _FLUSH_S)
            else:
                result = await execution.execute(sid, run_id, "continue", "", {}, _FLUSH_S)
    except DomainError as exc:
        return await _error(ws, f"BackendError: {exc.msg or exc.title}")
    except Exception:  # the socket is open: the client hears of it there, not as a 500
        log.exception("execute stream failed", session=str(sid))
        return await _error(ws, "BackendError: Internal server error.")
    if ws.closed and result.get("status") != "finished":
        log.info("execute socket closed mid-run; interrupting", session=str(sid))
        try:
            await execution.call(sid, "interrupt")
        except DomainError:
            pass
    await ws.close()
    return ws


def stream_routes() -> list[web.RouteDef]:
    return [web.get("/stream/session/{ref}/execute", execute)]
