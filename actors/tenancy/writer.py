"""The tenancy writer: loads tenancy state from the log, decides, appends.

Hosted by the ``tenancy`` Ray actor (:mod:`actors.hosts.tenancy`), or run in-process by
``kh up``'s bootstrap and the tests. Its one entry is :meth:`TenancyService.handle`, which
takes a command of :mod:`actors.domain.commands.tenancy`; retrying one (same command id) is
answered from the log, so a timeout on the caller's side never creates a second keypair or
user.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import structlog

from actors.domain.commands.tenancy import (
    CreateProject,
    CreateUser,
    IssueKeypair,
    SetManagerStatus,
    TenancyCommand,
)
from actors.domain.tenancy import (
    STREAM_OF,
    TenancyState,
    decide,
    generate_access_key,
    generate_secret_key,
    project_id_for,
)
from events import AnyPayload, RedisEventStore, WrongExpectedVersionError, events_for_command
from events.catalogue import KeypairIssued, ProjectCreated, UserCreated
from events.secrets import SecretBox

__all__ = ["TENANCY_STREAMS", "TenancyService", "load_tenancy"]

log = structlog.get_logger(__name__)

TENANCY_STREAMS = tuple(dict.fromkeys(STREAM_OF.values()))
_RETRIES = 8

R = TypeVar("R")


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
        """Fold the tenancy streams afresh (at start, and when the log changed under the
        writer: Redis restarted and may have lost its last second); the state is swapped in
        whole, so a decision never sees it half read."""
        self.state = await load_tenancy(self.store)
        return self

    async def _refresh(self, stream: str) -> None:
        after = self.state.versions.get(stream, 0)
        for event in await self.store.read_stream(stream, after + 1):
            self.state.apply(stream, event.version, event.data)

    async def _execute(
        self, command: TenancyCommand[Any], event: AnyPayload
    ) -> tuple[list[AnyPayload], bool]:
        """Decide and append; returns (events appended, whether this was a retry). The
        tenancy is re-read first: another writer (``kh up``'s bootstrap, an operator's
        script) may have appended since, and a decision on a stale state would refuse a
        user that exists (a few reads of what is new; tenancy commands are rare)."""
        stream = STREAM_OF[event.type]
        for each in TENANCY_STREAMS:
            await self._refresh(each)
        for _ in range(_RETRIES):
            payloads = decide(self.state, event)
            if not payloads:
                return [], False
            batch = events_for_command(
                command.command_id, payloads, actor=self.actor, initiator=command.initiator
            )
            try:
                result = await self.store.append(stream, batch, self.state.versions.get(stream, 0))
            except WrongExpectedVersionError as conflict:
                if conflict.actual < conflict.expected:  # the log went back under us
                    await self.load()
                else:
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

    # ---- commands --------------------------------------------------------------------------
    async def handle(self, command: TenancyCommand[R]) -> R:
        """Decide on ``command`` and append what it changes (nothing when it would change
        nothing, or when it is a retry of one that took effect)."""
        return cast(R, await self._handle(command))

    @functools.singledispatchmethod
    async def _handle(self, command: Any) -> Any:
        """A command that proposes its event: checked by the event's decision, appended."""
        if not isinstance(command, TenancyCommand):
            raise ValueError(f"unknown tenancy command {type(command).__name__!r}")
        await self._execute(command, command.proposed())
        return None

    @_handle.register
    async def _create_project(self, command: CreateProject) -> uuid.UUID:
        pid = project_id_for(self.state, command.domain, command.name, command.project_id)
        event = ProjectCreated(project_id=pid, **command.given("project_id"))
        await self._execute(command, event)
        return pid

    @_handle.register
    async def _create_user(self, command: CreateUser) -> uuid.UUID:
        uid = command.user_id or uuid.uuid4()
        await self._execute(command, UserCreated(user_id=uid, **command.given("user_id")))
        return uid

    @_handle.register
    async def _issue_keypair(self, command: IssueKeypair) -> tuple[str, str]:
        """The secret leaves encrypted in the event; the caller gets it in clear."""
        secret = generate_secret_key()
        for _ in range(_RETRIES):
            access_key = generate_access_key()
            if access_key not in self.state.keypairs:
                break
        event = KeypairIssued(
            access_key=access_key, secret_key=self.secrets.encrypt(secret), **command.given()
        )
        stored, retried = await self._execute(command, event)
        if retried:  # the keys generated by the first attempt are the ones in the log
            (issued,) = stored
            assert isinstance(issued, KeypairIssued)
            return issued.access_key, self.secrets.decrypt(issued.secret_key)
        return access_key, secret

    @_handle.register
    async def _set_manager_status(self, command: SetManagerStatus) -> bool:
        appended, _ = await self._execute(command, command.proposed())
        return bool(appended)

    # ---- queries ---------------------------------------------------------------------------
    def keypairs_of(self, user_id: uuid.UUID) -> Sequence[dict[str, Any]]:
        return [k for k in self.state.keypairs.values() if k["user_id"] == str(user_id)]
