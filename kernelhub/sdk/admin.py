"""Running a lab from Python: :class:`AsyncAdmin` (asyncio) and :class:`Admin` (blocking), the
operations of the official client's ``backend.ai admin`` on ``POST /admin/gql``.

    from kernelhub import Client
    from kernelhub.sdk.admin import Admin

    with Client() as client:
        admin = Admin(client)
        admin.create_domain("lab")
        print(admin.domains())

The queries are the texts ``backend.ai-client`` 23.3.12 sends (root fields, argument and input
names, variable types), so the one schema serves both clients and what works for one works for
the other; where 23.3 has no text (presets, keypair associations, forced user removal) they are
the 23.03 manager's names or kernelhub's documented extension, sent only when used.

Records come back as dicts with their JSON-string fields (slots, options, hosts) decoded, so a
caller never parses JSON inside JSON. A mutation the server answers ``ok: false`` raises
:class:`~kernelhub.sdk.errors.InvalidRequest` naming it; a refusal (403, 400, 404) raises the
problem's own error, as every SDK call does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from ._blocking import BlockingTwin
from .errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from .aio import AsyncClient

__all__ = ["JSON_FIELDS", "Admin", "AdminPage", "AsyncAdmin", "decode_record"]

Record = dict[str, Any]

JSON_FIELDS = frozenset(
    {
        "total_resource_slots",
        "allowed_vfolder_hosts",
        "driver_opts",
        "scheduler_opts",
        "resource_slots",
        "available_slots",
        "occupied_slots",
        "live_stat",
        "local_config",
        "compute_plugins",
        "hardware_metadata",
    }
)
"""Fields the schema types ``JSONString`` (a JSON document inside the JSON answer)."""

# ---- what each listing asks for (the official client's default field sets) ---------------------
DOMAIN_FIELDS = (
    "name description is_active created_at total_resource_slots allowed_vfolder_hosts"
    " allowed_docker_registries integration_id"
)
PROJECT_FIELDS = (
    "id name description is_active created_at domain_name total_resource_slots"
    " allowed_vfolder_hosts integration_id"
)
USER_FIELDS = (
    "uuid role username email need_password_change status status_info is_active created_at"
    " domain_name groups { id name } allowed_client_ip totp_activated"
)
USER_DETAIL_FIELDS = USER_FIELDS + " full_name description modified_at"
KEYPAIR_FIELDS = "user_id access_key is_active is_admin created_at resource_policy rate_limit"
"""Never ``secret_key``: a listing shows no secrets; :meth:`AsyncAdmin.create_keypair` returns
it, once."""
POLICY_FIELDS = (
    "name created_at default_for_unspecified total_resource_slots max_session_lifetime"
    " max_concurrent_sessions max_containers_per_session idle_timeout exec_timeout_s"
    " max_vfolder_count max_vfolder_size allowed_vfolder_hosts"
)
PRESET_FIELDS = "name resource_slots shared_memory scaling_group_name"
SGROUP_FIELDS = (
    "name description is_active is_public created_at driver scheduler use_host_network wsproxy_addr"
)
SGROUP_DETAIL_FIELDS = SGROUP_FIELDS + " driver_opts scheduler_opts"
IMAGE_FIELDS = "name registry architecture tag digest size_bytes aliases"
AGENT_FIELDS = "id status scaling_group available_slots occupied_slots"
AGENT_DETAIL_FIELDS = (
    "id status scaling_group addr region first_contact cpu_cur_pct mem_cur_bytes"
    " available_slots occupied_slots local_config"
)

ASSOCIATION_KINDS = ("domain", "project", "keypair")
"""What a scaling group opens to (:meth:`AsyncAdmin.associate_scaling_group`)."""


class AdminPage(BaseModel):
    """One page of a paginated listing (``user_list``, ``keypair_list``, ``agent_list``)."""

    model_config = ConfigDict(frozen=True)

    items: list[Record]
    total: int
    offset: int
    limit: int


def decode_record(record: Any) -> Any:
    """``record`` with each :data:`JSON_FIELDS` string parsed (nested records too)."""
    if isinstance(record, list):
        return [decode_record(item) for item in record]
    if not isinstance(record, dict):
        return record
    decoded: Record = {}
    for key, value in record.items():
        if key in JSON_FIELDS and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass  # shown as the server sent it
        elif isinstance(value, dict | list):
            value = decode_record(value)
        decoded[key] = value
    return decoded


def _json_or_none(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(dict(value))


def _not_found(what: str, ref: str) -> NotFound:
    return NotFound(404, {"type": "object-not-found", "title": f"No such {what}.", "msg": ref})


class AsyncAdmin:
    """The admin operations over one :class:`~kernelhub.sdk.aio.AsyncClient` (its keypair's
    role decides what the server allows)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    # ---- the wire -----------------------------------------------------------------------------
    async def query(self, text: str, variables: Mapping[str, Any] | None = None) -> Any:
        """One GraphQL document; its ``data`` with JSON-string fields decoded."""
        return decode_record(await self.client.graphql(text, dict(variables or {})))

    async def _field(self, text: str, variables: Mapping[str, Any], field: str) -> Any:
        return (await self.query(text, variables)).get(field)

    async def _mutate(self, field: str, text: str, variables: Mapping[str, Any]) -> Record:
        """A mutation's ``{ok, msg, ...}``; ``ok: false`` raises naming the mutation."""
        answer = await self._field(text, variables, field)
        if not isinstance(answer, dict):
            raise InvalidRequest(
                400, {"type": "graphql-error", "title": f"{field} answered nothing"}
            )
        if not answer.get("ok"):
            raise InvalidRequest(
                400,
                {
                    "type": "mutation-refused",
                    "title": f"{field} refused",
                    "msg": answer.get("msg") or None,
                },
            )
        return dict(answer)

    async def _page(
        self,
        root: str,
        declared: Sequence[tuple[str, str, Any]],
        fields: str,
        limit: int,
        offset: int,
    ) -> AdminPage:
        """A ``*_list`` query built as the official client's ``execute_paginated_query``."""
        decls = ", ".join(f"${name}: {kind}" for name, kind, _ in declared)
        args = ", ".join(f"{name}:${name}" for name, _, _ in declared)
        text = (
            f"query($limit:Int!, $offset:Int!, {decls}) {{ {root}("
            f"limit:$limit, offset:$offset, {args}) {{ items {{ {fields} }} total_count }} }}"
        )
        variables = {name: value for name, _, value in declared}
        listing = await self._field(text, {**variables, "limit": limit, "offset": offset}, root)
        return AdminPage(
            items=list(listing["items"]),
            total=int(listing["total_count"]),
            offset=offset,
            limit=limit,
        )

    # ---- domains ------------------------------------------------------------------------------
    async def domains(self) -> list[Record]:
        return list(await self._field(f"query {{ domains {{ {DOMAIN_FIELDS} }} }}", {}, "domains"))

    async def domain(self, name: str) -> Record:
        text = f"query($name: String) {{ domain(name: $name) {{ {DOMAIN_FIELDS} }} }}"
        found = await self._field(text, {"name": name}, "domain")
        if found is None:
            raise _not_found("domain", name)
        return dict(found)

    async def create_domain(
        self,
        name: str,
        *,
        description: str = "",
        is_active: bool = True,
        total_resource_slots: Mapping[str, str] | None = None,
        allowed_vfolder_hosts: Mapping[str, Any] | None = None,
        allowed_docker_registries: Sequence[str] | None = None,
    ) -> Record:
        text = (
            "mutation($name: String!, $input: DomainInput!) {"
            " create_domain(name: $name, props: $input) {"
            " ok msg domain { name description is_active total_resource_slots } } }"
        )
        props = {
            "description": description,
            "is_active": is_active,
            "total_resource_slots": json.dumps(dict(total_resource_slots or {})),
            "allowed_vfolder_hosts": _json_or_none(allowed_vfolder_hosts),
            "allowed_docker_registries": list(allowed_docker_registries or []),
            "integration_id": None,
        }
        return await self._mutate("create_domain", text, {"name": name, "input": props})

    async def update_domain(
        self,
        name: str,
        *,
        description: str | None = None,
        is_active: bool | None = None,
        total_resource_slots: Mapping[str, str] | None = None,
        allowed_vfolder_hosts: Mapping[str, Any] | None = None,
        allowed_docker_registries: Sequence[str] | None = None,
    ) -> Record:
        """Only what is given changes (a ``None`` is sent as null: unchanged)."""
        text = (
            "mutation($name: String!, $input: ModifyDomainInput!) {"
            " modify_domain(name: $name, props: $input) { ok msg } }"
        )
        props = {
            "name": None,
            "description": description,
            "is_active": is_active,
            "total_resource_slots": _json_or_none(total_resource_slots),
            "allowed_vfolder_hosts": _json_or_none(allowed_vfolder_hosts),
            "allowed_docker_registries": (
                None if allowed_docker_registries is None else list(allowed_docker_registries)
            ),
            "integration_id": None,
        }
        return await self._mutate("modify_domain", text, {"name": name, "input": props})

    async def delete_domain(self, name: str) -> Record:
        """Deactivates it (23.03's ``delete_domain``); :meth:`purge_domain` removes it."""
        text = "mutation($name: String!) { delete_domain(name: $name) { ok msg } }"
        return await self._mutate("delete_domain", text, {"name": name})

    async def purge_domain(self, name: str) -> Record:
        text = "mutation($name: String!) { purge_domain(name: $name) { ok msg } }"
        return await self._mutate("purge_domain", text, {"name": name})

    # ---- projects (23.03's "groups") ----------------------------------------------------------
    async def projects(self, domain: str | None = None) -> list[Record]:
        text = (
            "query($domain_name: String) {"
            f" groups(domain_name: $domain_name) {{ {PROJECT_FIELDS} }} }}"
        )
        return list(await self._field(text, {"domain_name": domain}, "groups"))

    async def project(self, ref: str | uuid.UUID, domain: str | None = None) -> Record:
        """A project by id, or by name (in ``domain`` when several domains have one)."""
        try:
            project_id = uuid.UUID(str(ref))
        except ValueError:
            text = (
                "query($name: String!, $domain_name: String) {"
                f" groups_by_name(name: $name, domain_name: $domain_name) {{ {PROJECT_FIELDS} }} }}"
            )
            found = await self._field(
                text, {"name": str(ref), "domain_name": domain}, "groups_by_name"
            )
            if not found:
                raise _not_found("project", str(ref)) from None
            if len(found) > 1:
                domains = ", ".join(sorted(str(p.get("domain_name")) for p in found))
                raise InvalidRequest(
                    400,
                    {
                        "type": "ambiguous-project",
                        "title": f"several projects are named {ref}",
                        "msg": f"in {domains}: name the domain or give the project's id",
                    },
                ) from None
            return dict(found[0])
        text = (
            "query($gid: UUID!, $domain_name: String) {"
            f" group(id: $gid, domain_name: $domain_name) {{ {PROJECT_FIELDS} }} }}"
        )
        group = await self._field(text, {"gid": str(project_id), "domain_name": domain}, "group")
        if group is None:
            raise _not_found("project", str(ref))
        return dict(group)

    async def create_project(
        self,
        domain: str,
        name: str,
        *,
        description: str = "",
        is_active: bool = True,
        total_resource_slots: Mapping[str, str] | None = None,
        allowed_vfolder_hosts: Mapping[str, Any] | None = None,
    ) -> Record:
        text = (
            "mutation($name: String!, $input: GroupInput!) {"
            " create_group(name: $name, props: $input) {"
            " ok msg group { id domain_name name } } }"
        )
        props = {
            "description": description,
            "is_active": is_active,
            "domain_name": domain,
            "total_resource_slots": json.dumps(dict(total_resource_slots or {})),
            "allowed_vfolder_hosts": _json_or_none(allowed_vfolder_hosts),
            "integration_id": None,
        }
        return await self._mutate("create_group", text, {"name": name, "input": props})

    async def update_project(
        self,
        project_id: str | uuid.UUID,
        *,
        name: str | None = None,
        description: str | None = None,
        is_active: bool | None = None,
        total_resource_slots: Mapping[str, str] | None = None,
        allowed_vfolder_hosts: Mapping[str, Any] | None = None,
    ) -> Record:
        props = {
            "name": name,
            "description": description,
            "is_active": is_active,
            "total_resource_slots": _json_or_none(total_resource_slots),
            "allowed_vfolder_hosts": _json_or_none(allowed_vfolder_hosts),
            "integration_id": None,
        }
        return await self._modify_group(project_id, props)

    async def _modify_group(self, project_id: str | uuid.UUID, props: Record) -> Record:
        text = (
            "mutation($gid: UUID!, $input: ModifyGroupInput!) {"
            " modify_group(gid: $gid, props: $input) { ok msg } }"
        )
        return await self._mutate("modify_group", text, {"gid": str(project_id), "input": props})

    async def add_members(
        self, project_id: str | uuid.UUID, user_ids: Sequence[str | uuid.UUID]
    ) -> Record:
        props = {"user_update_mode": "add", "user_uuids": [str(u) for u in user_ids]}
        return await self._modify_group(project_id, props)

    async def remove_members(
        self, project_id: str | uuid.UUID, user_ids: Sequence[str | uuid.UUID]
    ) -> Record:
        props = {"user_update_mode": "remove", "user_uuids": [str(u) for u in user_ids]}
        return await self._modify_group(project_id, props)

    async def delete_project(self, project_id: str | uuid.UUID) -> Record:
        """Deactivates it; :meth:`purge_project` removes it."""
        text = "mutation($gid: UUID!) { delete_group(gid: $gid) { ok msg } }"
        return await self._mutate("delete_group", text, {"gid": str(project_id)})

    async def purge_project(self, project_id: str | uuid.UUID) -> Record:
        text = "mutation($gid: UUID!) { purge_group(gid: $gid) { ok msg } }"
        return await self._mutate("purge_group", text, {"gid": str(project_id)})

    # ---- users --------------------------------------------------------------------------------
    async def users(
        self,
        *,
        status: str | None = None,
        project_id: str | uuid.UUID | None = None,
        domain: str | None = None,
        filter: str | None = None,
        order: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> AdminPage:
        """A page of users; ``domain`` (23.03's ``domain_name``, which the official client
        never sends) is sent only when given."""
        declared = [
            ("status", "String", status),
            ("group_id", "UUID", None if project_id is None else str(project_id)),
            ("filter", "String", filter),
            ("order", "String", order),
        ]
        if domain is not None:
            declared.append(("domain_name", "String", domain))
        return await self._page("user_list", declared, USER_FIELDS, limit, offset)

    async def user(self, email: str | None = None) -> Record:
        """A user by e-mail; without one, the caller's own record."""
        if email is None:
            found = await self._field(f"query {{ user {{ {USER_DETAIL_FIELDS} }} }}", {}, "user")
        else:
            text = f"query($email: String) {{ user(email: $email) {{ {USER_DETAIL_FIELDS} }} }}"
            found = await self._field(text, {"email": email}, "user")
        if found is None:
            raise _not_found("user", email or "(you)")
        return dict(found)

    async def create_user(
        self,
        domain: str,
        email: str,
        password: str,
        *,
        username: str | None = None,
        full_name: str | None = None,
        role: str = "user",
        status: str = "active",
        need_password_change: bool = False,
        description: str = "",
        allowed_client_ip: Sequence[str] | None = None,
        project_ids: Sequence[str | uuid.UUID] | None = None,
    ) -> Record:
        """The password goes to the server once (it stores a salted hash of it)."""
        text = (
            "mutation($email: String!, $input: UserInput!) {"
            " create_user(email: $email, props: $input) {"
            " ok msg user { domain_name email username uuid } } }"
        )
        props = {
            "password": password,
            "username": username,
            "full_name": full_name,
            "role": role,
            "status": status,
            "need_password_change": need_password_change,
            "description": description,
            "domain_name": domain,
            "totp_activated": False,
            "group_ids": None if project_ids is None else [str(p) for p in project_ids],
            "allowed_client_ip": None if allowed_client_ip is None else list(allowed_client_ip),
        }
        return await self._mutate("create_user", text, {"email": email, "input": props})

    async def update_user(
        self,
        email: str,
        *,
        password: str | None = None,
        username: str | None = None,
        full_name: str | None = None,
        role: str | None = None,
        status: str | None = None,
        need_password_change: bool | None = None,
        description: str | None = None,
        allowed_client_ip: Sequence[str] | None = None,
        project_ids: Sequence[str | uuid.UUID] | None = None,
    ) -> Record:
        text = (
            "mutation($email: String!, $input: ModifyUserInput!) {"
            " modify_user(email: $email, props: $input) { ok msg } }"
        )
        props = {
            "password": password,
            "username": username,
            "full_name": full_name,
            "domain_name": None,
            "role": role,
            "status": status,
            "need_password_change": need_password_change,
            "description": description,
            "allowed_client_ip": None if allowed_client_ip is None else list(allowed_client_ip),
            "totp_activated": None,
            "group_ids": None if project_ids is None else [str(p) for p in project_ids],
        }
        return await self._mutate("modify_user", text, {"email": email, "input": props})

    async def delete_user(self, email: str, *, force: bool = False) -> Record:
        """Deactivates the user. One with live sessions is refused unless ``force`` (a
        kernelhub argument, sent only when set)."""
        if force:
            text = (
                "mutation($email: String!, $force: Boolean) {"
                " delete_user(email: $email, force: $force) { ok msg } }"
            )
            return await self._mutate("delete_user", text, {"email": email, "force": True})
        text = "mutation($email: String!) { delete_user(email: $email) { ok msg } }"
        return await self._mutate("delete_user", text, {"email": email})

    async def purge_user(self, email: str, *, force: bool = False) -> Record:
        """Removes the user and their keypairs (``force``: as :meth:`delete_user`)."""
        props = {"purge_shared_vfolders": False}
        if force:
            text = (
                "mutation($email: String!, $input: PurgeUserInput!, $force: Boolean) {"
                " purge_user(email: $email, props: $input, force: $force) { ok msg } }"
            )
            return await self._mutate(
                "purge_user", text, {"email": email, "input": props, "force": True}
            )
        text = (
            "mutation($email: String!, $input: PurgeUserInput!) {"
            " purge_user(email: $email, props: $input) { ok msg } }"
        )
        return await self._mutate("purge_user", text, {"email": email, "input": props})

    # ---- keypairs -----------------------------------------------------------------------------
    async def keypairs(
        self,
        *,
        email: str | None = None,
        is_active: bool | None = None,
        domain: str | None = None,
        filter: str | None = None,
        order: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> AdminPage:
        declared = [
            ("is_active", "Boolean", is_active),
            ("domain_name", "String", domain),
            ("filter", "String", filter),
            ("order", "String", order),
        ]
        if email is not None:
            declared.append(("email", "String", email))
        return await self._page("keypair_list", declared, KEYPAIR_FIELDS, limit, offset)

    async def keypair(self, access_key: str | None = None) -> Record:
        """A keypair (without its secret key); without one, the caller's own."""
        if access_key is None:
            found = await self._field(f"query {{ keypair {{ {KEYPAIR_FIELDS} }} }}", {}, "keypair")
        else:
            text = (
                "query($access_key: String) {"
                f" keypair(access_key: $access_key) {{ {KEYPAIR_FIELDS} }} }}"
            )
            found = await self._field(text, {"access_key": access_key}, "keypair")
        if found is None:
            raise _not_found("keypair", access_key or "(yours)")
        return dict(found)

    async def create_keypair(
        self,
        email: str,
        *,
        resource_policy: str = "default",
        is_active: bool = True,
        is_admin: bool = False,
        rate_limit: int = 5000,
    ) -> Record:
        """Issues a keypair for the user; the answer's ``keypair`` has both keys (the only
        time the secret key is shown)."""
        text = (
            "mutation($user_id: String!, $input: KeyPairInput!) {"
            " create_keypair(user_id: $user_id, props: $input) {"
            " ok msg keypair { access_key secret_key } } }"
        )
        props = {
            "is_active": is_active,
            "is_admin": is_admin,
            "resource_policy": resource_policy,
            "rate_limit": rate_limit,
        }
        return await self._mutate("create_keypair", text, {"user_id": email, "input": props})

    async def update_keypair(
        self,
        access_key: str,
        *,
        is_active: bool | None = None,
        is_admin: bool | None = None,
        resource_policy: str | None = None,
        rate_limit: int | None = None,
    ) -> Record:
        text = (
            "mutation($access_key: String!, $input: ModifyKeyPairInput!) {"
            " modify_keypair(access_key: $access_key, props: $input) { ok msg } }"
        )
        props = {
            "is_active": is_active,
            "is_admin": is_admin,
            "resource_policy": resource_policy,
            "rate_limit": rate_limit,
        }
        return await self._mutate(
            "modify_keypair", text, {"access_key": access_key, "input": props}
        )

    async def activate_keypair(self, access_key: str) -> Record:
        return await self.update_keypair(access_key, is_active=True)

    async def deactivate_keypair(self, access_key: str) -> Record:
        """Its requests are refused from then on (also streams already open)."""
        return await self.update_keypair(access_key, is_active=False)

    async def delete_keypair(self, access_key: str) -> Record:
        text = (
            "mutation($access_key: String!) { delete_keypair(access_key: $access_key) { ok msg } }"
        )
        return await self._mutate("delete_keypair", text, {"access_key": access_key})

    # ---- keypair resource policies ------------------------------------------------------------
    async def policies(self) -> list[Record]:
        text = f"query {{ keypair_resource_policies {{ {POLICY_FIELDS} }} }}"
        return list(await self._field(text, {}, "keypair_resource_policies"))

    async def policy(self, name: str) -> Record:
        text = (
            f"query($name: String) {{ keypair_resource_policy(name: $name) {{ {POLICY_FIELDS} }} }}"
        )
        found = await self._field(text, {"name": name}, "keypair_resource_policy")
        if found is None:
            raise _not_found("keypair resource policy", name)
        return dict(found)

    async def create_policy(
        self,
        name: str,
        *,
        default_for_unspecified: str = "UNLIMITED",
        total_resource_slots: Mapping[str, str] | None = None,
        max_session_lifetime: int = 0,
        max_concurrent_sessions: int = 30,
        max_containers_per_session: int = 1,
        max_vfolder_count: int = 10,
        max_vfolder_size: int = 0,
        idle_timeout: int = 1800,
        allowed_vfolder_hosts: Mapping[str, Any] | None = None,
        exec_timeout: float | None = None,
    ) -> Record:
        """The official client's defaults; ``exec_timeout`` (seconds a run may take,
        kernelhub's ``exec_timeout_s``) is sent only when given."""
        props: Record = {
            "default_for_unspecified": default_for_unspecified,
            "total_resource_slots": json.dumps(dict(total_resource_slots or {})),
            "max_session_lifetime": max_session_lifetime,
            "max_concurrent_sessions": max_concurrent_sessions,
            "max_containers_per_session": max_containers_per_session,
            "max_vfolder_count": max_vfolder_count,
            "max_vfolder_size": max_vfolder_size,
            "idle_timeout": idle_timeout,
            "allowed_vfolder_hosts": _json_or_none(allowed_vfolder_hosts),
        }
        if exec_timeout is not None:
            props["exec_timeout_s"] = exec_timeout
        text = (
            "mutation($name: String!, $input: CreateKeyPairResourcePolicyInput!) {"
            " create_keypair_resource_policy(name: $name, props: $input) {"
            " ok msg resource_policy { name } } }"
        )
        return await self._mutate(
            "create_keypair_resource_policy", text, {"name": name, "input": props}
        )

    async def update_policy(
        self,
        name: str,
        *,
        default_for_unspecified: str | None = None,
        total_resource_slots: Mapping[str, str] | None = None,
        max_session_lifetime: int | None = None,
        max_concurrent_sessions: int | None = None,
        max_containers_per_session: int | None = None,
        max_vfolder_count: int | None = None,
        max_vfolder_size: int | None = None,
        idle_timeout: int | None = None,
        allowed_vfolder_hosts: Mapping[str, Any] | None = None,
        exec_timeout: float | None = None,
    ) -> Record:
        props: Record = {
            "default_for_unspecified": default_for_unspecified,
            "total_resource_slots": _json_or_none(total_resource_slots),
            "max_session_lifetime": max_session_lifetime,
            "max_concurrent_sessions": max_concurrent_sessions,
            "max_containers_per_session": max_containers_per_session,
            "max_vfolder_count": max_vfolder_count,
            "max_vfolder_size": max_vfolder_size,
            "idle_timeout": idle_timeout,
            "allowed_vfolder_hosts": _json_or_none(allowed_vfolder_hosts),
        }
        if exec_timeout is not None:
            props["exec_timeout_s"] = exec_timeout
        text = (
            "mutation($name: String!, $input: ModifyKeyPairResourcePolicyInput!) {"
            " modify_keypair_resource_policy(name: $name, props: $input) { ok msg } }"
        )
        return await self._mutate(
            "modify_keypair_resource_policy", text, {"name": name, "input": props}
        )

    async def delete_policy(self, name: str) -> Record:
        text = "mutation($name: String!) { delete_keypair_resource_policy(name: $name) { ok msg } }"
        return await self._mutate("delete_keypair_resource_policy", text, {"name": name})

    # ---- resource presets (23.03 manager names) -----------------------------------------------
    async def presets(self) -> list[Record]:
        text = f"query {{ resource_presets {{ {PRESET_FIELDS} }} }}"
        return list(await self._field(text, {}, "resource_presets"))

    async def create_preset(
        self,
        name: str,
        resource_slots: Mapping[str, str],
        *,
        shared_memory: str | None = None,
        scaling_group: str | None = None,
    ) -> Record:
        props: Record = {
            "resource_slots": json.dumps(dict(resource_slots)),
            "shared_memory": shared_memory,
        }
        if scaling_group is not None:
            props["scaling_group_name"] = scaling_group
        text = (
            "mutation($name: String!, $input: CreateResourcePresetInput!) {"
            " create_resource_preset(name: $name, props: $input) {"
            " ok msg resource_preset { name } } }"
        )
        return await self._mutate("create_resource_preset", text, {"name": name, "input": props})

    async def update_preset(
        self,
        name: str,
        *,
        resource_slots: Mapping[str, str] | None = None,
        shared_memory: str | None = None,
    ) -> Record:
        props = {"resource_slots": _json_or_none(resource_slots), "shared_memory": shared_memory}
        text = (
            "mutation($name: String!, $input: ModifyResourcePresetInput!) {"
            " modify_resource_preset(name: $name, props: $input) { ok msg } }"
        )
        return await self._mutate("modify_resource_preset", text, {"name": name, "input": props})

    async def delete_preset(self, name: str) -> Record:
        text = "mutation($name: String!) { delete_resource_preset(name: $name) { ok msg } }"
        return await self._mutate("delete_resource_preset", text, {"name": name})

    # ---- scaling groups -----------------------------------------------------------------------
    async def scaling_groups(self, is_active: bool | None = None) -> list[Record]:
        text = (
            "query($is_active: Boolean) {"
            f" scaling_groups(is_active: $is_active) {{ {SGROUP_FIELDS} }} }}"
        )
        return list(await self._field(text, {"is_active": is_active}, "scaling_groups"))

    async def scaling_group(self, name: str) -> Record:
        text = f"query($name: String) {{ scaling_group(name: $name) {{ {SGROUP_DETAIL_FIELDS} }} }}"
        found = await self._field(text, {"name": name}, "scaling_group")
        if found is None:
            raise _not_found("scaling group", name)
        return dict(found)

    async def create_scaling_group(
        self,
        name: str,
        *,
        description: str = "",
        is_active: bool = True,
        is_public: bool = True,
        driver: str = "static",
        driver_opts: Mapping[str, Any] | None = None,
        scheduler: str = "fifo",
        scheduler_opts: Mapping[str, Any] | None = None,
        use_host_network: bool = False,
        wsproxy_addr: str | None = None,
        wsproxy_api_token: str | None = None,
    ) -> Record:
        props = {
            "description": description,
            "is_active": is_active,
            "is_public": is_public,
            "driver": driver,
            "driver_opts": json.dumps(dict(driver_opts or {})),
            "scheduler": scheduler,
            "scheduler_opts": json.dumps(dict(scheduler_opts or {})),
            "use_host_network": use_host_network,
            "wsproxy_addr": wsproxy_addr,
            "wsproxy_api_token": wsproxy_api_token,
        }
        text = (
            "mutation($name: String!, $input: CreateScalingGroupInput!) {"
            " create_scaling_group(name: $name, props: $input) {"
            " ok msg scaling_group { name } } }"
        )
        return await self._mutate("create_scaling_group", text, {"name": name, "input": props})

    async def update_scaling_group(
        self,
        name: str,
        *,
        description: str | None = None,
        is_active: bool | None = None,
        is_public: bool | None = None,
        driver: str | None = None,
        driver_opts: Mapping[str, Any] | None = None,
        scheduler: str | None = None,
        scheduler_opts: Mapping[str, Any] | None = None,
        use_host_network: bool | None = None,
        wsproxy_addr: str | None = None,
        wsproxy_api_token: str | None = None,
    ) -> Record:
        props = {
            "description": description,
            "is_active": is_active,
            "is_public": is_public,
            "driver": driver,
            "driver_opts": _json_or_none(driver_opts),
            "scheduler": scheduler,
            "scheduler_opts": _json_or_none(scheduler_opts),
            "use_host_network": use_host_network,
            "wsproxy_addr": wsproxy_addr,
            "wsproxy_api_token": wsproxy_api_token,
        }
        text = (
            "mutation($name: String!, $input: ModifyScalingGroupInput!) {"
            " modify_scaling_group(name: $name, props: $input) { ok msg } }"
        )
        return await self._mutate("modify_scaling_group", text, {"name": name, "input": props})

    async def delete_scaling_group(self, name: str) -> Record:
        text = "mutation($name: String!) { delete_scaling_group(name: $name) { ok msg } }"
        return await self._mutate("delete_scaling_group", text, {"name": name})

    async def associate_scaling_group(self, name: str, kind: str, target: str) -> Record:
        """Open the scaling group to a domain, a project (its id) or a keypair."""
        field, text, variables = _association(name, kind, target, dissociate=False)
        return await self._mutate(field, text, variables)

    async def dissociate_scaling_group(self, name: str, kind: str, target: str) -> Record:
        field, text, variables = _association(name, kind, target, dissociate=True)
        return await self._mutate(field, text, variables)

    # ---- images -------------------------------------------------------------------------------
    async def images(self, *, operation: bool = False) -> list[Record]:
        text = (
            "query($is_operation: Boolean) {"
            f" images(is_operation: $is_operation) {{ {IMAGE_FIELDS} }} }}"
        )
        return list(await self._field(text, {"is_operation": operation}, "images"))

    async def alias_image(
        self, alias: str, target: str, *, architecture: str | None = None
    ) -> Record:
        variables: Record = {"alias": alias, "target": target}
        if architecture is None:
            text = (
                "mutation($alias: String!, $target: String!) {"
                " alias_image(alias: $alias, target: $target) { ok msg } }"
            )
        else:
            text = (
                "mutation($alias: String!, $target: String!, $architecture: String) {"
                " alias_image(alias: $alias, target: $target, architecture: $architecture)"
                " { ok msg } }"
            )
            variables["architecture"] = architecture
        return await self._mutate("alias_image", text, variables)

    async def dealias_image(self, alias: str) -> Record:
        text = "mutation($alias: String!) { dealias_image(alias: $alias) { ok msg } }"
        return await self._mutate("dealias_image", text, {"alias": alias})

    # ---- agents -------------------------------------------------------------------------------
    async def agents(
        self,
        *,
        status: str = "ALIVE",
        scaling_group: str | None = None,
        filter: str | None = None,
        order: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> AdminPage:
        declared = [
            ("status", "String", status),
            ("scaling_group", "String", scaling_group),
            ("filter", "String", filter),
            ("order", "String", order),
        ]
        return await self._page("agent_list", declared, AGENT_FIELDS, limit, offset)

    async def agent(self, agent_id: str) -> Record:
        text = (
            "query($agent_id: String!) {"
            f" agent(agent_id: $agent_id) {{ {AGENT_DETAIL_FIELDS} }} }}"
        )
        found = await self._field(text, {"agent_id": agent_id}, "agent")
        if found is None:
            raise _not_found("agent", agent_id)
        return dict(found)


def _association(name: str, kind: str, target: str, *, dissociate: bool) -> tuple[str, str, Record]:
    """The root field, text and variables that (dis)associate a scaling group: the official
    client's texts for domains and projects, the 23.03 manager's for keypairs."""
    prefix = "disassociate" if dissociate else "associate"
    if kind == "domain":
        field = f"{prefix}_scaling_group_with_domain"
        text = (
            f"mutation($scaling_group: String!, $domain: String!) {{ {field}("
            "scaling_group: $scaling_group, domain: $domain) { ok msg } }"
        )
        return field, text, {"scaling_group": name, "domain": target}
    if kind == "project":
        field = f"{prefix}_scaling_group_with_user_group"
        kind_of_id = "String!" if dissociate else "UUID!"  # as 23.3.12 declares each
        text = (
            f"mutation($scaling_group: String!, $user_group: {kind_of_id}) {{ {field}("
            "scaling_group: $scaling_group, user_group: $user_group) { ok msg } }"
        )
        return field, text, {"scaling_group": name, "user_group": target}
    if kind == "keypair":
        field = f"{prefix}_scaling_group_with_keypair"
        text = (
            f"mutation($scaling_group: String!, $access_key: String!) {{ {field}("
            "scaling_group: $scaling_group, access_key: $access_key) { ok msg } }"
        )
        return field, text, {"scaling_group": name, "access_key": target}
    raise ValueError(f"a scaling group is associated with one of {', '.join(ASSOCIATION_KINDS)}")


class Admin(BlockingTwin):
    """The blocking twin of :class:`AsyncAdmin` over a :class:`~kernelhub.sdk.sync.Client`:
    every ``AsyncAdmin`` method, run on the client's event loop. Delegated rather than
    written twice, so the two cannot drift (as :mod:`kernelhub.sdk.sync` does for sessions)."""

    async_class = AsyncAdmin
