"""The session commands and the derivations behind them (pure: no store, no Ray)."""

from __future__ import annotations

import inspect
import pickle
import uuid
from decimal import Decimal

import pydantic
import pytest

from actors.domain.commands import sessions as commands
from actors.domain.commands.sessions import (
    CreateSession,
    CreateSessions,
    DestroySession,
    ReportKernel,
    SchedulingFailed,
    SessionBatch,
    SessionCommand,
    ShardCommand,
)
from actors.domain.errors import InvalidAPIParameters
from actors.domain.session import (
    cluster_configs,
    expand_cluster,
    kernel_creation_specs,
    kernel_id_for,
    kernel_place,
    session_id_for,
)
from actors.domain.slots import ResourceSlot
from actors.sessions.shard import SessionShard
from events.catalogue import KernelStarted, SessionSchedulingFailed

G = 2**30


def _create(**extra: object) -> CreateSession:
    return CreateSession(
        name="s",
        access_key="AK",
        scaling_group="default",
        image="python:3.11",
        requested=[ResourceSlot(cpu=1, mem=G)],
        **extra,
    )


def test_a_new_session_id_derives_from_its_creation_command() -> None:
    command = uuid.UUID(int=7)
    assert session_id_for(command) == uuid.uuid5(command, "session")
    assert _create(command_id=command).session_id == session_id_for(command)
    assert _create(command_id=str(command)).session_id == session_id_for(command)
    given = uuid.uuid4()
    assert _create(command_id=command, session_id=given).session_id == given
    first, second = _create(), _create()
    assert first.command_id != second.command_id and first.session_id != second.session_id


def test_kernel_ids_and_places() -> None:
    sid = uuid.UUID(int=1)
    assert kernel_id_for(sid, 2) == uuid.uuid5(sid, "kernel-2")
    assert [
        (p.cluster_role, p.cluster_idx, p.local_rank, p.cluster_hostname)
        for p in map(kernel_place, range(3))
    ] == [("main", 1, 0, "main1"), ("sub", 1, 1, "sub1"), ("sub", 2, 2, "sub2")]


def test_cluster_configs_replicate_one_and_check_several() -> None:
    one, two = ResourceSlot(cpu=1), ResourceSlot(cpu=2)
    assert cluster_configs(3, [one]) == [one, one, one]
    assert cluster_configs(2, [one, two]) == [one, two]
    with pytest.raises(InvalidAPIParameters):
        cluster_configs(3, [one, two])
    assert cluster_configs(3, [one, two], strict=False) == [one, two]  # the shard's create


def test_kernel_creation_specs_match_expand_cluster() -> None:
    sid = uuid.UUID(int=3)
    ids = [kernel_id_for(sid, i) for i in range(3)]
    slots = ResourceSlot(cpu=1, mem=G)
    created = kernel_creation_specs(ids, cluster_configs(3, [slots]), image="img")
    expanded = expand_cluster(3, [slots], kernel_ids=ids, image="img")
    for made, spec in zip(created, expanded, strict=True):
        assert (made.kernel_id, made.cluster_role, made.cluster_idx) == (
            spec.kernel_id,
            spec.cluster_role,
            spec.cluster_idx,
        )
        assert (made.local_rank, made.cluster_hostname, made.image) == (
            spec.local_rank,
            spec.cluster_hostname,
            spec.image,
        )
        assert made.requested_slots == {"cpu": Decimal(1), "mem": Decimal(G)}


def test_commands_routed_by_a_payload_take_its_session() -> None:
    sid = uuid.uuid4()
    report = KernelStarted(kernel_id=uuid.uuid4(), session_id=sid)
    assert ReportKernel(report=report).session_id == sid
    failure = SessionSchedulingFailed(session_id=sid, status_info="scheduler-error", retries=1)
    assert SchedulingFailed(failure=failure, session_id=sid).session_id == sid
    with pytest.raises(pydantic.ValidationError, match="not the failure's session"):
        SchedulingFailed(failure=failure, session_id=uuid.uuid4())


def test_commands_are_frozen_values_that_survive_a_round_trip() -> None:
    command = DestroySession(session_id=uuid.uuid4(), forced=True, reason="user-requested")
    with pytest.raises(pydantic.ValidationError):
        command.forced = False  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(command)) == command  # what a Ray call does to it
    batch = CreateSessions(items=[_create(), _create()])
    assert pickle.loads(pickle.dumps(batch)) == batch
    with pytest.raises(pydantic.ValidationError):
        DestroySession(session_id=uuid.uuid4(), force=True)  # type: ignore[call-arg]


def test_a_dependant_destroy_derives_its_id() -> None:
    command = DestroySession(session_id=uuid.uuid4(), forced=True, reason="user-requested")
    dependant = uuid.uuid4()
    derived = command.for_dependant(dependant)
    assert derived.session_id == dependant
    assert derived.command_id == uuid.uuid5(command.command_id, f"dependant/{dependant}")
    assert (derived.forced, derived.reason) == (True, "user-requested")
    assert command.for_dependant(dependant) == derived  # a retry repeats the same command


def test_every_session_command_has_one_handler_on_the_shard() -> None:
    named = [getattr(commands, name) for name in commands.__all__]
    concrete = {
        c
        for c in named
        if inspect.isclass(c)
        and issubclass(c, ShardCommand)
        and c not in (ShardCommand, SessionCommand, SessionBatch)
    }
    registry = SessionShard.__dict__["_handle"].dispatcher.registry
    assert concrete and concrete <= set(registry)
    assert all(c.verb for c in concrete)


@pytest.mark.unit
def test_a_destroy_names_a_reason_its_kernels_end_events_can_carry() -> None:
    """A reason outside 23.03's list used to be accepted here and then refused by the
    kernel's end event, which left the session TERMINATING for ever."""
    with pytest.raises(pydantic.ValidationError):
        DestroySession(session_id=uuid.uuid4(), reason="service-unhealthy")
    kept = DestroySession(session_id=uuid.uuid4(), reason="service-scaled-down")
    assert kept.reason == "service-scaled-down"
