"""Tenancy and images as the rest of kernelhub looks them up: O(1) by key.

Records: ``domain``, ``project``, ``user``, ``keypair`` (secret as ciphertext, never
decrypted here), ``policy``, ``sgroup``, ``image``, ``alias``. Indexes: ``i:user:email`` and
``i:user:name`` (-> user id), ``i:project:<domain>`` (name -> id), ``i:keypairs:<user>``,
``i:projects:<user>`` (memberships), ``i:sg_for:<kind>:<target>`` (scaling groups a domain,
project or keypair may use), ``i:presets`` (every resource preset).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from events import StoredEvent
from events.keys import TenancyIndexes as Index

from ..base import IndexedProjection, IndexEntries, Record, RecordRef, WorkingSet

__all__ = ["TenancyProjection"]

_KEY = {
    "domain_created": ("domain", "name"),
    "domain_updated": ("domain", "name"),
    "project_created": ("project", "project_id"),
    "project_updated": ("project", "project_id"),
    "project_member_added": ("project", "project_id"),
    "project_member_removed": ("project", "project_id"),
    "user_created": ("user", "user_id"),
    "user_updated": ("user", "user_id"),
    "keypair_issued": ("keypair", "access_key"),
    "keypair_updated": ("keypair", "access_key"),
    "keypair_policy_set": ("policy", "name"),
    "resource_preset_set": ("preset", "name"),
    "scaling_group_set": ("sgroup", "name"),
    "scaling_group_associated": ("sgroup", "name"),
    "scaling_group_dissociated": ("sgroup", "name"),
    "image_registered": ("image", "name"),
    "image_alias_set": ("alias", "alias"),
    "manager_status_set": ("manager", "status"),
}


def _record_id(event: StoredEvent, key: tuple[str, str]) -> str:
    """The record an event folds into: the value of its key field (the manager's status
    is one record, ``manager/status``)."""
    return "status" if key[0] == "manager" else str(event.data[key[1]])


def _merge(record: Record | None, data: dict[str, Any]) -> Record:
    merged = dict(record or {})
    merged.update({k: v for k, v in data.items() if v is not None})
    return merged


class TenancyProjection(IndexedProjection):
    name = "tenancy"
    version = 3

    def refs(self, event: StoredEvent) -> Iterable[RecordRef]:
        key = _KEY.get(event.type)
        return ((key[0], _record_id(event, key)),) if key else ()

    def apply(self, event: StoredEvent, records: WorkingSet) -> None:
        key = _KEY.get(event.type)
        if key is None:
            return
        kind, record_id = key[0], _record_id(event, key)
        record = records.get(kind, record_id)
        data = event.data
        if event.type == "project_member_added":
            record = dict(record or {})
            members = list(record.get("members", []))
            if data["user_id"] not in members:
                members.append(data["user_id"])
            record["members"] = members
        elif event.type == "project_member_removed":
            record = dict(record or {})
            record["members"] = [m for m in record.get("members", []) if m != data["user_id"]]
        elif event.type in ("scaling_group_associated", "scaling_group_dissociated"):
            record = dict(record or {})
            target = [data["target_kind"], data["target"]]
            allowed = [t for t in record.get("for", []) if t != target]
            if event.type == "scaling_group_associated":
                allowed.append(target)
            record["for"] = sorted(allowed)
        elif event.type in (
            "keypair_policy_set",
            "scaling_group_set",
            "image_registered",
            "resource_preset_set",
            "manager_status_set",
        ):
            record = (
                {**data, "for": (record or {}).get("for", [])} if kind == "sgroup" else dict(data)
            )
        else:
            record = _merge(record, data)
            if event.type == "project_created":
                record.setdefault("members", [])
            if event.type == "user_created":  # the new-user grace period starts here
                record["created_ms"] = event.position_ms
        records.put(kind, record_id, record)

    def zset_entries(self, ref: RecordRef, record: Record) -> IndexEntries:
        kind, record_id = ref
        if kind == "keypair":
            return {(Index.keypairs(record["user_id"]), record_id): 0}
        if kind == "project":
            return {(Index.projects(member), record_id): 0 for member in record.get("members", [])}
        if kind == "sgroup":
            return {
                (Index.scaling_groups_for(k, t), record_id): 0 for k, t in record.get("for", [])
            }
        if kind == "preset":
            return {(Index.PRESETS, record_id): 0}
        return {}

    def hash_entries(self, ref: RecordRef, record: Record) -> IndexEntries:
        kind, record_id = ref
        if kind == "user":
            return {
                (Index.USER_EMAIL, record["email"]): record_id,
                (Index.USER_NAME, record["username"]): record_id,
            }
        if kind == "project":
            return {(Index.project_names(record["domain"]), record["name"]): record_id}
        return {}
