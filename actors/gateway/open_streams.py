"""The streams open now (server-sent events, websockets), by keypair and by user, so that
revoking a keypair or a user ends its streams at the moment its requests start failing.

A stream's caller is checked once, when it opens; without this a keypair deactivated
mid-stream kept its terminal, its app tunnel and its event stream for as long as its client
liked. The gateway's middleware (``app.py``) tracks every request :func:`.stream_limits.is_stream`
says is a stream for its whole life; :meth:`OpenStream.revoke` then:

- tells the handler, through the closers it registered (the event stream ends its listener
  and sends ``server_close`` with the reason: the official client stops reading there
  instead of reconnecting);
- closes a websocket with code 1008 (policy violation) and the reason as its message (every
  websocket handler leaves its read loop when its socket closes);
- and, as a backstop for a stream that is not a websocket, cancels the handler's task if it
  is still running :data:`GRACE_S` later (a handler stuck writing to a client that stopped
  reading). A websocket is left to its handler and to aiohttp: the close frame has cut the
  client off, the handler's read loop has ended, and aiohttp ends the handler when the
  connection closes; a cancellation of ours would only land in the middle of its clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from aiohttp import WSCloseCode, web

__all__ = [
    "GRACE_S",
    "STREAM_KEY",
    "OpenStream",
    "OpenStreams",
    "current_stream",
    "remember_response",
]

log = structlog.get_logger(__name__)

GRACE_S = 1.0
"""How long a revoked stream's handler may take to end on its own before it is cancelled."""
_MAX_REASON = 120
"""A websocket close message is at most 123 bytes."""


class OpenStream:
    """One open stream: whose it is, the task serving it, its answer once prepared."""

    def __init__(
        self, access_key: str, user_id: str, task: asyncio.Task[Any] | None, domain: str = ""
    ) -> None:
        self.access_key = access_key
        self.user_id = user_id
        self.domain = domain
        self.task = task
        self.response: web.StreamResponse | None = None
        self.reason: str | None = None
        """Why it was revoked (``None``: it was not)."""
        self._closers: list[Callable[[str], None]] = []
        self._pending: set[asyncio.Task[Any]] = set()

    def on_revoke(self, closer: Callable[[str], None]) -> None:
        """Call ``closer(reason)`` when the stream is revoked (at once if it already was)."""
        if self.reason is not None:
            closer(self.reason)
        else:
            self._closers.append(closer)

    def prepared(self, response: web.StreamResponse) -> None:
        """The handler sent its headers (``on_response_prepare``): a websocket revoked
        before it was upgraded closes now."""
        self.response = response
        if self.reason is not None:
            self._close_socket(self.reason)

    def revoke(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        for closer in self._closers:
            try:
                closer(reason)
            except Exception:  # one handler's closer must not spare the other streams
                log.exception("a stream's closer failed", access_key=self.access_key)
        self._close_socket(reason)
        if self.task is not None and not self.task.done():
            asyncio.get_running_loop().call_later(GRACE_S, self._cancel)

    def _close_socket(self, reason: str) -> None:
        ws = self.response
        if isinstance(ws, web.WebSocketResponse) and ws.prepared and not ws.closed:
            message = reason.encode()[:_MAX_REASON]
            task = asyncio.ensure_future(
                ws.close(code=WSCloseCode.POLICY_VIOLATION, message=message)
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _cancel(self) -> None:
        if self.task is None or self.task.done():
            return
        if isinstance(self.response, web.WebSocketResponse):
            log.warning("a revoked websocket's handler is still cleaning up", key=self.access_key)
            return
        log.info("a revoked stream did not end; cancelling it", access_key=self.access_key)
        self.task.cancel()


STREAM_KEY = web.RequestKey("kernelhub.open_stream", OpenStream)
"""Where a tracked request keeps its :class:`OpenStream`."""


class OpenStreams:
    """Every tracked stream, findable by access key, by user and by domain."""

    def __init__(self) -> None:
        self._by_key: dict[str, set[OpenStream]] = {}
        self._by_user: dict[str, set[OpenStream]] = {}
        self._by_domain: dict[str, set[OpenStream]] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_key.values())

    @contextlib.contextmanager
    def track(
        self, request: web.Request, access_key: str, user_id: str, domain: str = ""
    ) -> Iterator[OpenStream]:
        """Track the stream ``request`` serves while the block runs (the request keeps it
        under :data:`STREAM_KEY`)."""
        stream = OpenStream(access_key, user_id, asyncio.current_task(), domain)
        request[STREAM_KEY] = stream
        self._by_key.setdefault(access_key, set()).add(stream)
        self._by_user.setdefault(user_id, set()).add(stream)
        self._by_domain.setdefault(domain, set()).add(stream)
        try:
            yield stream
        finally:
            _discard(self._by_key, access_key, stream)
            _discard(self._by_user, user_id, stream)
            _discard(self._by_domain, domain, stream)

    def revoke(
        self,
        keys: tuple[str, ...],
        users: tuple[str, ...],
        reason: str,
        domains: tuple[str, ...] = (),
    ) -> int:
        """Revoke every stream of ``keys``, ``users`` or ``domains``; how many were."""
        found: set[OpenStream] = set()
        for key in keys:
            found |= self._by_key.get(key, set())
        for user in users:
            found |= self._by_user.get(user, set())
        for domain in domains:
            found |= self._by_domain.get(domain, set())
        for stream in found:
            stream.revoke(reason)
        return len(found)


def _discard(index: dict[str, set[OpenStream]], name: str, stream: OpenStream) -> None:
    streams = index.get(name)
    if streams is not None:
        streams.discard(stream)
        if not streams:
            del index[name]


def current_stream(request: web.Request) -> OpenStream | None:
    """The stream ``request`` serves, when the middleware tracks it."""
    return request.get(STREAM_KEY)


async def remember_response(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: a tracked stream learns its answer (its websocket)."""
    stream = current_stream(request)
    if stream is not None:
        stream.prepared(response)
