"""Keypair resource policies in the admin GraphQL schema, as ``backend.ai admin
keypair-resource-policy ...`` (23.3.12) asks: ``keypair_resource_policy(name)`` (no name:
the caller's own keypair's), ``keypair_resource_policies``, and create / modify / delete.

Writes are a superadmin's (a policy caps every keypair that names it, across domains).
Reads: a superadmin sees every policy; anyone else the policies of their own keypairs (a
name they do not hold reads as null, so names are not probed). A policy is set whole
(``SetPolicy``): a modify reads the current record and overlays the fields given, a null
field keeping its value. ``exec_timeout_s`` is kernelhub's own field (the longest one
execution may run), optional in both inputs. A policy some keypair still names is not
deleted: the tenancy decision refuses it naming the keypairs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ...domain.commands.tenancy import DeletePolicy, SetPolicy
from ...domain.errors import InvalidAPIParameters, ObjectNotFound
from .base import AdminArea, AdminCall, Resolvers
from .keys_rules import (
    bigint,
    count,
    default_for_unspecified,
    exec_timeout,
    slots,
    vfolder_hosts,
)
from .roles import require_superadmin

__all__ = ["AREA", "policy_changes", "policy_view"]

_FIELDS = """
  default_for_unspecified: String total_resource_slots: JSONString max_session_lifetime: Int
  max_concurrent_sessions: Int max_concurrent_sftp_sessions: Int
  max_containers_per_session: Int idle_timeout: BigInt allowed_vfolder_hosts: JSONString
  max_vfolder_count: Int max_vfolder_size: BigInt exec_timeout_s: Float
"""

_SDL = f"""
type KeyPairResourcePolicy {{
  name: String created_at: DateTime {_FIELDS}
}}

input CreateKeyPairResourcePolicyInput {{ {_FIELDS} }}
input ModifyKeyPairResourcePolicyInput {{ {_FIELDS} }}

type CreateKeyPairResourcePolicy {{
  ok: Boolean msg: String resource_policy: KeyPairResourcePolicy
}}
type ModifyKeyPairResourcePolicy {{ ok: Boolean msg: String }}
type DeleteKeyPairResourcePolicy {{ ok: Boolean msg: String }}

extend type Query {{
  keypair_resource_policy(name: String): KeyPairResourcePolicy
  keypair_resource_policies: [KeyPairResourcePolicy]
}}

extend type Mutation {{
  create_keypair_resource_policy(
    name: String!, props: CreateKeyPairResourcePolicyInput!
  ): CreateKeyPairResourcePolicy
  modify_keypair_resource_policy(
    name: String!, props: ModifyKeyPairResourcePolicyInput!
  ): ModifyKeyPairResourcePolicy
  delete_keypair_resource_policy(name: String!): DeleteKeyPairResourcePolicy
}}
"""


def _at_least_one(value: Any, field: str) -> int:
    return count(value, field, low=1)


_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "default_for_unspecified": default_for_unspecified,
    "total_resource_slots": slots,
    "max_session_lifetime": count,
    "max_concurrent_sessions": count,
    "max_concurrent_sftp_sessions": count,
    "max_containers_per_session": _at_least_one,
    "max_vfolder_count": count,
    "max_vfolder_size": bigint,
    "idle_timeout": bigint,
    "allowed_vfolder_hosts": vfolder_hosts,
    "exec_timeout_s": exec_timeout,
}
"""Each field of a policy and its check (:mod:`.keys_rules`); a refusal names the field."""

_JSON_FIELDS = ("total_resource_slots", "allowed_vfolder_hosts")


def policy_changes(props: dict[str, Any]) -> dict[str, Any]:
    """The fields ``props`` gives (not null), each checked; an unknown key is refused."""
    unknown = sorted(set(props) - set(_CHECKS))
    if unknown:  # GraphQL validation already refuses these; kept for direct callers
        raise InvalidAPIParameters(f"unknown policy field(s): {', '.join(unknown)}")
    return {k: check(props[k], k) for k, check in _CHECKS.items() if props.get(k) is not None}


def policy_view(record: dict[str, Any]) -> dict[str, Any]:
    """A ``KeyPairResourcePolicy`` (JSONString fields JSON-encoded, as graphene sends them)."""
    view: dict[str, Any] = {k: record.get(k) for k in _CHECKS}
    for name in _JSON_FIELDS:
        view[name] = json.dumps(record.get(name) or {})
    view.update(name=record.get("name"), created_at=record.get("created_at"))
    return view


def _whole(record: dict[str, Any]) -> dict[str, Any]:
    """A stored policy as ``SetPolicy`` fields (what a modify overlays its changes on)."""
    return {k: record[k] for k in _CHECKS if record.get(k) is not None}


class _Policies:
    def __init__(self, call: AdminCall) -> None:
        self.call = call
        self.lookups = call.ctx.lookups

    async def _own_names(self) -> set[str]:
        """The policies of the caller's own keypairs."""
        caller = self.call.caller
        names = {
            str(k.get("resource_policy")) for k in await self.lookups.keypairs_of(caller.user_id)
        }
        names.add(str(caller.keypair.get("resource_policy")))
        return names

    async def keypair_resource_policy(
        self, _info: Any, name: str | None = None
    ) -> dict[str, Any] | None:
        caller = self.call.caller
        if name is None:
            name = str(caller.keypair.get("resource_policy"))
        elif not caller.is_superadmin and name not in await self._own_names():
            return None
        record = await self.lookups.policy(name)
        return None if record is None else policy_view(dict(record))

    async def keypair_resource_policies(self, _info: Any) -> list[dict[str, Any]]:
        if self.call.caller.is_superadmin:
            records = await self.lookups.every("policy")
        else:
            records = [
                r
                for n in sorted(await self._own_names())
                if (r := await self.lookups.policy(n)) is not None
            ]
        return [policy_view(dict(r)) for r in sorted(records, key=lambda r: str(r.get("name")))]

    async def create_keypair_resource_policy(
        self, _info: Any, name: str, props: dict[str, Any]
    ) -> dict[str, Any]:
        require_superadmin(self.call.caller, "create keypair resource policies")
        changes = policy_changes(props)
        if await self.lookups.policy(name) is not None:
            raise InvalidAPIParameters(f"keypair resource policy {name!r} already exists")
        await self.call.tenancy(SetPolicy(name=name, **changes))
        record = await self.lookups.policy(name) or {"name": name, **changes}
        return {"ok": True, "msg": "success", "resource_policy": policy_view(dict(record))}

    async def _existing(self, name: str) -> dict[str, Any]:
        record = await self.lookups.policy(name)
        if record is None:
            raise ObjectNotFound(
                "keypair resource policy", f"keypair resource policy {name!r} does not exist"
            )
        return dict(record)

    async def modify_keypair_resource_policy(
        self, _info: Any, name: str, props: dict[str, Any]
    ) -> dict[str, Any]:
        require_superadmin(self.call.caller, "modify keypair resource policies")
        changes = policy_changes(props)
        current = await self._existing(name)
        await self.call.tenancy(SetPolicy(name=name, **{**_whole(current), **changes}))
        return {"ok": True, "msg": "success"}

    async def delete_keypair_resource_policy(self, _info: Any, name: str) -> dict[str, Any]:
        require_superadmin(self.call.caller, "delete keypair resource policies")
        await self._existing(name)
        await self.call.tenancy(DeletePolicy(name=name))
        return {"ok": True, "msg": "success"}


def _resolvers(call: AdminCall) -> Resolvers:
    area = _Policies(call)
    return {
        "keypair_resource_policy": area.keypair_resource_policy,
        "keypair_resource_policies": area.keypair_resource_policies,
        "create_keypair_resource_policy": area.create_keypair_resource_policy,
        "modify_keypair_resource_policy": area.modify_keypair_resource_policy,
        "delete_keypair_resource_policy": area.delete_keypair_resource_policy,
    }


AREA = AdminArea("policies", sdl=_SDL, resolvers=_resolvers)
