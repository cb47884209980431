"""Tenancy and image-catalogue events (kernelhub's; Backend.AI keeps these in tables).

One stream per kind, written by the single tenancy writer: ``tenancy-domains``,
``tenancy-projects``, ``tenancy-users``, ``tenancy-keypairs``, ``tenancy-policies``,
``tenancy-sgroups``, ``image-catalogue``. A kind's stream version is the optimistic lock
that makes its names unique. ``*_updated`` events carry only what changed (``None``: kept).
Secret fields hold ciphertext and are marked, so tail/export can redact them.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from ..secrets import SECRET
from ._base import EventPayload, JsonObject, Slots

__all__ = [
    "DomainCreated",
    "DomainUpdated",
    "ImageAliasSet",
    "ImageRegistered",
    "KeypairIssued",
    "KeypairPolicySet",
    "KeypairUpdated",
    "ProjectCreated",
    "ProjectMemberAdded",
    "ProjectMemberRemoved",
    "ProjectUpdated",
    "ResourcePresetSet",
    "ScalingGroupAssociated",
    "ScalingGroupDissociated",
    "ScalingGroupSet",
    "UserCreated",
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
    description: str | None = None
    is_active: bool | None = None
    total_resource_slots: Slots | None = None
    allowed_vfolder_hosts: JsonObject | None = None


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


class UserUpdated(EventPayload):
    type: Literal["user_updated"] = "user_updated"
    user_id: UUID
    role: Role | None = None
    status: UserStatus | None = None
    full_name: str | None = None
    description: str | None = None
    allowed_client_ip: list[str] | None = None


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


class ScalingGroupSet(EventPayload):
    """A scaling group, created or replaced whole."""

    type: Literal["scaling_group_set"] = "scaling_group_set"
    name: str
    description: str = ""
    is_active: bool = True
    is_public: bool = True
    driver: str = "static"
    scheduler: Literal["fifo", "lifo", "drf", "mof"] = "fifo"
    allowed_session_types: list[SessionTypeName] = Field(
        default_factory=lambda: list(DEFAULT_SESSION_TYPES)
    )
    pending_timeout: float = Field(default=0.0, ge=0)
    scheduler_config: JsonObject = Field(default_factory=dict)
    agent_selector: Literal["concentrated", "dispersed", "round-robin"] | None = None
    use_host_network: bool = False


class ResourcePresetSet(EventPayload):
    """A resource preset (23.03's ``resource_presets`` row), created or replaced whole:
    a named size users pick at creation and ``check-presets`` says fits or not."""

    type: Literal["resource_preset_set"] = "resource_preset_set"
    name: str
    resource_slots: Slots
    shared_memory: str | None = None
    scaling_group_name: str | None = None


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
