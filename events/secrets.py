"""Secrets in the log: encrypted with a master key that never enters Redis.

HMAC authentication needs each secret key in clear, so secrets are stored reversibly:
Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with a master key kept in a 0600
file beside the data. Events carry only the ciphertext; fields holding one are marked with
:data:`SECRET` in the catalogue so every reader can redact them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["REDACTED", "SECRET", "SecretBox", "SecretError", "is_secret_field"]

SECRET: dict[str, Any] = {"secret": True}
"""``json_schema_extra`` of a payload field that holds ciphertext."""

REDACTED = "***"


class SecretError(Exception):
    pass


def is_secret_field(extra: Any) -> bool:
    return isinstance(extra, dict) and bool(extra.get("secret"))


class SecretBox:
    """Encrypts and decrypts with one master key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise SecretError(f"invalid master key: {exc}") from None
        self._derivation = hmac.new(key, b"kernelhub key derivation", hashlib.sha256).digest()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = False) -> SecretBox:
        """Load the master key, creating it (0600) when ``create`` and it does not exist."""
        key_path = Path(path)
        if not key_path.exists():
            if not create:
                raise SecretError(f"master key {key_path} is missing: secrets cannot be read")
            key_path.parent.mkdir(parents=True, exist_ok=True)
            _create_once(key_path, Fernet.generate_key())
        if key_path.stat().st_mode & 0o077:
            raise SecretError(f"master key {key_path} is readable by others: chmod 600 it")
        return cls(key_path.read_bytes().strip())

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (e.g. signing transfer tokens), derived from the
        master key (HMAC-SHA256), so each use has its own key and none reveals the master."""
        return hmac.new(self._derivation, purpose.encode(), hashlib.sha256).digest()

    def encrypt(self, clear: str) -> str:
        return self._fernet.encrypt(clear.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretError("cannot decrypt a secret: wrong master key or corrupt data") from None


def _create_once(path: Path, key: bytes) -> None:
    """Write ``key`` to ``path`` unless another process got there first (two actors starting
    at once): the file appears whole, via a private temporary file and a hard link that
    fails if the name exists, so no reader ever sees it half written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        pass  # theirs is the key now
    finally:
        temporary.unlink(missing_ok=True)
