"""Scaling groups in the admin GraphQL schema: what ``backend.ai admin scaling-group ...``
sends (23.03's names and shapes), and the associations that say who may use a group.

Every write and the listing of all groups are a superadmin's (23.03's
``privileged_mutation``/``privileged_query``); the per-target listings
(``scaling_groups_for_domain/_user_group/_keypair``) answer whoever administers or owns that
target, and show a non-admin the public groups only (as ``GET /scaling-groups`` does since
23.03.5). A group is set whole (``SetScalingGroup``): ``modify_scaling_group`` overlays what
it is given on the current record. Values kernelhub cannot honour are refused with a 400
naming them (:func:`.infra_rules.scaling_group_settings`). A group is deleted only when no
agent belongs to it and no session not yet ended (pending ones included) is in it: 23.03's
foreign keys refused those deletions too. Nor while a resource preset names it (its
``scaling_group_name``): the preset would point at a group that no longer exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal

from ...domain.commands.tenancy import Associate, DeleteScalingGroup, Dissociate, SetScalingGroup
from ...domain.errors import (
    GenericBadRequest,
    GenericForbidden,
    InvalidAPIParameters,
    ObjectNotFound,
)
from ..context import LIVE
from ..scope import is_domain_admin
from .base import AdminArea, AdminCall, Resolvers
from .infra_rules import require_no_preset_names, scaling_group_settings, scaling_group_view
from .roles import may_manage_domain, require_superadmin

__all__ = ["AREA"]

_SDL = """
type ScalingGroup {
  name: String description: String is_active: Boolean is_public: Boolean created_at: DateTime
  wsproxy_addr: String wsproxy_api_token: String driver: String driver_opts: JSONString
  scheduler: String scheduler_opts: JSONString use_host_network: Boolean
}

input CreateScalingGroupInput {
  description: String is_active: Boolean is_public: Boolean wsproxy_addr: String
  wsproxy_api_token: String driver: String driver_opts: JSONString scheduler: String
  scheduler_opts: JSONString use_host_network: Boolean
}

input ModifyScalingGroupInput {
  description: String is_active: Boolean is_public: Boolean wsproxy_addr: String
  wsproxy_api_token: String driver: String driver_opts: JSONString scheduler: String
  scheduler_opts: JSONString use_host_network: Boolean
}

type CreateScalingGroup { ok: Boolean msg: String scaling_group: ScalingGroup }
type ModifyScalingGroup { ok: Boolean msg: String }
type DeleteScalingGroup { ok: Boolean msg: String }
type ScalingGroupAssociation { ok: Boolean msg: String }

extend type Query {
  scaling_group(name: String): ScalingGroup
  scaling_groups(name: String, is_active: Boolean): [ScalingGroup]
  scaling_groups_for_domain(domain: String!, is_active: Boolean): [ScalingGroup]
  scaling_groups_for_user_group(user_group: String!, is_active: Boolean): [ScalingGroup]
  scaling_groups_for_keypair(access_key: String!, is_active: Boolean): [ScalingGroup]
}

extend type Mutation {
  create_scaling_group(name: String!, props: CreateScalingGroupInput!): CreateScalingGroup
  modify_scaling_group(name: String!, props: ModifyScalingGroupInput!): ModifyScalingGroup
  delete_scaling_group(name: String!): DeleteScalingGroup
  associate_scaling_group_with_domain(
    scaling_group: String!, domain: String!): ScalingGroupAssociation
  disassociate_scaling_group_with_domain(
    scaling_group: String!, domain: String!): ScalingGroupAssociation
  disassociate_all_scaling_groups_with_domain(domain: String!): ScalingGroupAssociation
  associate_scaling_group_with_user_group(
    scaling_group: String!, user_group: UUID!): ScalingGroupAssociation
  disassociate_scaling_group_with_user_group(
    scaling_group: String!, user_group: String!): ScalingGroupAssociation
  disassociate_all_scaling_groups_with_group(user_group: UUID!): ScalingGroupAssociation
  associate_scaling_group_with_keypair(
    scaling_group: String!, access_key: String!): ScalingGroupAssociation
  disassociate_scaling_group_with_keypair(
    scaling_group: String!, access_key: String!): ScalingGroupAssociation
}
"""
# ``disassociate_scaling_group_with_user_group`` takes ``user_group: String!`` because the
# 23.3.12 client declares its variable ``String!`` (a ``UUID!`` argument would refuse the
# client's own query); the resolver checks it is a UUID.

_Kind = Literal["domain", "project", "keypair"]
_OK = {"ok": True, "msg": "success"}


def _project_id(field: str, raw: Any) -> str:
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        raise InvalidAPIParameters(f"{field}: {raw!r} is not a project id (a UUID)") from None


def _active(records: list[Mapping[str, Any]], is_active: bool | None) -> list[dict[str, Any]]:
    return [
        scaling_group_view(r)
        for r in records
        if r.get("name") and (is_active is None or bool(r.get("is_active", True)) == is_active)
    ]


def _resolvers(call: AdminCall) -> Resolvers:
    lookups = call.ctx.lookups
    caller = call.caller

    async def every_group() -> list[Mapping[str, Any]]:
        return sorted(
            (g for g in await lookups.every("sgroup") if g.get("name")),
            key=lambda g: str(g["name"]),
        )

    async def existing(name: str) -> Mapping[str, Any]:
        record = await lookups.scaling_group(name)
        if record is None or not record.get("name"):
            raise ObjectNotFound("scaling group", f"scaling group {name!r} does not exist")
        return record

    async def associated(kind: str, target: str) -> list[Mapping[str, Any]]:
        return [g for g in await every_group() if [kind, target] in (g.get("for") or [])]

    def shown(groups: list[Mapping[str, Any]], is_active: bool | None) -> list[dict[str, Any]]:
        if not caller.may_act_for_others:  # a user sees the public groups they may use
            groups = [g for g in groups if g.get("is_public", True)]
        return _active(groups, is_active)

    # ---- queries ------------------------------------------------------------------------
    async def scaling_group(_info: Any, name: str | None = None) -> dict[str, Any] | None:
        require_superadmin(caller, "look up a scaling group")
        record = await lookups.scaling_group(name) if name else None
        return scaling_group_view(record) if record and record.get("name") else None

    async def scaling_groups(
        _info: Any, name: str | None = None, is_active: bool | None = None
    ) -> list[dict[str, Any]]:
        require_superadmin(caller, "list every scaling group")
        groups = await every_group()
        if name:
            groups = [g for g in groups if g["name"] == name]
        return _active(groups, is_active)

    async def scaling_groups_for_domain(
        _info: Any, domain: str, is_active: bool | None = None
    ) -> list[dict[str, Any]]:
        if not may_manage_domain(caller, domain):
            raise GenericForbidden(
                "only a superadmin or an admin of the domain may list its groups"
            )
        return shown(await associated("domain", domain), is_active)

    async def scaling_groups_for_user_group(
        _info: Any, user_group: str, is_active: bool | None = None
    ) -> list[dict[str, Any]]:
        project_id = _project_id("user_group", user_group)
        project = await lookups.project(project_id)
        member = project is not None and caller.user_id in {
            str(m) for m in project.get("members") or ()
        }
        if project is None or not (may_manage_domain(caller, str(project.get("domain"))) or member):
            raise GenericForbidden(
                "only a superadmin, an admin of the project's domain or a member may list "
                "the project's scaling groups"
            )
        return shown(await associated("project", project_id), is_active)

    async def scaling_groups_for_keypair(
        _info: Any, access_key: str, is_active: bool | None = None
    ) -> list[dict[str, Any]]:
        if access_key != caller.access_key and not caller.is_superadmin:
            keypair = await lookups.keypair(access_key)
            owner = await lookups.user(str(keypair["user_id"])) if keypair else None
            if not (
                owner is not None
                and is_domain_admin(caller)
                and owner.get("domain") == caller.domain
                and owner.get("role") != "superadmin"
            ):
                raise GenericForbidden(
                    "only a superadmin, an admin of the owner's domain or the owner may list "
                    "a keypair's scaling groups"
                )
        return shown(await associated("keypair", access_key), is_active)

    # ---- mutations ----------------------------------------------------------------------
    async def create_scaling_group(
        _info: Any, name: str, props: Mapping[str, Any]
    ) -> dict[str, Any]:
        require_superadmin(caller, "create a scaling group")
        if (await lookups.scaling_group(name) or {}).get("name"):
            raise GenericBadRequest(f"scaling group {name!r} already exists")
        settings = scaling_group_settings(props)
        await call.tenancy(SetScalingGroup(name=name, **settings))
        record = await existing(name)
        return {**_OK, "scaling_group": scaling_group_view(record)}

    async def modify_scaling_group(
        _info: Any, name: str, props: Mapping[str, Any]
    ) -> dict[str, Any]:
        require_superadmin(caller, "modify a scaling group")
        current = await existing(name)
        settings = scaling_group_settings(props, current)
        await call.tenancy(SetScalingGroup(name=name, **settings))
        return dict(_OK)

    async def delete_scaling_group(_info: Any, name: str) -> dict[str, Any]:
        require_superadmin(caller, "delete a scaling group")
        await existing(name)
        agents = await call.ctx.models.agents(name)
        if agents:
            raise GenericBadRequest(
                f"scaling group {name!r} still has {len(agents)} agent(s): "
                "move them to another group first"
            )
        live = (await call.ctx.models.sessions(scaling_group=name, statuses=LIVE, limit=1)).total
        if live:
            raise GenericBadRequest(
                f"scaling group {name!r} still has {live} session(s) not yet ended "
                "(pending ones included): end them first"
            )
        require_no_preset_names(name, await call.ctx.lookups.presets())
        await call.tenancy(DeleteScalingGroup(name=name))
        return dict(_OK)

    async def associate(kind: _Kind, name: str, target: str, *, on: bool) -> dict[str, Any]:
        require_superadmin(caller, "associate scaling groups")
        command = Associate if on else Dissociate
        await call.tenancy(command(name=name, target_kind=kind, target=target))
        return dict(_OK)

    async def dissociate_all(kind: _Kind, target: str) -> dict[str, Any]:
        require_superadmin(caller, "dissociate scaling groups")
        for group in await associated(kind, target):
            await call.tenancy(Dissociate(name=str(group["name"]), target_kind=kind, target=target))
        return dict(_OK)

    async def with_domain(_info: Any, scaling_group: str, domain: str) -> dict[str, Any]:
        return await associate("domain", scaling_group, domain, on=True)

    async def without_domain(_info: Any, scaling_group: str, domain: str) -> dict[str, Any]:
        return await associate("domain", scaling_group, domain, on=False)

    async def without_any_domain(_info: Any, domain: str) -> dict[str, Any]:
        return await dissociate_all("domain", domain)

    async def with_project(_info: Any, scaling_group: str, user_group: str) -> dict[str, Any]:
        project_id = _project_id("user_group", user_group)
        return await associate("project", scaling_group, project_id, on=True)

    async def without_project(_info: Any, scaling_group: str, user_group: str) -> dict[str, Any]:
        project_id = _project_id("user_group", user_group)
        return await associate("project", scaling_group, project_id, on=False)

    async def without_any_project(_info: Any, user_group: str) -> dict[str, Any]:
        return await dissociate_all("project", _project_id("user_group", user_group))

    async def with_keypair(_info: Any, scaling_group: str, access_key: str) -> dict[str, Any]:
        return await associate("keypair", scaling_group, access_key, on=True)

    async def without_keypair(_info: Any, scaling_group: str, access_key: str) -> dict[str, Any]:
        return await associate("keypair", scaling_group, access_key, on=False)

    return {
        "scaling_group": scaling_group,
        "scaling_groups": scaling_groups,
        "scaling_groups_for_domain": scaling_groups_for_domain,
        "scaling_groups_for_user_group": scaling_groups_for_user_group,
        "scaling_groups_for_keypair": scaling_groups_for_keypair,
        "create_scaling_group": create_scaling_group,
        "modify_scaling_group": modify_scaling_group,
        "delete_scaling_group": delete_scaling_group,
        "associate_scaling_group_with_domain": with_domain,
        "disassociate_scaling_group_with_domain": without_domain,
        "disassociate_all_scaling_groups_with_domain": without_any_domain,
        "associate_scaling_group_with_user_group": with_project,
        "disassociate_scaling_group_with_user_group": without_project,
        "disassociate_all_scaling_groups_with_group": without_any_project,
        "associate_scaling_group_with_keypair": with_keypair,
        "disassociate_scaling_group_with_keypair": without_keypair,
    }


AREA = AdminArea("sgroups", sdl=_SDL, resolvers=_resolvers)
