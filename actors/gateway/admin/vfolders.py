"""Virtual folders in the GraphQL schema: ``vfolder_list`` (what ``backend.ai vfolder list``
and ``admin vfolder list`` send, paginated like ``compute_session_list``) and ``vfolder(id)``,
with the client's ``vfolder_fields``.

Scoped as ``GET /folders``: a user sees the folders they may see (their own, shared with
them, their projects'), a domain admin every folder of their domain, a superadmin all. A
folder out of scope is absent (``vfolder`` answers null), never an error that says it
exists. ``group_id`` narrows to a project's folders; ``filter`` and ``order`` take 23.03's
mini-languages over the columns :data:`VFOLDER_FIELDS` names (another is refused with a 400
naming it). Enum columns compare by 23.03's names: ``ownership_type`` ``USER``/``GROUP``,
``permission`` ``READ_ONLY``/``READ_WRITE``/``RW_DELETE``, ``status`` ``READY``/
``DELETE_PENDING``, ``usage_mode`` ``GENERAL``/``MODEL``/``DATA``.

``num_files`` and ``cur_size`` would be a walk of each folder's tree per row: they answer
null here (``vfolder info`` and ``GET /folders/{name}`` measure one folder, bounded).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from projections.vfolder_queries import VFolderLookups

from ...domain.errors import InvalidAPIParameters
from ..folder_listing import folders_in_scope
from ..folder_views import mine
from ..gql_filter import FieldSpec, moment_of, parse_filter, parse_order, select
from .base import AdminArea, AdminCall, Resolvers, check_page

__all__ = ["AREA", "VFOLDER_FIELDS"]

_SDL = """
type VirtualFolder {
  id: UUID host: String quota_scope_id: String name: String user: UUID user_email: String
  group: UUID group_name: String creator: String domain_name: String
  unmanaged_path: String usage_mode: String permission: String ownership_type: String
  max_files: Int max_size: BigInt created_at: DateTime last_used: DateTime
  num_files: Int cur_size: BigInt cloneable: Boolean status: String
}

type VirtualFolderList { items: [VirtualFolder]! total_count: Int! }

extend type Query {
  vfolder(id: String!): VirtualFolder
  vfolder_list(
    limit: Int!, offset: Int!, order_key: String, order_asc: Boolean,
    domain_name: String, group_id: UUID, access_key: String, filter: String, order: String
  ): VirtualFolderList
}
"""

_PERMISSIONS = {"ro": "READ_ONLY", "rw": "READ_WRITE", "wd": "RW_DELETE"}
_STATUSES = {"ready": "READY", "delete-pending": "DELETE_PENDING"}
VFOLDER_FIELDS: Mapping[str, FieldSpec] = {
    "id": FieldSpec("str"),
    "host": FieldSpec("str"),
    "name": FieldSpec("str"),
    "user": FieldSpec("str"),
    "user_email": FieldSpec("str"),
    "group": FieldSpec("str"),
    "group_name": FieldSpec("str"),
    "creator": FieldSpec("str"),
    "domain_name": FieldSpec("str"),
    "usage_mode": FieldSpec("enum", ("GENERAL", "MODEL", "DATA")),
    "permission": FieldSpec("enum", ("READ_ONLY", "READ_WRITE", "RW_DELETE", "OWNER_PERM")),
    "ownership_type": FieldSpec("enum", ("USER", "GROUP")),
    "status": FieldSpec("enum", ("READY", "DELETE_PENDING")),
    "max_size": FieldSpec("int"),
    "created_at": FieldSpec("time"),
    "last_used": FieldSpec("time"),
    "cloneable": FieldSpec("str"),
}
"""What ``vfolder_list``'s ``filter`` and ``order`` may name."""


def _uid(value: Any) -> str | None:
    return None if value in (None, "") else str(uuid.UUID(str(value)))


def _view(
    record: Mapping[str, Any], permission: str | None, group_name: str | None
) -> dict[str, Any]:
    owner = record.get("user") if record.get("ownership_type") == "user" else record.get("group")
    kind = "user" if record.get("ownership_type") == "user" else "project"
    return {
        "id": str(uuid.UUID(str(record["folder_id"]))),
        "host": record.get("host"),
        "quota_scope_id": f"{kind}:{_uid(owner)}",
        "name": record.get("name"),
        "user": _uid(record.get("user")),
        "user_email": record.get("creator") if record.get("user") else None,
        "group": _uid(record.get("group")),
        "group_name": group_name,
        "creator": record.get("creator"),
        "domain_name": record.get("domain"),
        "unmanaged_path": None,
        "usage_mode": record.get("usage_mode", "general"),
        "permission": permission or record.get("permission", "rw"),
        "ownership_type": record.get("ownership_type"),
        "max_files": 0,
        "max_size": int(record.get("max_size") or 0),
        "created_at": record.get("created_at"),
        "last_used": record.get("modified_at"),
        "num_files": None,
        "cur_size": None,
        "cloneable": bool(record.get("cloneable", False)),
        "status": record.get("status", "ready"),
    }


def _row(view: Mapping[str, Any]) -> dict[str, Any]:
    """A folder's :data:`VFOLDER_FIELDS`, typed for the filter and the order to compare."""
    row = {name: view.get(name) for name in VFOLDER_FIELDS}
    row["usage_mode"] = str(view.get("usage_mode") or "").upper()
    row["permission"] = _PERMISSIONS.get(str(view.get("permission")), "READ_WRITE")
    row["ownership_type"] = str(view.get("ownership_type") or "").upper()
    row["status"] = _STATUSES.get(str(view.get("status")), str(view.get("status")).upper())
    row["created_at"] = moment_of(view.get("created_at"))
    row["last_used"] = moment_of(view.get("last_used"))
    row["cloneable"] = "true" if view.get("cloneable") else "false"
    return row


def _resolvers(call: AdminCall) -> Resolvers:
    ctx, caller = call.ctx, call.caller

    async def views(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        projects = [
            uuid.UUID(str(p["project_id"])) for p in await ctx.lookups.projects_of(caller.user_id)
        ]
        names: dict[str, str | None] = {}
        shown = []
        for record in records:
            permission, _manager = mine(dict(record), caller, projects)
            group = str(record.get("group") or "")
            if group and group not in names:
                project = await ctx.lookups.project(group)
                names[group] = str(project["name"]) if project else None
            shown.append(_view(record, permission, names.get(group) if group else None))
        return shown

    async def in_scope() -> list[dict[str, Any]]:
        every = caller.role in ("admin", "superadmin")
        return await folders_in_scope(ctx, caller, every=every)

    async def vfolder(_info: Any, id: str) -> dict[str, Any] | None:
        try:
            wanted = str(uuid.UUID(str(id)))
        except ValueError:
            raise InvalidAPIParameters(f"id: not a UUID: {str(id)[:64]!r}") from None
        record = await VFolderLookups(ctx.store).folder(wanted)
        if record is None:
            return None
        ids = {str(uuid.UUID(str(r["folder_id"]))) for r in await in_scope()}
        return (await views([record]))[0] if wanted in ids else None

    async def vfolder_list(
        _info: Any,
        limit: int,
        offset: int,
        group_id: str | None = None,
        filter: str | None = None,
        order: str | None = None,
        order_key: str | None = None,
        order_asc: bool | None = None,
        domain_name: str | None = None,
        access_key: str | None = None,
    ) -> dict[str, Any]:
        check_page(limit, offset)
        if access_key not in (None, caller.access_key):
            raise InvalidAPIParameters("access_key: folders are listed by user, not keypair")
        if order and order_key:
            raise InvalidAPIParameters("order: give order or order_key, not both")
        if order_key:
            order = ("" if order_asc is not False else "-") + order_key
        keep = parse_filter(filter, fields=VFOLDER_FIELDS) if filter else None
        ordering = parse_order(order, fields=VFOLDER_FIELDS) if order else None
        records = await in_scope()
        if domain_name is not None:
            records = [r for r in records if r.get("domain") == domain_name]
        if group_id is not None:
            try:
                project = str(uuid.UUID(str(group_id)))
            except ValueError:
                raise InvalidAPIParameters("group_id: not a UUID") from None
            records = [r for r in records if _uid(r.get("group")) == project]
        records.sort(key=lambda r: (str(r.get("created_at")), str(r.get("name"))))
        shown = await views(records)
        if keep is not None or (ordering is not None and ordering.keys):
            rows = [(_row(v), v) for v in shown]
            shown = select(rows, keep, ordering if ordering and ordering.keys else None)
        return {"items": shown[offset : offset + limit], "total_count": len(shown)}

    return {"vfolder": vfolder, "vfolder_list": vfolder_list}


AREA = AdminArea("vfolders", sdl=_SDL, resolvers=_resolvers)
