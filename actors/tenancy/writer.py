"""The tenancy writer: loads tenancy state from the log, decides, appends.

A plain class (the Ray actor that hosts it comes with the write side). Every command takes
a ``command_id``; retrying one with the same id is answered from the log, so a timeout on
the caller's side never creates a second keypair or user.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import structlog

from actors.domain.tenancy import (
    STREAM_OF,
    TenancyState,
    decide_add_member,
    decide_alias,
    decide_associate,
    decide_create_domain,
    decide_create_project,
    decide_create_user,
    decide_issue_keypair,
    decide_manager_status,
    decide_register_image,
    decide_set,
    decide_update,
    generate_access_key,
    generate_secret_key,
)
from events import AnyPayload, RedisEventStore, WrongExpectedVersionError, events_for_command
from events.catalogue import (
    DomainCreated,
    DomainUpdated,
    ImageAliasSet,
    ImageRegistered,
    KeypairIssued,
    KeypairPolicySet,
    KeypairUpdated,
    ManagerStatusSet,
    ProjectCreated,
    ProjectMemberAdded,
    ProjectMemberRemoved,
    ProjectUpdated,
    ResourcePresetSet,
    ScalingGroupAssociated,
    ScalingGroupDissociated,
    ScalingGroupSet,
    UserCreated,
    UserUpdated,
)
from events.secrets import SecretBox

__all__ = ["TENANCY_STREAMS", "TenancyService", "load_tenancy"]

log = structlog.get_logger(__name__)

TENANCY_STREAMS = tuple(dict.fromkeys(STREAM_OF.values()))
_RETRIES = 8

P = TypeVar("P", bound=AnyPayload)


async def load_tenancy(store: RedisEventStore) -> TenancyState:
    """The tenancy as the log says, for readers that decide nothing (no secrets needed)."""
    state = TenancyState()
    for stream in TENANCY_STREAMS:
        for event in await store.read_stream(stream):
            state.apply(stream, event.version, event.data)
    return state


class TenancyService:
    def __init__(
        self, store: RedisEventStore, secret_box: SecretBox, *, actor: str = "tenancy"
    ) -> None:
        self.store = store
        self.secrets = secret_box
        self.actor = actor
        self.state = TenancyState()

    async def load(self) -> TenancyService:
        self.state = TenancyState()
        for stream in TENANCY_STREAMS:
            await self._refresh(stream)
        return self

    async def _refresh(self, stream: str) -> None:
        after = self.state.versions.get(stream, 0)
        for event in await self.store.read_stream(stream, after + 1):
            self.state.apply(stream, event.version, event.data)

    async def _execute(
        self,
        command_id: uuid.UUID | None,
        decide: Callable[[TenancyState, Any], list[AnyPayload]],
        event: P,
    ) -> tuple[list[AnyPayload], bool]:
        """Decide and append; returns (events appended, whether this was a retry)."""
        command = command_id or uuid.uuid4()
        stream = STREAM_OF[event.type]
        for _ in range(_RETRIES):
            payloads = decide(self.state, event)
            if not payloads:
                return [], False
            batch = events_for_command(command, payloads, actor=self.actor)
            try:
                result = await self.store.append(stream, batch, self.state.versions.get(stream, 0))
            except WrongExpectedVersionError:
                await self._refresh(stream)  # another writer got there first: look again
                continue
            await self._refresh(stream)
            if result.duplicate:
                stored = await self.store.read_stream(
                    stream, result.version - len(batch) + 1, result.version
                )
                return [e.data for e in stored], True
            return payloads, False
        raise RuntimeError(f"tenancy stream {stream} kept changing under {_RETRIES} attempts")

    # ---- domains, projects, users --------------------------------------------------------------
    async def create_domain(
        self, name: str, *, command_id: uuid.UUID | None = None, **fields: Any
    ) -> None:
        await self._execute(command_id, decide_create_domain, DomainCreated(name=name, **fields))

    async def update_domain(
        self, name: str, *, command_id: uuid.UUID | None = None, **fields: Any
    ) -> None:
        await self._execute(command_id, decide_update, DomainUpdated(name=name, **fields))

    async def create_project(
        self,
        name: str,
        domain: str,
        *,
        project_id: uuid.UUID | None = None,
        command_id: uuid.UUID | None = None,
        **fields: Any,
    ) -> uuid.UUID:
        existing = self.state.project_named(domain, name)
        pid = project_id or (uuid.UUID(existing["project_id"]) if existing else uuid.uuid4())
        event = ProjectCreated(project_id=pid, name=name, domain=domain, **fields)
        await self._execute(command_id, decide_create_project, event)
        return pid

    async def update_project(
        self, project_id: uuid.UUID, *, command_id: uuid.UUID | None = None, **fields: Any
    ) -> None:
        await self._execute(
            command_id, decide_update, ProjectUpdated(project_id=project_id, **fields)
        )

    async def create_user(
        self,
        username: str,
        email: str,
        domain: str,
        *,
        user_id: uuid.UUID | None = None,
        command_id: uuid.UUID | None = None,
        **fields: Any,
    ) -> uuid.UUID:
        uid = user_id or uuid.uuid4()
        event = UserCreated(user_id=uid, username=username, email=email, domain=domain, **fields)
        await self._execute(command_id, decide_create_user, event)
        return uid

    async def update_user(
        self, user_id: uuid.UUID, *, command_id: uuid.UUID | None = None, **fields: Any
    ) -> None:
        await self._execute(command_id, decide_update, UserUpdated(user_id=user_id, **fields))

    async def add_member(
        self, project_id: uuid.UUID, user_id: uuid.UUID, *, command_id: uuid.UUID | None = None
    ) -> None:
        event = ProjectMemberAdded(project_id=project_id, user_id=user_id)
        await self._execute(command_id, decide_add_member, event)

    async def remove_member(
        self, project_id: uuid.UUID, user_id: uuid.UUID, *, command_id: uuid.UUID | None = None
    ) -> None:
        event = ProjectMemberRemoved(project_id=project_id, user_id=user_id)
        await self._execute(command_id, decide_add_member, event)

    # ---- keypairs and policies -----------------------------------------------------------------
    async def issue_keypair(
        self, user_id: uuid.UUID, *, command_id: uuid.UUID | None = None, **fields: Any
    ) -> tuple[str, str]:
        """A new access key / secret key pair for ``user_id``; returns both in clear (the
        only time the secret leaves this process unencrypted)."""
        secret = generate_secret_key()
        for _ in range(_RETRIES):
            access_key = generate_access_key()
            if access_key not in self.state.keypairs:
                break
        event = KeypairIssued(
            access_key=access_key,
            secret_key=self.secrets.encrypt(secret),
            user_id=user_id,
            **fields,
        )
        stored, retried = await self._execute(command_id, decide_issue_keypair, event)
        if retried:  # the keys generated by the first attempt are the ones in the log
            (issued,) = stored
            assert isinstance(issued, KeypairIssued)
            return issued.access_key, self.secrets.decrypt(issued.secret_key)
        return access_key, secret

    async def update_keypair(
        self, access_key: str, *, command_id: uuid.UUID | None = None, **fields: Any
    ) -> None:
        await self._execute(
            command_id, decide_update, KeypairUpdated(access_key=access_key, **fields)
        )

    async def set_policy(
        self, name: str, *, command_id: uuid.UUID | None = None, **fields: Any
    ) -> None:
        await self._execute(command_id, decide_set, KeypairPolicySet(name=name, **fields))

    async def set_manager_status(
        self, status: str, *, force_kill: bool = False, command_id: uuid.UUID | None = None
    ) -> bool:
        """Freeze or unfreeze the manager; whether anything changed."""
        event = ManagerStatusSet(status=status, force_kill=force_kill)
        appended, _ = await self._execute(command_id, decide_manager_status, event)
        return bool(appended)

    async def set_preset(
        self, name: str, *, command_id: uuid.UUID | None = None, **fields: Any
    ) -> None:
        await self._execute(command_id, decide_set, ResourcePresetSet(name=name, **fields))

    # ---- scaling groups and images -------------------------------------------------------------
    async def set_scaling_group(
        self, name: str, *, command_id: uuid.UUID | None = None, **fields: Any
    ) -> None:
        await self._execute(command_id, decide_set, ScalingGroupSet(name=name, **fields))

    async def associate(
        self, name: str, target_kind: str, target: str, *, command_id: uuid.UUID | None = None
    ) -> None:
        event = ScalingGroupAssociated(name=name, target_kind=target_kind, target=target)
        await self._execute(command_id, decide_associate, event)

    async def dissociate(
        self, name: str, target_kind: str, target: str, *, command_id: uuid.UUID | None = None
    ) -> None:
        event = ScalingGroupDissociated(name=name, target_kind=target_kind, target=target)
        await self._execute(command_id, decide_associate, event)

    async def register_image(
        self,
        name: str,
        labels: dict[str, str],
        *,
        command_id: uuid.UUID | None = None,
        **fields: Any,
    ) -> None:
        event = ImageRegistered(name=name, labels=labels, **fields)
        await self._execute(command_id, decide_register_image, event)

    async def set_alias(
        self, alias: str, target: str, *, command_id: uuid.UUID | None = None
    ) -> None:
        await self._execute(command_id, decide_alias, ImageAliasSet(alias=alias, target=target))

    def keypairs_of(self, user_id: uuid.UUID) -> Sequence[dict[str, Any]]:
        return [k for k in self.state.keypairs.values() if k["user_id"] == str(user_id)]
