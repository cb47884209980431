"""Backend.AI's request signature, pure (standard library only): the SDK signs with it
(:mod:`kernelhub.sdk._wire`), the gateway verifies with it (:mod:`actors.gateway.auth`), so a
client install imports no server code for it.

The server signs what it received: the raw request target (path and query, undecoded), the
raw ``Date`` header string, the ``Host`` header, the bare content type (``application/
octet-stream`` when there is none: websocket and SSE requests) and the API version header.
The body is never signed (the hash of the empty string, for API v4.20181215 and later).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "EMPTY_BODY_HASH",
    "Credential",
    "SignatureError",
    "parse_authorization",
    "parse_date",
    "sign",
    "sign_with_key",
    "signing_key",
    "string_to_sign",
]

EMPTY_BODY_HASH = hashlib.sha256(b"").hexdigest()
_SCHEMES = ("BackendAI", "Sorna")


class SignatureError(ValueError):
    """The Authorization or Date header cannot be read (a 400, not a 401)."""


@dataclass(frozen=True)
class Credential:
    hash_type: str
    access_key: str
    signature: str


def parse_authorization(header: str) -> Credential:
    """``BackendAI signMethod=HMAC-SHA256, credential=AK:SIG``."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme not in _SCHEMES or not rest:
        raise SignatureError("unsupported authorization scheme")
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            params[key.strip()] = value.strip()
    method, credential = params.get("signMethod", ""), params.get("credential", "")
    mac, _, hash_type = method.partition("-")
    access_key, sep, signature = credential.partition(":")
    if mac.upper() != "HMAC" or hash_type.lower() not in ("sha256", "sha1", "md5") or not sep:
        raise SignatureError("malformed authorization parameters")
    if not access_key or not signature:
        raise SignatureError("malformed credential")
    return Credential(hash_type.lower(), access_key, signature.lower())


def parse_date(raw: str) -> datetime:
    """The ``Date`` header, read leniently (ISO-8601 as the client sends it, or RFC 1123);
    a date without a zone is UTC."""
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError:
        try:
            parsed = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError) as exc:
            raise SignatureError(f"unreadable date: {raw[:64]!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def string_to_sign(
    method: str, raw_path: str, raw_date: str, host: str, content_type: str, version: str
) -> str:
    return "\n".join(
        [
            method.upper(),
            raw_path,
            raw_date,
            f"host:{host}",
            f"content-type:{content_type.lower()}",
            f"x-backendai-version:{version}",
            EMPTY_BODY_HASH,
        ]
    )


def sign(secret_key: str, date: datetime, host: str, text: str, hash_type: str = "sha256") -> str:
    """The hex signature: keys derived from the secret, the day of the date (in the date's
    own zone, as the reference server does; clients send UTC), the host."""
    return sign_with_key(signing_key(secret_key, date, host, hash_type), text, hash_type)


def signing_key(secret_key: str, date: datetime, host: str, hash_type: str = "sha256") -> bytes:
    """The key a request is signed with: derived from the secret, the day of the date and
    the host only, so a server may keep it for the day (two of the signature's three HMACs,
    :class:`actors.gateway.auth.Authenticator`)."""
    digest = getattr(hashlib, hash_type)
    day = date.strftime("%Y%m%d").encode()
    k_date = hmac.new(_bytes(secret_key), day, digest).digest()
    return hmac.new(k_date, _bytes(host), digest).digest()


def sign_with_key(key: bytes, text: str, hash_type: str = "sha256") -> str:
    """The hex signature of ``text`` under a :func:`signing_key`."""
    return hmac.new(key, _bytes(text), getattr(hashlib, hash_type)).hexdigest()


def _bytes(text: str) -> bytes:
    """UTF-8, and the bytes aiohttp could not decode as they came (it hands header bytes
    that are not UTF-8 over as surrogate escapes): a stranger's odd ``Host`` or path is a
    signature that does not match, never an encoding error."""
    return text.encode("utf-8", "surrogateescape")
