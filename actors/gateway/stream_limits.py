"""How many long-lived streams (server-sent events, websockets) the gateway holds open, per
keypair and in all. Each one holds a socket, buffers and a task for as long as the client
likes, so without a cap one tenant opening streams in a loop exhausts the gateway for
everyone. Past either cap a new stream is refused with a 429 problem before it opens.

Pure (counts in memory, no I/O); the gateway's middleware (``app.py``) holds a slot for the
whole life of every request :func:`is_stream` says is a stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..domain.errors import DomainError

__all__ = [
    "MAX_STREAMS_PER_KEYPAIR",
    "MAX_STREAMS_TOTAL",
    "SSE_ROUTES",
    "StreamLimits",
    "TooManyStreams",
    "is_stream",
]

MAX_STREAMS_PER_KEYPAIR = 32
MAX_STREAMS_TOTAL = 1024
SSE_ROUTES = frozenset({"/events/session"})
"""Routes that answer with a stream of server-sent events."""


class TooManyStreams(DomainError):
    status, error_type, title = 429, "rate-limit-exceeded", "Too many concurrent streams."


def is_stream(route: str, method: str, upgrade: str | None) -> bool:
    """A request that becomes a long-lived stream: an SSE route, or a websocket upgrade on
    one of the ``/stream/`` routes (their plain GETs, like ``/apps``, answer at once)."""
    if method != "GET":
        return False
    if route in SSE_ROUTES:
        return True
    return route.startswith("/stream/") and (upgrade or "").strip().lower() == "websocket"


class StreamLimits:
    def __init__(
        self, per_keypair: int = MAX_STREAMS_PER_KEYPAIR, total: int = MAX_STREAMS_TOTAL
    ) -> None:
        self.per_keypair = per_keypair
        self.total = total
        self._open: dict[str, int] = {}
        self._total = 0

    def open_streams(self, access_key: str | None = None) -> int:
        """Streams open now: the keypair's, or all of them."""
        return self._total if access_key is None else self._open.get(access_key, 0)

    @contextmanager
    def hold(self, access_key: str) -> Iterator[None]:
        """A slot for one stream of ``access_key`` while the block runs; refused with
        :class:`TooManyStreams` past either cap."""
        mine = self._open.get(access_key, 0)
        if mine >= self.per_keypair:
            raise TooManyStreams(f"this keypair has {mine} streams open; at most "
                                 f"{self.per_keypair} at a time")  # fmt: skip
        if self._total >= self.total:
            raise TooManyStreams(f"the gateway holds {self._total} streams, its limit; "
                                 "retry later")  # fmt: skip
        self._open[access_key] = mine + 1
        self._total += 1
        try:
            yield
        finally:
            self._total -= 1
            left = self._open[access_key] - 1
            if left:
                self._open[access_key] = left
            else:
                del self._open[access_key]
