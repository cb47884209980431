"""What the people areas (domains, groups, users) read from a mutation's input: pure checks.

The official client sends every key of an input object, most of them null (``backend.ai
admin user update`` sends ``description: ""`` and ``totp_activated: false`` whatever one
asked), so "given" means non-null here, as graphene's ``set_if_set`` reads it. A JSONString
arrives as the JSON text the client sent (the scalars are identity scalars): it is decoded
here and a bad one refused with a 400 naming the field. A field kernelhub cannot honour
(``integration_id``, an activated TOTP) is refused with a 400 naming it when it carries a
value; null, ``""`` and ``false`` are what the client sends by default and pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from ...domain.errors import InvalidAPIParameters
from ...domain.slots import ResourceSlot
from ..scope import Viewer

__all__ = [
    "ROLES",
    "USER_STATUSES",
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


def json_object(field: str, value: Any) -> dict[str, Any] | None:
    """A JSONString holding an object (``None`` when null); anything else is a 400."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidAPIParameters(f"{field}: expected a JSON string, got {type(value).__name__}")
    try:
        decoded = json.loads(value) if value.strip() else {}
    except ValueError:
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
    try:
        parsed = ResourceSlot.from_user_input(given)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise InvalidAPIParameters(f"{field}: {exc}") from None
    bad = [k for k, v in parsed.items() if not v.is_finite() or v < Decimal(0)]
    if bad:
        raise InvalidAPIParameters(f"{field}: {', '.join(bad)} must be a finite amount >= 0")
    return parsed.to_json()


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
