"""Passwords as salted slow hashes (scrypt), never in clear: not in an event, not in Redis,
not in an actor call.

Why scrypt from :mod:`hashlib`: it is memory-hard (a GPU farm gains little over a CPU), it
ships with Python's OpenSSL, and its parameters travel in the stored string, so raising
them later only needs new hashes, not a migration. The format is
``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

from .errors import InvalidAPIParameters

__all__ = [
    "MAX_PASSWORD_BYTES",
    "MIN_PASSWORD_CHARS",
    "check_password",
    "hash_password",
    "hash_password_async",
    "verify_password",
    "verify_password_async",
]

_LOG2_N, _R, _P = 14, 8, 1
"""n = 16384, r = 8: 16 MiB and about 40 ms a hash on one core (OWASP's scrypt floor)."""
_SALT_BYTES, _HASH_BYTES = 16, 32
_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_BYTES = 1024
"""Beyond this a password is an attempt to make hashing expensive, not a password."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _scrypt(password: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=1 << log2_n, r=r, p=p, maxmem=_MAXMEM, dklen=_HASH_BYTES
    )


def check_password(password: str) -> bytes:
    """The password's bytes, or a 400 naming what is wrong with it (never the password)."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise InvalidAPIParameters(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    raw = password.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise InvalidAPIParameters(f"a password may be at most {MAX_PASSWORD_BYTES} bytes")
    return raw


def hash_password(password: str) -> str:
    """A new salted hash of ``password`` (CPU-bound: call it off the event loop)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(check_password(password), salt, _LOG2_N, _R, _P)
    return f"scrypt${_LOG2_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (constant-time compare); a
    malformed or empty ``stored`` matches nothing."""
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or not (10 <= int(log2_n) <= 20 and 1 <= int(r) <= 32):
            return False
        if not 1 <= int(p) <= 16:
            return False
        expected = base64.b64decode(digest, validate=True)
        raw = password.encode("utf-8", "surrogatepass")
        if len(raw) > MAX_PASSWORD_BYTES:
            return False
        actual = _scrypt(raw, base64.b64decode(salt, validate=True), int(log2_n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


_HASHING = asyncio.Semaphore(2)
"""scrypt is ~40 ms of CPU and 16 MiB: at most two at once in a process, whoever asks (a
log-in, an admin setting passwords under GraphQL aliases), so a flood of either cannot
starve every other request of the gateway's cores or memory."""


async def hash_password_async(password: str) -> str:
    """:func:`hash_password` on a thread, two at a time in this process."""
    check_password(password)  # a refusal costs no hash and no wait
    async with _HASHING:
        return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, stored: str) -> bool:
    """:func:`verify_password` on a thread, two at a time in this process."""
    async with _HASHING:
        return await asyncio.to_thread(verify_password, password, stored)
