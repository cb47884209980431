"""The tenancy commands against the events they propose (pure): each command says what its
event records, with the event's own defaults for what its caller left out; every tenancy
event has one decision and one stream."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from actors.domain.commands import tenancy as commands
from actors.domain.commands.tenancy import (
    CreateDomain,
    CreateProject,
    SetManagerStatus,
    SetPolicy,
    TenancyCommand,
    UpdateUser,
)
from actors.domain.errors import InvalidAPIParameters
from actors.domain.tenancy import DECISIONS, STREAM_OF, TenancyState, decide, project_id_for
from events.catalogue import (
    DomainCreated,
    KeypairIssued,
    KeypairPolicySet,
    ProjectCreated,
    UserCreated,
    UserUpdated,
)

pytestmark = pytest.mark.unit

ALL = [getattr(commands, name) for name in commands.__all__ if name != "TenancyCommand"]
BUILT_BY_THEIR_HANDLER = {
    commands.CreateProject: ProjectCreated,
    commands.CreateUser: UserCreated,
    commands.IssueKeypair: KeypairIssued,
}


def fields_of(model: type[BaseModel], *skip: str) -> dict[str, Any]:
    return {n: f for n, f in model.model_fields.items() if n not in skip}


@pytest.mark.parametrize("command", ALL, ids=lambda c: c.__name__)
def test_a_command_carries_what_its_event_records(command: type[TenancyCommand[Any]]) -> None:
    """Same names, same defaults: a command can say nothing its event cannot record, and
    leaving a field out means what it meant to the event."""
    event = command.proposes or BUILT_BY_THEIR_HANDLER[command]
    own = fields_of(command, "command_id", "initiator")  # who asked: the envelope's
    generated = ("access_key", "secret_key") if command is commands.IssueKeypair else ()
    # a removal names what it detaches: the decision's to fill in from the state
    detached = ("access_keys", "project_ids", "scaling_groups", "members")
    recorded = fields_of(event, "type", *generated, *detached)
    assert set(own) == set(recorded)
    for name, field in own.items():
        if recorded[name].is_required():  # the command's too, or an id its handler names
            assert field.is_required() or field.get_default() is None, name
        else:
            default = field.get_default(call_default_factory=True)
            assert default == recorded[name].get_default(call_default_factory=True), name


def test_a_proposed_event_has_only_what_the_caller_set() -> None:
    assert CreateDomain(name="lab").proposed() == DomainCreated(name="lab")
    update = UpdateUser(user_id=uuid.UUID(int=1), full_name="Ana").proposed()
    assert update == UserUpdated(user_id=uuid.UUID(int=1), full_name="Ana")
    assert isinstance(SetPolicy(name="p", idle_timeout=2).proposed(), KeypairPolicySet)
    with pytest.raises(TypeError, match="proposes no event"):
        CreateProject(name="ml", domain="lab").proposed()


def test_a_policy_sets_its_exec_timeout_and_one_without_keeps_its_old_bytes() -> None:
    limited = SetPolicy(name="p", exec_timeout_s=5).proposed()
    assert isinstance(limited, KeypairPolicySet) and limited.exec_timeout_s == 5
    assert "exec_timeout_s" not in SetPolicy(name="p").proposed().model_dump(mode="json")


def test_commands_are_frozen_values_with_their_id() -> None:
    command = SetManagerStatus(status="frozen")
    assert isinstance(command.command_id, uuid.UUID)
    with pytest.raises(ValueError):
        command.status = "running"  # type: ignore[misc]
    with pytest.raises(ValueError):
        SetManagerStatus(status="frozen", bogus=1)  # type: ignore[call-arg]


def test_every_tenancy_event_has_a_decision_and_a_stream() -> None:
    assert set(DECISIONS) == set(STREAM_OF)
    state = TenancyState()
    assert decide(state, DomainCreated(name="lab")) == [DomainCreated(name="lab")]
    with pytest.raises(InvalidAPIParameters):
        decide(state, DomainCreated(name="not a name"))


def test_a_new_project_keeps_the_id_of_its_name() -> None:
    state = TenancyState()
    state.apply("tenancy-domains", 1, DomainCreated(name="lab"))
    given = uuid.UUID(int=7)
    assert project_id_for(state, "lab", "ml", given) == given
    fresh = project_id_for(state, "lab", "ml", None)
    state.apply("tenancy-projects", 1, ProjectCreated(project_id=fresh, name="ml", domain="lab"))
    assert project_id_for(state, "lab", "ml", None) == fresh
    assert project_id_for(state, "other", "ml", None) != fresh
