"""HTTP/1.1 between the inference proxy and a replica, by hand: the pieces
:mod:`.serving_proxy` uses, apart so that each can be driven alone (no stack) by the tests
that play a hostile replica or caller.

The replica is the tenant's code and is not trusted: its status line and headers are read
within :data:`MAX_RESPONSE_HEAD` bytes and :data:`MAX_RESPONSE_HEADERS` headers, malformed
headers are dropped, a chunk size must be plain hex (``-1`` once made a read take the
replica's whole stream into the gateway: review S14) and no read asks for a non-positive
size. Only headers that cannot act on the gateway's own origin are passed back
(:data:`NOT_ANSWERED`, review S9), and the caller's cookies and forwarding claims never
reach the replica (:data:`NOT_FORWARDED`, review S10).

The caller is not trusted either: :class:`Upload` streams its body (never held whole: review
S6), at most :data:`MAX_REQUEST_BODY`, at no less than :data:`MIN_UPLOAD_RATE` after
:data:`UPLOAD_GRACE_S` (a caller trickling a byte a minute would hold a slot for ever:
review S12), keeping only the first :data:`REPLAY_BYTES` so that a body that small can be
sent again to another replica.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from .problems import GatewayError

__all__ = [
    "MAX_REQUEST_BODY",
    "MAX_RESPONSE_HEAD",
    "MAX_RESPONSE_HEADERS",
    "MIN_UPLOAD_RATE",
    "REPLAY_BYTES",
    "STALL_S",
    "UPLOAD_GRACE_S",
    "Answer",
    "BodyTooLarge",
    "ReplicaFailed",
    "ReplicaTimeout",
    "Upload",
    "UploadTooSlow",
    "answered",
    "forwarded",
    "parse_head",
    "read_body",
    "read_size",
]

MAX_REQUEST_BODY = 16 * 2**20
MAX_RESPONSE_HEAD = 64 * 2**10
"""The replica's status line and headers together."""
MAX_RESPONSE_HEADERS = 128
STALL_S = 60.0
"""How long one read of the caller's body, or of the replica's answer, may wait."""
REPLAY_BYTES = 64 * 2**10
"""A body this small is kept whole, so the request can go to another replica when the first
closes without answering; a larger one is streamed and never retried."""
UPLOAD_GRACE_S = 10.0
MIN_UPLOAD_RATE = 64 * 2**10
"""Bytes per second a caller's body must average after :data:`UPLOAD_GRACE_S` (16 MiB then
takes at most ~4.5 minutes)."""
CHUNK = 2**16

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
    }
)
NOT_FORWARDED = _HOP_BY_HOP | {
    "authorization",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
}
"""Caller headers the replica never sees (besides ``x-backendai-*``): its credentials and
cookies for the gateway's origin, and forwarding claims the gateway rebuilds itself."""
NOT_ANSWERED = _HOP_BY_HOP | {
    "set-cookie",
    "set-cookie2",
    "content-security-policy",
    "content-security-policy-report-only",
    "x-content-type-options",
    "server",
    "clear-site-data",
    "refresh",
    "strict-transport-security",
    "alt-svc",
    "link",
    "www-authenticate",
    "report-to",
    "nel",
}
"""Replica headers the caller never gets (besides ``access-control-*``, ``x-backendai-*`` and
``x-kernelhub-*``): the answer comes from the gateway's own origin, so a replica may not
set cookies, wipe its storage, redirect it, pin it to HTTPS, open a password prompt
(``WWW-Authenticate``) or grant other origins access to it."""
_NOT_FORWARDED_PREFIXES = ("x-backendai-",)
_NOT_ANSWERED_PREFIXES = ("access-control-", "x-backendai-", "x-kernelhub-")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(rb"^HTTP/1\.([01]) ([1-5][0-9][0-9])(?: ([^\r\n]*))?$")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


class ReplicaFailed(GatewayError):
    status, error_type, title = 502, "bad-gateway", "The replica failed to answer."


class ReplicaTimeout(GatewayError):
    status, error_type, title = 504, "gateway-timeout", "The replica did not answer in time."


class BodyTooLarge(GatewayError):
    status, error_type = 413, "request-too-large"
    title = f"The request body is larger than {MAX_REQUEST_BODY // 2**20} MiB."


class UploadTooSlow(GatewayError):
    status, error_type = 408, "request-timeout"
    title = (
        f"The request body came too slowly (at least {MIN_UPLOAD_RATE // 2**10} KiB/s "
        f"after {UPLOAD_GRACE_S:g} s)."
    )


class BodyIncomplete(GatewayError):
    status, error_type = 400, "invalid-api-params"
    title = "The request body ended before its Content-Length."


def forwarded(name: str) -> bool:
    """Whether the caller's header ``name`` is passed to the replica."""
    lower = name.lower()
    return lower not in NOT_FORWARDED and not lower.startswith(_NOT_FORWARDED_PREFIXES)


def answered(name: str) -> bool:
    """Whether the replica's header ``name`` is passed back to the caller."""
    lower = name.lower()
    return lower not in NOT_ANSWERED and not lower.startswith(_NOT_ANSWERED_PREFIXES)


@dataclass
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    length: int | None
    chunked: bool
    keep_alive: bool
    bodiless: bool = False
    """A HEAD's answer, 204 or 304: no body follows, whatever its headers say."""


def parse_head(raw: bytes, method: str) -> Answer:
    """The replica's status line and headers (``raw`` ends with the blank line); 502 for
    anything the proxy cannot frame."""
    lines = raw[:-4].split(b"\r\n")
    match = _STATUS.match(lines[0])
    if match is None:
        raise ReplicaFailed("the replica's status line is not HTTP/1.x")
    minor, code, reason = match.group(1), int(match.group(2)), match.group(3) or b""
    if len(lines) - 1 > MAX_RESPONSE_HEADERS:
        raise ReplicaFailed(f"the replica sent more than {MAX_RESPONSE_HEADERS} headers")
    headers: list[tuple[str, str]] = []
    length: int | None = None
    chunked, close = False, minor == b"0"
    for line in lines[1:]:
        name_b, colon, value_b = line.partition(b":")
        name, value = name_b.decode("latin-1"), value_b.decode("latin-1").strip()
        if not colon or not _TOKEN.match(name) or BAD_VALUE.search(value):
            continue  # malformed: dropped
        lower = name.lower()
        if lower == "content-length":
            if not value.isdecimal() or len(value) > 18 or (length is not None):
                raise ReplicaFailed("the replica's Content-Length is invalid")
            length = int(value)
        elif lower == "transfer-encoding":
            chunked = value.lower().endswith("chunked")
        elif lower == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            close = "close" in tokens or (minor == b"0" and "keep-alive" not in tokens)
        if answered(name):
            headers.append((name, value))
    if code < 200:
        raise ReplicaFailed("the replica answered an interim status")
    bodiless = method == "HEAD" or code in (204, 304)
    if bodiless:
        chunked = False
        length = length if method == "HEAD" else None
    elif chunked:
        length = None
    elif length is None:
        close = True  # read to the end: the connection cannot be kept
    reason_text = reason.decode("latin-1")
    return Answer(
        status=code,
        reason="" if BAD_VALUE.search(reason_text) else reason_text[:128],
        headers=headers,
        length=length,
        chunked=chunked,
        keep_alive=not close,
        bodiless=bodiless,
    )


def read_size(left: int) -> int:
    """How much one read may ask for: never ``read(-1)`` or ``read(0)`` (``-1`` reads to the
    end, whatever the stream's limit: a replica could make the gateway hold its whole
    stream)."""
    size = min(left, CHUNK)
    if size <= 0:
        raise ReplicaFailed("the replica's body framing is invalid")
    return size


async def read_body(reader: asyncio.StreamReader, answer: Answer) -> AsyncIterator[bytes]:
    """The answer's body as it arrives (a chunked one decoded), each read within
    :data:`STALL_S`."""
    if answer.bodiless:
        return
    if answer.chunked:
        while True:
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), STALL_S)
            size_text = line[:-2].split(b";", 1)[0].rstrip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_text):
                # 1*HEXDIG (RFC 9112): int(x, 16) would take "-1", "+1", "0x1", "1_0"
                raise ReplicaFailed("the replica's chunk size is invalid")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(MAX_RESPONSE_HEADERS + 1):  # trailers, dropped
                    if await asyncio.wait_for(reader.readuntil(b"\r\n"), STALL_S) == b"\r\n":
                        return
                raise ReplicaFailed("the replica sent too many trailers")
            while size > 0:
                chunk = await asyncio.wait_for(reader.read(read_size(size)), STALL_S)
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", size)
                size -= len(chunk)
                yield chunk
            if await asyncio.wait_for(reader.readexactly(2), STALL_S) != b"\r\n":
                raise ReplicaFailed("the replica's chunk is not terminated")
    elif answer.length is not None:
        left = answer.length
        while left > 0:
            chunk = await asyncio.wait_for(reader.read(read_size(left)), STALL_S)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
            yield chunk
    else:
        while chunk := await asyncio.wait_for(reader.read(CHUNK), STALL_S):
            yield chunk


class _Readable(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class Upload:
    """The caller's body on its way to the replica: read as it comes, framed for the wire
    (``Content-Length`` when the caller gave one, else chunked), never held whole.

    :meth:`start` reads the first :data:`REPLAY_BYTES`; :attr:`kept` is that part as sent
    (with the final chunk when the body ended there), :attr:`replayable` whether it is the
    whole body (so the request may be sent again); :meth:`rest` yields the remainder, framed.
    Every read is bounded by :data:`STALL_S` and by the minimum rate; past
    :data:`MAX_REQUEST_BODY` bytes it raises :class:`BodyTooLarge`."""

    def __init__(
        self,
        stream: _Readable,
        length: int | None,
        *,
        grace_s: float = UPLOAD_GRACE_S,
        rate: float = MIN_UPLOAD_RATE,
        cap: int = MAX_REQUEST_BODY,
    ) -> None:
        if length is not None and length > cap:
            raise BodyTooLarge()
        self.stream, self.length = stream, length
        self.grace_s, self.rate, self.cap = grace_s, rate, cap
        self.started = time.monotonic()
        self.received = 0
        self.ended = False
        self.kept = b""
        self.kept_whole = False

    @property
    def chunked(self) -> bool:
        return self.length is None

    @property
    def replayable(self) -> bool:
        """The body ended within :attr:`kept`: nothing else was read from the caller."""
        return self.kept_whole

    def header(self) -> str | None:
        """The framing header for the replica (``None``: no body at all)."""
        if self.length is not None:
            return f"Content-Length: {self.length}" if self.length else None
        if self.ended and not self.received:
            return None
        return "Transfer-Encoding: chunked"

    async def _read(self, most: int = CHUNK) -> bytes:
        if self.ended:
            return b""
        want = most if self.length is None else min(most, self.length - self.received)
        if want <= 0:
            self.ended = True
            return b""
        allowed = self.grace_s + self.received / self.rate - (time.monotonic() - self.started)
        if allowed <= 0:
            raise UploadTooSlow()
        try:
            chunk = await asyncio.wait_for(self.stream.read(want), min(STALL_S, allowed))
        except TimeoutError:
            raise UploadTooSlow() from None
        if not chunk:
            if self.length is not None and self.received < self.length:
                raise BodyIncomplete()
            self.ended = True
            return b""
        self.received += len(chunk)
        if self.received > self.cap:
            raise BodyTooLarge()
        if self.length is not None and self.received >= self.length:
            self.ended = True
        return chunk

    def _frame(self, data: bytes) -> bytes:
        if not self.chunked:
            return data
        framed = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        return framed + (b"0\r\n\r\n" if self.ended and self.received else b"")

    async def start(self) -> None:
        data = bytearray()
        while len(data) < REPLAY_BYTES and not self.ended:
            data += await self._read(REPLAY_BYTES - len(data))
        self.kept = self._frame(bytes(data))
        self.kept_whole = self.ended

    async def rest(self) -> AsyncIterator[bytes]:
        while not self.ended:
            chunk = await self._read()
            if chunk or self.ended:
                framed = self._frame(chunk)
                if framed:
                    yield framed
