"""The wire's small formats, pure: request signing headers (:mod:`kernelhub.signing`),
server-sent-event framing and the download's multipart-of-tars body, as the official client
reads them."""

from __future__ import annotations

import email.parser
import email.policy
import io
import tarfile
from collections.abc import Generator, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ..signing import sign, string_to_sign

__all__ = [
    "API_VERSION",
    "CORRELATION_HEADER",
    "SSEParser",
    "extract_tars",
    "signed_headers",
    "tar_parts",
]

API_VERSION = "v7.20230615"
CORRELATION_HEADER = "X-Correlation-ID"
"""The gateway's answer header naming the call's correlation id (``kh trace``)."""
USER_AGENT = "kernelhub-sdk"
STREAM_CONTENT_TYPE = "application/octet-stream"
"""What websocket and SSE requests sign (they send no Content-Type)."""


def signed_headers(
    method: str,
    raw_path: str,
    host: str,
    content_type: str,
    access_key: str,
    secret_key: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """``Date``, ``X-BackendAI-Version`` and ``Authorization`` for one request."""
    date = (now or datetime.now(UTC)).astimezone(UTC)
    raw_date = date.isoformat()
    bare = content_type.split(";", 1)[0].strip().lower() or STREAM_CONTENT_TYPE
    text = string_to_sign(method, raw_path, raw_date, host, bare, API_VERSION)
    signature = sign(secret_key, date, host, text)
    return {
        "Date": raw_date,
        "X-BackendAI-Version": API_VERSION,
        "Authorization": f"BackendAI signMethod=HMAC-SHA256, credential={access_key}:{signature}",
    }


class HMACAuth(httpx.Auth):
    """Signs each request as it is sent (after httpx settled its path, host and type)."""

    def __init__(self, access_key: str, secret_key: str, domain: str) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.domain = domain

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        content_type = request.headers.get("Content-Type", "")
        if not content_type:
            content_type = "text/plain"  # as the official client sends body-less calls
            request.headers["Content-Type"] = content_type
        request.headers.update(
            signed_headers(
                request.method,
                request.url.raw_path.decode("ascii"),
                request.headers["Host"],
                content_type,
                self.access_key,
                self.secret_key,
            )
        )
        request.headers["X-BackendAI-Domain"] = self.domain
        yield request


class SSEParser:
    """Feeds lines, yields ``(event, data)`` when a blank line ends a message."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event = "message"
                return None
            message = (self._event, "\n".join(self._data))
            self._event, self._data = "message", []
            return message
        if line.startswith(":"):
            return None  # a comment (the server's keep-alive ping)
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None


def tar_parts(content_type: str, body: bytes) -> list[bytes]:
    """The parts of a ``multipart/*`` answer (each a tar archive)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError(f"expected a multipart answer, got {content_type or 'no type'}")
    parts: list[bytes] = []
    for part in message.iter_parts():
        payload: Any = part.get_payload(decode=True)
        parts.append(bytes(payload or b""))
    return parts


def extract_tars(parts: Iterable[bytes], dest: Path) -> list[Path]:
    """Unpack each archive under ``dest``, refusing paths that would leave it."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for data in parts:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            members = archive.getmembers()
            archive.extractall(dest, filter="data")
        written.extend(dest / m.name for m in members if m.isfile())
    return written
