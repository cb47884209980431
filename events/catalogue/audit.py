"""The log's own integrity: signed checkpoints of its hash chain (:mod:`events.chain`,
docs/audit.md). Upstream has no counterpart (Backend.AI's audit log is a table that an
administrator can edit)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import StringConstraints

from ._base import EventPayload

__all__ = ["LogCheckpointed"]

ChainPosition = Annotated[str, StringConstraints(pattern=r"^\d{1,20}-\d{1,20}$")]
Hex40 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class LogCheckpointed(EventPayload):
    """The chain's link at ``position``, signed (HMAC-SHA256 with a key derived from the
    master key, which never enters Redis): a recomputed chain disagrees with it."""

    type: Literal["log_checkpointed"] = "log_checkpointed"
    position: ChainPosition
    hash: Hex40
    signature: Hex64
