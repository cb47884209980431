"""The tenancy writer's commands: who exists, who may use what, under which limits.

Each command is a frozen value built by its caller (``kh up``'s bootstrap, an operator, the
gateway's ``PUT /manager/status``), carrying its command id: the Ray shell passes it
unchanged to ``TenancyService.handle``, so a retry after the actor restarted has one effect.
The type parameter of :class:`TenancyCommand` is what ``handle`` returns for it.

Most commands propose one tenancy event (:meth:`TenancyCommand.proposed`, built from the
fields the caller set, so the event's own defaults apply to the rest), which the writer
checks with the domain's decision for that event (:data:`actors.domain.tenancy.DECISIONS`)
and appends to its kind's stream. Creating a project or a user names the new id (given, or
the existing one's, or new), and issuing a keypair generates the keys: those three have a
handler of their own at the writer.

Every command may say who asked for it (``initiator``: the admin's keypair and user and the
request's peer, set by the gateway); the writer puts it in the envelope of every event the
command appends, so the log answers "who did this" without a table of its own.

Adding a tenancy command is one class here (with the event it proposes) and its decision in
:mod:`actors.domain.tenancy`.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import Field

from events.catalogue import (
    AnyPayload,
    DomainCreated,
    DomainPurged,
    DomainUpdated,
    ImageAliasRemoved,
    ImageAliasSet,
    ImageRegistered,
    JsonObject,
    KeypairDeleted,
    KeypairPolicyDeleted,
    KeypairPolicySet,
    KeypairUpdated,
    ManagerStatusSet,
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
    Slots,
    UserPurged,
    UserUpdated,
)
from events.catalogue.tenancy import DEFAULT_SESSION_TYPES, Role, SessionTypeName, UserStatus
from events.envelope import Initiator

from . import Command

__all__ = [
    "AddMember",
    "Associate",
    "CreateDomain",
    "CreateProject",
    "CreateUser",
    "DeleteKeypair",
    "DeletePolicy",
    "DeletePreset",
    "DeleteScalingGroup",
    "Dissociate",
    "IssueKeypair",
    "PurgeDomain",
    "PurgeProject",
    "PurgeUser",
    "RegisterImage",
    "RemoveAlias",
    "RemoveMember",
    "SetAlias",
    "SetManagerStatus",
    "SetPolicy",
    "SetPreset",
    "SetScalingGroup",
    "TenancyCommand",
    "UpdateDomain",
    "UpdateKeypair",
    "UpdateProject",
    "UpdateUser",
]

R = TypeVar("R")

TargetKind = Literal["domain", "project", "keypair"]


class TenancyCommand(Command, Generic[R]):
    """Anything the tenancy writer handles; ``R`` is what handling it returns."""

    proposes: ClassVar[type[AnyPayload] | None] = None
    """The event this command proposes (``None``: its handler builds it)."""

    initiator: Initiator | None = None
    """Who asked (recorded in each appended event's envelope, not its payload)."""

    def given(self, *skip: str) -> dict[str, Any]:
        """The fields its caller set (less ``skip``): what the event records, with the
        event's own defaults for the rest, as the writer's keyword arguments did."""
        return self.model_dump(exclude={"command_id", "initiator", *skip}, exclude_unset=True)

    def proposed(self) -> AnyPayload:
        """The event this command proposes."""
        if self.proposes is None:
            raise TypeError(f"{type(self).__name__} proposes no event of its own")
        return self.proposes.model_validate(self.given())


# ---- domains, projects, users --------------------------------------------------------------
class CreateDomain(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = DomainCreated

    name: str
    description: str = ""
    is_active: bool = True
    total_resource_slots: Slots = Field(default_factory=dict)
    allowed_vfolder_hosts: JsonObject = Field(default_factory=dict)
    allowed_docker_registries: list[str] = Field(default_factory=list)


class UpdateDomain(TenancyCommand[None]):
    """Only the fields given change."""

    proposes: ClassVar[type[AnyPayload] | None] = DomainUpdated

    name: str
    description: str | None = None
    is_active: bool | None = None
    total_resource_slots: Slots | None = None
    allowed_vfolder_hosts: JsonObject | None = None
    allowed_docker_registries: list[str] | None = None


class CreateProject(TenancyCommand[uuid.UUID]):
    """A project in ``domain``; returns its id (``project_id`` if given, else the id of the
    project of that name, if one exists, else a new one)."""

    name: str
    domain: str
    project_id: uuid.UUID | None = None
    description: str = ""
    is_active: bool = True
    total_resource_slots: Slots = Field(default_factory=dict)
    allowed_vfolder_hosts: JsonObject = Field(default_factory=dict)


class UpdateProject(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = ProjectUpdated

    project_id: uuid.UUID
    name: str | None = None
    description: str | None = None
    is_active: bool | None = None
    total_resource_slots: Slots | None = None
    allowed_vfolder_hosts: JsonObject | None = None


class CreateUser(TenancyCommand[uuid.UUID]):
    """A user of ``domain``; returns its id (``user_id`` if given, else a new one)."""

    username: str
    email: str
    domain: str
    user_id: uuid.UUID | None = None
    role: Role = "user"
    status: UserStatus = "active"
    full_name: str = ""
    description: str = ""
    allowed_client_ip: list[str] = Field(default_factory=list)
    password_hash: str = ""
    """Hashed by the caller (:func:`actors.domain.passwords.hash_password`): the password
    itself never crosses an actor call."""
    need_password_change: bool = False


class UpdateUser(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = UserUpdated

    user_id: uuid.UUID
    username: str | None = None
    password_hash: str | None = None
    need_password_change: bool | None = None
    role: Role | None = None
    status: UserStatus | None = None
    full_name: str | None = None
    description: str | None = None
    allowed_client_ip: list[str] | None = None


class AddMember(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = ProjectMemberAdded

    project_id: uuid.UUID
    user_id: uuid.UUID


class RemoveMember(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = ProjectMemberRemoved

    project_id: uuid.UUID
    user_id: uuid.UUID


# ---- keypairs, policies, presets, the manager ----------------------------------------------
class IssueKeypair(TenancyCommand[tuple[str, str]]):
    """A new access key / secret key pair for ``user_id``; returns both in clear (the only
    time the secret leaves the writer unencrypted; a retry returns the first attempt's)."""

    user_id: uuid.UUID
    is_active: bool = True
    is_admin: bool = False
    rate_limit: int = 1000
    resource_policy: str = "default"


class UpdateKeypair(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = KeypairUpdated

    access_key: str
    is_active: bool | None = None
    is_admin: bool | None = None
    rate_limit: int | None = None
    resource_policy: str | None = None


class SetPolicy(TenancyCommand[None]):
    """A keypair resource policy, created or replaced whole."""

    proposes: ClassVar[type[AnyPayload] | None] = KeypairPolicySet

    name: str
    default_for_unspecified: Literal["LIMITED", "UNLIMITED"] = "UNLIMITED"
    total_resource_slots: Slots = Field(default_factory=dict)
    max_session_lifetime: int = 0
    max_concurrent_sessions: int = 30
    max_concurrent_sftp_sessions: int = 1
    max_containers_per_session: int = 1
    max_vfolder_count: int = 10
    max_vfolder_size: int = 0
    idle_timeout: int = 1800
    allowed_vfolder_hosts: JsonObject = Field(default_factory=dict)
    exec_timeout_s: float | None = None


class SetPreset(TenancyCommand[None]):
    """A resource preset, created or replaced whole."""

    proposes: ClassVar[type[AnyPayload] | None] = ResourcePresetSet

    name: str
    resource_slots: Slots
    shared_memory: str | None = None
    scaling_group_name: str | None = None


class SetManagerStatus(TenancyCommand[bool]):
    """Freeze or unfreeze the manager (``force_kill``: and destroy every live session);
    returns whether anything changed."""

    proposes: ClassVar[type[AnyPayload] | None] = ManagerStatusSet

    status: Literal["running", "frozen"]
    force_kill: bool = False


# ---- scaling groups and images -------------------------------------------------------------
class SetScalingGroup(TenancyCommand[None]):
    """A scaling group, created or replaced whole."""

    proposes: ClassVar[type[AnyPayload] | None] = ScalingGroupSet

    name: str
    description: str = ""
    is_active: bool = True
    is_public: bool = True
    driver: str = "static"
    scheduler: Literal["fifo", "lifo", "drf", "mof", "fair_share"] = "fifo"
    allowed_session_types: list[SessionTypeName] = Field(
        default_factory=lambda: list(DEFAULT_SESSION_TYPES)
    )
    pending_timeout: float = 0.0
    scheduler_config: JsonObject = Field(default_factory=dict)
    agent_selector: Literal["concentrated", "dispersed", "round-robin", "fragmentation"] | None = (
        None
    )
    use_host_network: bool = False


class Associate(TenancyCommand[None]):
    """Let a domain, project or keypair use a scaling group."""

    proposes: ClassVar[type[AnyPayload] | None] = ScalingGroupAssociated

    name: str
    target_kind: TargetKind
    target: str


class Dissociate(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = ScalingGroupDissociated

    name: str
    target_kind: TargetKind
    target: str


class RegisterImage(TenancyCommand[None]):
    """An environment image (its canonical name and Backend.AI-style labels)."""

    proposes: ClassVar[type[AnyPayload] | None] = ImageRegistered

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    architecture: str = "x86_64"
    digest: str = ""
    is_local: bool = True


class SetAlias(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = ImageAliasSet

    alias: str
    target: str


# ---- removals ------------------------------------------------------------------------------
class PurgeDomain(TenancyCommand[None]):
    """Remove a domain with no users and no projects left (a no-op if it is gone)."""

    proposes: ClassVar[type[AnyPayload] | None] = DomainPurged

    name: str


class PurgeProject(TenancyCommand[None]):
    """Remove a project (the caller has checked it runs no session)."""

    proposes: ClassVar[type[AnyPayload] | None] = ProjectPurged

    project_id: uuid.UUID


class PurgeUser(TenancyCommand[None]):
    """Remove a user with their keypairs and memberships (the caller has checked, or been
    told to ignore, their live sessions)."""

    proposes: ClassVar[type[AnyPayload] | None] = UserPurged

    user_id: uuid.UUID


class DeleteKeypair(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = KeypairDeleted

    access_key: str


class DeletePolicy(TenancyCommand[None]):
    """Remove a keypair resource policy no keypair uses."""

    proposes: ClassVar[type[AnyPayload] | None] = KeypairPolicyDeleted

    name: str


class DeletePreset(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = ResourcePresetDeleted

    name: str


class DeleteScalingGroup(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = ScalingGroupDeleted

    name: str


class RemoveAlias(TenancyCommand[None]):
    proposes: ClassVar[type[AnyPayload] | None] = ImageAliasRemoved

    alias: str
