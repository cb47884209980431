"""The command the vfolder writer handles: one proposed folder event, with its id.

The gateway decides *who* may act (:mod:`actors.domain.vfolders`' ``permission_of`` and
``may_manage``, with the caller in hand) and proposes the event; the writer decides
whether the folders as the log says allow it (the name free, the folder there, the
invitation pending) and appends. The command id makes a retry after ``RayActorError``
harmless.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from events.catalogue import (
    VFolderCreated,
    VFolderInvitationAnswered,
    VFolderInvited,
    VFolderPurged,
    VFolderRenamed,
    VFolderRestored,
    VFolderShared,
    VFolderTrashed,
    VFolderUnshared,
    VFolderUpdated,
)
from events.envelope import Initiator

from . import Command

__all__ = ["VFolderCommand", "VFolderEvent"]

VFolderEvent = Annotated[
    Union[  # noqa: UP007 - a discriminated union reads best spelled out
        VFolderCreated,
        VFolderRenamed,
        VFolderUpdated,
        VFolderTrashed,
        VFolderRestored,
        VFolderPurged,
        VFolderInvited,
        VFolderInvitationAnswered,
        VFolderShared,
        VFolderUnshared,
    ],
    Field(discriminator="type"),
]


class VFolderCommand(Command):
    event: VFolderEvent
    """What the caller proposes."""
    max_count: int = Field(default=0, ge=0)
    """For a created user folder: how many folders its owner may have (0: no limit)."""
    initiator: Initiator | None = None
    """Who asked (recorded in the envelope)."""
