"""Moving files in and out of a virtual folder through the gateway's transfer endpoint, as
the official client does (``request-upload`` / ``request-download`` hand out a token and a
URL; the bytes then go to that URL, where the token is the credential):

- upload: tus 1.0 core, the part ``aiotusclient`` speaks — ``PATCH`` chunks at
  ``Upload-Offset`` (``application/offset+octet-stream``), each answered 204 with the new
  offset; after a broken connection ``HEAD`` says where to resume;
- download: ``GET``, and after a broken connection ``Range: bytes=N-`` with ``If-Range`` (the
  first answer's ``Last-Modified``): 206 resumes, 200 means the file changed and it starts
  over.

The transfer requests carry no signature (the token is the credential), so they go through a
plain connection, not the signed client. ``progress`` is told (bytes done, bytes in all).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import httpx

from .errors import ClientError, ConnectionFailed, api_error

__all__ = ["CHUNK_SIZE", "MAX_RETRIES", "Progress", "download_file", "upload_file"]

Progress = Callable[[int, int], None]
CHUNK_SIZE = 4 * 2**20
"""Bytes per PATCH (the official client's default is 16 MiB; smaller resumes sooner)."""
MAX_RETRIES = 5
"""Broken connections one file survives before the transfer gives up."""
_TUS = {"Tus-Resumable": "1.0.0"}


class _OffsetMoved(Exception):
    """A PATCH refused because the upload is further than this client thought."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__("the upload's offset moved")
        self.response = response


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise api_error(response.status_code, response.content)


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as source:
        source.seek(offset)
        return source.read(size)


async def upload_file(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    source: Path,
    size: int,
    *,
    chunk_size: int = CHUNK_SIZE,
    progress: Progress | None = None,
) -> None:
    """``source``'s ``size`` bytes to the upload ``url``; resumes after a broken connection
    from the offset the server reports."""
    offset, failures = 0, 0
    if progress:
        progress(0, size)
    while offset < size:
        chunk = await asyncio.to_thread(_read_at, source, offset, min(chunk_size, size - offset))
        if not chunk:
            raise ClientError(f"{source} became shorter while it was uploaded")
        headers = {
            **_TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        }
        try:
            response = await http.patch(
                url, params={"token": token}, content=chunk, headers=headers
            )
            if response.status_code == 409 and failures:
                # after a break the server may still have been writing the cut PATCH when
                # HEAD answered: the offset it names now is the one to go on from
                raise _OffsetMoved(response)
            _raise_for(response)
            offset = int(response.headers.get("Upload-Offset", offset + len(chunk)))
        except (httpx.TransportError, _OffsetMoved) as exc:
            failures += 1
            if failures > MAX_RETRIES:
                if isinstance(exc, _OffsetMoved):
                    _raise_for(exc.response)
                raise ConnectionFailed(f"uploading {source.name} broke: {exc}") from None
            head = await http.head(url, params={"token": token}, headers=_TUS)
            _raise_for(head)
            offset = int(head.headers.get("Upload-Offset", 0))
        if progress:
            progress(offset, size)


async def download_file(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    target: Path,
    *,
    progress: Progress | None = None,
) -> int:
    """The file at the download ``url`` into ``target`` (written under a temporary name
    beside it, renamed when whole, removed on failure); resumes with ``Range``/``If-Range``.
    Its size."""
    partial = target.with_name(f".{target.name}.kh-partial")
    try:
        size = await _fetch(http, url, token, partial, progress)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return size


async def _fetch(
    http: httpx.AsyncClient, url: str, token: str, partial: Path, progress: Progress | None
) -> int:
    done, failures = 0, 0
    validator: str | None = None
    while True:
        headers: dict[str, str] = {}
        if done and validator:
            headers = {"Range": f"bytes={done}-", "If-Range": validator}
        try:
            async with http.stream("GET", url, params={"token": token}, headers=headers) as reply:
                if reply.status_code >= 400:
                    raise api_error(reply.status_code, await reply.aread())
                if reply.status_code != 206:
                    done = 0  # the whole file (first try, or it changed meanwhile)
                total = done + int(reply.headers.get("Content-Length", 0))
                validator = reply.headers.get("Last-Modified") or reply.headers.get("ETag")
                with partial.open("r+b" if done else "wb") as out:
                    out.seek(done)
                    out.truncate()
                    async for data in reply.aiter_bytes():
                        await asyncio.to_thread(out.write, data)
                        done += len(data)
                        if progress:
                            progress(done, total)
            return done
        except httpx.TransportError as exc:
            failures += 1
            if failures > MAX_RETRIES:
                raise ConnectionFailed(f"downloading {partial.name} broke: {exc}") from None
