"""Domains: ``domain``, ``domains`` and ``create/modify/delete/purge_domain``, as 23.03's
``backend.ai admin domain ...`` sends them.

Who: a superadmin administers every domain; anyone may read their *own* domain with
``domain`` (23.03's ``resolve_domain``: another domain is "no such domain" for them, whether
it exists or not). ``delete_domain`` marks the domain inactive, as 23.03 does;
``purge_domain`` removes it, refused while users or projects remain (the decision says how
many). A rename (``modify_domain``'s ``name``) is refused: no event moves a domain's users,
projects and associations to a new name, so it cannot be done honestly.

``delete_domain`` is the domain's off switch for the admin surface too: its admins then
administer nothing, and no user or group is created in it or changed (:mod:`.people_guard`).
``allowed_vfolder_hosts`` and ``total_resource_slots`` are bounded and shape-checked before
they become an event (:mod:`.people_inputs`).
"""

from __future__ import annotations

from typing import Any

from ...domain.commands.tenancy import CreateDomain, PurgeDomain, UpdateDomain
from ...domain.errors import InvalidAPIParameters, ObjectNotFound
from .base import AdminArea, AdminCall, Resolvers
from .people_guard import refuse_many_passwords
from .people_inputs import hosts_of, refuse_unhonoured, slots_of, string_list
from .people_views import domain_view
from .roles import require_superadmin

__all__ = ["AREA"]

SDL = """
type Domain {
  name: String description: String is_active: Boolean created_at: DateTime
  modified_at: DateTime total_resource_slots: JSONString allowed_vfolder_hosts: JSONString
  allowed_docker_registries: [String] integration_id: String
}
input DomainInput {
  description: String is_active: Boolean total_resource_slots: JSONString
  allowed_vfolder_hosts: JSONString allowed_docker_registries: [String] integration_id: String
}
input ModifyDomainInput {
  name: String description: String is_active: Boolean total_resource_slots: JSONString
  allowed_vfolder_hosts: JSONString allowed_docker_registries: [String] integration_id: String
}
type CreateDomain { ok: Boolean msg: String domain: Domain }
type ModifyDomain { ok: Boolean msg: String domain: Domain }
type DeleteDomain { ok: Boolean msg: String }
type PurgeDomain { ok: Boolean msg: String }
extend type Query {
  domain(name: String): Domain
  domains(is_active: Boolean): [Domain]
}
extend type Mutation {
  create_domain(name: String!, props: DomainInput!): CreateDomain
  modify_domain(name: String!, props: ModifyDomainInput!): ModifyDomain
  delete_domain(name: String!): DeleteDomain
  purge_domain(name: String!): PurgeDomain
}
"""


def _settings(props: dict[str, Any]) -> dict[str, Any]:
    """The domain settings ``props`` gives (non-null), checked."""
    refuse_unhonoured(props, "integration_id")
    given: dict[str, Any] = {
        "description": props.get("description"),
        "is_active": props.get("is_active"),
        "total_resource_slots": slots_of("total_resource_slots", props.get("total_resource_slots")),
        "allowed_vfolder_hosts": hosts_of(props.get("allowed_vfolder_hosts")),
        "allowed_docker_registries": string_list(
            "allowed_docker_registries", props.get("allowed_docker_registries")
        ),
    }
    return {k: v for k, v in given.items() if v is not None}


def _resolvers(call: AdminCall) -> Resolvers:
    lookups = call.ctx.lookups
    caller = call.caller

    async def existing(name: str) -> dict[str, Any]:
        record = await lookups.domain(name)
        if record is None:
            raise ObjectNotFound("domain", f"domain {name!r} does not exist")
        return dict(record)

    async def domain(_info: Any, name: str | None = None) -> dict[str, Any] | None:
        wanted = caller.domain if name is None else name
        if not caller.is_superadmin and wanted != caller.domain:
            raise ObjectNotFound("domain")  # 23.03: the same whether it exists or not
        record = await lookups.domain(wanted)
        return None if record is None else domain_view(record)

    async def domains(_info: Any, is_active: bool | None = None) -> list[dict[str, Any]]:
        require_superadmin(caller, "list domains")
        records = sorted(await lookups.every("domain"), key=lambda r: str(r.get("name")))
        return [
            domain_view(r)
            for r in records
            if is_active is None or bool(r.get("is_active", True)) == is_active
        ]

    async def create_domain(info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
        refuse_many_passwords(info)
        require_superadmin(caller, "create domains")
        settings = _settings(props)
        if await lookups.domain(name) is not None:
            raise InvalidAPIParameters(f"domain {name!r} already exists")
        await call.tenancy(CreateDomain(name=name, **settings))
        return {"ok": True, "msg": "success", "domain": domain_view(await existing(name))}

    async def modify_domain(info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
        refuse_many_passwords(info)
        require_superadmin(caller, "modify domains")
        new_name = props.get("name")
        if new_name is not None and new_name != name:
            raise InvalidAPIParameters(
                "name: renaming a domain is not supported by kernelhub "
                "(its users, projects and associations keep its name)"
            )
        settings = _settings(props)
        await existing(name)
        if not settings:
            return {"ok": False, "msg": "nothing to update", "domain": None}
        await call.tenancy(UpdateDomain(name=name, **settings))
        return {"ok": True, "msg": "success", "domain": domain_view(await existing(name))}

    async def delete_domain(info: Any, name: str) -> dict[str, Any]:
        refuse_many_passwords(info)
        require_superadmin(caller, "delete domains")
        await existing(name)
        await call.tenancy(UpdateDomain(name=name, is_active=False))
        return {"ok": True, "msg": "success"}

    async def purge_domain(info: Any, name: str) -> dict[str, Any]:
        refuse_many_passwords(info)
        require_superadmin(caller, "purge domains")
        await existing(name)
        await call.tenancy(PurgeDomain(name=name))
        return {"ok": True, "msg": "success"}

    return {
        "domain": domain,
        "domains": domains,
        "create_domain": create_domain,
        "modify_domain": modify_domain,
        "delete_domain": delete_domain,
        "purge_domain": purge_domain,
    }


AREA = AdminArea("domains", sdl=SDL, resolvers=_resolvers)
