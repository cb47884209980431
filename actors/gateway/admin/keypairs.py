"""Keypairs in the admin GraphQL schema, as ``backend.ai admin keypair ...`` (23.3.12) asks:
``keypairs``, ``keypair_list`` (paginated), and ``create_keypair`` / ``modify_keypair`` /
``delete_keypair``.

Who may do what (:mod:`.keys_rules`): a superadmin anything; a domain admin the keypairs of
their domain's users, never a superadmin's; a user lists their own keypairs and changes none.
What a keypair may be given (:mod:`.keys_rules`): ``is_admin`` only on the keypair of a user
whose role is admin or superadmin (the admin surface trusts the flag); from a domain admin,
only a policy some keypair of their domain already holds (``default`` always; an unknown
policy and one not open to the domain read the same 404) and a rate limit up to the higher of
10000 and their domain's highest; and never a new policy or rate limit for their own
keypairs (a superadmin's to raise). A superadmin gives any existing policy and rate limit.

A secret key is shown to its owner only, and once in the answer to ``create_keypair`` (the
admin who issued it hands it over); a listing of someone else's keypairs says ``null``.

``KeyPair.user_id`` is the owner's e-mail, as in 23.03 (the official client prints it under
"Email"); ``user`` is the owner's UUID and ``projects`` the names of their projects.
Every change goes through :meth:`.base.AdminCall.tenancy` (who asked is in the event).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from ...domain.commands.tenancy import DeleteKeypair, IssueKeypair, UpdateKeypair
from ...domain.errors import GenericBadRequest, ObjectNotFound
from ..context import LIVE
from ..gql_filter import (
    FieldSpec,
    QueryLanguageError,
    moment_of,
    parse_filter,
    parse_order,
    select,
)
from .base import AdminArea, AdminCall, Resolvers, check_page
from .keys_rules import (
    DEFAULT_POLICY,
    DomainGrants,
    count,
    domain_grants,
    keypair_scope,
    policy_not_open,
    refuse_given,
    require_admin_flag_fits_role,
    require_grantable,
    require_keypair_admin,
)

__all__ = ["AREA", "FILTER_COLUMNS", "filter_row", "keypair_view"]

_SDL = """
extend type KeyPair { user: UUID projects: [String] }

type KeyPairList { items: [KeyPair]! total_count: Int! }

input KeyPairInput {
  is_active: Boolean is_admin: Boolean resource_policy: String concurrency_limit: Int
  rate_limit: Int
}

input ModifyKeyPairInput {
  is_active: Boolean is_admin: Boolean resource_policy: String concurrency_limit: Int
  rate_limit: Int
}

type CreateKeyPair { ok: Boolean msg: String keypair: KeyPair }
type ModifyKeyPair { ok: Boolean msg: String }
type DeleteKeyPair { ok: Boolean msg: String }

extend type Query {
  keypairs(domain_name: String, email: String, is_active: Boolean): [KeyPair]
  keypair_list(
    limit: Int!, offset: Int!, filter: String, order: String, domain_name: String,
    email: String, is_active: Boolean
  ): KeyPairList
}

extend type Mutation {
  create_keypair(user_id: String!, props: KeyPairInput!): CreateKeyPair
  modify_keypair(access_key: String!, props: ModifyKeyPairInput!): ModifyKeyPair
  delete_keypair(access_key: String!): DeleteKeyPair
}
"""

_LEGACY = {"concurrency_limit": "use the resource policy's max_concurrent_sessions"}

_FLAG = FieldSpec("enum", ("FALSE", "TRUE"))
FILTER_COLUMNS: dict[str, FieldSpec] = {
    "access_key": FieldSpec("str"),
    "user_id": FieldSpec("str"),
    "email": FieldSpec("str"),
    "full_name": FieldSpec("str"),
    "is_active": _FLAG,
    "is_admin": _FLAG,
    "resource_policy": FieldSpec("str"),
    "created_at": FieldSpec("time"),
    "modified_at": FieldSpec("time"),
    "last_used": FieldSpec("time"),
    "rate_limit": FieldSpec("int"),
    "num_queries": FieldSpec("int"),
}
"""23.03's ``KeyPair._queryfilter_fieldspec`` (``user_id`` is the owner's UUID, ``email``
their e-mail): what ``keypair_list``'s ``filter`` and ``order`` may name. A flag compares
with ``== true``/``== false`` (``is true`` is refused: the filter's ``is`` is identity)."""
_IS_ON_FLAG = re.compile(r"\b(?:is_active|is_admin)\s+(?:is|isnot)\b")


def filter_row(record: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """The columns of :data:`FILTER_COLUMNS` for one keypair and its owner."""
    return {
        "access_key": record.get("access_key"),
        "user_id": str(record.get("user_id")),
        "email": user.get("email"),
        "full_name": user.get("full_name"),
        "is_active": "TRUE" if record.get("is_active", True) else "FALSE",
        "is_admin": "TRUE" if record.get("is_admin") else "FALSE",
        "resource_policy": record.get("resource_policy"),
        "created_at": moment_of(record.get("created_at")),
        "modified_at": moment_of(record.get("modified_at")),
        "last_used": moment_of(record.get("last_used")),
        "rate_limit": record.get("rate_limit"),
        "num_queries": record.get("num_queries", 0),
    }


def keypair_view(
    call: AdminCall,
    record: dict[str, Any],
    user: dict[str, Any],
    *,
    secret: str | None = None,
) -> dict[str, Any]:
    """A ``KeyPair`` for the caller: the read model's record, never its ciphertext. The
    secret is shown to the keypair's owner (``secret``: the one just issued); what costs a
    read (the secret, live sessions, projects) is read only when the query asks for it."""
    access_key = str(record["access_key"])
    owner = str(record["user_id"])

    async def secret_key(_info: Any) -> str | None:
        if secret is not None:
            return secret
        if owner != call.caller.user_id:
            return None
        return await call.ctx.auth.secret_of(access_key)

    async def concurrency_used(_info: Any) -> int:
        page = await call.ctx.models.sessions(owner=access_key, statuses=LIVE, limit=1)
        return page.total

    async def projects(_info: Any) -> list[str]:
        return sorted(str(p["name"]) for p in await call.ctx.lookups.projects_of(owner))

    return {
        "user_id": user.get("email"),
        "user": owner,
        "access_key": access_key,
        "secret_key": secret_key,
        "is_active": record.get("is_active", True),
        "is_admin": record.get("is_admin", False),
        "resource_policy": record.get("resource_policy"),
        "created_at": record.get("created_at"),
        "modified_at": record.get("modified_at"),
        "last_used": record.get("last_used"),
        "rate_limit": record.get("rate_limit"),
        "num_queries": record.get("num_queries", 0),
        "ssh_public_key": record.get("ssh_public_key"),
        "concurrency_used": concurrency_used,
        "projects": projects,
        "user_info": {"email": user.get("email"), "full_name": user.get("full_name")},
    }


class _Keypairs:
    """The area's resolvers for one request."""

    def __init__(self, call: AdminCall) -> None:
        self.call = call
        self.lookups = call.ctx.lookups

    # ---- reads --------------------------------------------------------------------------
    async def _listed(
        self, domain_name: str | None, email: str | None, is_active: bool | None
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The keypairs the caller may list (each with its owner), narrowed as asked,
        newest first."""
        caller = self.call.caller
        own_email = (caller.user or {}).get("email")
        scope = keypair_scope(caller, caller.user_id, own_email, domain_name, email)
        if email is not None:
            wanted = await self.lookups.user_by_email(email)
            if wanted is None or not scope.admits(wanted):
                return []
            users = {str(wanted["user_id"]): dict(wanted)}
            records = await self.lookups.keypairs_of(str(wanted["user_id"]))
        elif scope.user_id is not None:
            users = {caller.user_id: dict(caller.user or {})}
            records = await self.lookups.keypairs_of(scope.user_id)
        else:
            users = {str(u["user_id"]): dict(u) for u in await self.lookups.every("user")}
            records = await self.lookups.every("keypair")
        rows = []
        for record in records:
            user = users.get(str(record.get("user_id")))
            if user is None or not scope.admits(user):
                continue
            if is_active is not None and bool(record.get("is_active", True)) != is_active:
                continue
            rows.append((dict(record), user))
        rows.sort(key=lambda r: (str(r[0].get("created_at") or ""), r[0]["access_key"]))
        rows.reverse()
        return rows

    async def keypairs(
        self,
        _info: Any,
        domain_name: str | None = None,
        email: str | None = None,
        is_active: bool | None = None,
    ) -> list[dict[str, Any]]:
        rows = await self._listed(domain_name, email, is_active)
        return [keypair_view(self.call, record, user) for record, user in rows]

    async def keypair_list(
        self,
        _info: Any,
        limit: int,
        offset: int,
        filter: str | None = None,
        order: str | None = None,
        domain_name: str | None = None,
        email: str | None = None,
        is_active: bool | None = None,
    ) -> dict[str, Any]:
        check_page(limit, offset)
        keep = parse_filter(filter, fields=FILTER_COLUMNS) if filter else None
        if filter and _IS_ON_FLAG.search(filter):
            raise QueryLanguageError("filter", "compare is_active/is_admin with == true/false")
        sort = parse_order(order, fields=FILTER_COLUMNS) if order else None
        rows = await self._listed(domain_name, email, is_active)
        chosen = select([(filter_row(r, u), (r, u)) for r, u in rows], keep, sort)
        page = chosen[offset : offset + limit]
        items = [keypair_view(self.call, record, user) for record, user in page]
        return {"items": items, "total_count": len(chosen)}

    # ---- writes -------------------------------------------------------------------------
    async def _owner(self, access_key: str, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The keypair and its owner, once the caller may ``what`` them (an unknown keypair
        is a 404 to a superadmin, the same 403 as another domain's to anyone else)."""
        record = await self.lookups.keypair(access_key)
        user = await self.lookups.user(str(record["user_id"])) if record else None
        if record is None and self.call.caller.is_superadmin:
            raise ObjectNotFound("keypair", f"keypair {access_key} does not exist")
        require_keypair_admin(self.call.caller, user, what)
        assert record is not None  # a superadmin got the 404 above, anyone else the 403
        return dict(record), dict(user or {})

    async def _user_named(self, user_id: str) -> dict[str, Any] | None:
        """``create_keypair``'s ``user_id``: the owner's e-mail, as 23.03 takes it (a UUID is
        taken too, as ``kh admin`` may send one)."""
        found = await self.lookups.user_by_email(user_id)
        if found is None:
            try:
                found = await self.lookups.user(str(uuid.UUID(user_id)))
            except ValueError:
                found = None
        return dict(found) if found else None

    async def _grants(self) -> DomainGrants | None:
        """What a domain admin may hand out in their domain (a superadmin: no bound)."""
        caller = self.call.caller
        if caller.is_superadmin:
            return None
        users = {str(u["user_id"]): dict(u) for u in await self.lookups.every("user")}
        return domain_grants(caller.domain, users, await self.lookups.every("keypair"))

    async def _check_grant(
        self,
        user: dict[str, Any],
        change: dict[str, Any],
        current: dict[str, Any] | None,
    ) -> None:
        """The rules of :mod:`.keys_rules` on what ``change`` gives a keypair of ``user``:
        the admin flag only for an admin's keypair, and a domain admin's bounds on the
        policy and rate limit; then the policy must exist (the same 404 as one not open)."""
        caller = self.call.caller
        require_admin_flag_fits_role(user, change.get("is_admin"))
        own = str(user.get("user_id")) == caller.user_id
        require_grantable(
            caller,
            None if own else await self._grants(),
            own=own,
            current=current,
            own_keypairs=await self.lookups.keypairs_of(caller.user_id) if own else (),
            resource_policy=change.get("resource_policy"),
            rate_limit=change.get("rate_limit"),
        )
        name = change.get("resource_policy")
        if name is not None and await self.lookups.policy(name) is None:
            raise policy_not_open(caller, name)

    async def create_keypair(
        self, _info: Any, user_id: str, props: dict[str, Any]
    ) -> dict[str, Any]:
        caller = self.call.caller
        user = await self._user_named(user_id)
        if user is None and caller.is_superadmin:
            raise ObjectNotFound("user", f"user {user_id!r} does not exist")
        require_keypair_admin(caller, user, "issue keypairs for this user")
        assert user is not None
        refuse_given(props, _LEGACY)
        issue: dict[str, Any] = {"user_id": uuid.UUID(str(user["user_id"]))}
        for name in ("is_active", "is_admin"):
            if props.get(name) is not None:
                issue[name] = bool(props[name])
        if props.get("rate_limit") is not None:
            issue["rate_limit"] = count(props["rate_limit"], "rate_limit")
        if props.get("resource_policy") is not None:
            issue["resource_policy"] = str(props["resource_policy"])
        checked = {**issue, "resource_policy": issue.get("resource_policy", DEFAULT_POLICY)}
        await self._check_grant(user, checked, None)
        access_key, secret_key = await self.call.tenancy(IssueKeypair(**issue))
        record = await self.lookups.keypair(access_key)
        if record is None:  # the read model did not fold it in time: show what was issued
            record = {**issue, "access_key": access_key, "user_id": str(user["user_id"])}
        view = keypair_view(self.call, dict(record), user, secret=secret_key)
        return {"ok": True, "msg": "success", "keypair": view}

    async def modify_keypair(
        self, _info: Any, access_key: str, props: dict[str, Any]
    ) -> dict[str, Any]:
        record, user = await self._owner(access_key, "change this keypair")
        refuse_given(props, _LEGACY)
        change: dict[str, Any] = {}
        for name in ("is_active", "is_admin"):
            if props.get(name) is not None:
                change[name] = bool(props[name])
        if props.get("rate_limit") is not None:
            change["rate_limit"] = count(props["rate_limit"], "rate_limit")
        if props.get("resource_policy") is not None:
            change["resource_policy"] = str(props["resource_policy"])
        await self._check_grant(user, change, record)
        await self.call.tenancy(UpdateKeypair(access_key=access_key, **change))
        return {"ok": True, "msg": "success"}

    async def delete_keypair(self, _info: Any, access_key: str) -> dict[str, Any]:
        await self._owner(access_key, "delete this keypair")
        live = await self.call.ctx.models.sessions(owner=access_key, statuses=LIVE, limit=1)
        if live.total:
            raise GenericBadRequest(
                f"keypair {access_key} has {live.total} live session(s): "
                "terminate them (or deactivate the keypair) first"
            )
        await self.call.tenancy(DeleteKeypair(access_key=access_key))
        return {"ok": True, "msg": "success"}


def _resolvers(call: AdminCall) -> Resolvers:
    area = _Keypairs(call)
    return {
        "keypairs": area.keypairs,
        "keypair_list": area.keypair_list,
        "create_keypair": area.create_keypair,
        "modify_keypair": area.modify_keypair,
        "delete_keypair": area.delete_keypair,
    }


AREA = AdminArea("keypairs", sdl=_SDL, resolvers=_resolvers)
