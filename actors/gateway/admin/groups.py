"""Groups (kernelhub's projects): ``group``, ``groups``, ``groups_by_name`` and
``create/modify/delete/purge_group``, as 23.03's ``backend.ai admin group ...`` sends them.

Who: a superadmin administers every domain's groups, a domain admin those of their own
domain (another domain's group is refused with the same 403 whether or not it exists). A
plain user reads only the groups they are a member of: 23.03 lists them every group of
their domain, which tells a tenant the names of projects they have no part in, so kernelhub
answers less (``docs/deviations.md``).

``modify_group`` renames (``name``), changes settings, and adds or removes members
(``user_update_mode`` ``add``/``remove`` with ``user_uuids``: each user must belong to the
group's domain, else the whole request is refused, naming them; 23.03 dropped them
silently). Moving a group to another domain is refused (no event can). ``delete_group``
marks it inactive, as 23.03; ``purge_group`` removes it, refused while it has live sessions.
"""

from __future__ import annotations

import uuid
from typing import Any

from ...domain.commands.tenancy import (
    AddMember,
    CreateProject,
    PurgeProject,
    RemoveMember,
    UpdateProject,
)
from ...domain.errors import (
    GenericBadRequest,
    GenericForbidden,
    InvalidAPIParameters,
    ObjectNotFound,
)
from ..context import LIVE
from ..scope import is_domain_admin
from .base import AdminArea, AdminCall, Resolvers
from .people_inputs import json_object, refuse_unhonoured, slots_of, string_list
from .people_views import group_view, parse_uuid
from .roles import may_manage_domain, require_domain_admin

__all__ = ["AREA"]

SDL = """
type Group {
  id: UUID name: String description: String is_active: Boolean created_at: DateTime
  modified_at: DateTime domain_name: String total_resource_slots: JSONString
  allowed_vfolder_hosts: JSONString integration_id: String
}
input GroupInput {
  description: String is_active: Boolean domain_name: String! total_resource_slots: JSONString
  allowed_vfolder_hosts: JSONString integration_id: String
}
input ModifyGroupInput {
  name: String description: String is_active: Boolean domain_name: String
  total_resource_slots: JSONString user_update_mode: String user_uuids: [String]
  allowed_vfolder_hosts: JSONString integration_id: String
}
type CreateGroup { ok: Boolean msg: String group: Group }
type ModifyGroup { ok: Boolean msg: String group: Group }
type DeleteGroup { ok: Boolean msg: String }
type PurgeGroup { ok: Boolean msg: String }
extend type Query {
  group(id: UUID!, domain_name: String): Group
  groups(domain_name: String, is_active: Boolean): [Group]
  groups_by_name(name: String!, domain_name: String): [Group]
}
extend type Mutation {
  create_group(name: String!, props: GroupInput!): CreateGroup
  modify_group(gid: UUID!, props: ModifyGroupInput!): ModifyGroup
  delete_group(gid: UUID!): DeleteGroup
  purge_group(gid: UUID!): PurgeGroup
}
"""

_UPDATE_MODES = ("add", "remove")


def _settings(props: dict[str, Any]) -> dict[str, Any]:
    refuse_unhonoured(props, "integration_id")
    given: dict[str, Any] = {
        "description": props.get("description"),
        "is_active": props.get("is_active"),
        "total_resource_slots": slots_of("total_resource_slots", props.get("total_resource_slots")),
        "allowed_vfolder_hosts": json_object(
            "allowed_vfolder_hosts", props.get("allowed_vfolder_hosts")
        ),
    }
    return {k: v for k, v in given.items() if v is not None}


def _resolvers(call: AdminCall) -> Resolvers:
    lookups = call.ctx.lookups
    caller = call.caller

    def _scope(domain_name: str | None) -> str | None:
        """The domain a listing covers (``None``: all, a superadmin's); another domain
        than one's own is a 403 for anyone else (23.03's ``scoped_query``)."""
        if caller.is_superadmin:
            return domain_name
        if domain_name not in (None, caller.domain):
            raise GenericForbidden("only a superadmin may list another domain's groups")
        return caller.domain

    async def _mine() -> set[str]:
        return {str(p.get("project_id")) for p in await lookups.projects_of(caller.user_id)}

    async def _readable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What the caller may read of ``records`` (all in the caller's scope)."""
        if caller.is_superadmin or is_domain_admin(caller):
            return records
        mine = await _mine()
        return [r for r in records if str(r.get("project_id")) in mine]

    async def managed(gid: Any, what: str) -> dict[str, Any]:
        """The group ``gid`` if the caller administers it: 404 for a superadmin when it is
        missing, the same 403 for anyone else whether it is missing or another domain's."""
        record = await lookups.project(parse_uuid("gid", gid))
        if record is None and caller.is_superadmin:
            raise ObjectNotFound("user group", f"group {gid} does not exist")
        if record is None or not may_manage_domain(caller, str(record.get("domain"))):
            raise GenericForbidden(
                f"only a superadmin or an admin of the group's domain may {what}"
            )
        return dict(record)

    async def group(_info: Any, id: Any, domain_name: str | None = None) -> dict[str, Any] | None:
        scope = _scope(domain_name)
        record = await lookups.project(parse_uuid("id", id))
        if record is None or (scope is not None and record.get("domain") != scope):
            if caller.may_act_for_others:
                return None
            raise GenericForbidden("a user may read only the groups they are a member of")
        if not await _readable([dict(record)]):
            raise GenericForbidden("a user may read only the groups they are a member of")
        return group_view(record)

    async def groups(
        _info: Any, domain_name: str | None = None, is_active: bool | None = None
    ) -> list[dict[str, Any]]:
        scope = _scope(domain_name)
        records = [
            dict(r)
            for r in await lookups.every("project")
            if (scope is None or r.get("domain") == scope)
            and (is_active is None or bool(r.get("is_active", True)) == is_active)
        ]
        records.sort(key=lambda r: (str(r.get("domain")), str(r.get("name"))))
        return [group_view(r) for r in await _readable(records)]

    async def groups_by_name(
        _info: Any, name: str, domain_name: str | None = None
    ) -> list[dict[str, Any]]:
        scope = _scope(domain_name)
        if scope is not None:
            found = await lookups.project_by_name(scope, name)
            records = [] if found is None else [dict(found)]
        else:
            records = [dict(r) for r in await lookups.every("project") if r.get("name") == name]
            records.sort(key=lambda r: str(r.get("domain")))
        return [group_view(r) for r in await _readable(records)]

    async def create_group(_info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
        domain = str(props.get("domain_name"))
        require_domain_admin(caller, domain, "create groups in this domain")
        settings = _settings(props)
        if await lookups.domain(domain) is None:
            raise ObjectNotFound("domain", f"domain {domain!r} does not exist")
        if await lookups.project_by_name(domain, name) is not None:
            raise InvalidAPIParameters(f"group {name!r} already exists in domain {domain!r}")
        gid = await call.tenancy(CreateProject(name=name, domain=domain, **settings))
        record = await lookups.project(str(gid))
        return {
            "ok": True,
            "msg": "success",
            "group": None if record is None else group_view(record),
        }

    async def _members(
        record: dict[str, Any], props: dict[str, Any]
    ) -> tuple[str | None, list[str]]:
        """The membership change asked for: its mode and the users, each checked to be of
        the group's domain (an unknown user and another domain's read the same)."""
        mode = props.get("user_update_mode")
        uuids = string_list("user_uuids", props.get("user_uuids")) or []
        if mode is None or not uuids:
            return None, []
        if mode not in _UPDATE_MODES:
            raise InvalidAPIParameters(f"user_update_mode: {mode!r} is not add or remove")
        ids = [parse_uuid("user_uuids", u) for u in uuids]
        outside = []
        for user_id in ids:
            user = await lookups.user(user_id)
            if user is None or user.get("domain") != record.get("domain"):
                outside.append(user_id)
        if outside:
            raise InvalidAPIParameters(
                f"user_uuids: not users of domain {record.get('domain')!r}: {', '.join(outside)}"
            )
        return str(mode), ids

    async def modify_group(_info: Any, gid: Any, props: dict[str, Any]) -> dict[str, Any]:
        record = await managed(gid, "modify this group")
        moved = props.get("domain_name")
        if moved is not None and moved != record.get("domain"):
            raise InvalidAPIParameters(
                "domain_name: moving a group to another domain is not supported by kernelhub"
            )
        settings = _settings(props)
        new_name = props.get("name")
        if new_name is not None and new_name != record.get("name"):
            settings["name"] = new_name
        mode, users = await _members(record, props)
        if not settings and mode is None:
            return {"ok": False, "msg": "nothing to update", "group": None}
        project_id = uuid.UUID(str(record["project_id"]))
        if settings:
            await call.tenancy(UpdateProject(project_id=project_id, **settings))
        for user_id in users:
            change = AddMember if mode == "add" else RemoveMember
            await call.tenancy(change(project_id=project_id, user_id=uuid.UUID(user_id)))
        updated = await lookups.project(str(project_id))
        return {
            "ok": True,
            "msg": "success",
            "group": None if updated is None else group_view(updated),
        }

    async def delete_group(_info: Any, gid: Any) -> dict[str, Any]:
        record = await managed(gid, "delete this group")
        project_id = uuid.UUID(str(record["project_id"]))
        await call.tenancy(UpdateProject(project_id=project_id, is_active=False))
        return {"ok": True, "msg": "success"}

    async def purge_group(_info: Any, gid: Any) -> dict[str, Any]:
        record = await managed(gid, "purge this group")
        project_id = str(record["project_id"])
        live = (await call.ctx.models.sessions(projects=[project_id], statuses=LIVE, limit=1)).total
        if live:
            raise GenericBadRequest(
                f"group {record.get('name')!r} has {live} live session(s): "
                "terminate them first to purge it"
            )
        await call.tenancy(PurgeProject(project_id=uuid.UUID(project_id)))
        return {"ok": True, "msg": "success"}

    return {
        "group": group,
        "groups": groups,
        "groups_by_name": groups_by_name,
        "create_group": create_group,
        "modify_group": modify_group,
        "delete_group": delete_group,
        "purge_group": purge_group,
    }


AREA = AdminArea("groups", sdl=SDL, resolvers=_resolvers)
