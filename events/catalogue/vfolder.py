"""Virtual-folder events (kernelhub's; Backend.AI keeps folders in the ``vfolders``,
``vfolder_permissions`` and ``vfolder_invitations`` tables).

One stream per folder, ``vfolder-<folder id hex>``, written by the single vfolder writer
(:mod:`actors.vfolders.writer`, hosted by the ``tenancy`` actor). A folder's files live on
its storage host, in a directory named by the folder id; these events are what the folder
*is* (name, owner, permissions, sharing, quota), never what it holds.

Names are bounded here as a last line of defence (the gateway checks them first): a
tenant's string never reaches the log unbounded.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from ._base import EventPayload

__all__ = [
    "MAX_VFOLDER_NAME",
    "VFolderCreated",
    "VFolderInvitationAnswered",
    "VFolderInvited",
    "VFolderPermission",
    "VFolderPurged",
    "VFolderRenamed",
    "VFolderRestored",
    "VFolderShared",
    "VFolderTrashed",
    "VFolderUnshared",
    "VFolderUpdated",
    "VFolderUsageMode",
]

MAX_VFOLDER_NAME = 64
VFolderPermission = Literal["ro", "rw", "wd"]
"""Read-only, read-write, read-write-delete (Backend.AI's ``VFolderPermission``)."""
VFolderUsageMode = Literal["general", "model", "data"]
_Name = Field(min_length=1, max_length=MAX_VFOLDER_NAME)
_Email = Field(max_length=256)


class VFolderCreated(EventPayload):
    """A folder is born (or cloned from ``cloned_from``): a user's (``user`` set) or a
    project's (``group`` set), on ``host``."""

    type: Literal["vfolder_created"] = "vfolder_created"
    folder_id: UUID
    name: str = _Name
    host: str = Field(max_length=128)
    domain: str = Field(max_length=64)
    ownership_type: Literal["user", "group"]
    user: UUID | None = None
    """The owner (a user's folder)."""
    group: UUID | None = None
    """The project (a project's folder)."""
    creator: str = _Email
    """The creator's e-mail, as 23.03 records it."""
    usage_mode: VFolderUsageMode = "general"
    permission: VFolderPermission = "rw"
    """What the folder grants by default: its owner's (a user's folder) or every member's
    (a project's folder)."""
    max_size: int = Field(default=0, ge=0)
    """Quota in bytes; 0: no limit of its own."""
    cloneable: bool = False
    cloned_from: UUID | None = Field(default=None, exclude_if=lambda v: v is None)


class VFolderRenamed(EventPayload):
    type: Literal["vfolder_renamed"] = "vfolder_renamed"
    folder_id: UUID
    name: str = _Name


class VFolderUpdated(EventPayload):
    """Options changed (``None``: kept)."""

    type: Literal["vfolder_updated"] = "vfolder_updated"
    folder_id: UUID
    permission: VFolderPermission | None = None
    usage_mode: VFolderUsageMode | None = None
    cloneable: bool | None = None
    max_size: int | None = Field(default=None, ge=0)


class VFolderTrashed(EventPayload):
    """Deleted to the trash (status ``delete-pending``): no longer mountable, its files kept
    until it is purged (or restored)."""

    type: Literal["vfolder_trashed"] = "vfolder_trashed"
    folder_id: UUID


class VFolderRestored(EventPayload):
    type: Literal["vfolder_restored"] = "vfolder_restored"
    folder_id: UUID


class VFolderPurged(EventPayload):
    """Gone for good: its files are removed from the host after this event is appended
    (a crash in between leaves a directory no folder names, which the purge finds again)."""

    type: Literal["vfolder_purged"] = "vfolder_purged"
    folder_id: UUID
    invitation_ids: list[UUID] = Field(default_factory=list, max_length=10_000)
    """The invitations still pending, which end with it (filled by the decision)."""


class VFolderInvited(EventPayload):
    """The owner of a user's folder invites another user (pending until answered)."""

    type: Literal["vfolder_invited"] = "vfolder_invited"
    folder_id: UUID
    invitation_id: UUID
    inviter: UUID
    inviter_email: str = _Email
    invitee: UUID
    invitee_email: str = _Email
    permission: VFolderPermission = "ro"


class VFolderInvitationAnswered(EventPayload):
    """An invitation ends: accepted (the invitee now shares the folder with the invitation's
    permission), rejected by the invitee, or withdrawn by the inviter."""

    type: Literal["vfolder_invitation_answered"] = "vfolder_invitation_answered"
    folder_id: UUID
    invitation_id: UUID
    state: Literal["accepted", "rejected", "canceled"]


class VFolderShared(EventPayload):
    """A user-specific permission on a folder (a project folder's override for one member,
    or a user folder shared directly by an admin)."""

    type: Literal["vfolder_shared"] = "vfolder_shared"
    folder_id: UUID
    user_id: UUID
    permission: VFolderPermission


class VFolderUnshared(EventPayload):
    """Users lose what they were shared (unshared by the owner, or one left)."""

    type: Literal["vfolder_unshared"] = "vfolder_unshared"
    folder_id: UUID
    user_ids: list[UUID] = Field(max_length=1000)
