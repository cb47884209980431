"""Tenancy and images as the rest of kernelhub looks them up: O(1) by key.

Records: ``domain``, ``project``, ``user``, ``keypair`` (secret as ciphertext, never
decrypted here), ``policy``, ``sgroup``, ``image``, ``alias``. Indexes: ``i:user:email`` and
``i:user:name`` (-> user id), ``i:project:<domain>`` (name -> id), ``i:keypairs:<user>``,
``i:projects:<user>`` (memberships), ``i:sg_for:<kind>:<target>`` (scaling groups a domain,
project or keypair may use), ``i:presets`` (every resource preset), ``i:all:<kind>`` (every
record of a kind, for admin listings).

Inference endpoints fold here too (``endpoint/<id>``, its routes inside; indexes
``i:endpoints:user:<owner>`` and ``i:endpoints:project:<project>``): a destroyed endpoint's
record is dropped.

Virtual folders fold here too (one read model, one checkpoint: a folder's owner, project
and permissions are read with the tenancy they refer to): ``vfolder/<id>`` records (status,
shares), pending ``invitation/<id>`` records, and the indexes ``i:vfolders:user:<owner>``,
``i:vfolders:group:<project>``, ``i:vfolders:shared:<user>``, ``i:invitations:<invitee>``.

A user's password hash is not in the user record (which listings read; it holds
``has_password``) but in a record of its own, ``credential/<user id>``, which only the
log-in route reads (in one lookup, whatever the log's length). Removal events name
everything they detach (a purged user's keypairs and projects, the scaling groups a removed
target was associated with), so each is folded from the event alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from events import StoredEvent
from events.keys import TenancyIndexes as Index

from ..base import IndexedProjection, IndexEntries, Record, RecordRef, WorkingSet, iso_of

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
    "domain_purged": ("domain", "name"),
    "project_purged": ("project", "project_id"),
    "user_purged": ("user", "user_id"),
    "keypair_deleted": ("keypair", "access_key"),
    "keypair_policy_deleted": ("policy", "name"),
    "resource_preset_deleted": ("preset", "name"),
    "scaling_group_deleted": ("sgroup", "name"),
    "image_alias_removed": ("alias", "alias"),
    "vfolder_created": ("vfolder", "folder_id"),
    "vfolder_renamed": ("vfolder", "folder_id"),
    "vfolder_updated": ("vfolder", "folder_id"),
    "vfolder_trashed": ("vfolder", "folder_id"),
    "vfolder_restored": ("vfolder", "folder_id"),
    "vfolder_purged": ("vfolder", "folder_id"),
    "vfolder_invited": ("vfolder", "folder_id"),
    "vfolder_invitation_answered": ("vfolder", "folder_id"),
    "vfolder_shared": ("vfolder", "folder_id"),
    "vfolder_unshared": ("vfolder", "folder_id"),
    "endpoint_created": ("endpoint", "endpoint_id"),
    "endpoint_scaled": ("endpoint", "endpoint_id"),
    "endpoint_route_added": ("endpoint", "endpoint_id"),
    "endpoint_route_status_changed": ("endpoint", "endpoint_id"),
    "endpoint_route_removed": ("endpoint", "endpoint_id"),
    "endpoint_traffic_ratio_changed": ("endpoint", "endpoint_id"),
    "endpoint_token_issued": ("endpoint", "endpoint_id"),
    "endpoint_destroying": ("endpoint", "endpoint_id"),
    "endpoint_destroyed": ("endpoint", "endpoint_id"),
}
_REMOVALS = frozenset(
    {
        "domain_purged",
        "project_purged",
        "user_purged",
        "keypair_deleted",
        "keypair_policy_deleted",
        "resource_preset_deleted",
        "scaling_group_deleted",
        "image_alias_removed",
    }
)
_SECRET_IN_RECORD = ("password_hash",)


def _detached(event: StoredEvent) -> list[RecordRef]:
    """The other records a removal changes: keypairs and memberships of a purged user,
    associations of any removed target."""
    data = event.data
    refs: list[RecordRef] = [("sgroup", g) for g in data.get("scaling_groups") or ()]
    refs += [("keypair", k) for k in data.get("access_keys") or ()]
    refs += [("project", str(p)) for p in data.get("project_ids") or ()]
    return refs


def _record_id(event: StoredEvent, key: tuple[str, str]) -> str:
    """The record an event folds into: the value of its key field (the manager's status
    is one record, ``manager/status``)."""
    return "status" if key[0] == "manager" else str(event.data[key[1]])


def _merge(record: Record | None, data: dict[str, Any]) -> Record:
    merged = dict(record or {})
    merged.update({k: v for k, v in data.items() if v is not None})
    return merged


def _fold_vfolder(event: StoredEvent, records: WorkingSet) -> None:
    """A folder event into its record (and its invitations' records)."""
    data, folder_id = event.data, str(event.data["folder_id"])
    record = records.get("vfolder", folder_id)
    at = iso_of(event.position_ms)
    if event.type == "vfolder_created":
        record = {**data, "status": "ready", "shares": {}, "created_at": at}
    elif record is None:
        return
    else:
        record = dict(record)
    if event.type in ("vfolder_renamed", "vfolder_updated"):
        record.update({k: v for k, v in data.items() if v is not None and k != "type"})
    elif event.type == "vfolder_trashed":
        record["status"] = "delete-pending"
    elif event.type == "vfolder_restored":
        record["status"] = "ready"
    elif event.type == "vfolder_purged":
        records.put("vfolder", folder_id, None)
        for invitation in data.get("invitation_ids") or ():
            records.put("invitation", str(invitation), None)
        return
    elif event.type == "vfolder_invited":
        records.put(
            "invitation",
            str(data["invitation_id"]),
            {**{k: v for k, v in data.items() if k != "type"}, "created_at": at},
        )
    elif event.type == "vfolder_invitation_answered":
        invitation = records.get("invitation", str(data["invitation_id"]))
        records.put("invitation", str(data["invitation_id"]), None)
        if invitation is not None and data["state"] == "accepted":
            record["shares"] = {**record["shares"], invitation["invitee"]: invitation["permission"]}
    elif event.type == "vfolder_shared":
        record["shares"] = {**record["shares"], str(data["user_id"]): data["permission"]}
    elif event.type == "vfolder_unshared":
        gone = {str(u) for u in data["user_ids"]}
        record["shares"] = {u: p for u, p in record["shares"].items() if u not in gone}
    record["modified_at"] = at
    records.put("vfolder", folder_id, record)


_ENDPOINT_RECORD_OMITS = frozenset({"type", "bootstrap_script"})
"""Kept in the log only: a listing never needs the script (the reconciler reads the log)."""


def _fold_endpoint(event: StoredEvent, records: WorkingSet) -> None:
    """An endpoint event into its record (routes inside, keyed by route id)."""
    data, endpoint_id = event.data, str(event.data["endpoint_id"])
    at = iso_of(event.position_ms)
    if event.type == "endpoint_created":
        record = {k: v for k, v in data.items() if k not in _ENDPOINT_RECORD_OMITS}
        records.put(
            "endpoint", endpoint_id, {**record, "status": "live", "routes": {}, "created_at": at}
        )
        return
    if event.type == "endpoint_destroyed":
        records.put("endpoint", endpoint_id, None)
        return
    found = records.get("endpoint", endpoint_id)
    if found is None:
        return
    record, routes = dict(found), dict(found["routes"])
    route_id = str(data.get("route_id"))
    if event.type == "endpoint_scaled":
        record["desired_session_count"] = data["desired_session_count"]
    elif event.type == "endpoint_destroying":
        record["status"], record["desired_session_count"] = "destroying", 0
    elif event.type == "endpoint_route_added":
        routes[route_id] = {
            "route_id": route_id,
            "session_id": str(data["session_id"]),
            "status": "PROVISIONING",
            "traffic_ratio": data["traffic_ratio"],
            "created_at": at,
        }
    elif event.type == "endpoint_route_removed":
        routes.pop(route_id, None)
    elif route_id in routes and event.type == "endpoint_route_status_changed":
        routes[route_id] = {**routes[route_id], "status": data["status"]}
    elif route_id in routes and event.type == "endpoint_traffic_ratio_changed":
        routes[route_id] = {**routes[route_id], "traffic_ratio": data["traffic_ratio"]}
    elif event.type == "endpoint_token_issued":
        record["tokens_issued"] = int(record.get("tokens_issued", 0)) + 1
    record["routes"], record["modified_at"] = routes, at
    records.put("endpoint", endpoint_id, record)


class TenancyProjection(IndexedProjection):
    name = "tenancy"
    version = 6
    types = frozenset(_KEY)

    def refs(self, event: StoredEvent) -> Iterable[RecordRef]:
        key = _KEY.get(event.type)
        if key is None:
            return ()
        own = (key[0], _record_id(event, key))
        if key[0] == "vfolder":
            data = event.data
            invitations = [data.get("invitation_id"), *(data.get("invitation_ids") or ())]
            return (own, *(("invitation", str(i)) for i in invitations if i is not None))
        if key[0] == "user":
            return (own, ("credential", own[1]), *_detached(event))
        return (own, *_detached(event)) if event.type in _REMOVALS else (own,)

    def _remove(self, event: StoredEvent, kind: str, record_id: str, records: WorkingSet) -> None:
        records.put(kind, record_id, None)
        data, target = event.data, (kind, record_id)
        for name in data.get("scaling_groups") or ():
            group = records.get("sgroup", name)
            if group is None:
                continue
            doomed = [[k, t] for k, t in group.get("for", []) if (k, t) == target]
            doomed += [["keypair", a] for a in data.get("access_keys") or ()]
            kept = [t for t in group.get("for", []) if t not in doomed]
            records.put("sgroup", name, {**group, "for": kept})
        for access_key in data.get("access_keys") or ():
            records.put("keypair", access_key, None)
        for project_id in data.get("project_ids") or ():
            project = records.get("project", str(project_id))
            if project is not None:
                members = [m for m in project.get("members", []) if m != record_id]
                records.put("project", str(project_id), {**project, "members": members})

    def _credential(self, event: StoredEvent, user_id: str, records: WorkingSet) -> None:
        if event.type == "user_purged":
            records.put("credential", user_id, None)
        elif event.data.get("password_hash") is not None:
            records.put("credential", user_id, {"password_hash": event.data["password_hash"]})

    def apply(self, event: StoredEvent, records: WorkingSet) -> None:
        key = _KEY.get(event.type)
        if key is None:
            return
        kind, record_id = key[0], _record_id(event, key)
        if kind == "vfolder":
            _fold_vfolder(event, records)
            return
        if kind == "endpoint":
            _fold_endpoint(event, records)
            return
        if kind == "user":
            self._credential(event, record_id, records)
        if event.type in _REMOVALS:
            self._remove(event, kind, record_id, records)
            return
        record = records.get(kind, record_id)
        data = {k: v for k, v in event.data.items() if k not in _SECRET_IN_RECORD}
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
            previous = record or {}
            record = {**data, "for": previous.get("for", [])} if kind == "sgroup" else dict(data)
            if kind != "manager":  # set whole, but born once
                record["created_at"] = previous.get("created_at") or iso_of(event.position_ms)
                record["modified_at"] = iso_of(event.position_ms)
        else:
            record = _merge(record, data)
            if event.type == "project_created":
                record.setdefault("members", [])
            if event.type == "user_created":  # the new-user grace period starts here
                record["created_ms"] = event.position_ms
            if kind == "user" and "password_hash" in event.data:
                record["has_password"] = bool(event.data["password_hash"])
            if kind == "user" and event.type == "user_created":
                record["created_at"] = iso_of(event.position_ms)
            if kind in ("domain", "project") and event.type.endswith("_created"):
                record["created_at"] = iso_of(event.position_ms)
            if kind == "keypair" and event.type == "keypair_issued":
                record["created_at"] = iso_of(event.position_ms)
            record["modified_at"] = iso_of(event.position_ms)
        records.put(kind, record_id, record)

    def zset_entries(self, ref: RecordRef, record: Record) -> IndexEntries:
        kind, record_id = ref
        unlisted = kind in ("manager", "credential")
        entries: IndexEntries = {} if unlisted else {(Index.every(kind), record_id): 0}
        if kind == "keypair":
            entries[(Index.keypairs(record["user_id"]), record_id)] = 0
        elif kind == "project":
            for member in record.get("members", []):
                entries[(Index.projects(member), record_id)] = 0
        elif kind == "sgroup":
            for k, t in record.get("for", []):
                entries[(Index.scaling_groups_for(k, t), record_id)] = 0
        elif kind == "preset":
            entries[(Index.PRESETS, record_id)] = 0
        elif kind == "vfolder":
            owner = record.get("user") if record["ownership_type"] == "user" else record["group"]
            entries[(Index.vfolders_of(record["ownership_type"], str(owner)), record_id)] = 0
            for user in record.get("shares", {}):
                entries[(Index.vfolders_of("shared", user), record_id)] = 0
        elif kind == "invitation":
            entries[(Index.invitations_for(str(record["invitee"])), record_id)] = 0
        elif kind == "endpoint":
            entries[(Index.endpoints_of("user", str(record["owner"])), record_id)] = 0
            entries[(Index.endpoints_of("project", str(record["project_id"])), record_id)] = 0
        return entries

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
