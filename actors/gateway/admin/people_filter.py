"""``user_list``'s ``filter`` and ``order``: 23.03's mini-languages (:mod:`..gql_filter`) over
the columns 23.03's ``User`` lets one filter and order by (what ``backend.ai admin user list
--help`` lists). Pure.

Enums take their names as 23.03 writes them (``status == "ACTIVE"``, ``role in ["ADMIN",
"SUPERADMIN"]``), in either case; ``need_password_change`` compares with ``true``/``false``.
An unknown column is refused with a 400 naming it and the columns there are.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..gql_filter import FieldSpec

__all__ = ["USER_FILTER_FIELDS", "USER_ORDER_FIELDS", "user_row"]

_ROLES = ("SUPERADMIN", "ADMIN", "USER", "MONITOR")
_STATUSES = ("ACTIVE", "INACTIVE", "DELETED", "BEFORE_VERIFICATION")
_BOOLEAN = ("FALSE", "TRUE")

USER_ORDER_FIELDS: Mapping[str, FieldSpec] = {
    "uuid": FieldSpec("str"),
    "username": FieldSpec("str"),
    "role": FieldSpec("enum", _ROLES),
    "email": FieldSpec("str"),
    "full_name": FieldSpec("str"),
    "need_password_change": FieldSpec("enum", _BOOLEAN),
    "status": FieldSpec("enum", _STATUSES),
    "status_info": FieldSpec("str"),
    "created_at": FieldSpec("time"),
    "modified_at": FieldSpec("time"),
    "domain_name": FieldSpec("str"),
}
"""23.03's ``User._queryorder_colmap``."""

USER_FILTER_FIELDS: Mapping[str, FieldSpec] = {
    **USER_ORDER_FIELDS,
    "allowed_client_ip": FieldSpec("list"),
}
"""23.03's ``User._queryfilter_fieldspec``."""


def _time(value: Any) -> datetime | None:
    """An ISO time as an aware datetime (UTC when naive); ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def user_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a user's read-model record, typed for comparing."""
    return {
        "uuid": str(record.get("user_id")),
        "username": record.get("username"),
        "role": str(record.get("role", "user")).upper(),
        "email": record.get("email"),
        "full_name": record.get("full_name") or None,
        "need_password_change": "TRUE" if record.get("need_password_change") else "FALSE",
        "status": str(record.get("status", "active")).upper().replace("-", "_"),
        "status_info": None,
        "created_at": _time(record.get("created_at")),
        "modified_at": _time(record.get("modified_at")),
        "domain_name": record.get("domain"),
        "allowed_client_ip": list(record.get("allowed_client_ip") or ()),
    }
