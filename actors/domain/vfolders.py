"""Virtual folders as pure decisions: what a folder is, who may do what with it.

:class:`VFolderState` is folded from the ``vfolder-<id>`` streams. :func:`decide` checks a
proposed event against it and returns what to append (nothing when the event would change
nothing, so a repeated command is harmless) or raises a :class:`DomainError`. The single
writer (:mod:`actors.vfolders.writer`) serialises decisions, which is what keeps a name
unique within its owner's folders.

Who may act is the gateway's question, answered here too so it is unit-tested without a
server: :func:`permission_of` (what a user may do with a folder's files) and
:func:`may_manage` (rename, delete, share), plus :func:`host_permissions` (what a storage
host allows, the union of the domain's, the project's and the keypair policy's
``allowed_vfolder_hosts``, as 23.03 computes it).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from events.catalogue import (
    AnyPayload,
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

from .errors import (
    GenericForbidden,
    InvalidAPIParameters,
    QuotaExceeded,
    VFolderAlreadyExists,
    VFolderNotFound,
    VFolderOperationFailed,
)

__all__ = [
    "ALL_HOST_PERMISSIONS",
    "DEFAULT_HOST",
    "Folder",
    "Status",
    "VFolderState",
    "at_least",
    "check_name",
    "decide",
    "host_permissions",
    "may_manage",
    "permission_of",
    "stream_of",
]

DEFAULT_HOST = "local:default"
ALL_HOST_PERMISSIONS = frozenset(
    {
        "create-vfolder",
        "modify-vfolder",
        "delete-vfolder",
        "mount-in-session",
        "upload-file",
        "download-file",
        "invite-others",
        "set-user-specific-permission",
    }
)
"""Backend.AI's ``VFolderHostPermission`` values."""

Status = Literal["ready", "delete-pending", "purged"]
Permission = Literal["ro", "rw", "wd"]
_RANK = {"ro": 1, "rw": 2, "wd": 3}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
"""23.03's folder-name rule (a slug; dots allowed, never first: a dot-name is hidden, and
``.logs`` is the manager's), bounded."""


def stream_of(folder_id: uuid.UUID) -> str:
    return f"vfolder-{folder_id.hex}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise InvalidAPIParameters(
            "a folder name is 1-64 letters, digits, '_', '-' or '.', and does not start "
            "with '.' or '-'"
        )
    return name


@dataclass
class Folder:
    folder_id: uuid.UUID
    name: str
    host: str
    domain: str
    ownership_type: Literal["user", "group"]
    user: uuid.UUID | None
    group: uuid.UUID | None
    creator: str
    usage_mode: str
    permission: Permission
    max_size: int
    cloneable: bool
    cloned_from: uuid.UUID | None = None
    status: Status = "ready"
    shares: dict[uuid.UUID, Permission] = field(default_factory=dict)
    invitations: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    """Pending invitations by id: ``invitee``, ``invitee_email``, ``inviter``, ``permission``."""
    version: int = 0

    @property
    def scope(self) -> tuple[str, uuid.UUID | None]:
        """Where its name must be unique: its owner's folders, or its project's."""
        return ("user", self.user) if self.ownership_type == "user" else ("group", self.group)


class VFolderState:
    """Every folder the log names, purged ones included (their ids are never reused)."""

    def __init__(self) -> None:
        self.folders: dict[uuid.UUID, Folder] = {}

    def version(self, folder_id: uuid.UUID) -> int:
        folder = self.folders.get(folder_id)
        return 0 if folder is None else folder.version

    def live(self) -> Iterable[Folder]:
        return (f for f in self.folders.values() if f.status != "purged")

    def named(self, scope: tuple[str, uuid.UUID | None], name: str) -> Folder | None:
        for folder in self.live():
            if folder.scope == scope and folder.name == name:
                return folder
        return None

    def count_owned(self, user: uuid.UUID) -> int:
        return sum(1 for f in self.live() if f.ownership_type == "user" and f.user == user)

    def apply(self, version: int, event: AnyPayload) -> None:
        if isinstance(event, VFolderCreated):
            self.folders[event.folder_id] = Folder(
                folder_id=event.folder_id,
                name=event.name,
                host=event.host,
                domain=event.domain,
                ownership_type=event.ownership_type,
                user=event.user,
                group=event.group,
                creator=event.creator,
                usage_mode=event.usage_mode,
                permission=event.permission,
                max_size=event.max_size,
                cloneable=event.cloneable,
                cloned_from=event.cloned_from,
                version=version,
            )
            return
        folder = self.folders.get(getattr(event, "folder_id", None))  # type: ignore[arg-type]
        if folder is None:
            return
        folder.version = version
        if isinstance(event, VFolderRenamed):
            folder.name = event.name
        elif isinstance(event, VFolderUpdated):
            for name in ("permission", "usage_mode", "cloneable", "max_size"):
                value = getattr(event, name)
                if value is not None:
                    setattr(folder, name, value)
        elif isinstance(event, VFolderTrashed):
            folder.status = "delete-pending"
        elif isinstance(event, VFolderRestored):
            folder.status = "ready"
        elif isinstance(event, VFolderPurged):
            folder.status = "purged"
            folder.shares.clear()
            folder.invitations.clear()
        elif isinstance(event, VFolderInvited):
            folder.invitations[event.invitation_id] = {
                "invitee": event.invitee,
                "invitee_email": event.invitee_email,
                "inviter": event.inviter,
                "permission": event.permission,
            }
        elif isinstance(event, VFolderInvitationAnswered):
            invitation = folder.invitations.pop(event.invitation_id, None)
            if invitation is not None and event.state == "accepted":
                folder.shares[invitation["invitee"]] = invitation["permission"]
        elif isinstance(event, VFolderShared):
            folder.shares[event.user_id] = event.permission
        elif isinstance(event, VFolderUnshared):
            for user in event.user_ids:
                folder.shares.pop(user, None)


# ---- decisions ----------------------------------------------------------------------------------
def _existing(state: VFolderState, folder_id: uuid.UUID) -> Folder:
    folder = state.folders.get(folder_id)
    if folder is None or folder.status == "purged":
        raise VFolderNotFound()
    return folder


def _ready(state: VFolderState, folder_id: uuid.UUID) -> Folder:
    folder = _existing(state, folder_id)
    if folder.status != "ready":
        raise VFolderOperationFailed(f"the folder {folder.name!r} is in the trash")
    return folder


def decide(state: VFolderState, event: AnyPayload, *, max_count: int = 0) -> list[AnyPayload]:
    """The events to append for ``event`` (``max_count``: the owner's folder limit, for a
    created user folder; 0 = none)."""
    if isinstance(event, VFolderCreated):
        return _decide_create(state, event, max_count)
    if isinstance(event, VFolderRenamed):
        folder = _ready(state, event.folder_id)
        check_name(event.name)
        if folder.name == event.name:
            return []
        if state.named(folder.scope, event.name) is not None:
            raise VFolderAlreadyExists(f"a folder named {event.name!r} already exists")
        return [event]
    if isinstance(event, VFolderUpdated):
        folder = _ready(state, event.folder_id)
        changed = {
            name: value
            for name in ("permission", "usage_mode", "cloneable", "max_size")
            if (value := getattr(event, name)) is not None and value != getattr(folder, name)
        }
        return [VFolderUpdated(folder_id=event.folder_id, **changed)] if changed else []
    if isinstance(event, VFolderTrashed):
        folder = _existing(state, event.folder_id)
        return [] if folder.status == "delete-pending" else [event]
    if isinstance(event, VFolderRestored):
        folder = _existing(state, event.folder_id)
        return [] if folder.status == "ready" else [event]
    if isinstance(event, VFolderPurged):
        known = state.folders.get(event.folder_id)
        if known is None:
            raise VFolderNotFound()
        if known.status == "purged":
            return []
        if known.status != "delete-pending":
            raise VFolderOperationFailed(
                "only a folder in the trash can be purged; delete it first"
            )
        pending = sorted(known.invitations, key=str)
        return [VFolderPurged(folder_id=event.folder_id, invitation_ids=pending)]
    if isinstance(event, VFolderInvited):
        return _decide_invite(state, event)
    if isinstance(event, VFolderInvitationAnswered):
        folder = _existing(state, event.folder_id)
        if event.invitation_id not in folder.invitations:
            raise VFolderNotFound("no such invitation")
        return [event]
    if isinstance(event, VFolderShared):
        folder = _ready(state, event.folder_id)
        if folder.ownership_type == "user" and folder.user == event.user_id:
            raise InvalidAPIParameters("the owner of a folder is not shared their own folder")
        return [] if folder.shares.get(event.user_id) == event.permission else [event]
    if isinstance(event, VFolderUnshared):
        folder = _existing(state, event.folder_id)
        gone = sorted({u for u in event.user_ids if u in folder.shares}, key=str)
        return [VFolderUnshared(folder_id=event.folder_id, user_ids=gone)] if gone else []
    raise TypeError(f"not a vfolder event: {type(event).__name__}")


def _decide_create(state: VFolderState, event: VFolderCreated, max_count: int) -> list[AnyPayload]:
    existing = state.folders.get(event.folder_id)
    if existing is not None:
        return []  # the same id again: a retried create
    check_name(event.name)
    if (event.ownership_type == "user") != (event.user is not None and event.group is None):
        raise InvalidAPIParameters("a folder belongs to a user or to a project, not both")
    if event.ownership_type == "group" and event.group is None:
        raise InvalidAPIParameters("a project folder names its project")
    scope = ("user", event.user) if event.ownership_type == "user" else ("group", event.group)
    if state.named(scope, event.name) is not None:
        raise VFolderAlreadyExists(f"a folder named {event.name!r} already exists")
    if event.user is not None and max_count and state.count_owned(event.user) >= max_count:
        raise QuotaExceeded(f"you may own at most {max_count} virtual folders")
    if event.cloned_from is not None:
        source = _ready(state, event.cloned_from)
        if not source.cloneable and not (
            source.ownership_type == "user" and source.user == event.user
        ):
            raise GenericForbidden("the folder is not cloneable")
    return [event]


def _decide_invite(state: VFolderState, event: VFolderInvited) -> list[AnyPayload]:
    folder = _ready(state, event.folder_id)
    if folder.ownership_type != "user":
        raise InvalidAPIParameters("a project folder is shared by its project, not invited to")
    if event.invitee == folder.user:
        raise InvalidAPIParameters("the owner cannot be invited to their own folder")
    if event.invitee in folder.shares:
        raise VFolderAlreadyExists(f"{event.invitee_email} already shares this folder")
    for invitation in folder.invitations.values():
        if invitation["invitee"] == event.invitee:
            return []  # already invited: once is enough
    return [event]


# ---- who may do what ---------------------------------------------------------------------------
def permission_of(
    folder: Folder,
    user_id: uuid.UUID,
    *,
    role: str,
    domain: str,
    project_ids: Iterable[uuid.UUID],
) -> Permission | None:
    """What ``user_id`` may do with the folder's files (``None``: the folder is not theirs
    to see). A user's folder: its owner has the folder's own permission (created ``ro``, it
    is read-only to its owner too), a user it is shared with has the share's. A project's
    folder: members have the folder's permission unless a share says otherwise for them;
    the domain's admins (and superadmins) may delete in it."""
    if folder.status == "purged":
        return None
    shared = folder.shares.get(user_id)
    if folder.ownership_type == "user":
        if folder.user == user_id:
            return folder.permission
        return shared
    if role == "superadmin" or (role == "admin" and folder.domain == domain):
        return "wd"
    if folder.group in set(project_ids):
        return shared or folder.permission
    return None


def may_manage(folder: Folder, user_id: uuid.UUID, *, role: str, domain: str) -> bool:
    """Whether ``user_id`` may rename, delete, restore, purge, invite to or share the
    folder: a user's folder's owner; a project folder's domain admins (and superadmins)."""
    if folder.ownership_type == "user":
        return folder.user == user_id
    return role == "superadmin" or (role == "admin" and folder.domain == domain)


def at_least(permission: Permission | None, wanted: Permission) -> bool:
    return permission is not None and _RANK[permission] >= _RANK[wanted]


def host_permissions(*sources: Any) -> dict[str, frozenset[str]]:
    """The union of ``allowed_vfolder_hosts`` values (a dict host -> permissions, or an old
    list of hosts meaning every permission); anything else allows nothing."""
    allowed: dict[str, set[str]] = {}
    for source in sources:
        if isinstance(source, Mapping):
            for host, perms in source.items():
                if isinstance(perms, list | tuple | set | frozenset):
                    granted = {str(p) for p in perms} & ALL_HOST_PERMISSIONS
                else:
                    granted = set()
                allowed.setdefault(str(host), set()).update(granted)
        elif isinstance(source, list | tuple):
            for host in source:
                allowed.setdefault(str(host), set()).update(ALL_HOST_PERMISSIONS)
    return {host: frozenset(perms) for host, perms in allowed.items()}
