"""The people areas' bounds on what one request may cost and whom an admin still is.

Why each rule exists (the hostile review of issue 29, findings F4, F7 and F12):

- **Passwords per document.** A password is hashed with scrypt (~40 ms and 16 MiB) under the
  process-wide two-at-a-time semaphore that log-ins share
  (:func:`actors.domain.passwords.hash_password_async`). Aliases let one GraphQL document
  carry up to eight ``create_user``/``modify_user`` mutations, each with a password: a
  domain admin's loop of such documents would queue every log-in behind their hashes. A
  document with more than :data:`MAX_PASSWORDS_PER_DOCUMENT` password-setting mutations is
  refused whole with a 400 naming the bound, before any of its mutations runs (the count is
  taken over the operation the resolver belongs to, fragments and ``@skip`` included, so the
  first mutation already knows).
- **Inactive domains.** ``delete_domain`` is the off switch: a domain admin of an inactive
  domain administers nothing (403, whatever the target), and nobody creates users or groups
  in an inactive domain nor changes them (400 naming the domain's state) until a superadmin
  reactivates it. Deleting and purging stay open, so a superadmin can empty it to purge it.
- **Membership lists.** ``user_uuids`` and ``group_ids`` are at most :data:`MAX_MEMBERS` ids
  (400 naming the bound), de-duplicated, and a refusal quotes at most
  :data:`_QUOTED` of the ids it refuses. Each membership change is its own tenancy command,
  but the request waits for the read model once, after the last (:func:`unsettled`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from graphql import GraphQLError, GraphQLResolveInfo
from graphql.execution.collect_fields import collect_fields
from graphql.execution.values import get_argument_values

from events.correlation import correlation_kwargs

from ...domain.commands.tenancy import TenancyCommand
from ...domain.errors import GenericForbidden, InvalidAPIParameters
from ..scope import Viewer
from .base import AdminCall
from .people_inputs import string_list
from .people_views import parse_uuid

__all__ = [
    "MAX_MEMBERS",
    "MAX_PASSWORDS_PER_DOCUMENT",
    "admin_domain_refusal",
    "inactive_domain_refusal",
    "member_ids",
    "outside_refusal",
    "password_mutations",
    "refuse_many_passwords",
    "unsettled",
]

R = TypeVar("R")

MAX_PASSWORDS_PER_DOCUMENT = 2
MAX_MEMBERS = 100
_QUOTED = 3
_PASSWORD_SETTERS = ("create_user", "modify_user")


# ---- passwords per document -------------------------------------------------------------------
def password_mutations(info: GraphQLResolveInfo) -> int:
    """How many root fields of ``info``'s operation set a password: every ``create_user``
    (its password is required) and each ``modify_user`` whose ``props.password`` is given."""
    root = info.schema.mutation_type
    if root is None or info.operation.operation.value != "mutation":
        return 0
    fields = collect_fields(
        info.schema, info.fragments, info.variable_values, root, info.operation.selection_set
    )
    count = 0
    for nodes in fields.values():
        for node in nodes:
            name = node.name.value
            if name not in _PASSWORD_SETTERS:
                continue
            try:
                args = get_argument_values(root.fields[name], node, info.variable_values)
            except GraphQLError:  # a bad argument fails its own field; it sets nothing
                continue
            props = args.get("props")
            if name == "create_user" or (
                isinstance(props, Mapping) and props.get("password") is not None
            ):
                count += 1
    return count


def refuse_many_passwords(info: GraphQLResolveInfo) -> None:
    """A 400 naming the bound when the document sets too many passwords (see the module)."""
    found = password_mutations(info)
    if found > MAX_PASSWORDS_PER_DOCUMENT:
        raise InvalidAPIParameters(
            f"password: at most {MAX_PASSWORDS_PER_DOCUMENT} password-setting mutations "
            f"(create_user, modify_user with a password) in one request, not {found}"
        )


# ---- inactive domains -------------------------------------------------------------------------
def _active(record: Mapping[str, Any] | None) -> bool:
    return record is not None and bool(record.get("is_active", True))


def admin_domain_refusal(
    caller: Viewer, own_domain: Mapping[str, Any] | None
) -> GenericForbidden | None:
    """A 403 when ``caller`` would act as an admin while their own domain is inactive (or
    gone); a superadmin administers the installation, whatever their domain."""
    if caller.is_superadmin or _active(own_domain):
        return None
    return GenericForbidden(f"domain {caller.domain!r} is inactive: its admins administer nothing")


def inactive_domain_refusal(
    name: str, record: Mapping[str, Any] | None
) -> InvalidAPIParameters | None:
    """A 400 naming the domain's state when ``record`` (the target domain) is inactive."""
    if record is None or _active(record):
        return None
    return InvalidAPIParameters(
        f"domain_name: domain {name!r} is inactive: its users and groups are neither created "
        "nor changed until a superadmin reactivates it"
    )


# ---- membership lists ---------------------------------------------------------------------------
def member_ids(field: str, value: Any) -> list[str]:
    """``value`` as canonical UUIDs, at most :data:`MAX_MEMBERS`, duplicates dropped (in
    order). The bound is on what was sent, so a thousand copies of one id are refused too."""
    given = string_list(field, value) or []
    if len(given) > MAX_MEMBERS:
        raise InvalidAPIParameters(
            f"{field}: at most {MAX_MEMBERS} ids in one request, not {len(given)}"
        )
    return list(dict.fromkeys(parse_uuid(field, v) for v in given))


def outside_refusal(field: str, what: str, outside: Iterable[str]) -> InvalidAPIParameters:
    """A 400 naming the first few refused ids and how many more (never a page of them)."""
    ids = list(outside)
    quoted = ", ".join(ids[:_QUOTED])
    more = f" and {len(ids) - _QUOTED} more" if len(ids) > _QUOTED else ""
    return InvalidAPIParameters(f"{field}: not {what}: {quoted}{more}")


async def unsettled(call: AdminCall, command: TenancyCommand[R]) -> R:
    """:meth:`AdminCall.tenancy` without waiting for the read model: for a loop of
    commands, followed by one ``await call.settled()``."""
    import ray

    try:
        writer = ray.get_actor("tenancy", namespace=call.ctx.router.namespace)
    except ValueError:
        raise GenericForbidden("this gateway has no tenancy service to write to") from None
    stamped = command.model_copy(update={"initiator": call.initiator()})
    result: R = await writer.handle.remote(stamped, **correlation_kwargs())
    return result
