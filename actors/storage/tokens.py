"""Signed, expiring transfer tokens: what ``request-upload`` and ``request-download`` hand
the client, and the only credential the transfer endpoint accepts.

A token is ``v1.<claims>.<mac>``: the claims as canonical JSON in unpadded base64url, and
HMAC-SHA256 of ``v1.<claims>`` under a key derived from the installation's master key
(:meth:`events.secrets.SecretBox.derive`, purpose :data:`PURPOSE`), so a token is worthless
to another installation and the key never leaves the gateway. The claims bind everything the
endpoint acts on (operation, folder, path, declared size, user and keypair, expiry, and a
nonce naming the upload), so a token for one file cannot be replayed on another, nor an
upload token used to download. The MAC is checked, in constant time, before a byte of the
claims is parsed; a token longer than :data:`MAX_TOKEN` is refused unread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..domain.errors import InvalidAPIParameters
from .paths import MAX_PATH_BYTES

__all__ = [
    "MAX_TOKEN",
    "MAX_UPLOAD_BYTES",
    "PURPOSE",
    "TOKEN_TTL_S",
    "Claims",
    "InvalidToken",
    "TokenSigner",
]

PURPOSE = "kernelhub/storage-token/v1"
MAX_TOKEN = 8192
"""Characters: the claims with a path of :data:`~.paths.MAX_PATH_BYTES` fit easily."""
TOKEN_TTL_S = 6 * 3600
"""How long a token lasts: long enough to resume a large upload or download after a break;
each request is checked when it starts (a transfer under way is not cut at expiry)."""
MAX_UPLOAD_BYTES = 1 << 44
"""The largest file one upload declares (16 TiB): bounds the figure before any quota."""
_VERSION = "v1"


class InvalidToken(InvalidAPIParameters):
    """A token that is malformed, forged, expired, or for something else."""


class Claims(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["upload", "download"]
    folder: uuid.UUID
    path: str = Field(max_length=MAX_PATH_BYTES)
    """The path inside the folder, normalised (``a/b``), as :func:`.paths.parse_path` gave."""
    size: int | None = Field(default=None, ge=0, le=MAX_UPLOAD_BYTES)
    """An upload's declared length; None for a download."""
    user: uuid.UUID
    ak: str = Field(max_length=64)
    """The keypair that asked: a token dies with its keypair's revocation."""
    exp: int
    """Expiry, seconds since the epoch."""
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    """Random: names the upload's staging file, so two requests never share one."""

    @property
    def upload_id(self) -> str:
        return self.nonce


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and checks tokens under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a token key has at least 32 bytes")
        self._key = key

    def issue(
        self,
        op: Literal["upload", "download"],
        *,
        folder: uuid.UUID,
        path: str,
        user: uuid.UUID,
        access_key: str,
        size: int | None = None,
        ttl_s: int = TOKEN_TTL_S,
        now: float | None = None,
    ) -> tuple[str, Claims]:
        claims = Claims(
            op=op,
            folder=folder,
            path=path,
            size=size,
            user=user,
            ak=access_key,
            exp=int((time.time() if now is None else now) + ttl_s),
            nonce=secrets.token_hex(16),
        )
        body = json.dumps(
            claims.model_dump(mode="json"),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,  # a path of PATH_MAX bytes stays within MAX_TOKEN
        ).encode()
        signed = f"{_VERSION}.{_b64(body)}"
        return f"{signed}.{_b64(self._mac(signed))}", claims

    def verify(
        self, token: str, op: Literal["upload", "download"], *, now: float | None = None
    ) -> Claims:
        """The claims of a genuine, unexpired token for ``op``; else :class:`InvalidToken`."""
        if not token or len(token) > MAX_TOKEN:
            raise InvalidToken("the token is missing or too long")
        version, _, rest = token.partition(".")
        body, _, mac = rest.partition(".")
        if version != _VERSION or not body or not mac:
            raise InvalidToken("the token is malformed")
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            raise InvalidToken("the token is malformed") from None
        if not hmac.compare_digest(given, self._mac(f"{version}.{body}")):
            raise InvalidToken("the token's signature does not match")
        try:
            claims = Claims.model_validate(json.loads(_unb64(body)))
        except (binascii.Error, ValueError, ValidationError):
            raise InvalidToken("the token's claims are malformed") from None
        if claims.op != op:
            raise InvalidToken(f"the token is for an {claims.op}, not an {op}")
        if claims.exp <= (time.time() if now is None else now):
            raise InvalidToken("the token has expired; request a new one")
        return claims

    def _mac(self, signed: str) -> bytes:
        return hmac.new(self._key, signed.encode(), hashlib.sha256).digest()
