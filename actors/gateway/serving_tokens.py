"""Tokens for callers of a private inference endpoint (``POST /services/{id}/token``, the
client's ``service generate-token``).

A token is ``<claims>.<mac>``: the claims ``<endpoint id hex>|<token id hex>|<expiry>`` (the
expiry in seconds since the epoch) in unpadded base64url, and HMAC-SHA256 of that text under
a key derived from the installation's master key (:meth:`events.secrets.SecretBox.derive`,
purpose :data:`PURPOSE`), so a token is worthless to another installation and the key never
leaves the gateway. Issuing one appends ``endpoint_token_issued`` (its id and expiry, never
the token) through the endpoint writer; checking one needs no read at all: the MAC first, in
constant time, before a byte of the claims is parsed, then the endpoint it names and the
expiry. A token longer than :data:`MAX_TOKEN` is refused unread.

A token lives until it expires or its endpoint is removed (the proxy finds no endpoint).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..domain.errors import InvalidAPIParameters
from ..domain.session import parse_duration

__all__ = [
    "MAX_TOKEN",
    "MAX_TOKEN_LIFETIME",
    "MIN_TOKEN_LIFETIME",
    "PURPOSE",
    "EndpointTokens",
    "InvalidEndpointToken",
    "TokenClaims",
    "token_expiry",
]

PURPOSE = "kernelhub/endpoint-token/v1"
MAX_TOKEN = 512
"""Characters: a genuine token is about 130."""
MAX_TOKEN_LIFETIME = timedelta(days=365)
"""The longest a token may live: a leaked token stops working within a year at worst."""
MIN_TOKEN_LIFETIME = timedelta(seconds=1)
_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,400}\.[A-Za-z0-9_-]{43}")
"""base64url without padding: the claims, a dot, the 32-byte HMAC-SHA256."""
_CLAIMS = re.compile(r"[0-9a-f]{32}\|[0-9a-f]{32}\|[0-9]{1,12}")


class InvalidEndpointToken(Exception):
    """A token that is malformed, forged, expired or for another endpoint (the proxy
    answers 401; the reason is for the log, never for the caller)."""


@dataclass(frozen=True)
class TokenClaims:
    endpoint_id: uuid.UUID
    token_id: uuid.UUID
    expires_at: int
    """Seconds since the epoch."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_expiry(duration: str | None, valid_until: int | None, now: datetime) -> datetime:
    """When a token asked for with ``duration`` (``"30m"``, ``"2h"``, ``"3d"``: 23.3.5's
    ``TimeDuration``) or ``valid_until`` (seconds since the epoch) expires: exactly one of
    them, in the future, at most :data:`MAX_TOKEN_LIFETIME` away; a 400 naming the field
    otherwise."""
    if (duration is None) == (valid_until is None):
        raise InvalidAPIParameters("give either duration (e.g. 30m, 2h, 3d) or valid_until")
    if duration is not None:
        try:
            lifetime = parse_duration(duration)
        except (InvalidAPIParameters, OverflowError, ValueError):
            raise InvalidAPIParameters(
                f"duration: not a duration (e.g. 30m, 2h, 3d): {duration[:64]!r}"
            ) from None
        if not MIN_TOKEN_LIFETIME <= lifetime <= MAX_TOKEN_LIFETIME:
            raise InvalidAPIParameters(
                f"duration: a token lives from 1 s to {MAX_TOKEN_LIFETIME.days} days"
            )
        return now + lifetime
    assert valid_until is not None
    try:
        at = datetime.fromtimestamp(valid_until, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidAPIParameters("valid_until: not a time (seconds since the epoch)") from None
    if not now + MIN_TOKEN_LIFETIME <= at <= now + MAX_TOKEN_LIFETIME:
        raise InvalidAPIParameters(
            f"valid_until: a token expires in the future, within {MAX_TOKEN_LIFETIME.days} days"
        )
    return at


class EndpointTokens:
    """Signs and checks endpoint tokens under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a token key has at least 32 bytes")
        self._key = key

    def sign(self, endpoint_id: uuid.UUID, token_id: uuid.UUID, expires_at: datetime) -> str:
        claims = f"{endpoint_id.hex}|{token_id.hex}|{math.floor(expires_at.timestamp())}"
        body = _b64(claims.encode())
        return f"{body}.{_b64(self._mac(body))}"

    def verify(self, token: str, endpoint_id: uuid.UUID, *, now: float) -> TokenClaims:
        """The claims of a genuine, unexpired token for ``endpoint_id``; else
        :class:`InvalidEndpointToken`."""
        if not token or len(token) > MAX_TOKEN:
            raise InvalidEndpointToken("missing or too long")
        if not _SHAPE.fullmatch(token):
            # the exact shape first: base64's lenient decoder would take a genuine token
            # with "!!", "==" or junk inside as the same token (review S11)
            raise InvalidEndpointToken("malformed")
        body, _, mac = token.partition(".")
        # compared on the canonical text: one token has exactly one spelling
        if not hmac.compare_digest(mac.encode(), _b64(self._mac(body)).encode()):
            raise InvalidEndpointToken("the signature does not match")
        try:
            claims_text = _unb64(body).decode()
            if _b64(claims_text.encode()) != body or not _CLAIMS.fullmatch(claims_text):
                raise ValueError(claims_text)
            endpoint_hex, token_hex, expiry = claims_text.split("|")
            claims = TokenClaims(uuid.UUID(hex=endpoint_hex), uuid.UUID(hex=token_hex), int(expiry))
        except (binascii.Error, ValueError):
            raise InvalidEndpointToken("the claims are malformed") from None
        if claims.endpoint_id != endpoint_id:
            raise InvalidEndpointToken("the token is another endpoint's")
        if claims.expires_at <= now:
            raise InvalidEndpointToken("the token has expired")
        return claims

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()
