"""An agent's reconciliation as a pure judgement: strays, missing and stalled kernels, each
acted on only when seen twice in a row; the reports to their sessions that follow; and the
command ids that make each report (and each registration) append once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from actors.domain.reconcile import (
    Reconciliation,
    Suspects,
    agent_schedulable_command_id,
    agent_start_command_id,
    batch_result_command_id,
    batch_run_id,
    exited_command_id,
    judge,
    missing_command_id,
    restarted_command_id,
    stray_command_id,
)
from events.catalogue import KernelTerminated

pytestmark = pytest.mark.unit

SESSION = uuid.UUID(int=100)
A, B, C = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)


def record(status: str, session_status: str = "RUNNING", session: Any = SESSION) -> dict[str, Any]:
    return {
        "status": status,
        "session_status": session_status,
        "session_id": None if session is None else str(session),
    }


def twice(expected: dict[uuid.UUID, dict[str, Any]], **seen: Any) -> Reconciliation:
    """Two rounds on the same picture: the second acts on what the first suspected."""
    sides: dict[str, Any] = {"running": set(), "known": set(), "starting": set(), "stopped": set()}
    sides.update(seen)
    first = judge(expected, suspects=Suspects(), **sides)
    assert not (
        first.stray or first.missing or first.stalled or first.unstopped
    )  # once: not enough
    return judge(expected, suspects=first.suspects, **sides)


def test_a_kernel_running_that_the_log_does_not_expect_is_a_stray() -> None:
    found = twice({}, running={A}, known={A})
    assert found.acted() == {"stray": {A}, "missing": set(), "stalled": set(), "unstopped": set()}
    assert found.stray_reports == {}  # unknown to the log: stopped, nothing to report


def test_a_stray_the_log_knows_is_reported_as_an_unknown_container() -> None:
    found = twice({A: record("TERMINATED")}, running={A}, known={A})
    assert found.stray == {A}
    report = found.stray_reports[A]
    terminated = report.report
    assert isinstance(terminated, KernelTerminated) and report.session_id == SESSION
    assert (terminated.kernel_id, terminated.session_id) == (A, SESSION)
    assert str(terminated.reason) == "terminated-unknown-container"
    assert report.command_id == stray_command_id(A)


def test_a_stray_of_a_record_without_a_session_is_stopped_unreported() -> None:
    found = twice({A: record("TERMINATED", session=None)}, running={A}, known={A})
    assert found.stray == {A} and found.stray_reports == {}


@pytest.mark.parametrize(
    "status", ["SCHEDULED", "PREPARING", "PULLING", "RUNNING", "RESTARTING", "TERMINATING", "ERROR"]
)
def test_a_kernel_the_log_calls_live_is_no_stray(status: str) -> None:
    assert not twice({A: record(status)}, running={A}, known={A}).stray


def test_a_kernel_terminating_that_nobody_stops_is_unstopped_with_its_sessions_reason() -> None:
    """The agent was killed after its follower recorded ``session_terminating`` but before
    the kernel's end was reported: without this the session stays TERMINATING for good."""
    ending = {**record("TERMINATING", "TERMINATING"), "status_info": "user-requested"}
    found = twice({A: ending, B: record("RUNNING")}, running={A, B}, known={A, B})
    assert found.acted() == {"stray": set(), "missing": set(), "stalled": set(), "unstopped": {A}}
    assert found.unstopped_by_session == {SESSION: ((A,), "user-requested")}


def test_a_kernel_being_stopped_now_is_not_unstopped() -> None:
    ending = record("TERMINATING", "TERMINATING")
    assert not twice({A: ending}, running={A}, known={A}, stopping={A}).unstopped


def test_an_unstopped_kernel_with_no_lifecycle_reason_is_reported_for_an_unknown_one() -> None:
    ending = {**record("TERMINATING", "TERMINATING"), "status_info": "$(reboot)"}
    found = twice({A: ending}, running=set(), known=set())
    assert found.unstopped_by_session == {SESSION: ((A,), "unknown")}


def test_a_kernel_the_log_calls_running_that_the_backend_lost_is_missing() -> None:
    found = twice({A: record("RUNNING"), B: record("RUNNING")}, running={B}, known={B})
    assert found.acted() == {"stray": set(), "missing": {A}, "stalled": set(), "unstopped": set()}
    (report,) = found.missing_reports
    terminated = report.report
    assert isinstance(terminated, KernelTerminated) and report.session_id == SESSION
    assert (terminated.kernel_id, terminated.session_id, terminated.exit_code) == (A, SESSION, -1)
    assert str(terminated.reason) == "already-terminated"
    assert report.command_id == missing_command_id(A)


def test_a_kernel_the_backend_still_knows_is_not_missing_though_it_stopped_running() -> None:
    assert not twice({A: record("RUNNING")}, running=set(), known={A}).missing


def test_a_kernel_the_agent_stopped_itself_is_not_missing_while_the_log_catches_up() -> None:
    found = twice({A: record("RUNNING")}, stopped={A})
    assert not found.missing and found.stopped == {A}


def test_the_agents_own_stops_are_forgotten_once_the_log_no_longer_places_them_here() -> None:
    found = judge(
        {A: record("RUNNING")},
        running=set(),
        known=set(),
        starting=set(),
        stopped={A, B},
        suspects=Suspects(),
    )
    assert found.stopped == {A}


def test_a_kernel_prepared_here_that_nobody_starts_is_stalled_grouped_by_session() -> None:
    other = uuid.UUID(int=200)
    found = twice(
        {
            A: record("PREPARING", "PREPARING"),
            B: record("SCHEDULED", "PREPARING"),
            C: record("PREPARING", "PREPARING", session=other),
        }
    )
    assert found.stalled == {A, B, C}
    assert {sid: set(ids) for sid, ids in found.stalled_by_session.items()} == {
        SESSION: {A, B},
        other: {C},
    }


def test_preparing_kernels_of_a_session_no_longer_preparing_are_not_stalled() -> None:
    assert not twice({A: record("PREPARING", "TERMINATING")}).stalled


def test_a_kernel_being_started_is_none_of_stray_missing_or_stalled() -> None:
    expected = {A: record("RUNNING"), B: record("PREPARING", "PREPARING")}
    found = twice({**expected}, running={C}, known={C}, starting={A, B, C})
    assert found.acted() == {"stray": set(), "missing": set(), "stalled": set(), "unstopped": set()}


def test_a_difference_seen_once_is_suspected_and_gone_the_next_round_is_forgotten() -> None:
    first = judge({}, running={A}, known={A}, starting=set(), stopped=set(), suspects=Suspects())
    assert first.stray == set() and first.suspects.stray == {A}
    second = judge(
        {}, running=set(), known=set(), starting=set(), stopped=set(), suspects=first.suspects
    )
    assert second.stray == set() and second.suspects == Suspects()


def test_an_acted_difference_is_not_suspected_again() -> None:
    found = twice({}, running={A}, known={A})
    assert found.stray == {A} and found.suspects.stray == set()


def test_command_ids_are_derived_as_the_log_already_records_them() -> None:
    assert stray_command_id(A) == uuid.uuid5(A, "stray")
    assert missing_command_id(A) == uuid.uuid5(A, "missing")
    assert exited_command_id(A) == uuid.uuid5(A, "exited")
    assert batch_result_command_id(A) == uuid.uuid5(A, "result")
    assert batch_run_id(A) == str(uuid.uuid5(A, "batch"))
    assert restarted_command_id(A, 7) == uuid.uuid5(A, "up@7")
    assert agent_start_command_id("i-1", 3) == uuid.uuid5(uuid.NAMESPACE_URL, "i-1/start/3")
    assert agent_schedulable_command_id("i-1", 4) == uuid.uuid5(
        uuid.NAMESPACE_URL, "i-1/schedulable/4"
    )
