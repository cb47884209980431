"""The write side's command vocabulary: each command one frozen, typed value.

A caller builds a command (its id fixed before the first attempt), and the command travels
unchanged through the router and the Ray shell to the one ``handle(command)`` of its owner,
which dispatches on the command's type. So a retry carries the same id (the owner recognises
it and the effect happens once), and mypy follows a command from the gateway to the aggregate.
Adding a command means one class here plus one handler at its owner.

One module per owner: ``sessions`` (the session shards), ``tenancy`` (the tenancy writer).
A scaling group's scheduler takes no commands: it follows the log, and sends its decisions
to the shards as session commands.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Command"]


class Command(BaseModel):
    """What every command has: an id that makes its delivery idempotent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: uuid.UUID = Field(default_factory=uuid.uuid4)
