"""Tenancy and image-catalogue events (kernelhub's; Backend.AI keeps these in tables).

One stream per kind, written by the single tenancy writer: ``tenancy-domains``,
``tenancy-projects``, ``tenancy-users``, ``tenancy-keypairs``, ``tenancy-policies``,
``tenancy-sgroups``, ``image-catalogue``. A kind's stream version is the optimistic lock
that makes its names unique. ``*_updated`` events carry only what changed (``None``: kept);
``*_deleted`` / ``*_purged`` events remove a record (a user or domain is first *deleted*
by status, as upstream, and only *purged* when nothing refers to it). Secret fields hold
ciphertext (or a password's slow hash) and are marked, so tail/export can redact them. Who
asked for each change is in the envelope's ``initiator``, not here.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from ..secrets import SECRET
from ._base import EventPayload, JsonObject, Slots

__all__ = [
    "DomainCreated",
    "DomainPurged",
    "DomainUpdated",
    "ImageAliasRemoved",
    "ImageAliasSet",
    "ImageRegistered",
    "KeypairDeleted",
    "KeypairIssued",
    "KeypairPolicyDeleted",
    "KeypairPolicySet",
    "KeypairUpdated",
    "ProjectCreated",
    "ProjectMemberAdded",
    "ProjectMemberRemoved",
    "ProjectPurged",
    "ProjectUpdated",
    "ResourcePresetDeleted",
    "ResourcePresetSet",
    "ScalingGroupAssociated",
    "ScalingGroupDeleted",
    "ScalingGroupDissociated",
    "ScalingGroupSet",
    "UserCreated",
    "UserPurged",
    "UserUpdated",
]

Role = Literal["superadmin", "admin", "user", "monitor"]
SessionTypeName = Literal["interactive", "batch", "inference"]
DEFAULT_SESSION_TYPES: tuple[SessionTypeName, ...] = ("interactive", "batch")
UserStatus = Literal["active", "inactive", "deleted", "before-verification"]


class DomainCreated(EventPayload):
    type: Literal["domain_created"] = "domain_created"
    name: str
    description: str = ""
    is_active: bool = True
    total_resource_slots: Slots = Field(default_factory=dict)
    allowed_vfolder_hosts: JsonObject = Field(default_factory=dict)
    allowed_docker_registries: list[str] = Field(default_factory=list)


class DomainUpdated(EventPayload):
    type: Literal["domain_updated"] = "domain_updated"
    name: str
    description: str | None = None
    is_active: bool | None = None
    total_resource_slots: Slots | None = None
    allowed_vfolder_hosts: JsonObject | None = None
    allowed_docker_registries: list[str] | None = None


class DomainPurged(EventPayload):
    """The domain is gone (only once it has no users and no projects left)."""

    type: Literal["domain_purged"] = "domain_purged"
    name: str
    scaling_groups: list[str] = Field(default_factory=list)
    """The groups it was associated with (filled in by the decision, so every reader can
    drop the associations from this event alone)."""


class ProjectCreated(EventPayload):
    type: Literal["project_created"] = "project_created"
    project_id: UUID
    name: str
    domain: str
    description: str = ""
    is_active: bool = True
    total_resource_slots: Slots = Field(default_factory=dict)
    allowed_vfolder_hosts: JsonObject = Field(default_factory=dict)


class ProjectUpdated(EventPayload):
    type: Literal["project_updated"] = "project_updated"
    project_id: UUID
    name: str | None = Field(default=None, exclude_if=lambda v: v is None)
    """A new name (unique in its domain); added later, so absent from older events."""
    description: str | None = None
    is_active: bool | None = None
    total_resource_slots: Slots | None = None
    allowed_vfolder_hosts: JsonObject | None = None


class ProjectPurged(EventPayload):
    """The project is gone, with its memberships and scaling-group associations."""

    type: Literal["project_purged"] = "project_purged"
    project_id: UUID
    members: list[UUID] = Field(default_factory=list)
    scaling_groups: list[str] = Field(default_factory=list)


class ProjectMemberAdded(EventPayload):
    type: Literal["project_member_added"] = "project_member_added"
    project_id: UUID
    user_id: UUID


class ProjectMemberRemoved(EventPayload):
    type: Literal["project_member_removed"] = "project_member_removed"
    project_id: UUID
    user_id: UUID


class UserCreated(EventPayload):
    type: Literal["user_created"] = "user_created"
    user_id: UUID
    username: str
    email: str
    domain: str
    role: Role = "user"
    status: UserStatus = "active"
    full_name: str = ""
    description: str = ""
    allowed_client_ip: list[str] = Field(default_factory=list)
    password_hash: str = Field(default="", json_schema_extra=SECRET, exclude_if=lambda v: not v)
    """The password's salted slow hash (:mod:`actors.domain.passwords`), never the password;
    empty: the user cannot log in with a password (keypairs only)."""
    need_password_change: bool = Field(default=False, exclude_if=lambda v: not v)


class UserUpdated(EventPayload):
    type: Literal["user_updated"] = "user_updated"
    user_id: UUID
    username: str | None = Field(default=None, exclude_if=lambda v: v is None)
    password_hash: str | None = Field(
        default=None, json_schema_extra=SECRET, exclude_if=lambda v: v is None
    )
    need_password_change: bool | None = Field(default=None, exclude_if=lambda v: v is None)
    role: Role | None = None
    status: UserStatus | None = None
    full_name: str | None = None
    description: str | None = None
    allowed_client_ip: list[str] | None = None


class UserPurged(EventPayload):
    """The user is gone, with their keypairs and project memberships (their sessions'
    records stay: history keeps who ran what)."""

    type: Literal["user_purged"] = "user_purged"
    user_id: UUID
    access_keys: list[str] = Field(default_factory=list)
    """Their keypairs, removed with them (each one's associations too)."""
    project_ids: list[UUID] = Field(default_factory=list)
    """The projects they were a member of."""
    scaling_groups: list[str] = Field(default_factory=list)
    """Groups associated with any of their keypairs."""


class KeypairIssued(EventPayload):
    type: Literal["keypair_issued"] = "keypair_issued"
    access_key: str
    secret_key: str = Field(json_schema_extra=SECRET)
    """Ciphertext (see ``events.secrets``), never the secret itself."""
    user_id: UUID
    is_active: bool = True
    is_admin: bool = False
    rate_limit: int = Field(default=1000, ge=0)
    """Requests per 15 minutes."""
    resource_policy: str = "default"


class KeypairUpdated(EventPayload):
    type: Literal["keypair_updated"] = "keypair_updated"
    access_key: str
    is_active: bool | None = None
    is_admin: bool | None = None
    rate_limit: int | None = Field(default=None, ge=0)
    resource_policy: str | None = None


class KeypairDeleted(EventPayload):
    type: Literal["keypair_deleted"] = "keypair_deleted"
    access_key: str
    scaling_groups: list[str] = Field(default_factory=list)


class KeypairPolicySet(EventPayload):
    """A keypair resource policy, created or replaced whole (every field of 23.03's table)."""

    type: Literal["keypair_policy_set"] = "keypair_policy_set"
    name: str
    default_for_unspecified: Literal["LIMITED", "UNLIMITED"] = "UNLIMITED"
    total_resource_slots: Slots = Field(default_factory=dict)
    max_session_lifetime: int = Field(default=0, ge=0)
    """Seconds from creation; 0 = unlimited."""
    max_concurrent_sessions: int = Field(default=30, ge=0)
    """0 = unlimited."""
    max_concurrent_sftp_sessions: int = Field(default=1, ge=0)
    max_containers_per_session: int = Field(default=1, ge=1)
    max_vfolder_count: int = Field(default=10, ge=0)
    max_vfolder_size: int = Field(default=0, ge=0)
    idle_timeout: int = Field(default=1800, ge=0)
    """Seconds without activity before an ``idle-timeout`` reclaim; 0 = never."""
    allowed_vfolder_hosts: JsonObject = Field(default_factory=dict)
    exec_timeout_s: float | None = Field(default=None, ge=0, exclude_if=lambda v: v is None)
    """The longest one execution of its keypairs' sessions may run, in seconds (kernelhub's
    addition, added later: policies set before it keep their bytes); None or 0: no limit
    (see :func:`actors.domain.limits.execution_timeout_s`)."""


class KeypairPolicyDeleted(EventPayload):
    """Only a policy no keypair uses can go."""

    type: Literal["keypair_policy_deleted"] = "keypair_policy_deleted"
    name: str


class ScalingGroupSet(EventPayload):
    """A scaling group, created or replaced whole."""

    type: Literal["scaling_group_set"] = "scaling_group_set"
    name: str
    description: str = ""
    is_active: bool = True
    is_public: bool = True
    driver: str = "static"
    scheduler: Literal["fifo", "lifo", "drf", "mof", "fair_share"] = "fifo"
    allowed_session_types: list[SessionTypeName] = Field(
        default_factory=lambda: list(DEFAULT_SESSION_TYPES)
    )
    pending_timeout: float = Field(default=0.0, ge=0)
    scheduler_config: JsonObject = Field(default_factory=dict)
    agent_selector: Literal["concentrated", "dispersed", "round-robin", "fragmentation"] | None = (
        None
    )
    use_host_network: bool = False


class ScalingGroupDeleted(EventPayload):
    """The group is gone, with its associations."""

    type: Literal["scaling_group_deleted"] = "scaling_group_deleted"
    name: str


class ResourcePresetSet(EventPayload):
    """A resource preset (23.03's ``resource_presets`` row), created or replaced whole:
    a named size users pick at creation and ``check-presets`` says fits or not."""

    type: Literal["resource_preset_set"] = "resource_preset_set"
    name: str
    resource_slots: Slots
    shared_memory: str | None = None
    scaling_group_name: str | None = None


class ResourcePresetDeleted(EventPayload):
    type: Literal["resource_preset_deleted"] = "resource_preset_deleted"
    name: str


class ManagerStatusSet(EventPayload):
    """The manager's status (23.03 keeps it in etcd): ``frozen`` refuses new sessions with
    ``503 server-frozen`` while everything that reads or ends a session still works."""

    type: Literal["manager_status_set"] = "manager_status_set"
    status: Literal["running", "frozen"]
    force_kill: bool = False
    """Freezing with it destroys every live session too."""


class ScalingGroupAssociated(EventPayload):
    type: Literal["scaling_group_associated"] = "scaling_group_associated"
    name: str
    target_kind: Literal["domain", "project", "keypair"]
    target: str


class ScalingGroupDissociated(EventPayload):
    type: Literal["scaling_group_dissociated"] = "scaling_group_dissociated"
    name: str
    target_kind: Literal["domain", "project", "keypair"]
    target: str


class ImageRegistered(EventPayload):
    """An environment image: its canonical name and Backend.AI-style labels."""

    type: Literal["image_registered"] = "image_registered"
    name: str
    architecture: str = "x86_64"
    labels: dict[str, str] = Field(default_factory=dict)
    digest: str = ""
    is_local: bool = True


class ImageAliasSet(EventPayload):
    type: Literal["image_alias_set"] = "image_alias_set"
    alias: str
    target: str


class ImageAliasRemoved(EventPayload):
    type: Literal["image_alias_removed"] = "image_alias_removed"
    alias: str
