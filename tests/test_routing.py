"""The router's part of a command's trip, without Ray: what it sends to which shard (a
batch split by owner, the replies back in item order; a recursive destroy's dependants)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from actors.domain.commands.sessions import (
    DestroyIfIdle,
    DestroyManyIfIdle,
    DestroySession,
    RestartSession,
)
from actors.domain.errors import GenericForbidden
from actors.sessions import routing
from actors.sessions.routing import ShardRouter
from actors.sessions.shard import shard_of


class Recording(ShardRouter):
    """A router whose shard calls are recorded and answered here."""

    def __init__(self, count: int, refuse: frozenset[uuid.UUID] = frozenset()) -> None:
        super().__init__(None, [None] * count)  # type: ignore[arg-type]
        self.sent: list[tuple[int, str, Any]] = []
        self.refuse = refuse

    async def _call(self, target: uuid.UUID, method: str, /, *args: Any, **kwargs: Any) -> Any:
        (command,) = args
        self.sent.append((shard_of(target, len(self.handles)), method, command))
        if getattr(command, "session_id", None) in self.refuse:
            raise GenericForbidden("not yours")
        if isinstance(command, DestroyManyIfIdle):
            return [[item.session_id] for item in command.items]
        return [command.session_id]


async def test_a_command_goes_unchanged_to_the_shard_that_owns_its_session() -> None:
    router = Recording(3)
    command = RestartSession(session_id=uuid.uuid4())
    assert await router.handle(command) == [command.session_id]
    assert router.sent == [(shard_of(command.session_id, 3), "handle", command)]


async def test_a_batch_is_split_by_shard_and_answered_in_item_order() -> None:
    router = Recording(2)
    items = [DestroyIfIdle(session_id=uuid.uuid4(), reason="idle-timeout") for _ in range(8)]
    batch = DestroyManyIfIdle(items=items)
    assert await router.handle(batch) == [[item.session_id] for item in items]
    shares = {shard: sent.items for shard, _, sent in router.sent}
    assert all(shard_of(i.session_id, 2) == shard for shard, its in shares.items() for i in its)
    assert sorted(i.command_id for its in shares.values() for i in its) == sorted(
        i.command_id for i in items
    )


async def test_dependants_are_destroyed_with_derived_ids_and_refusals_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()

    async def dependants(_models: Any, _session_id: uuid.UUID) -> list[uuid.UUID]:
        return [mine, theirs]

    monkeypatch.setattr(routing, "dependants_of", dependants)
    monkeypatch.setattr(routing, "ReadModels", lambda _store: None)
    router = Recording(2, refuse=frozenset({theirs}))
    command = DestroySession(session_id=uuid.uuid4(), forced=True, reason="user-requested")
    await router.destroy_dependants(command)  # the refusal for `theirs` is dropped
    sent = {c.session_id: c for _, _, c in router.sent}
    assert sent == {mine: command.for_dependant(mine), theirs: command.for_dependant(theirs)}
    assert sent[mine].forced and sent[mine].reason == "user-requested"
