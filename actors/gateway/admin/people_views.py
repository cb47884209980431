"""Domains, groups (projects) and users as 23.03's GraphQL types show them, from read-model
records. Pure.

JSONString fields are JSON-encoded strings (graphene's wire form; the client decodes them).
What kernelhub does not keep is null (``integration_id``, a user's ``status_info``), never
invented. A user's password is not in the record (the read model keeps ``has_password``
only), so no view can show it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from ...domain.errors import InvalidAPIParameters

__all__ = ["domain_view", "group_view", "parse_uuid", "user_view"]


def parse_uuid(field: str, value: Any) -> str:
    """A UUID argument in its canonical text (a UUID/ID scalar arrives as sent)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidAPIParameters(f"{field}: not a UUID: {str(value)[:64]!r}") from None


def domain_view(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": record.get("name"),
        "description": record.get("description", ""),
        "is_active": record.get("is_active", True),
        "created_at": record.get("created_at"),
        "modified_at": record.get("modified_at"),
        "total_resource_slots": json.dumps(record.get("total_resource_slots") or {}),
        "allowed_vfolder_hosts": json.dumps(record.get("allowed_vfolder_hosts") or {}),
        "allowed_docker_registries": list(record.get("allowed_docker_registries") or ()),
        "integration_id": None,
    }


def group_view(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(record.get("project_id")),
        "name": record.get("name"),
        "description": record.get("description", ""),
        "is_active": record.get("is_active", True),
        "created_at": record.get("created_at"),
        "modified_at": record.get("modified_at"),
        "domain_name": record.get("domain"),
        "total_resource_slots": json.dumps(record.get("total_resource_slots") or {}),
        "allowed_vfolder_hosts": json.dumps(record.get("allowed_vfolder_hosts") or {}),
        "integration_id": None,
    }


def user_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """A ``User`` without its ``groups`` (the area adds them, read only when asked for)."""
    status = str(record.get("status", "active"))
    return {
        "id": str(record.get("user_id")),
        "uuid": str(record.get("user_id")),
        "username": record.get("username"),
        "email": record.get("email"),
        "need_password_change": bool(record.get("need_password_change", False)),
        "full_name": record.get("full_name", ""),
        "description": record.get("description", ""),
        "is_active": status == "active",
        "status": status,
        "status_info": None,
        "created_at": record.get("created_at"),
        "modified_at": record.get("modified_at"),
        "domain_name": record.get("domain"),
        "role": record.get("role", "user"),
        "allowed_client_ip": list(record.get("allowed_client_ip") or ()),
        "totp_activated": False,
        "totp_activated_at": None,
    }
