"""Pure rules of the keys areas (keypairs, keypair resource policies, resource presets):
whose keypairs a caller may list and change, and how the values the official client sends
are checked before anything becomes a command.

Kept apart from the resolvers so each rule is tested alone (tests/test_admin_keys_rules.py)
and so a refusal is the same wherever it is met. A value the client sends as a
``JSONString`` or ``BigInt`` arrives as whatever JSON the client wrote (the scalars are
identity scalars): each is checked for its type here and refused with a 400 naming the
field, never coerced or dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from events._canonical import decimal_to_plain

from ...domain.bounds import MAX_SLOTS, known_slot_types, parse_slot_value, shown
from ...domain.errors import GenericForbidden, InvalidAPIParameters, ObjectNotFound
from ...domain.sizes import parse_size
from ..scope import Viewer, is_domain_admin
from .roles import may_manage_user

__all__ = [
    "ADMIN_ROLES",
    "BIGINT_MAX",
    "DEFAULT_POLICY",
    "DEFAULT_RATE_CEILING",
    "DomainGrants",
    "KeypairScope",
    "bigint",
    "bytes_of",
    "count",
    "default_for_unspecified",
    "domain_grants",
    "exec_timeout",
    "json_object",
    "keypair_scope",
    "policy_not_open",
    "refuse_given",
    "require_admin_flag_fits_role",
    "require_grantable",
    "require_keypair_admin",
    "shared_memory",
    "slots",
    "vfolder_hosts",
]

BIGINT_MAX = 2**63 - 1
"""A BigInt column's largest value (23.03 keeps sizes and timeouts in PostgreSQL bigints)."""
INT_MAX = 2**31 - 1
_MAX_JSON_TEXT = 16 * 2**10
"""A JSONString's text (a policy's hosts or slots are a few hundred bytes)."""
_MAX_HOSTS = 64
_MAX_PERMS = 32
_MAX_WORD = 128
_SLOT_NAME = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z0-9_-]+)*$")


def _refuse(field: str, message: str) -> InvalidAPIParameters:
    error = InvalidAPIParameters(f"{field}: {message}")
    error.data = {field: message}  # type: ignore[attr-defined]
    return error


# ---- who may see and change which keypairs ---------------------------------------------------
@dataclass(frozen=True)
class KeypairScope:
    """What a keypair listing may show: ``user_id`` (one user's, or any), ``domain`` (one
    domain's users', or any), and whether superadmins' keypairs are hidden (a domain
    admin never sees a superadmin's)."""

    user_id: str | None
    domain: str | None
    hide_superadmins: bool

    def admits(self, user: Mapping[str, Any]) -> bool:
        if self.user_id is not None and str(user.get("user_id")) != self.user_id:
            return False
        if self.domain is not None and user.get("domain") != self.domain:
            return False
        return not (self.hide_superadmins and user.get("role") == "superadmin")


def keypair_scope(
    caller: Viewer,
    own_user_id: str,
    own_email: str | None,
    domain_name: str | None,
    email: str | None,
) -> KeypairScope:
    """23.03's ``scoped_query(user_key="email")``: a user lists their own keypairs (asking
    for another domain's or another user's is a 403), a domain admin their domain's users'
    but no superadmin's (another domain: 403), a superadmin any (one domain's when asked).
    ``email`` narrows further; the caller resolves it to a user."""
    if caller.is_superadmin:
        return KeypairScope(None, domain_name, hide_superadmins=False)
    if domain_name not in (None, caller.domain):
        raise GenericForbidden("only a superadmin may list the keypairs of another domain")
    if is_domain_admin(caller):
        return KeypairScope(None, caller.domain, hide_superadmins=True)
    if email not in (None, own_email):
        raise GenericForbidden("a user may list only their own keypairs")
    return KeypairScope(own_user_id, caller.domain, hide_superadmins=False)


def require_keypair_admin(caller: Viewer, user: Mapping[str, Any] | None, what: str) -> None:
    """Issuing, changing and deleting keypairs: a superadmin any, a domain admin those of
    their domain's users but never a superadmin's, a user none (not even their own: 23.03's
    keypair mutations are admin mutations). An unknown owner reads the same as a forbidden
    one, so the refusal does not tell whether another domain's keypair exists."""
    if caller.is_superadmin:
        return
    if not caller.may_act_for_others or user is None or not may_manage_user(caller, user):
        raise GenericForbidden(f"only a superadmin or an admin of the owner's domain may {what}")


# ---- what a keypair may be given -----------------------------------------------------------
ADMIN_ROLES = frozenset({"admin", "superadmin"})
"""The user roles whose keypairs may carry ``is_admin``."""
DEFAULT_POLICY = "default"
"""The policy a keypair is issued with when none is named (``IssueKeypair``'s default): every
domain may be given it."""
DEFAULT_RATE_CEILING = 10_000
"""The rate limit a domain admin may always set (above the 1000 a keypair is issued with and
the 5000 the official client's ``admin keypair add`` sends by default)."""


def require_admin_flag_fits_role(user: Mapping[str, Any], is_admin: bool | None) -> None:
    """A keypair's ``is_admin`` may be true only for a user whose role is admin or
    superadmin. kernelhub grants the admin surface to an admin keypair, so otherwise an admin
    could make a hidden admin whose user record says ``user`` (and whom demoting with
    ``modify_user(role)`` would not reach). Applies to a superadmin too: promote the user
    with ``modify_user(role: "admin")``, which flags their keypairs."""
    role = str(user.get("role") or "user")
    if is_admin and role not in ADMIN_ROLES:
        raise _refuse(
            "is_admin",
            f"may be true only for a user whose role is admin or superadmin (this user's role "
            f"is {role!r}); make them an admin with modify_user first",
        )


@dataclass(frozen=True)
class DomainGrants:
    """What a domain admin may hand out to their domain's keypairs: the policies some keypair
    of the domain already holds (a superadmin opens a policy to a domain by giving it to one
    of its keypairs; :data:`DEFAULT_POLICY` is always open) and the highest rate limit (at
    least :data:`DEFAULT_RATE_CEILING`)."""

    policies: frozenset[str]
    rate_ceiling: int


def domain_grants(
    domain: str, users: Mapping[str, Mapping[str, Any]], keypairs: Iterable[Mapping[str, Any]]
) -> DomainGrants:
    """:class:`DomainGrants` of ``domain`` from every user (by id) and keypair. A
    superadmin's keypairs do not count, even in their own domain: what a superadmin holds is
    not thereby opened to the domain's admin."""
    policies = {DEFAULT_POLICY}
    ceiling = DEFAULT_RATE_CEILING
    for keypair in keypairs:
        owner = users.get(str(keypair.get("user_id")))
        if owner is None or owner.get("domain") != domain or owner.get("role") == "superadmin":
            continue
        if keypair.get("resource_policy"):
            policies.add(str(keypair["resource_policy"]))
        rate = keypair.get("rate_limit")
        if isinstance(rate, int) and not isinstance(rate, bool):
            ceiling = max(ceiling, rate)
    return DomainGrants(frozenset(policies), ceiling)


def policy_not_open(caller: Viewer, name: str) -> ObjectNotFound:
    """The one answer for a policy that does not exist and, to a domain admin, one that is not
    open to their domain: the same status and text, so the refusal tells nobody which global
    policy names exist."""
    if caller.is_superadmin:
        message = f"keypair resource policy {name!r} does not exist"
    else:
        message = f"no keypair resource policy {name!r} is open to your domain"
    return ObjectNotFound("keypair resource policy", message)


def require_grantable(
    caller: Viewer,
    grants: DomainGrants | None,
    *,
    own: bool,
    current: Mapping[str, Any] | None,
    own_keypairs: Iterable[Mapping[str, Any]],
    resource_policy: str | None,
    rate_limit: int | None,
) -> None:
    """Whether a domain admin may give a keypair ``resource_policy`` and ``rate_limit``
    (``None``: not given). A superadmin may give anything (``grants`` is not read).

    - Their own keypairs (``own``) are a superadmin's to raise: on a change (``current``) the
      policy and rate limit may only be given as they already are; a keypair they issue for
      themselves may have only a policy their own keypairs hold and a rate limit no higher
      than theirs (403 naming the field).
    - Any other keypair of their domain: a policy open to the domain (:func:`policy_not_open`
      otherwise) and a rate limit up to the domain's ceiling (403 naming it).
    """
    if caller.is_superadmin:
        return
    if own:
        mine = list(own_keypairs) if current is None else [current]
        held = {str(k.get("resource_policy")) for k in mine}
        top = max((int(k.get("rate_limit") or 0) for k in mine), default=0)
        if resource_policy is not None and resource_policy not in held:
            raise GenericForbidden(
                "resource_policy: a domain admin may not change the policy of their own "
                "keypairs; ask a superadmin"
            )
        changed = current is not None and rate_limit != top
        if rate_limit is not None and (rate_limit > top or changed):
            raise GenericForbidden(
                "rate_limit: a domain admin may not change the rate limit of their own "
                "keypairs; ask a superadmin"
            )
        return
    assert grants is not None, "a domain admin's grants are read before a grant"
    if resource_policy is not None and resource_policy not in grants.policies:
        raise policy_not_open(caller, resource_policy)
    if rate_limit is not None and rate_limit > grants.rate_ceiling:
        raise GenericForbidden(
            f"rate_limit: a domain admin may set at most {grants.rate_ceiling} (the default "
            f"{DEFAULT_RATE_CEILING}, or the highest one of their domain's keypairs); "
            "ask a superadmin for more"
        )


def refuse_given(props: Mapping[str, Any], legacy: Mapping[str, str]) -> None:
    """Fields the client's input type still carries but nothing here honours (23.03's
    deprecated ``concurrency_limit``): null is accepted (the client sends every key), a
    value is refused naming the field and what to use instead."""
    for name, instead in legacy.items():
        if props.get(name) is not None:
            raise _refuse(name, f"is not honoured here; {instead}")


# ---- values ------------------------------------------------------------------------------
def count(value: Any, field: str, *, low: int = 0, high: int = INT_MAX) -> int:
    """A whole number within ``low..high`` (GraphQL's ``Int`` already is one; the range is
    the rule's)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(field, f"must be a whole number, not {shown(value)}")
    if not low <= value <= high:
        raise _refuse(field, f"must be between {low} and {high}, not {value}")
    return value


def bigint(value: Any, field: str, *, low: int = 0) -> int:
    """A ``BigInt``: an integer (or its decimal text, as graphene's BigInt accepts) within
    ``low..2^63-1``."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,20}", value.strip()):
        value = int(value)
    return count(value, field, low=low, high=BIGINT_MAX)


def exec_timeout(value: Any, field: str = "exec_timeout_s") -> float | None:
    """kernelhub's per-execution timeout in seconds: finite and not negative (0: none)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(field, f"must be a number of seconds, not {shown(value)}")
    if not math.isfinite(value) or value < 0 or value > 10 * 365 * 86400:
        raise _refuse(field, f"must be 0..{10 * 365 * 86400} seconds, not {shown(value)}")
    return float(value)


def default_for_unspecified(value: Any, field: str = "default_for_unspecified") -> str:
    if value not in ("LIMITED", "UNLIMITED"):
        raise _refuse(field, f"must be LIMITED or UNLIMITED, not {shown(value)}")
    return str(value)


def json_object(value: Any, field: str) -> dict[str, Any]:
    """A ``JSONString`` that must hold an object: the client sends the JSON text (an object
    sent as such is taken too). Bad JSON, another type or an oversized text: 400."""
    if isinstance(value, str):
        if len(value) > _MAX_JSON_TEXT:
            raise _refuse(field, f"must be at most {_MAX_JSON_TEXT} characters of JSON")
        try:
            value = json.loads(value, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise _refuse(field, f"is not valid JSON: {shown(value)}") from None
    if not isinstance(value, dict):
        raise _refuse(field, f"must be a JSON object, not {type(value).__name__}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def slots(value: Any, field: str = "total_resource_slots") -> dict[str, str]:
    """Resource slots (``{"cpu": "4", "mem": "8g"}``): known-shaped names, each value a
    finite, non-negative amount (sizes for ``*mem*`` slots, ``1g`` allowed), stored as plain
    decimals. An empty object means no cap."""
    parsed = json_object(value, field)
    if len(parsed) > MAX_SLOTS:
        raise _refuse(field, f"at most {MAX_SLOTS} slots")
    out: dict[str, str] = {}
    for name, raw in parsed.items():
        if len(name) > 64 or not _SLOT_NAME.match(name):
            raise _refuse(field, f"invalid slot name {shown(name)}")
        slot_type = known_slot_types([name])[name]
        try:
            amount = parse_slot_value(name, raw, slot_type, field=f"{field}.{name}")
        except InvalidAPIParameters as exc:  # its message names the slot; add the field
            raise _refuse(f"{field}.{name}", exc.msg) from None
        out[name] = decimal_to_plain(amount)
    return out


def vfolder_hosts(value: Any, field: str = "allowed_vfolder_hosts") -> dict[str, Any]:
    """Host -> permission names (``{"local:volume1": ["create-vfolder", ...]}``), bounded."""
    parsed = json_object(value, field)
    if len(parsed) > _MAX_HOSTS:
        raise _refuse(field, f"at most {_MAX_HOSTS} hosts")
    out: dict[str, Any] = {}
    for host, perms in parsed.items():
        if not host or len(host) > _MAX_WORD:
            raise _refuse(field, f"invalid host name {shown(host)}")
        if not isinstance(perms, list) or len(perms) > _MAX_PERMS:
            raise _refuse(field, f"{host}: a list of at most {_MAX_PERMS} permission names")
        if not all(isinstance(p, str) and 0 < len(p) <= _MAX_WORD for p in perms):
            raise _refuse(field, f"{host}: permission names are short strings")
        out[host] = list(perms)
    return out


def shared_memory(value: Any, field: str = "shared_memory") -> str | None:
    """A preset's shared memory: a size (``"64m"``, bytes as a number or its text), kept as
    whole bytes; null: none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _refuse(field, f"must be a size such as '64m', not {shown(value)}")
    if isinstance(value, str) and len(value) > 32:
        raise _refuse(field, f"must be a size such as '64m', not {shown(value)}")
    try:
        size = parse_size(value, allow_infinity=False)
    except (ValueError, ArithmeticError):
        raise _refuse(field, f"must be a size such as '64m', not {shown(value)}") from None
    if size < 0 or size > BIGINT_MAX or size != size.to_integral_value():
        raise _refuse(field, f"must be whole bytes within 0..2^63-1, not {shown(value)}")
    return str(int(size))


def bytes_of(value: Any) -> int | None:
    """A stored size as a number (older presets may hold ``"1g"``); None when unreadable."""
    if value is None:
        return None
    try:
        size = parse_size(value if isinstance(value, int | Decimal) else str(value))
    except (ValueError, ArithmeticError):
        return None
    return int(size) if size.is_finite() else None
