"""The session aggregate's decisions for restart and for a lost agent's policy (pure: the
aggregate is folded from payloads, no store)."""

from __future__ import annotations

import uuid

import pytest

from actors.domain.errors import GenericForbidden
from actors.domain.session_aggregate import SessionAggregate
from actors.domain.statuses import KernelStatus, SessionStatus
from events.catalogue import (
    AnyPayload,
    KernelCreationSpec,
    KernelPlacement,
    KernelStarted,
    SessionCancelled,
    SessionCreationSpec,
    SessionEnqueued,
    SessionPreparing,
    SessionScheduled,
)

pytestmark = pytest.mark.unit


def running(agents: list[str]) -> SessionAggregate:
    """A session RUNNING with one kernel per agent (the first one is main)."""
    sid = uuid.uuid4()
    kernels = [uuid.uuid5(sid, f"kernel-{i}") for i in range(len(agents))]
    spec = SessionCreationSpec(
        name="s",
        access_key="AK",
        scaling_group="default",
        cluster_size=len(agents),
        cluster_mode="multi-node" if len(agents) > 1 else "single-node",
        kernels=[
            KernelCreationSpec(
                kernel_id=k, cluster_role="main" if i == 0 else "sub", requested_slots={"cpu": 1}
            )
            for i, k in enumerate(kernels)
        ],
    )
    aggregate = SessionAggregate(sid)
    history: list[AnyPayload] = [
        SessionEnqueued(session_id=sid, creation_id="c", spec=spec),
        SessionScheduled(
            session_id=sid,
            creation_id="c",
            placements=[
                KernelPlacement(kernel_id=k, agent_id=a)
                for k, a in zip(kernels, agents, strict=True)
            ],
        ),
        SessionPreparing(session_id=sid, creation_id="c"),
    ]
    for payload in history:
        aggregate.apply(payload, aggregate.version + 1)
    for kernel in kernels:
        for payload in aggregate.decide_report(KernelStarted(kernel_id=kernel, session_id=sid)):
            aggregate.apply(payload, aggregate.version + 1)
    assert aggregate.status is SessionStatus.RUNNING
    return aggregate


def apply_all(aggregate: SessionAggregate, payloads: list[AnyPayload]) -> list[str]:
    for payload in payloads:
        aggregate.apply(payload, aggregate.version + 1)
    return [p.type for p in payloads]


def test_restart_goes_through_restarting_and_back_to_running_once_every_kernel_is_up() -> None:
    session = running(["a", "b"])
    assert apply_all(session, session.decide_restart()) == ["session_status_changed"]
    assert session.status is SessionStatus.RESTARTING
    assert {k.status for k in session.kernels.values()} == {KernelStatus.RESTARTING}
    first, second = session.kernels
    back = KernelStarted(kernel_id=first, session_id=session.session_id, reason="restarting")
    assert apply_all(session, session.decide_report(back)) == ["kernel_started"]
    assert session.status is SessionStatus.RESTARTING  # one kernel is still restarting
    again = KernelStarted(kernel_id=second, session_id=session.session_id)
    assert apply_all(session, session.decide_report(again)) == [
        "kernel_started",
        "session_status_changed",
    ]
    assert session.status is SessionStatus.RUNNING  # not a second session_started
    assert session.decide_report(again) == []  # a repeated report is a no-op


def test_restart_is_refused_unless_running() -> None:
    session = running(["a"])
    apply_all(session, session.decide_restart())
    with pytest.raises(GenericForbidden, match="restarting status"):
        session.decide_restart()


def test_a_failed_restart_leaves_the_session_in_error() -> None:
    session = running(["a"])
    apply_all(session, session.decide_restart())
    (changed,) = session.decide_restart_failed("OSError('no space')")
    apply_all(session, [changed])
    assert session.status is SessionStatus.ERROR
    assert changed.status_data == {"error": {"src": "agent", "repr": "OSError('no space')"}}  # type: ignore[union-attr]
    assert session.decide_restart_failed("again") == []
    with pytest.raises(GenericForbidden):
        session.decide_destroy()  # ERROR needs a forced destroy
    assert session.decide_destroy(forced=True).events


def test_a_gone_agent_ends_its_kernels_and_the_others_are_stopped() -> None:
    session = running(["a", "b"])
    main, sub = session.kernels
    decided = session.decide_agent_gone("b")
    assert [(p.type, getattr(p, "kernel_id", None)) for p in decided] == [
        ("session_terminating", None),
        ("kernel_terminating", main),
        ("kernel_terminated", sub),
    ]
    assert {str(getattr(p, "reason", "")) for p in decided} == {"agent-termination"}
    apply_all(session, decided)
    assert session.status is SessionStatus.TERMINATING
    assert session.decide_agent_gone("b") == []  # nothing left there to end
    assert session.kernels[main].status is KernelStatus.TERMINATING  # its agent stops it
    # then "a" is lost too: its kernel ends, and with it the session
    assert [p.type for p in session.decide_agent_gone("a")] == [
        "kernel_terminated",
        "session_terminated",
    ]


def test_a_gone_agent_holding_every_kernel_ends_the_session_at_once() -> None:
    session = running(["a"])
    types = apply_all(session, session.decide_agent_gone("a"))
    assert types == ["session_terminating", "kernel_terminated", "session_terminated"]
    assert session.status is SessionStatus.TERMINATED
    assert session.decide_agent_gone("a") == []


def test_an_agent_with_none_of_the_kernels_changes_nothing() -> None:
    assert running(["a"]).decide_agent_gone("elsewhere") == []


def test_a_failed_start_cancels_everything_and_keeps_the_agents_error() -> None:
    sid, kernel = uuid.uuid4(), uuid.uuid4()
    only = KernelCreationSpec(kernel_id=kernel, requested_slots={"cpu": 1})
    spec = SessionCreationSpec(name="s", access_key="AK", scaling_group="default", kernels=[only])
    session = SessionAggregate(sid)
    apply_all(
        session,
        [
            SessionEnqueued(session_id=sid, creation_id="c", spec=spec),
            SessionScheduled(
                session_id=sid,
                creation_id="c",
                placements=[KernelPlacement(kernel_id=kernel, agent_id="a")],
            ),
            SessionPreparing(session_id=sid, creation_id="c"),
        ],
    )
    error = {"src": "agent", "name": "ImageNotAvailable", "image": "x/y:1", "agent_id": "a"}
    decided = session.decide_start_failed(error=error)
    assert apply_all(session, decided) == ["kernel_cancelled", "session_cancelled"]
    assert decided[-1].error == error  # type: ignore[union-attr]
    assert "error" not in SessionCancelled(session_id=sid, creation_id="c").model_dump_json()
    assert session.status is SessionStatus.CANCELLED and session.decide_start_failed() == []


def test_activity_is_noted_only_when_newer_and_only_while_running() -> None:
    session = running(["i-a"])
    assert apply_all(session, session.decide_note_activity(100.0)) == ["session_activity"]
    assert session.decide_note_activity(100.0) == []  # the same access: nothing new
    assert session.decide_note_activity(99.0) == []  # an older one (out of order)
    assert apply_all(session, session.decide_note_activity(160.5)) == ["session_activity"]
    apply_all(session, session.decide_destroy(reason="user-requested").events)
    assert session.decide_note_activity(200.0) == []


def test_an_idle_reclaim_is_a_destroy_that_records_its_evidence() -> None:
    session = running(["i-a"])
    evidence = {"network_timeout": {"remaining": -1.0}}
    decided = session.decide_idle_destroy("idle-timeout", evidence)
    plain = session.decide_destroy(reason="idle-timeout").events
    assert [p.type for p in decided] == [p.type for p in plain]
    (terminating,) = [p for p in decided if p.type == "session_terminating"]
    assert terminating.idle == evidence and terminating.reason == "idle-timeout"  # type: ignore[union-attr]
    assert session.decide_idle_destroy("idle-timeout") == plain  # no evidence: a plain destroy


def test_a_forced_destroy_of_a_preparing_session_ends_it_at_once() -> None:
    """Its kernels are recorded TERMINATED straight away and no agent will report them, so
    the session must end in the same decision (chaos seed 32 found one TERMINATING for good)."""
    session = running(["a"])
    preparing = SessionAggregate(session.session_id)
    sid = session.session_id
    kernel = next(iter(session.kernels))
    spec = SessionCreationSpec(
        name="p",
        access_key="AK",
        scaling_group="default",
        kernels=[KernelCreationSpec(kernel_id=kernel, requested_slots={"cpu": 1})],
    )
    apply_all(
        preparing,
        [
            SessionEnqueued(session_id=sid, creation_id="c", spec=spec),
            SessionScheduled(
                session_id=sid,
                creation_id="c",
                placements=[KernelPlacement(kernel_id=kernel, agent_id="a")],
            ),
            SessionPreparing(session_id=sid, creation_id="c"),
        ],
    )
    types = apply_all(preparing, preparing.decide_destroy_events(forced=True))
    assert types == ["session_terminating", "kernel_terminated", "session_terminated"]
    assert preparing.status is SessionStatus.TERMINATED


def test_a_destroy_that_waits_for_its_agents_does_not_end_the_session_yet() -> None:
    session = running(["a"])
    types = apply_all(session, session.decide_destroy_events())
    assert types == ["session_terminating", "kernel_terminating"]
    assert session.status is SessionStatus.TERMINATING
