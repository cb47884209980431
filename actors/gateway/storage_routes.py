"""The transfer endpoint: ``/storage/upload`` (tus 1.0 core, as the official client's
``aiotusclient`` speaks it) and ``/storage/download`` (ranged GET), served by the gateway
itself in place of Backend.AI's storage proxy.

These routes are unsigned: the ``?token=`` that ``request-upload`` / ``request-download``
handed out (:mod:`actors.storage.tokens`) is the credential, and it names the one file it
is for. Each request still re-judges the token's keypair and user (revoked, deactivated)
and their permission on the folder (:func:`.folders_access.folder_for`), so a share
withdrawn or a folder trashed stops a transfer at its next request, not at the token's
expiry. Requests are bounded: the query string (only ``token``), the token's length, the
transfers one keypair runs at once (:data:`TRANSFERS_PER_KEYPAIR`), and, for uploads, what
:mod:`actors.storage.transfer` bounds (declared size, quota, buffered bytes, idle time).

tus as the client uses it: it never POSTs a creation; it PATCHes the URL from
``request-upload`` from offset 0 with ``Upload-Offset``, ``Tus-Resumable: 1.0.0`` and
``Content-Type: application/offset+octet-stream``, expects ``204`` and the new
``Upload-Offset``, and on a failure asks ``HEAD`` for the offset to resume from. A 0-byte
file is made by ``request-upload`` (the client sends no PATCH for it).
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web

from actors.storage.errors import (
    IdleBody,
    LengthRequired,
    UnsupportedMedia,
    UnsupportedVersion,
)
from actors.storage.paths import parse_path
from actors.storage.tokens import MAX_UPLOAD_BYTES, PURPOSE, Claims, InvalidToken, TokenSigner
from actors.storage.transfer import Transfers
from actors.storage.usage import Usage
from actors.storage.volume import Volume

from ..domain.errors import DomainError, InvalidAPIParameters, VFolderOperationFailed
from .context import GatewayContext
from .folders_access import folder_for
from .problems import GatewayError, problem
from .ratelimit import UNAUTHENTICATED_LIMIT, WINDOW_S, RateLimitExceeded
from .stream_limits import ConcurrencyLimits

__all__ = [
    "STORAGE",
    "STORAGE_PUBLIC",
    "TRANSFERS_PER_KEYPAIR",
    "Storage",
    "install_storage",
    "storage_of",
]

TUS_VERSION = "1.0.0"
TRANSFERS_PER_KEYPAIR = 8
TRANSFERS_TOTAL = 64
log = structlog.get_logger(__name__)

DOWNLOAD_CHUNK = 1 << 20
RECHECK_S = 5.0
"""How often a transfer under way asks again whether its keypair may still do it (a share
withdrawn, the folder trashed, the keypair deactivated end it within this), ..."""
RECHECK_BYTES = 16 << 20
"""... or after this many bytes, whichever comes first."""
WRITE_TIMEOUT_S = 60.0
"""A download whose client takes longer than this to take one chunk is cut off: a client
that stops reading must not hold a transfer slot for ever (review F9)."""
MIN_BYTES_PER_WINDOW = 64 << 10
RATE_WINDOW_S = 30.0
"""A transfer moving less than :data:`MIN_BYTES_PER_WINDOW` in :data:`RATE_WINDOW_S` is
ended (a trickle holds a slot as surely as silence)."""
UPLOAD_PATH, DOWNLOAD_PATH = "/storage/upload", "/storage/download"

STORAGE_PUBLIC = frozenset(
    {
        ("OPTIONS", UPLOAD_PATH),
        ("HEAD", UPLOAD_PATH),
        ("PATCH", UPLOAD_PATH),
        ("GET", DOWNLOAD_PATH),
        ("HEAD", DOWNLOAD_PATH),
    }
)
"""The routes the gateway's signature check lets through: their token is checked here."""

_RANGE = re.compile(r"^bytes=(\d{1,20})-(\d{0,20})$")


class TooManyTransfers(GatewayError):
    status, error_type, title = 429, "rate-limit-exceeded", "Too many concurrent transfers."


class TransferLimits(ConcurrencyLimits):
    refusal, what = TooManyTransfers, "transfers"


class RangeNotSatisfiable(GatewayError):
    status, error_type, title = 416, "range-not-satisfiable", "Range Not Satisfiable."


@dataclass
class Storage:
    """What the storage routes share in one gateway: the token key, the volume, limits."""

    signer: TokenSigner
    volume: Volume | None
    transfers: Transfers | None
    limits: TransferLimits

    def require_volume(self) -> tuple[Volume, Transfers]:
        if self.volume is None or self.transfers is None:
            raise VFolderOperationFailed("this gateway serves no storage host")
        return self.volume, self.transfers

    async def usage(self, folder_id: uuid.UUID, path: Path) -> Usage:
        """What the folder holds (bytes, files; measured without following links, bounded,
        cached for a couple of seconds): for ``vfolder info`` and the GraphQL fields."""
        volume, _ = self.require_volume()
        return await volume.quota.usage(folder_id.hex, path)

    async def forget(self, folder_id: uuid.UUID) -> None:
        """A purged folder's unfinished uploads and cached usage, dropped."""
        volume, _ = self.require_volume()
        await volume.run(volume.staging.drop, folder_id.hex)
        volume.quota.forget_usage(folder_id.hex)

    @classmethod
    def for_context(cls, ctx: GatewayContext) -> Storage:
        volume = None if ctx.vfolder_root is None else Volume(ctx.vfolder_root)
        return cls(
            signer=TokenSigner(ctx.auth.secrets.derive(PURPOSE)),
            volume=volume,
            transfers=None if volume is None else Transfers(volume),
            limits=TransferLimits(TRANSFERS_PER_KEYPAIR, TRANSFERS_TOTAL),
        )


STORAGE = web.AppKey("kh_storage", Storage)


def storage_of(app: web.Application) -> Storage:
    return app[STORAGE]


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    if STORAGE not in app:
        app[STORAGE] = Storage.for_context(app["ctx"])
    yield
    if app[STORAGE].volume is not None:
        app[STORAGE].volume.close()  # type: ignore[union-attr]


def install_storage(app: web.Application, storage: Storage | None = None) -> None:
    """Add the transfer routes to ``app`` (built from its ``ctx`` at start-up unless given)."""
    if storage is not None:
        app[STORAGE] = storage
    app.cleanup_ctx.append(_storage_ctx)
    app.add_routes(
        [
            web.options(UPLOAD_PATH, _tus(_options)),
            web.head(UPLOAD_PATH, _tus(_head)),
            web.patch(UPLOAD_PATH, _tus(_patch)),
            web.get(DOWNLOAD_PATH, _download),
        ]
    )


def _tus(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Every tus answer, refusals too, says which protocol it speaks."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except DomainError as exc:
            response = problem(exc)
        response.headers.update({"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"})
        return response

    return answer


def _token(request: web.Request) -> str:
    extra = sorted(set(request.query) - {"token"})
    if extra:
        raise InvalidAPIParameters(f"unsupported query parameter: {extra[0][:64]}")
    tokens = request.query.getall("token", [])
    if len(tokens) != 1:
        raise InvalidToken("one token is needed (?token=)")
    return tokens[0]


async def _judged(
    request: web.Request, claims: Claims, *, counted: bool = True
) -> tuple[Path, int]:
    """The folder's directory and quota, if the token's keypair still may do its op; a
    request (``counted``) counts against the keypair's rate limit as a signed one does
    (review F11)."""
    ctx: GatewayContext = request.app["ctx"]
    found = await ctx.auth.cache.get(claims.ak)
    caller = None if found is None else found[1]
    if (
        caller is None
        or caller.user_id != str(claims.user)
        or ctx.auth.revoked.refuses(caller.access_key, caller.user_id, caller.domain)
    ):
        raise InvalidToken("the token's keypair is no longer active")
    if counted:
        count = await ctx.rate_limiter.hit(caller.access_key)
        limit = int(caller.keypair.get("rate_limit", UNAUTHENTICATED_LIMIT))
        if count > limit:
            raise RateLimitExceeded(f"{count} requests in {WINDOW_S} s; the limit is {limit}")
    folder = await folder_for(ctx, caller, str(claims.folder))
    folder.require(claims.op)
    if folder.state.status != "ready":
        raise VFolderOperationFailed(f"the folder {folder.name!r} is in the trash")
    if folder.host_path is None:
        raise VFolderOperationFailed("this gateway serves no storage host")
    return folder.host_path, folder.state.max_size


class _Guard:
    """Watches a transfer under way: every :data:`RECHECK_S` seconds or
    :data:`RECHECK_BYTES` bytes it judges the token's keypair again (raising what
    :func:`_judged` raises), and it ends a transfer slower than
    :data:`MIN_BYTES_PER_WINDOW` per :data:`RATE_WINDOW_S` (review F5, F9)."""

    def __init__(self, request: web.Request, claims: Claims) -> None:
        self.request, self.claims = request, claims
        self.checked_at = self.window_at = time.monotonic()
        self.unchecked = self.in_window = 0

    async def moved(self, count: int) -> None:
        now = time.monotonic()
        self.unchecked += count
        self.in_window += count
        if self.unchecked >= RECHECK_BYTES or now - self.checked_at >= RECHECK_S:
            await _judged(self.request, self.claims, counted=False)
            self.checked_at, self.unchecked = now, 0
        if now - self.window_at >= RATE_WINDOW_S:
            if self.in_window < MIN_BYTES_PER_WINDOW:
                raise IdleBody(
                    f"fewer than {MIN_BYTES_PER_WINDOW} bytes moved in {RATE_WINDOW_S:.0f} s"
                )
            self.window_at, self.in_window = now, 0

    def reader(self, read: Callable[[int], Awaitable[bytes]]) -> Callable[[int], Awaitable[bytes]]:
        """``read`` (a PATCH body's), watched."""

        async def watched(count: int) -> bytes:
            chunk = await read(count)
            await self.moved(len(chunk))
            return chunk

        return watched


async def _options(request: web.Request) -> web.StreamResponse:
    return web.Response(
        status=204,
        headers={"Tus-Version": TUS_VERSION, "Tus-Max-Size": str(MAX_UPLOAD_BYTES)},
    )


async def _head(request: web.Request) -> web.StreamResponse:
    _, transfers = storage_of(request.app).require_volume()
    claims = storage_of(request.app).signer.verify(_token(request), "upload")
    await _judged(request, claims)
    with storage_of(request.app).limits.hold(claims.ak):
        offset = await transfers.offset(claims)
    return web.Response(
        status=200, headers={"Upload-Offset": str(offset), "Upload-Length": str(claims.size)}
    )


def _int_header(request: web.Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise InvalidAPIParameters(f"{name} must be a non-negative integer")
    return int(raw)


async def _patch(request: web.Request) -> web.StreamResponse:
    storage = storage_of(request.app)
    _, transfers = storage.require_volume()
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise UnsupportedVersion(f"send Tus-Resumable: {TUS_VERSION}")
    if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != (
        "application/offset+octet-stream"
    ):
        raise UnsupportedMedia("send Content-Type: application/offset+octet-stream")
    if "Upload-Checksum" in request.headers:
        raise InvalidAPIParameters("Upload-Checksum is not supported (the checksum extension)")
    offset = _int_header(request, "Upload-Offset")
    if offset is None:
        raise InvalidAPIParameters("Upload-Offset is required")
    length = _int_header(request, "Content-Length")
    if length is None:
        raise LengthRequired("send Content-Length (no chunked bodies)")
    claims = storage.signer.verify(_token(request), "upload")
    path, max_size = await _judged(request, claims)
    parts = parse_path(claims.path, root_ok=False)
    with storage.limits.hold(claims.ak):
        at = await transfers.receive(
            claims,
            path,
            max_size,
            parts,
            offset=offset,
            length=length,
            read=_Guard(request, claims).reader(request.content.read),
        )
    return web.Response(status=204, headers={"Upload-Offset": str(at)})


def _wanted(request: web.Request, size: int, validators: tuple[str, str]) -> range | None:
    """The bytes a ranged GET asks for (None: the whole file): one ``bytes=N-`` or
    ``bytes=N-M`` range, honoured when no ``If-Range`` is sent or it matches the file's
    Last-Modified or ETag; an unsatisfiable range is a 416."""
    header = request.headers.get("Range")
    if header is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range not in validators:
        return None  # the file changed since: the client gets it whole (200)
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # several ranges or another unit: allowed to ignore (RFC 9110)
    first = int(match[1])
    last = min(int(match[2]), size - 1) if match[2] else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(f"the file has {size} bytes")
    return range(first, last + 1)


async def _download(request: web.Request) -> web.StreamResponse:
    storage = storage_of(request.app)
    _, transfers = storage.require_volume()
    claims = storage.signer.verify(_token(request), "download")
    path, _ = await _judged(request, claims)
    parts = parse_path(claims.path, root_ok=False)
    with storage.limits.hold(claims.ak):
        fd, info = await transfers.open_download(path, parts)
        try:
            return await _send(request, transfers, fd, info, parts[-1], _Guard(request, claims))
        finally:
            await transfers.volume.run(os.close, fd)


async def _send(
    request: web.Request,
    transfers: Transfers,
    fd: int,
    info: os.stat_result,
    name: str,
    guard: _Guard,
) -> web.StreamResponse:
    size = info.st_size
    last_modified = email.utils.formatdate(info.st_mtime, usegmt=True)
    etag = f'"{info.st_ino:x}-{size:x}-{info.st_mtime_ns:x}"'
    try:
        wanted = _wanted(request, size, (last_modified, etag))
    except RangeNotSatisfiable as exc:
        return problem(exc, {"Content-Range": f"bytes */{size}"})
    span = range(size) if wanted is None else wanted
    response = web.StreamResponse(status=200 if wanted is None else 206)
    response.headers.update(
        {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(span)),
            "Last-Modified": last_modified,
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Disposition": "attachment; filename*=UTF-8''"
            + urllib.parse.quote(name, safe=""),
        }
    )
    if wanted is not None:
        response.headers["Content-Range"] = f"bytes {span.start}-{span.stop - 1}/{size}"
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    at = span.start
    try:
        while at < span.stop:
            chunk = await transfers.read_at(fd, at, min(DOWNLOAD_CHUNK, span.stop - at))
            if not chunk:
                break  # the file shrank meanwhile: the client sees a short body and retries
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await response.write(chunk)
            at += len(chunk)
            await guard.moved(len(chunk))
    except (DomainError, TimeoutError) as exc:
        # the headers are sent: the only way to say "no more" is to end the connection,
        # short of Content-Length, which the client takes as a failed transfer
        log.info("download ended early", reason=str(exc), sent=at - span.start)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
