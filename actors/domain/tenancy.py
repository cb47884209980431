"""Tenancy as pure decisions: who exists, who may use what, under which limits.

:class:`TenancyState` is folded from the tenancy streams; each ``decide_*`` function checks a
command against it and returns the events to append (an empty list when the command would
change nothing, so a repeated command is harmless), or raises a :class:`DomainError`.
The single tenancy writer appends them to the kind's stream with its expected version,
which is what makes names unique even if two writers race.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from events.catalogue import (
    AnyPayload,
    DomainCreated,
    DomainPurged,
    DomainUpdated,
    ImageAliasRemoved,
    ImageAliasSet,
    ImageRegistered,
    KeypairDeleted,
    KeypairIssued,
    KeypairPolicyDeleted,
    KeypairPolicySet,
    KeypairUpdated,
    ManagerStatusSet,
    ProjectCreated,
    ProjectMemberAdded,
    ProjectMemberRemoved,
    ProjectPurged,
    ProjectUpdated,
    ResourcePresetDeleted,
    ResourcePresetSet,
    ScalingGroupAssociated,
    ScalingGroupDeleted,
    ScalingGroupDissociated,
    ScalingGroupSet,
    UserCreated,
    UserPurged,
    UserUpdated,
)

from .errors import GenericBadRequest, ImageNotFound, InvalidAPIParameters, ObjectNotFound
from .service_ports import image_service_ports

__all__ = [
    "DECISIONS",
    "STREAM_OF",
    "TenancyState",
    "decide",
    "decide_add_member",
    "decide_alias",
    "decide_associate",
    "decide_create_domain",
    "decide_create_project",
    "decide_create_user",
    "decide_issue_keypair",
    "decide_register_image",
    "decide_remove",
    "decide_set",
    "decide_update",
    "generate_access_key",
    "generate_secret_key",
    "image_slot_limits",
    "project_id_for",
]

STREAM_OF: Mapping[str, str] = {
    "domain_created": "tenancy-domains",
    "domain_updated": "tenancy-domains",
    "project_created": "tenancy-projects",
    "project_updated": "tenancy-projects",
    "project_member_added": "tenancy-projects",
    "project_member_removed": "tenancy-projects",
    "user_created": "tenancy-users",
    "user_updated": "tenancy-users",
    "keypair_issued": "tenancy-keypairs",
    "keypair_updated": "tenancy-keypairs",
    "keypair_policy_set": "tenancy-policies",
    "resource_preset_set": "tenancy-policies",
    "scaling_group_set": "tenancy-sgroups",
    "scaling_group_associated": "tenancy-sgroups",
    "scaling_group_dissociated": "tenancy-sgroups",
    "image_registered": "image-catalogue",
    "image_alias_set": "image-catalogue",
    "manager_status_set": "config",
    "domain_purged": "tenancy-domains",
    "project_purged": "tenancy-projects",
    "user_purged": "tenancy-users",
    "keypair_deleted": "tenancy-keypairs",
    "keypair_policy_deleted": "tenancy-policies",
    "resource_preset_deleted": "tenancy-policies",
    "scaling_group_deleted": "tenancy-sgroups",
    "image_alias_removed": "image-catalogue",
}
"""Which stream each tenancy event belongs to (one per kind)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_KEY_ALPHABET = string.ascii_uppercase + string.digits


def generate_access_key(choice: Callable[[str], str] = secrets.choice) -> str:
    """Backend.AI's format: ``AKIA`` + 16 upper-case letters and digits (20 characters)."""
    return "AKIA" + "".join(choice(_KEY_ALPHABET) for _ in range(16))


def generate_secret_key() -> str:
    """40 URL-safe characters from the OS's CSPRNG."""
    return secrets.token_urlsafe(30)[:40]


def _check_username(name: str) -> None:
    """A user name is a name, or an e-mail address (23.03 makes the e-mail the user name
    when none is given)."""
    if not (_EMAIL.match(name) and len(name) <= 254 and name.isprintable()):
        _check_name("user", name)


def _check_networks(networks: list[str] | None) -> None:
    """``allowed_client_ip``: at most 64 addresses or CIDR ranges, each one that parses
    (the gateway matches a request's peer against them)."""
    if networks is None:
        return
    if len(networks) > 64:
        raise InvalidAPIParameters("allowed_client_ip: at most 64 addresses or ranges")
    for network in networks:
        try:
            if len(network) > 64:
                raise ValueError(network)
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise InvalidAPIParameters(
                f"allowed_client_ip: {network[:64]!r} is not an IP address or CIDR range"
            ) from None


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise InvalidAPIParameters(
            f"invalid {kind} name {name!r}: 1-64 letters, digits, '.', '_' or '-'"
        )


@dataclass
class TenancyState:
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    keypairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    sgroups: dict[str, dict[str, Any]] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    manager_status: str = "running"
    versions: dict[str, int] = field(default_factory=dict)
    """Stream -> version folded so far (the expected version of the next append)."""

    # ---- lookups used by the decisions -------------------------------------------------------
    def user_by(
        self, *, username: str | None = None, email: str | None = None
    ) -> dict[str, Any] | None:
        for user in self.users.values():
            if (username and user["username"] == username) or (email and user["email"] == email):
                return user
        return None

    def project_named(self, domain: str, name: str) -> dict[str, Any] | None:
        return next(
            (p for p in self.projects.values() if p["domain"] == domain and p["name"] == name), None
        )

    def associated(self, kind: str, target: str) -> list[str]:
        """The scaling groups a domain, project or keypair is associated with."""
        return sorted(n for n, g in self.sgroups.items() if [kind, target] in g["for"])

    def resolve_image(self, name_or_alias: str) -> dict[str, Any]:
        name = self.aliases.get(name_or_alias, name_or_alias)
        image = self.images.get(name)
        if image is None:
            raise ImageNotFound()
        return image

    # ---- fold --------------------------------------------------------------------------------
    def apply(self, stream: str, version: int, payload: AnyPayload) -> None:
        self.versions[stream] = version
        data = payload.model_dump(mode="json")
        kind = data.pop("type")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(data)

    def _on_domain_created(self, d: dict[str, Any]) -> None:
        self.domains[d["name"]] = d

    def _on_domain_updated(self, d: dict[str, Any]) -> None:
        self.domains[d["name"]].update({k: v for k, v in d.items() if v is not None})

    def _on_project_created(self, d: dict[str, Any]) -> None:
        self.projects[d["project_id"]] = {**d, "members": []}

    def _on_project_updated(self, d: dict[str, Any]) -> None:
        self.projects[d["project_id"]].update({k: v for k, v in d.items() if v is not None})

    def _on_project_member_added(self, d: dict[str, Any]) -> None:
        members = self.projects[d["project_id"]]["members"]
        if d["user_id"] not in members:
            members.append(d["user_id"])

    def _on_project_member_removed(self, d: dict[str, Any]) -> None:
        members = self.projects[d["project_id"]]["members"]
        if d["user_id"] in members:
            members.remove(d["user_id"])

    def _on_user_created(self, d: dict[str, Any]) -> None:
        self.users[d["user_id"]] = d

    def _on_user_updated(self, d: dict[str, Any]) -> None:
        self.users[d["user_id"]].update({k: v for k, v in d.items() if v is not None})

    def _on_keypair_issued(self, d: dict[str, Any]) -> None:
        self.keypairs[d["access_key"]] = d

    def _on_keypair_updated(self, d: dict[str, Any]) -> None:
        self.keypairs[d["access_key"]].update({k: v for k, v in d.items() if v is not None})

    def _on_keypair_policy_set(self, d: dict[str, Any]) -> None:
        self.policies[d["name"]] = d

    def _on_resource_preset_set(self, d: dict[str, Any]) -> None:
        self.presets[d["name"]] = d

    def _on_manager_status_set(self, d: dict[str, Any]) -> None:
        self.manager_status = d["status"]

    def _on_scaling_group_set(self, d: dict[str, Any]) -> None:
        previous = self.sgroups.get(d["name"], {})
        self.sgroups[d["name"]] = {**d, "for": previous.get("for", [])}

    def _on_scaling_group_associated(self, d: dict[str, Any]) -> None:
        target = [d["target_kind"], d["target"]]
        if target not in self.sgroups[d["name"]]["for"]:
            self.sgroups[d["name"]]["for"].append(target)

    def _on_scaling_group_dissociated(self, d: dict[str, Any]) -> None:
        target = [d["target_kind"], d["target"]]
        if target in self.sgroups[d["name"]]["for"]:
            self.sgroups[d["name"]]["for"].remove(target)

    def _on_image_registered(self, d: dict[str, Any]) -> None:
        self.images[d["name"]] = d

    def _on_image_alias_set(self, d: dict[str, Any]) -> None:
        self.aliases[d["alias"]] = d["target"]

    # ---- removals: a record, and whatever only it held ---------------------------------------
    def _on_domain_purged(self, d: dict[str, Any]) -> None:
        self.domains.pop(d["name"], None)
        self._forget_associations("domain", d["name"])

    def _on_project_purged(self, d: dict[str, Any]) -> None:
        self.projects.pop(d["project_id"], None)
        self._forget_associations("project", d["project_id"])

    def _on_user_purged(self, d: dict[str, Any]) -> None:
        self.users.pop(d["user_id"], None)
        for access_key in [k for k, v in self.keypairs.items() if v["user_id"] == d["user_id"]]:
            self._on_keypair_deleted({"access_key": access_key})
        for project in self.projects.values():
            if d["user_id"] in project["members"]:
                project["members"].remove(d["user_id"])

    def _on_keypair_deleted(self, d: dict[str, Any]) -> None:
        self.keypairs.pop(d["access_key"], None)
        self._forget_associations("keypair", d["access_key"])

    def _on_keypair_policy_deleted(self, d: dict[str, Any]) -> None:
        self.policies.pop(d["name"], None)

    def _on_resource_preset_deleted(self, d: dict[str, Any]) -> None:
        self.presets.pop(d["name"], None)

    def _on_scaling_group_deleted(self, d: dict[str, Any]) -> None:
        self.sgroups.pop(d["name"], None)

    def _on_image_alias_removed(self, d: dict[str, Any]) -> None:
        self.aliases.pop(d["alias"], None)

    def _forget_associations(self, kind: str, target: str) -> None:
        for group in self.sgroups.values():
            if [kind, target] in group["for"]:
                group["for"].remove([kind, target])


# ---- decisions ----------------------------------------------------------------------------


def decide_create_domain(state: TenancyState, event: DomainCreated) -> list[AnyPayload]:
    _check_name("domain", event.name)
    existing = state.domains.get(event.name)
    if existing is not None:
        if _same(existing, event):
            return []
        raise InvalidAPIParameters(f"domain {event.name!r} already exists")
    return [event]


def decide_create_project(state: TenancyState, event: ProjectCreated) -> list[AnyPayload]:
    _check_name("project", event.name)
    if event.domain not in state.domains:
        raise ObjectNotFound("domain", f"domain {event.domain!r} does not exist")
    if str(event.project_id) in state.projects:
        return [] if _same(state.projects[str(event.project_id)], event) else _exists(event)
    if state.project_named(event.domain, event.name) is not None:
        raise InvalidAPIParameters(
            f"project {event.name!r} already exists in domain {event.domain!r}"
        )
    return [event]


def decide_create_user(state: TenancyState, event: UserCreated) -> list[AnyPayload]:
    _check_username(event.username)
    _check_networks(event.allowed_client_ip)
    if not (_EMAIL.match(event.email) and len(event.email) <= 254 and event.email.isprintable()):
        raise InvalidAPIParameters(f"invalid e-mail address {event.email[:254]!r}")
    if event.domain not in state.domains:
        raise ObjectNotFound("domain", f"domain {event.domain!r} does not exist")
    if str(event.user_id) in state.users:
        return [] if _same(state.users[str(event.user_id)], event) else _exists(event)
    if state.user_by(username=event.username) is not None:
        raise InvalidAPIParameters(f"username {event.username!r} is taken")
    if state.user_by(email=event.email) is not None:
        raise InvalidAPIParameters(f"e-mail {event.email!r} is taken")
    return [event]


def decide_update(
    state: TenancyState, event: DomainUpdated | ProjectUpdated | UserUpdated | KeypairUpdated
) -> list[AnyPayload]:
    """Partial updates: a no-op when every given field already has that value."""
    if isinstance(event, DomainUpdated):
        record, what = state.domains.get(event.name), ("domain", event.name)
    elif isinstance(event, ProjectUpdated):
        record, what = (
            state.projects.get(str(event.project_id)),
            ("user group", str(event.project_id)),
        )
        if record is not None and event.name is not None and event.name != record["name"]:
            _check_name("project", event.name)
            if state.project_named(record["domain"], event.name) is not None:
                raise InvalidAPIParameters(
                    f"project {event.name!r} already exists in domain {record['domain']!r}"
                )
    elif isinstance(event, UserUpdated):
        record, what = state.users.get(str(event.user_id)), ("user", str(event.user_id))
        _check_networks(event.allowed_client_ip)
        if record is not None and event.username not in (None, record["username"]):
            _check_username(event.username)
            if state.user_by(username=event.username) is not None:
                raise InvalidAPIParameters(f"username {event.username!r} is taken")
    else:
        record, what = state.keypairs.get(event.access_key), ("keypair", event.access_key)
        if event.resource_policy is not None and event.resource_policy not in state.policies:
            raise ObjectNotFound(
                "keypair resource policy", f"policy {event.resource_policy!r} does not exist"
            )
    if record is None:
        raise ObjectNotFound(what[0], f"{what[0]} {what[1]} does not exist")
    return [] if _same(record, event, only_set=True) else [event]


def decide_add_member(
    state: TenancyState, event: ProjectMemberAdded | ProjectMemberRemoved
) -> list[AnyPayload]:
    project = state.projects.get(str(event.project_id))
    user = state.users.get(str(event.user_id))
    if project is None:
        raise ObjectNotFound("user group", f"project {event.project_id} does not exist")
    if user is None:
        raise ObjectNotFound("user", f"user {event.user_id} does not exist")
    member = str(event.user_id) in project["members"]
    if isinstance(event, ProjectMemberAdded):
        if user["domain"] != project["domain"]:
            raise GenericBadRequest("a user can only join projects of their own domain")
        return [] if member else [event]
    return [event] if member else []


def decide_issue_keypair(state: TenancyState, event: KeypairIssued) -> list[AnyPayload]:
    if str(event.user_id) not in state.users:
        raise ObjectNotFound("user", f"user {event.user_id} does not exist")
    if event.resource_policy not in state.policies:
        raise ObjectNotFound(
            "keypair resource policy", f"policy {event.resource_policy!r} does not exist"
        )
    if event.access_key in state.keypairs:
        raise InvalidAPIParameters(f"access key {event.access_key} already exists")
    return [event]


def decide_associate(
    state: TenancyState, event: ScalingGroupAssociated | ScalingGroupDissociated
) -> list[AnyPayload]:
    group = state.sgroups.get(event.name)
    if group is None:
        raise ObjectNotFound("scaling group", f"scaling group {event.name!r} does not exist")
    exists = {
        "domain": event.target in state.domains,
        "project": event.target in state.projects,
        "keypair": event.target in state.keypairs,
    }[event.target_kind]
    if not exists:
        raise ObjectNotFound(
            event.target_kind, f"{event.target_kind} {event.target!r} does not exist"
        )
    associated = [event.target_kind, event.target] in group["for"]
    if isinstance(event, ScalingGroupAssociated):
        return [] if associated else [event]
    return [event] if associated else []


def decide_register_image(state: TenancyState, event: ImageRegistered) -> list[AnyPayload]:
    """An image whose ``ai.backend.service-ports`` label does not parse is refused with the
    parser's message (:class:`~.service_ports.InvalidServiceConfig`): catalogued, it would
    offer apps no session could start."""
    image_service_ports(event.labels)
    existing = state.images.get(event.name)
    return [] if existing is not None and _same(existing, event) else [event]


def decide_alias(state: TenancyState, event: ImageAliasSet) -> list[AnyPayload]:
    if event.target not in state.images:
        raise ImageNotFound(f"alias target {event.target!r} is not in the image catalogue")
    return [] if state.aliases.get(event.alias) == event.target else [event]


def decide_manager_status(state: TenancyState, event: ManagerStatusSet) -> list[AnyPayload]:
    """A no-op when the status is already that (a forced kill is a fresh decision)."""
    return [] if state.manager_status == event.status and not event.force_kill else [event]


def decide_set(
    state: TenancyState, event: KeypairPolicySet | ScalingGroupSet | ResourcePresetSet
) -> list[AnyPayload]:
    """Policies, scaling groups and presets are set whole: a no-op when nothing differs."""
    kind, records = {
        "keypair_policy_set": ("policy", state.policies),
        "scaling_group_set": ("scaling group", state.sgroups),
        "resource_preset_set": ("resource preset", state.presets),
    }[event.type]
    _check_name(kind, event.name)
    current = records.get(event.name)
    return [] if current is not None and _same(current, event) else [event]


Removal = (
    DomainPurged
    | ProjectPurged
    | UserPurged
    | KeypairDeleted
    | KeypairPolicyDeleted
    | ResourcePresetDeleted
    | ScalingGroupDeleted
    | ImageAliasRemoved
)


def decide_remove(state: TenancyState, event: Removal) -> list[AnyPayload]:
    """A record removed, with what it names filled in (the keypairs of a purged user, the
    scaling groups a removed target was associated with) so every reader folds the event
    alone: a no-op when it is already gone (a retried purge), refused while something still
    refers to it. Live sessions are the gateway's to check (this state holds none)."""
    if isinstance(event, DomainPurged):
        if event.name not in state.domains:
            return []
        n_users = sum(1 for u in state.users.values() if u["domain"] == event.name)
        n_projects = sum(1 for p in state.projects.values() if p["domain"] == event.name)
        if n_users or n_projects:
            raise GenericBadRequest(
                f"domain {event.name!r} still has {n_users} user(s) and {n_projects} project(s): "
                "purge them first"
            )
        return [event.model_copy(update={"scaling_groups": state.associated("domain", event.name)})]
    if isinstance(event, ProjectPurged):
        project = state.projects.get(str(event.project_id))
        if project is None:
            return []
        update = {
            "members": [uuid.UUID(m) for m in project["members"]],
            "scaling_groups": state.associated("project", str(event.project_id)),
        }
        return [event.model_copy(update=update)]
    if isinstance(event, UserPurged):
        uid = str(event.user_id)
        if uid not in state.users:
            return []
        keys = sorted(k for k, v in state.keypairs.items() if v["user_id"] == uid)
        groups = sorted({g for k in keys for g in state.associated("keypair", k)})
        joined = sorted(p for p, v in state.projects.items() if uid in v["members"])
        update = {
            "access_keys": keys,
            "project_ids": [uuid.UUID(p) for p in joined],
            "scaling_groups": groups,
        }
        return [event.model_copy(update=update)]
    if isinstance(event, KeypairDeleted):
        if event.access_key not in state.keypairs:
            return []
        groups = state.associated("keypair", event.access_key)
        return [event.model_copy(update={"scaling_groups": groups})]
    if isinstance(event, KeypairPolicyDeleted):
        if event.name not in state.policies:
            return []
        holders = sorted(k for k, v in state.keypairs.items() if v["resource_policy"] == event.name)
        if holders:
            raise GenericBadRequest(
                f"policy {event.name!r} is used by {len(holders)} keypair(s) "
                f"({', '.join(holders[:3])}{', ...' if len(holders) > 3 else ''}): "
                "give them another policy first"
            )
        return [event]
    if isinstance(event, ResourcePresetDeleted):
        return [event] if event.name in state.presets else []
    if isinstance(event, ScalingGroupDeleted):
        return [event] if event.name in state.sgroups else []
    return [event] if event.alias in state.aliases else []


Decision = Callable[[TenancyState, Any], list[AnyPayload]]

DECISIONS: Mapping[str, Decision] = {
    "domain_created": decide_create_domain,
    "domain_updated": decide_update,
    "project_created": decide_create_project,
    "project_updated": decide_update,
    "project_member_added": decide_add_member,
    "project_member_removed": decide_add_member,
    "user_created": decide_create_user,
    "user_updated": decide_update,
    "keypair_issued": decide_issue_keypair,
    "keypair_updated": decide_update,
    "keypair_policy_set": decide_set,
    "resource_preset_set": decide_set,
    "scaling_group_set": decide_set,
    "scaling_group_associated": decide_associate,
    "scaling_group_dissociated": decide_associate,
    "image_registered": decide_register_image,
    "image_alias_set": decide_alias,
    "manager_status_set": decide_manager_status,
    "domain_purged": decide_remove,
    "project_purged": decide_remove,
    "user_purged": decide_remove,
    "keypair_deleted": decide_remove,
    "keypair_policy_deleted": decide_remove,
    "resource_preset_deleted": decide_remove,
    "scaling_group_deleted": decide_remove,
    "image_alias_removed": decide_remove,
}
"""The decision that checks each proposed tenancy event (one per event type, as
:data:`STREAM_OF` names its stream)."""


def decide(state: TenancyState, event: AnyPayload) -> list[AnyPayload]:
    """Check a proposed tenancy event against the state: the events to append (none when
    it would change nothing), or a :class:`DomainError`."""
    return DECISIONS[event.type](state, event)


def project_id_for(
    state: TenancyState, domain: str, name: str, given: uuid.UUID | None
) -> uuid.UUID:
    """A new project's id: the one given, else that of the project of this name in
    ``domain`` (creating it again is then a no-op, or a refusal if it differs), else new."""
    if given is not None:
        return given
    existing = state.project_named(domain, name)
    return uuid.UUID(existing["project_id"]) if existing else uuid.uuid4()


def _same(record: Mapping[str, Any], event: AnyPayload, *, only_set: bool = False) -> bool:
    data = event.model_dump(mode="json", exclude={"type"})
    return all(record.get(k) == v for k, v in data.items() if not (only_set and v is None))


def _exists(event: AnyPayload) -> list[AnyPayload]:
    raise InvalidAPIParameters(f"{event.type.split('_')[0]} already exists with other settings")


def image_slot_limits(image: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(min, max) slots from ``ai.backend.resource.{min,max}.<slot>`` labels."""
    minimum: dict[str, str] = {}
    maximum: dict[str, str] = {}
    for label, value in (image.get("labels") or {}).items():
        for prefix, target in (
            ("ai.backend.resource.min.", minimum),
            ("ai.backend.resource.max.", maximum),
        ):
            if label.startswith(prefix):
                target[label[len(prefix) :]] = value
    return minimum, maximum
