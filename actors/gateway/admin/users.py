"""Users: ``user``, ``user_from_uuid``, ``users``, ``user_list`` and
``create/modify/delete/purge_user``, as 23.03's ``backend.ai admin user ...`` sends them.

Who (:mod:`.roles`): a superadmin administers every user; a domain admin the users of their
own domain, never a superadmin (not even to read one); a user reads their own record only
(``user`` without an e-mail) and lists nothing. Nobody grants more than they hold: only a
superadmin makes a superadmin. A refusal reads the same whether or not the other user exists.

Passwords: checked and hashed here before any actor call, with
:func:`actors.domain.passwords.hash_password_async` (scrypt on a thread, under the
process-wide two-at-a-time semaphore log-ins share, so an admin setting passwords cannot
starve log-ins), and at most two password-setting mutations per document
(:mod:`.people_guard`); the password and its hash are in no answer and no log line (the
read model keeps ``has_password`` only; the event holds the hash, redacted wherever the log
is shown).

``need_password_change`` is **advisory**: kernelhub stores it, shows it, and clears it when
the user changes their password (``/auth/update-password``), but the log-in route does not
refuse a user on it; prompting for the change is the web UI's job, as in 23.03's console.
Whether log-in should refuse on it is the lead's decision (``docs/deviations.md``).

Inactive domains (:mod:`.people_guard`): a domain admin of an inactive domain administers
nothing (403, reads of other users included), and no user is created in an inactive domain
or changed there (400 naming the domain's state); delete and purge stay open.

Existence: global e-mail and username uniqueness would tell a domain admin whether an
address exists in another domain; they get one neutral 400 "the e-mail or username is not
available" (a superadmin, who may read every user anyway, gets which one).

As 23.03: creating a user issues their first keypair (policy ``default``, admin flag for
admins, active when the user is) and joins ``group_ids``; ``modify_user``'s ``group_ids``
replaces the memberships (``group_ids``: at most 100, de-duplicated), and a given ``role``
always re-syncs the admin flag of every keypair of the user to it (admin and superadmin:
flagged, others not), whether or not the role changes, so a keypair flagged admin behind a
plain user's back is undone by restating the role;
``delete_user`` marks the user ``deleted`` and deactivates their keypairs; ``purge_user``
removes them with their keypairs and memberships. Unlike 23.03, deleting or purging a user
who still has live sessions (on any of their keypairs) is refused with a 400 naming the
count unless ``force: true`` (kernelhub's argument, also taken in ``PurgeUserInput``; the
official client never sends it), one's own account cannot be deleted or purged nor its role
or status changed (an admin who locks themselves out needs another to undo it), and a group
id outside the user's domain is refused rather than dropped.

``user_list`` pages (``limit`` 1..100) what ``users`` lists, filtered and ordered in 23.03's
mini-languages over 23.03's user columns (:mod:`.people_filter`); unfiltered, users come in
creation order.
"""

from __future__ import annotations

import uuid
from typing import Any

from ...domain.commands.tenancy import (
    AddMember,
    CreateUser,
    IssueKeypair,
    PurgeUser,
    RemoveMember,
    UpdateKeypair,
    UpdateUser,
)
from ...domain.errors import GenericForbidden, InvalidAPIParameters, ObjectNotFound
from ...domain.passwords import hash_password_async
from ..context import LIVE
from ..gql_filter import parse_filter, parse_order, select
from .base import AdminArea, AdminCall, Resolvers
from .people_filter import USER_FILTER_FIELDS, USER_ORDER_FIELDS, user_row
from .people_guard import (
    admin_domain_refusal,
    inactive_domain_refusal,
    member_ids,
    outside_refusal,
    refuse_many_passwords,
    unsettled,
)
from .people_inputs import (
    may_grant_role,
    page,
    refuse_unhonoured,
    role_of,
    status_of,
    string_list,
)
from .people_views import parse_uuid, user_view
from .roles import may_see_user, require_domain_admin, require_user_admin

__all__ = ["AREA"]

SDL = """
type UserGroup { id: UUID name: String }
type User {
  id: UUID uuid: UUID username: String email: String need_password_change: Boolean
  full_name: String description: String is_active: Boolean status: String
  status_info: String created_at: DateTime modified_at: DateTime domain_name: String
  role: String groups: [UserGroup] allowed_client_ip: [String] totp_activated: Boolean
  totp_activated_at: DateTime
}
type UserList { items: [User]! total_count: Int! }
input UserInput {
  username: String password: String! need_password_change: Boolean full_name: String
  description: String is_active: Boolean status: String domain_name: String! role: String
  group_ids: [String] allowed_client_ip: [String] totp_activated: Boolean
}
input ModifyUserInput {
  username: String password: String need_password_change: Boolean full_name: String
  description: String is_active: Boolean status: String domain_name: String role: String
  group_ids: [String] allowed_client_ip: [String] totp_activated: Boolean
}
input PurgeUserInput { purge_shared_vfolders: Boolean force: Boolean }
type CreateUser { ok: Boolean msg: String user: User }
type ModifyUser { ok: Boolean msg: String user: User }
type DeleteUser { ok: Boolean msg: String }
type PurgeUser { ok: Boolean msg: String }
extend type Query {
  user(domain_name: String, email: String): User
  user_from_uuid(domain_name: String, user_id: ID): User
  users(domain_name: String, group_id: UUID, is_active: Boolean, status: String): [User]
  user_list(
    limit: Int!, offset: Int!, filter: String, order: String, domain_name: String,
    group_id: UUID, is_active: Boolean, status: String
  ): UserList
}
extend type Mutation {
  create_user(email: String!, props: UserInput!): CreateUser
  modify_user(email: String!, props: ModifyUserInput!): ModifyUser
  delete_user(email: String!, force: Boolean): DeleteUser
  purge_user(email: String!, props: PurgeUserInput!, force: Boolean): PurgeUser
}
"""

_FIRST_KEYPAIR_POLICY = "default"
_FIRST_KEYPAIR_RATE_LIMIT = 10_000
_ADMIN_ROLES = ("superadmin", "admin")


def _status(props: dict[str, Any]) -> str | None:
    """``status`` when given, else ``is_active`` as active/inactive (23.03's precedence)."""
    if props.get("status") is not None:
        return status_of(props["status"])
    if props.get("is_active") is not None:
        return "active" if props["is_active"] else "inactive"
    return None


_UNAVAILABLE = "the e-mail or username is not available"
"""A domain admin's answer for either being taken anywhere (not which, nor where)."""


def _resolvers(call: AdminCall) -> Resolvers:
    lookups = call.ctx.lookups
    caller = call.caller

    def shown(record: Any) -> dict[str, Any]:
        view = user_view(record)
        user_id = str(record.get("user_id"))

        async def groups(_info: Any) -> list[dict[str, Any]]:
            projects = await lookups.projects_of(user_id)
            listed = sorted(projects, key=lambda p: str(p.get("name")))
            return [{"id": str(p.get("project_id")), "name": p.get("name")} for p in listed]

        view["groups"] = groups
        return view

    async def still_admin() -> None:
        """A domain admin whose domain is inactive administers nothing (403)."""
        if caller.is_superadmin or not caller.may_act_for_others:
            return
        refusal = admin_domain_refusal(caller, await lookups.domain(caller.domain))
        if refusal is not None:
            raise refusal

    async def active_domain(name: str) -> None:
        """Users are created and changed only in an existing, active domain."""
        record = await lookups.domain(name)
        if record is None:
            raise ObjectNotFound("domain", f"domain {name!r} does not exist")
        refusal = inactive_domain_refusal(name, record)
        if refusal is not None:
            raise refusal

    def unavailable(error: InvalidAPIParameters) -> InvalidAPIParameters:
        """The writer's "... is taken" as a domain admin may hear it."""
        said = str(getattr(error, "msg", "") or error)  # a writer's refusal comes via Ray
        if caller.is_superadmin or "is taken" not in said:
            return error
        return InvalidAPIParameters(_UNAVAILABLE)

    async def own_only(asked_for_self: bool) -> None:
        if not caller.may_act_for_others and not asked_for_self:
            raise GenericForbidden("a user may read only their own user record")
        await still_admin()

    def _scope(domain_name: str | None) -> str | None:
        """The domain an admin's reading covers (``None``: every domain)."""
        if caller.is_superadmin:
            return domain_name
        if domain_name not in (None, caller.domain):
            raise GenericForbidden("only a superadmin may read another domain's users")
        return caller.domain

    def readable(record: Any, domain_name: str | None) -> dict[str, Any] | None:
        """An admin's look-up: ``None`` for what is outside their scope (as missing)."""
        scope = _scope(domain_name)
        if record is None or (scope is not None and record.get("domain") != scope):
            return None
        if not may_see_user(caller, record, caller.user_id):
            return None
        return shown(record)

    async def user(
        _info: Any, domain_name: str | None = None, email: str | None = None
    ) -> dict[str, Any] | None:
        own_email = str(caller.user.get("email")) if caller.user else None
        if email is None or email == own_email:
            record = await lookups.user(caller.user_id)
            return None if record is None else shown(record)
        await own_only(False)
        return readable(await lookups.user_by_email(email), domain_name)

    async def user_from_uuid(
        _info: Any, domain_name: str | None = None, user_id: Any = None
    ) -> dict[str, Any] | None:
        wanted = caller.user_id if user_id is None else parse_uuid("user_id", user_id)
        if wanted == caller.user_id:
            record = await lookups.user(caller.user_id)
            return None if record is None else shown(record)
        await own_only(False)
        return readable(await lookups.user(wanted), domain_name)

    async def listed(
        domain_name: str | None, group_id: Any, status: str | None, is_active: bool | None
    ) -> list[Any]:
        if not caller.may_act_for_others:
            raise GenericForbidden("only an admin may list users")
        await still_admin()
        scope = _scope(domain_name)
        wanted_status = None if status is None else status_of(status)
        members: set[str] | None = None
        if group_id is not None:
            project = await lookups.project(parse_uuid("group_id", group_id))
            members = {str(m) for m in (project or {}).get("members") or ()}
        records = [
            r
            for r in await lookups.every("user")
            if (scope is None or r.get("domain") == scope)
            and may_see_user(caller, r, caller.user_id)
            and (wanted_status is None or r.get("status", "active") == wanted_status)
            and (is_active is None or (r.get("status", "active") == "active") == is_active)
            and (members is None or str(r.get("user_id")) in members)
        ]
        records.sort(key=lambda r: (str(r.get("created_at") or ""), str(r.get("email"))))
        return records

    async def users(
        _info: Any,
        domain_name: str | None = None,
        group_id: Any = None,
        is_active: bool | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        return [shown(r) for r in await listed(domain_name, group_id, status, is_active)]

    async def user_list(
        _info: Any,
        limit: int,
        offset: int,
        filter: str | None = None,
        order: str | None = None,
        domain_name: str | None = None,
        group_id: Any = None,
        is_active: bool | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        records = await listed(domain_name, group_id, status, is_active)
        keep = parse_filter(filter, fields=USER_FILTER_FIELDS) if filter else None
        ordering = parse_order(order, fields=USER_ORDER_FIELDS) if order else None
        if keep is not None or (ordering is not None and ordering.keys):
            records = select([(user_row(r), r) for r in records], keep, ordering)
        items = [shown(r) for r in page(records, limit, offset)]
        return {"items": items, "total_count": len(records)}

    async def managed(email: str, what: str) -> dict[str, Any]:
        """The user ``email`` if the caller administers them: 404 for a superadmin when
        missing, else one 403 whether missing, another domain's or a superadmin."""
        await still_admin()
        record = await lookups.user_by_email(email)
        if record is None and caller.is_superadmin:
            raise ObjectNotFound("user", f"user {email!r} does not exist")
        require_user_admin(caller, record, what)
        assert record is not None
        return dict(record)

    async def projects_for(domain: str, group_ids: Any) -> list[uuid.UUID]:
        """``group_ids`` (bounded, de-duplicated), each a group of ``domain`` (else a 400
        naming the first few others)."""
        ids = member_ids("group_ids", group_ids)
        outside = []
        for project_id in ids:
            project = await lookups.project(project_id)
            if project is None or project.get("domain") != domain:
                outside.append(project_id)
        if outside:
            raise outside_refusal("group_ids", f"groups of domain {domain!r}", outside)
        return [uuid.UUID(p) for p in ids]

    async def live_sessions(user_id: str) -> int:
        total = 0
        for keypair in await lookups.keypairs_of(user_id):
            found = await call.ctx.models.sessions(
                owner=str(keypair["access_key"]), statuses=LIVE, limit=1
            )
            total += found.total
        return total

    async def refuse_while_live(record: dict[str, Any], force: bool | None, what: str) -> int:
        if str(record.get("user_id")) == caller.user_id:
            raise InvalidAPIParameters(f"you may not {what} your own account")
        live = await live_sessions(str(record["user_id"]))
        if live and not force:
            raise InvalidAPIParameters(
                f"user {record.get('email')!r} has {live} live session(s): terminate them "
                f"first, or {what} with force"
            )
        return live

    async def create_user(info: Any, email: str, props: dict[str, Any]) -> dict[str, Any]:
        refuse_many_passwords(info)
        domain = str(props.get("domain_name"))
        require_domain_admin(caller, domain, "create users in this domain")
        await still_admin()
        refuse_unhonoured(props, "totp_activated")
        role = role_of(props.get("role") or "user")
        if not may_grant_role(caller, role):
            raise GenericForbidden("only a superadmin may create a superadmin")
        status = _status(props) or "active"
        await active_domain(domain)
        projects = await projects_for(domain, props.get("group_ids"))
        if await lookups.user_by_email(email) is not None:
            raise unavailable(InvalidAPIParameters(f"e-mail {email!r} is taken"))
        if await lookups.policy(_FIRST_KEYPAIR_POLICY) is None:
            raise InvalidAPIParameters(
                f"keypair resource policy {_FIRST_KEYPAIR_POLICY!r} (a new user's first "
                "keypair's) does not exist: create it first"
            )
        password_hash = await hash_password_async(props.get("password") or "")
        try:
            user_id = await unsettled(
                call,
                CreateUser(
                    username=props.get("username") or email,
                    email=email,
                    domain=domain,
                    role=role,  # checked by role_of
                    status=status,  # checked by status_of
                    full_name=props.get("full_name") or "",
                    description=props.get("description") or "",
                    allowed_client_ip=string_list(
                        "allowed_client_ip", props.get("allowed_client_ip")
                    )
                    or [],
                    password_hash=password_hash,
                    need_password_change=bool(props.get("need_password_change")),
                ),
            )
        except InvalidAPIParameters as error:
            raise unavailable(error) from None
        await unsettled(
            call,
            IssueKeypair(
                user_id=user_id,
                is_active=status == "active",
                is_admin=role in _ADMIN_ROLES,
                rate_limit=_FIRST_KEYPAIR_RATE_LIMIT,
                resource_policy=_FIRST_KEYPAIR_POLICY,
            ),
        )
        for project_id in projects:
            await unsettled(call, AddMember(project_id=project_id, user_id=user_id))
        await call.settled()  # once: the user, their keypair and memberships
        record = await lookups.user(str(user_id))
        return {"ok": True, "msg": "success", "user": None if record is None else shown(record)}

    async def modify_user(info: Any, email: str, props: dict[str, Any]) -> dict[str, Any]:
        refuse_many_passwords(info)
        record = await managed(email, "modify this user")
        await active_domain(str(record.get("domain")))
        refuse_unhonoured(props, "totp_activated")
        moved = props.get("domain_name")
        if moved is not None and moved != record.get("domain"):
            raise InvalidAPIParameters(
                "domain_name: moving a user to another domain is not supported by kernelhub"
            )
        changes: dict[str, Any] = {
            "username": props.get("username"),
            "need_password_change": props.get("need_password_change"),
            "full_name": props.get("full_name"),
            "description": props.get("description"),
            "allowed_client_ip": string_list("allowed_client_ip", props.get("allowed_client_ip")),
            "status": _status(props),
        }
        role = None if props.get("role") is None else role_of(props["role"])
        if role is not None and not may_grant_role(caller, role):
            raise GenericForbidden("only a superadmin may make a superadmin")
        if str(record.get("user_id")) == caller.user_id:
            locked_out = [
                name
                for name, value in (("role", role), ("status", changes["status"]))
                if value is not None
                and value != record.get(name, {"role": "user", "status": "active"}[name])
            ]
            if locked_out:
                raise InvalidAPIParameters(
                    f"{', '.join(locked_out)}: you may not change your own "
                    f"{' or '.join(locked_out)} (another admin may)"
                )
        changes["role"] = role
        projects = (
            await projects_for(str(record.get("domain")), props["group_ids"])
            if props.get("group_ids")
            else None
        )
        if props.get("password") is not None:
            changes["password_hash"] = await hash_password_async(props["password"])
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes and projects is None:
            return {"ok": False, "msg": "nothing to update", "user": None}
        user_id = uuid.UUID(str(record["user_id"]))
        if changes:
            try:
                await unsettled(call, UpdateUser(user_id=user_id, **changes))
            except InvalidAPIParameters as error:
                raise unavailable(error) from None
        if role is not None:  # always, changed or not: undoes a keypair flagged behind it
            is_admin = role in _ADMIN_ROLES
            for keypair in await lookups.keypairs_of(str(user_id)):
                if bool(keypair.get("is_admin")) != is_admin:
                    await unsettled(
                        call,
                        UpdateKeypair(access_key=str(keypair["access_key"]), is_admin=is_admin),
                    )
        if projects is not None:
            current = {str(p.get("project_id")) for p in await lookups.projects_of(str(user_id))}
            wanted = {str(p) for p in projects}
            for left in sorted(current - wanted):
                await unsettled(call, RemoveMember(project_id=uuid.UUID(left), user_id=user_id))
            for project_id in projects:
                if str(project_id) not in current:
                    await unsettled(call, AddMember(project_id=project_id, user_id=user_id))
        await call.settled()  # once, after every command of this mutation
        updated = await lookups.user(str(user_id))
        return {"ok": True, "msg": "success", "user": None if updated is None else shown(updated)}

    async def delete_user(info: Any, email: str, force: bool | None = None) -> dict[str, Any]:
        refuse_many_passwords(info)
        record = await managed(email, "delete this user")
        live = await refuse_while_live(record, force, "delete")
        user_id = str(record["user_id"])
        await call.tenancy(UpdateUser(user_id=uuid.UUID(user_id), status="deleted"))
        for keypair in await lookups.keypairs_of(user_id):
            if keypair.get("is_active", True):
                await call.tenancy(
                    UpdateKeypair(access_key=str(keypair["access_key"]), is_active=False)
                )
        note = f"; {live} live session(s) left running" if live else ""
        return {"ok": True, "msg": f"success{note}"}

    async def purge_user(
        info: Any, email: str, props: dict[str, Any], force: bool | None = None
    ) -> dict[str, Any]:
        refuse_many_passwords(info)
        # purge_shared_vfolders: kernelhub keeps no virtual folders, so either way is honoured
        record = await managed(email, "purge this user")
        live = await refuse_while_live(record, force or props.get("force"), "purge")
        await call.tenancy(PurgeUser(user_id=uuid.UUID(str(record["user_id"]))))
        note = f"; {live} live session(s) left running" if live else ""
        return {"ok": True, "msg": f"success{note}"}

    return {
        "user": user,
        "user_from_uuid": user_from_uuid,
        "users": users,
        "user_list": user_list,
        "create_user": create_user,
        "modify_user": modify_user,
        "delete_user": delete_user,
        "purge_user": purge_user,
    }


AREA = AdminArea("users", sdl=SDL, resolvers=_resolvers)
