"""Folders as the ``/folders`` routes answer them, in 23.03's shapes (what the official
client's ``vfolder`` commands print): ids as 32 hex digits, owners and projects as UUID
strings, ``is_owner`` and ``permission`` as they are *for the caller*.

A read-model record holds what the folder's events said (``folder_id``, ``name``, ``host``,
``ownership_type``, ``user``, ``group``, ``creator``, ``usage_mode``, ``permission``,
``max_size``, ``cloneable``, ``status``, ``shares``, ``created_at``, ``modified_at``); these
functions pick and rename, never compute access (that is :mod:`.folders_access`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from ..domain.vfolders import may_manage, permission_of
from .auth import Caller
from .folders_access import Folder, folder_state

__all__ = ["created_view", "folder_hex", "info_view", "invitation_view", "list_view", "mine"]


def folder_hex(record: dict[str, Any]) -> str:
    return uuid.UUID(str(record["folder_id"])).hex


def _uid(value: Any) -> str | None:
    return None if value in (None, "") else str(uuid.UUID(str(value)))


def _quota_scope(record: dict[str, Any]) -> str:
    owner = record.get("user") if record.get("ownership_type") == "user" else record.get("group")
    kind = "user" if record.get("ownership_type") == "user" else "project"
    return f"{kind}:{_uid(owner)}"


def created_view(record: dict[str, Any]) -> dict[str, Any]:
    """``POST /folders``'s 201 answer (the client prints ``name``)."""
    return {
        "id": folder_hex(record),
        "name": record["name"],
        "quota_scope_id": _quota_scope(record),
        "host": record["host"],
        "usage_mode": record.get("usage_mode", "general"),
        "permission": record.get("permission", "rw"),
        "max_size": int(record.get("max_size") or 0),
        "creator": record.get("creator", ""),
        "ownership_type": record["ownership_type"],
        "user": _uid(record.get("user")),
        "group": _uid(record.get("group")),
        "cloneable": bool(record.get("cloneable", False)),
        "status": record.get("status", "ready"),
    }


def mine(
    record: dict[str, Any], caller: Caller, project_ids: Iterable[uuid.UUID]
) -> tuple[str | None, bool]:
    """The caller's permission on a listed folder and whether they manage it (``is_owner``)."""
    state = folder_state(record)
    me = uuid.UUID(caller.user_id)
    permission = permission_of(
        state, me, role=caller.role, domain=caller.domain, project_ids=project_ids
    )
    return permission, may_manage(state, me, role=caller.role, domain=caller.domain)


def list_view(
    record: dict[str, Any],
    permission: str | None,
    is_owner: bool,
    *,
    user_email: str | None = None,
    group_name: str | None = None,
) -> dict[str, Any]:
    """One entry of ``GET /folders``."""
    return {
        "name": record["name"],
        "id": folder_hex(record),
        "quota_scope_id": _quota_scope(record),
        "host": record["host"],
        "usage_mode": record.get("usage_mode", "general"),
        "created_at": record.get("created_at"),
        "is_owner": is_owner,
        "permission": permission or record.get("permission", "rw"),
        "user": _uid(record.get("user")),
        "group": _uid(record.get("group")),
        "creator": record.get("creator", ""),
        "user_email": user_email,
        "group_name": group_name,
        "ownership_type": record["ownership_type"],
        "type": record["ownership_type"],
        "max_files": 0,
        "max_size": int(record.get("max_size") or 0),
        "cur_size": None,
        "status": record.get("status", "ready"),
        "unmanaged_path": None,
        "cloneable": bool(record.get("cloneable", False)),
    }


def info_view(folder: Folder, files: int, used_bytes: int, complete: bool) -> dict[str, Any]:
    """``GET /folders/{name}`` (``vfolder info`` prints ``numFiles``, ``type``, ...).
    ``numFiles`` and ``used_bytes`` come from a bounded walk; ``usage_complete`` says
    whether the walk saw everything (false: they are lower bounds)."""
    record = folder.record
    return {
        "name": folder.name,
        "id": folder.folder_id.hex,
        "quota_scope_id": _quota_scope(record),
        "host": record["host"],
        "status": record.get("status", "ready"),
        "numFiles": files,
        "used_bytes": used_bytes,
        "usage_complete": complete,
        "max_size": int(record.get("max_size") or 0),
        "created_at": record.get("created_at"),
        "last_used": record.get("modified_at"),
        "user": _uid(record.get("user")),
        "group": _uid(record.get("group")),
        "type": record["ownership_type"],
        "is_owner": folder.manager,
        "permission": folder.permission or record.get("permission", "rw"),
        "usage_mode": record.get("usage_mode", "general"),
        "cloneable": bool(record.get("cloneable", False)),
        "unmanaged_path": None,
    }


def invitation_view(invitation: dict[str, Any], folder_name: str | None) -> dict[str, Any]:
    """One entry of ``GET /folders/invitations/list`` (the client prints ``inviter``,
    ``vfolder_id``, ``perm``; accepts by ``id``)."""
    return {
        "id": str(invitation["invitation_id"]),
        "inviter": invitation.get("inviter_email", ""),
        "invitee": invitation.get("invitee_email", ""),
        "perm": invitation.get("permission", "ro"),
        "state": "pending",
        "created_at": invitation.get("created_at"),
        "modified_at": invitation.get("created_at"),
        "vfolder_id": str(uuid.UUID(str(invitation["folder_id"]))),
        "vfolder_name": folder_name,
    }
