"""What the people areas (domains, groups, users) read from a mutation's input: pure checks.

The official client sends every key of an input object, most of them null (``backend.ai
admin user update`` sends ``description: ""`` and ``totp_activated: false`` whatever one
asked), so "given" means non-null here, as graphene's ``set_if_set`` reads it. A JSONString
arrives as the JSON text the client sent (the scalars are identity scalars): it is decoded
here and a bad one refused with a 400 naming the field. A field kernelhub cannot honour
(``integration_id``, an activated TOTP) is refused with a 400 naming it when it carries a
value; null, ``""`` and ``false`` are what the client sends by default and pass.

Every JSONString is bounded before it becomes an event (the log is immutable and every
replay pays for it): at most 16 KiB of text, a nesting too deep for the decoder is the same
400 naming the field (never a ``RecursionError`` answered as a 200 with ``errors``), and a
decoded value is checked for its shape so nothing arbitrary (and nothing whose path a
validator would echo back) is stored: resource slots are at most 16 short names with short
scalar amounts; ``allowed_vfolder_hosts`` is the keys areas' rule
(:func:`.keys_rules.vfolder_hosts`: at most 64 hosts, each a list of short permission names).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from ...domain.bounds import MAX_SLOTS, shown
from ...domain.errors import InvalidAPIParameters
from ...domain.slots import ResourceSlot
from ..scope import Viewer
from .keys_rules import vfolder_hosts

__all__ = [
    "ROLES",
    "USER_STATUSES",
    "hosts_of",
    "json_object",
    "may_grant_role",
    "page",
    "refuse_unhonoured",
    "role_of",
    "slots_of",
    "status_of",
    "string_list",
]

T = TypeVar("T")

ROLES = ("superadmin", "admin", "user", "monitor")
USER_STATUSES = ("active", "inactive", "deleted", "before-verification")
_MAX_PAGE = 100
MAX_JSON_TEXT = 16 * 2**10
"""A JSONString's text: a domain's or group's settings are a few hundred bytes."""
_MAX_SLOT_WORD = 64


def json_object(field: str, value: Any) -> dict[str, Any] | None:
    """A JSONString holding an object (``None`` when null); anything else is a 400."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidAPIParameters(f"{field}: expected a JSON string, got {type(value).__name__}")
    if len(value) > MAX_JSON_TEXT:
        raise InvalidAPIParameters(f"{field}: must be at most {MAX_JSON_TEXT} characters of JSON")
    try:
        decoded = json.loads(value) if value.strip() else {}
    except (ValueError, RecursionError):  # nested past the decoder's depth: the same 400
        raise InvalidAPIParameters(f"{field}: not valid JSON") from None
    if not isinstance(decoded, dict):
        raise InvalidAPIParameters(f"{field}: expected a JSON object")
    return decoded


def slots_of(field: str, value: Any) -> dict[str, str] | None:
    """``total_resource_slots`` as 23.03 reads it (``ResourceSlot.from_user_input``: ``"8g"``
    for memory, decimals for counts), in the wire form events keep; ``{}`` is unlimited."""
    given = json_object(field, value)
    if given is None:
        return None
    if len(given) > MAX_SLOTS:
        raise InvalidAPIParameters(f"{field}: at most {MAX_SLOTS} slots")
    for name, amount in given.items():
        if not 0 < len(name) <= _MAX_SLOT_WORD:
            raise InvalidAPIParameters(f"{field}: invalid slot name {shown(name)}")
        scalar = amount is None or (
            isinstance(amount, int | float | str) and not isinstance(amount, bool)
        )
        if not scalar or len(str(amount)) > _MAX_SLOT_WORD:
            raise InvalidAPIParameters(
                f"{field}: {name} must be a short amount, not {shown(amount)}"
            )
    try:
        parsed = ResourceSlot.from_user_input(given)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise InvalidAPIParameters(f"{field}: {exc}") from None
    bad = [k for k, v in parsed.items() if not v.is_finite() or v < Decimal(0)]
    if bad:
        raise InvalidAPIParameters(f"{field}: {', '.join(bad)} must be a finite amount >= 0")
    return parsed.to_json()


def hosts_of(value: Any, field: str = "allowed_vfolder_hosts") -> dict[str, Any] | None:
    """``allowed_vfolder_hosts`` (host -> permission names), bounded as a keypair policy's
    is; null: not given, ``""`` (blank): none, as before."""
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        return {}
    return vfolder_hosts(value, field)


def string_list(field: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidAPIParameters(f"{field}: expected a list of strings")
    return list(value)


def refuse_unhonoured(props: Mapping[str, Any], *names: str) -> None:
    """A 400 naming each of ``names`` that carries a value kernelhub cannot honour."""
    given = [n for n in names if props.get(n) not in (None, "", False, [], {})]
    if given:
        raise InvalidAPIParameters(
            f"not supported by kernelhub: {', '.join(given)} (send null or leave it out)"
        )


def role_of(value: Any, field: str = "role") -> str:
    if value not in ROLES:
        raise InvalidAPIParameters(f"{field}: {value!r} is not one of {', '.join(ROLES)}")
    return str(value)


def status_of(value: Any, field: str = "status") -> str:
    if value not in USER_STATUSES:
        raise InvalidAPIParameters(f"{field}: {value!r} is not one of {', '.join(USER_STATUSES)}")
    return str(value)


def may_grant_role(caller: Viewer, role: str) -> bool:
    """Nobody hands out more than they hold: only a superadmin makes a superadmin."""
    return role != "superadmin" or caller.is_superadmin


def page(items: Sequence[T], limit: int, offset: int) -> list[T]:
    """One page of a ``*_list`` query (``limit`` 1..100, ``offset`` >= 0, as sessions')."""
    if not 1 <= limit <= _MAX_PAGE:
        raise InvalidAPIParameters(f"limit must be 1..{_MAX_PAGE}")
    if offset < 0:
        raise InvalidAPIParameters("offset must be >= 0")
    return list(items[offset : offset + limit])
