"""The log's hash chain: what makes an edit behind the store's back visible.

Every entry the append script writes carries ``h``, a link computed inside the script (so
no writer can skip it and no two appends interleave their links)::

    h = SHA1(previous h "\\n" previous position "\\n" stream "\\n" version "\\n" body)

The previous position is in the link, so moving an entry breaks it as surely as editing
it; the last entry's position is pinned by the chain's head (``<p>:chain``) and by the
next append. The chain's first entry links to ``""`` and to the position of the entry
before it, if the log was written before the chain existed.

SHA-1 is the hash Redis's scripts can compute natively (``redis.sha1hex``). The chain
relies on its second-preimage resistance (still unbroken), not on collision resistance.
An attacker who can rewrite Redis can also recompute every link after an edit; that is
what signed checkpoints are for (:func:`sign_checkpoint`): an HMAC-SHA256, with a key
derived from the master key that never enters Redis, over a position and its link. A
recomputed chain disagrees with every checkpoint after the edit, and no one without the
key can sign new ones. Checkpoints are kept in the log and in a file beside the master key,
so deleting them from Redis is seen too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .envelope import position_key

__all__ = [
    "CHECKPOINT_KEY_PURPOSE",
    "ChainBreak",
    "ChainVerifier",
    "checkpoint_signature",
    "link",
    "sign_checkpoint",
    "signature_holds",
]

CHECKPOINT_KEY_PURPOSE = "log checkpoint signing"
"""What :meth:`events.secrets.SecretBox.derive` is asked for: the checkpoints' key."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def link(prev_hash: str, prev_position: str, stream: str, version: int | str, body: Any) -> str:
    """The link the append script stores in ``h`` (the module docstring's formula)."""
    head = f"{prev_hash}\n{prev_position}\n{stream}\n{version}\n".encode()
    return hashlib.sha1(head + _bytes(body), usedforsecurity=True).hexdigest()


def checkpoint_signature(key: bytes, position: str, chain_hash: str) -> str:
    """HMAC-SHA256 over ``"<position> <hash>"``, hex."""
    return hmac.new(key, f"{position} {chain_hash}".encode(), hashlib.sha256).hexdigest()


def sign_checkpoint(key: bytes, position: str, chain_hash: str) -> dict[str, str]:
    """A checkpoint as stored (in the log's ``log_checkpointed`` and the checkpoint file)."""
    return {
        "position": position,
        "hash": chain_hash,
        "signature": checkpoint_signature(key, position, chain_hash),
    }


def signature_holds(key: bytes, checkpoint: Mapping[str, Any]) -> bool:
    expected = checkpoint_signature(key, str(checkpoint["position"]), str(checkpoint["hash"]))
    return hmac.compare_digest(expected, str(checkpoint.get("signature", "")))


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """An entry whose link is not what its content and place make it."""

    position: str
    stream: str
    version: str
    why: str


class ChainVerifier:
    """Fed log entries in order (archive and live log merged); returns a
    :class:`ChainBreak` for each entry that does not link, and keeps going from the
    entry's own link, so one edit is named once and the entries after it still judged.

    ``start``: verify from a signed checkpoint's ``(position, hash)`` instead of from the
    log's first entry (entries up to the checkpoint's position are skipped)."""

    def __init__(self, start: tuple[str, str] | None = None) -> None:
        self.prev_position = start[0] if start else ""
        self.prev_hash: str | None = start[1] if start else None
        self._skip_until = position_key(start[0]) if start else None
        self.chained = 0
        """Entries whose link was checked."""
        self.unchained = 0
        """Entries written before the chain existed (no ``h``, before the first that has)."""
        self.links: dict[str, str] = {}
        """position -> stored link, for the positions :meth:`watch` asked about."""
        self._watched: set[str] = set()

    def judge_head(self, head: tuple[str, str] | None) -> ChainBreak | None:
        """After the last entry: the chain's head (read before the entries were) must be an
        entry seen with that link. A head further on than the log, or with another link,
        means entries were removed from the log's end (or the head rewritten); no head at
        all while entries are chained means it was removed."""
        if head is None:
            if self.chained:
                return ChainBreak("-", "", "", "the chain's head is gone: removed behind the store")
            return None
        position, link_hash = head
        seen = self.links.get(position)
        if seen is None:
            return ChainBreak(
                position,
                "",
                "",
                "the log has no entry at its chain's head: entries removed from its end",
            )
        if not hmac.compare_digest(seen, link_hash):
            return ChainBreak(
                position, "", "", "the entry at the chain's head has another link: rewritten"
            )
        return None

    def watch(self, positions: set[str]) -> None:
        """Remember the stored links at these positions (the checkpoints to compare)."""
        self._watched |= positions

    def feed(self, position: str, fields: Mapping[Any, Any]) -> ChainBreak | None:
        if self._skip_until is not None:
            if position_key(position) <= self._skip_until:
                return None
            self._skip_until = None
        stored = fields.get(b"h", fields.get("h"))
        stream = _text(fields.get(b"s", fields.get("s", "")))
        version = _text(fields.get(b"v", fields.get("v", "")))
        if position in self._watched and stored is not None:
            self.links[position] = _text(stored)
        if stored is None:
            if self.prev_hash is None:
                self.unchained += 1
                self.prev_position = position
                return None
            self.prev_position = position
            return ChainBreak(position, stream, version, "has no link: written behind the store")
        stored_hash = _text(stored)
        body = fields.get(b"e", fields.get("e", b""))
        expected = link(self.prev_hash or "", self.prev_position, stream, version, body)
        self.chained += 1
        self.prev_position, self.prev_hash = position, stored_hash
        if hmac.compare_digest(expected, stored_hash):
            return None
        return ChainBreak(
            position,
            stream,
            version,
            "its link does not match: this entry was edited, or one before it removed or inserted",
        )
