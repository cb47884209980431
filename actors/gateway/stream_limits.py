"""How many long-lived streams (server-sent events, websockets) and file operations the
gateway serves at once, per keypair and in all.

- A stream holds a socket, buffers and a task for as long as the client likes, so without a
  cap one tenant opening streams in a loop exhausts the gateway for everyone. The gateway's
  middleware (``app.py``) holds a slot for the whole life of every request :func:`is_stream`
  says is a stream.
- A file operation (upload, download, download_single, files) holds up to a tar download or
  an upload in the gateway's memory (64 MiB each) until the client has sent or read it, and
  one of the agent's few file threads while the agent works. Without a cap fifty downloads
  at once fill the agent's threads, queue every other tenant's files behind them, and a
  client that never reads keeps fifty archives in the gateway. The file handlers
  (``sessions.py``) hold a slot until their answer is written.

Past either cap the request is refused with a 429 problem before any work is done. Pure
(counts in memory, no I/O).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .problems import GatewayError

__all__ = [
    "MAX_FILE_OPS_PER_KEYPAIR",
    "MAX_FILE_OPS_TOTAL",
    "MAX_STREAMS_PER_KEYPAIR",
    "MAX_STREAMS_TOTAL",
    "SSE_ROUTES",
    "ConcurrencyLimits",
    "FileOpLimits",
    "StreamLimits",
    "TooManyFileOperations",
    "TooManyStreams",
    "is_stream",
]

MAX_STREAMS_PER_KEYPAIR = 32
MAX_STREAMS_TOTAL = 1024
MAX_FILE_OPS_PER_KEYPAIR = 4
"""File operations one keypair runs at once: twice the agent's per-kernel share (its file
pool runs 2 of one kernel's at a time, ``actors.agents.file_pool``), so a tenant never holds
more than half of one agent's file threads."""
MAX_FILE_OPS_TOTAL = 32
"""File operations the gateway runs at once: 32 x 64 MiB (a tar download or an upload, each
capped) bounds what files hold in the gateway's memory to 2 GiB."""
SSE_ROUTES = frozenset({"/events/session"})
"""Routes that answer with a stream of server-sent events."""


class TooManyStreams(GatewayError):
    status, error_type, title = 429, "rate-limit-exceeded", "Too many concurrent streams."


class TooManyFileOperations(GatewayError):
    status, error_type, title = (429, "rate-limit-exceeded", "Too many concurrent file operations.")


def is_stream(route: str, method: str, upgrade: str | None) -> bool:
    """A request that becomes a long-lived stream: an SSE route, or a websocket upgrade on
    one of the ``/stream/`` routes (their plain GETs, like ``/apps``, answer at once)."""
    if method != "GET":
        return False
    if route in SSE_ROUTES:
        return True
    return route.startswith("/stream/") and (upgrade or "").strip().lower() == "websocket"


class ConcurrencyLimits:
    """Slots for things a keypair holds open at once, ``per_keypair`` each and ``total`` in
    all; a request past either is refused with :attr:`refusal` (a 429), naming the cap."""

    refusal: type[GatewayError] = GatewayError
    what = "things"
    """How a refusal names what is counted ("streams")."""

    def __init__(self, per_keypair: int, total: int) -> None:
        self.per_keypair = per_keypair
        self.total = total
        self._open: dict[str, int] = {}
        self._total = 0

    def held(self, access_key: str | None = None) -> int:
        """Slots held now: the keypair's, or all of them."""
        return self._total if access_key is None else self._open.get(access_key, 0)

    @contextmanager
    def hold(self, access_key: str) -> Iterator[None]:
        """A slot for ``access_key`` while the block runs; refused past either cap."""
        mine = self._open.get(access_key, 0)
        if mine >= self.per_keypair:
            raise self.refusal(
                f"this keypair has {mine} {self.what} open; at most {self.per_keypair} at a time"
            )
        if self._total >= self.total:
            raise self.refusal(
                f"the gateway holds {self._total} {self.what}, its limit; retry later"
            )
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


class StreamLimits(ConcurrencyLimits):
    refusal, what = TooManyStreams, "streams"

    def __init__(
        self, per_keypair: int = MAX_STREAMS_PER_KEYPAIR, total: int = MAX_STREAMS_TOTAL
    ) -> None:
        super().__init__(per_keypair, total)

    def open_streams(self, access_key: str | None = None) -> int:
        """Streams open now: the keypair's, or all of them."""
        return self.held(access_key)


class FileOpLimits(ConcurrencyLimits):
    refusal, what = TooManyFileOperations, "file operations"

    def __init__(
        self, per_keypair: int = MAX_FILE_OPS_PER_KEYPAIR, total: int = MAX_FILE_OPS_TOTAL
    ) -> None:
        super().__init__(per_keypair, total)
