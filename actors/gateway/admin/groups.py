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

Bounds (:mod:`.people_guard`): ``user_uuids`` is at most 100 ids, de-duplicated, and the
request waits for the read model once after its membership commands; ``allowed_vfolder_hosts``
and ``total_resource_slots`` are bounded and shape-checked (:mod:`.people_inputs`). A domain
admin of an inactive domain administers nothing (403); a group is neither created in nor
changed within an inactive domain (400 naming its state).
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
from .people_guard import (
    admin_domain_refusal,
    inactive_domain_refusal,
    member_ids,
    outside_refusal,
    refuse_many_passwords,
    unsettled,
)
from .people_inputs import hosts_of, refuse_unhonoured, slots_of
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
        "allowed_vfolder_hosts": hosts_of(props.get("allowed_vfolder_hosts")),
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

    async def still_admin() -> None:
        """A domain admin whose domain is inactive administers nothing (403)."""
        if caller.is_superadmin or not caller.may_act_for_others:
            return
        refusal = admin_domain_refusal(caller, await lookups.domain(caller.domain))
        if refusal is not None:
            raise refusal

    async def target_domain(name: str) -> None:
        """The group's domain exists (404 otherwise) and is active (400 otherwise)."""
        record = await lookups.domain(name)
        if record is None:
            raise ObjectNotFound("domain", f"domain {name!r} does not exist")
        refusal = inactive_domain_refusal(name, record)
        if refusal is not None:
            raise refusal

    async def _mine() -> set[str]:
        return {str(p.get("project_id")) for p in await lookups.projects_of(caller.user_id)}

    async def _readable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What the caller may read of ``records`` (all in the caller's scope)."""
        if caller.is_superadmin or is_domain_admin(caller):
            await still_admin()
            return records
        mine = await _mine()
        return [r for r in records if str(r.get("project_id")) in mine]

    async def managed(gid: Any, what: str) -> dict[str, Any]:
        """The group ``gid`` if the caller administers it: 404 for a superadmin when it is
        missing, the same 403 for anyone else whether it is missing or another domain's."""
        await still_admin()
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

    async def create_group(info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
        refuse_many_passwords(info)
        domain = str(props.get("domain_name"))
        require_domain_admin(caller, domain, "create groups in this domain")
        await still_admin()
        settings = _settings(props)
        await target_domain(domain)
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
        ids = member_ids("user_uuids", props.get("user_uuids"))
        if mode is None or not ids:
            return None, []
        if mode not in _UPDATE_MODES:
            raise InvalidAPIParameters(f"user_update_mode: {mode!r} is not add or remove")
        outside = []
        for user_id in ids:
            user = await lookups.user(user_id)
            if user is None or user.get("domain") != record.get("domain"):
                outside.append(user_id)
        if outside:
            raise outside_refusal(
                "user_uuids", f"users of domain {record.get('domain')!r}", outside
            )
        return str(mode), ids

    async def modify_group(info: Any, gid: Any, props: dict[str, Any]) -> dict[str, Any]:
        refuse_many_passwords(info)
        record = await managed(gid, "modify this group")
        await target_domain(str(record.get("domain")))
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
        members = {str(m) for m in record.get("members") or ()}
        for user_id in users:
            if (user_id in members) == (mode == "add"):
                continue  # already as asked: no command, no event
            change = AddMember if mode == "add" else RemoveMember
            await unsettled(call, change(project_id=project_id, user_id=uuid.UUID(user_id)))
        if users:
            await call.settled()  # once, after the last membership change
        updated = await lookups.project(str(project_id))
        return {
            "ok": True,
            "msg": "success",
            "group": None if updated is None else group_view(updated),
        }

    async def delete_group(info: Any, gid: Any) -> dict[str, Any]:
        refuse_many_passwords(info)
        record = await managed(gid, "delete this group")
        project_id = uuid.UUID(str(record["project_id"]))
        await call.tenancy(UpdateProject(project_id=project_id, is_active=False))
        return {"ok": True, "msg": "success"}

    async def purge_group(info: Any, gid: Any) -> dict[str, Any]:
        refuse_many_passwords(info)
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
