"""Session status from kernels, history and status_data (23.03's ``determine_session_status``;
B1, B2, B15 in docs/upstream.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from actors.domain.lifecycle import (
    MainKernelNotFound,
    determine_session_status,
    error_status_data,
    kernel_accepts_termination,
    merge_status_history,
    record_no_available_instances,
    record_predicate_results,
    status_changed_at,
    terminating_status_data,
    transit_session_status,
    with_exit_code,
)
from actors.domain.statuses import KernelStatus, SessionStatus

pytestmark = pytest.mark.unit
S, K = SessionStatus, KernelStatus


@dataclass
class Kernel:
    status: KernelStatus
    cluster_role: str = "sub"


def session(main: KernelStatus, *subs: KernelStatus) -> list[Kernel]:
    return [Kernel(main, "main"), *(Kernel(s) for s in subs)]


@pytest.mark.parametrize(
    ("kernels", "expected"),
    [
        (session(K.RUNNING, K.PREPARING), S.PREPARING),
        (session(K.RUNNING, K.PULLING), S.PULLING),
        (session(K.RUNNING, K.ERROR), S.RUNNING_DEGRADED),
        (session(K.RUNNING, K.TERMINATING), S.RUNNING_DEGRADED),
        (session(K.RUNNING, K.RUNNING, K.RESIZING, K.BUILDING), S.RUNNING),
        (session(K.TERMINATED, K.TERMINATING), S.TERMINATING),
        (session(K.TERMINATED, K.ERROR), S.ERROR),
        (session(K.TERMINATED, K.TERMINATING, K.ERROR), S.TERMINATING),  # decided, loop stops
        (session(K.TERMINATED, K.TERMINATED), S.TERMINATED),
        (session(K.PREPARING, K.RUNNING), S.PREPARING),  # leading: the main kernel decides
        (session(K.SUSPENDED, K.RUNNING), S.ERROR),
        (session(K.CANCELLED, K.CANCELLED), S.CANCELLED),
    ],
)
def test_determine_session_status(kernels: Sequence[Kernel], expected: SessionStatus) -> None:
    assert determine_session_status(kernels) is expected


def test_missing_main_kernel() -> None:
    with pytest.raises(MainKernelNotFound):
        determine_session_status([Kernel(K.RUNNING), Kernel(K.RUNNING)])


def test_session_starts_exactly_once_after_the_last_kernel_started() -> None:
    """B2: no RUNNING until every kernel has started; a duplicate start changes nothing."""
    kernels = session(K.PREPARING, K.PREPARING, K.PREPARING)
    status = S.PREPARING
    transitions = []
    for index in (1, 0, 2, 2):  # the last report is a duplicate
        kernels[index].status = K.RUNNING
        new = transit_session_status(status, kernels)
        if new is not None:
            status = new
            transitions.append((index, new))
    assert transitions == [(2, S.RUNNING)]


def test_session_terminates_exactly_once_on_the_last_kernel() -> None:
    """B1: the event is decided from the *new* status, and a duplicate report is a no-op."""
    kernels = session(K.TERMINATING, K.TERMINATING, K.TERMINATING)
    status = S.TERMINATING
    fired = []
    for index in (0, 1, 1, 2, 2):
        if kernel_accepts_termination(kernels[index].status):
            kernels[index].status = K.TERMINATED
        new = transit_session_status(status, kernels)
        if new is not None:
            status = new
            if new in (S.TERMINATED, S.CANCELLED):
                fired.append(index)
    assert fired == [2]


def test_pulling_shows_on_the_session_then_running() -> None:
    """B15: a pulling kernel makes the session PULLING, then RUNNING."""
    kernels = session(K.PREPARING)
    assert transit_session_status(S.PREPARING, kernels) is None  # nothing changed
    kernels[0].status = K.PULLING
    assert transit_session_status(S.PREPARING, kernels) is S.PULLING
    kernels[0].status = K.RUNNING
    assert transit_session_status(S.PULLING, kernels) is S.RUNNING


def test_running_degraded_is_computed_but_refused_from_running() -> None:
    kernels = session(K.RUNNING, K.ERROR)
    assert determine_session_status(kernels) is S.RUNNING_DEGRADED
    assert transit_session_status(S.RUNNING, kernels) is None


def test_termination_path_is_idempotent() -> None:
    assert kernel_accepts_termination(K.RUNNING)
    assert kernel_accepts_termination(K.PREPARING)  # bypasses the map on purpose
    for done in (K.TERMINATED, K.CANCELLED, K.RESTARTING):
        assert not kernel_accepts_termination(done)


def test_status_history_merges_one_key_per_visited_status() -> None:
    history = merge_status_history(None, S.PENDING, "t0")
    history = merge_status_history(history, S.SCHEDULED, "t1")
    history = merge_status_history(history, S.RUNNING, "t2")
    history = merge_status_history(history, S.RESTARTING, "t3")
    history = merge_status_history(history, S.RUNNING, "t4")  # a later visit overwrites
    assert history == {"PENDING": "t0", "SCHEDULED": "t1", "RUNNING": "t4", "RESTARTING": "t3"}
    assert status_changed_at(history, S.RUNNING) == "t4"


def test_status_data_retries_and_predicate_lists() -> None:
    data = record_predicate_results(None, "t1", ["reserved_time"], [("concurrency", "too many")])
    data = record_predicate_results(data, "t2", ["reserved_time"], [("concurrency", "too many")])
    assert data["scheduler"] == {
        "last_try": "t2",
        "retries": 2,
        "failed_predicates": [{"name": "concurrency", "msg": "too many"}],
        "passed_predicates": [{"name": "reserved_time"}],
    }
    data = record_no_available_instances(data, "t3", "no agent")
    assert data["scheduler"]["retries"] == 3 and data["scheduler"]["msg"] == "no agent"


def test_status_data_of_termination_and_errors() -> None:
    data = terminating_status_data()
    assert data == {"kernel": {"exit_code": None}, "session": {"status": "terminating"}}
    assert with_exit_code(data, 137) == {
        "kernel": {"exit_code": 137},
        "session": {"status": "terminating"},
    }
    assert error_status_data("agent", "AgentError", "AgentError('boom')", "i-1") == {
        "error": {
            "src": "agent",
            "name": "AgentError",
            "repr": "AgentError('boom')",
            "agent_id": "i-1",
        }
    }
    assert "agent_id" not in error_status_data("other", "KeyError", "KeyError('x')")["error"]


def test_liveness_decisions() -> None:
    """Heartbeat-based liveness (23.03's ``handle_heartbeat`` and LOST check; B6 in
    docs/upstream.md: the default timeout is 40 s)."""
    from actors.domain.liveness import DEFAULT_LOST_TIMEOUT_S, decide_liveness
    from actors.domain.statuses import AgentStatus

    assert DEFAULT_LOST_TIMEOUT_S == 40.0
    assert decide_liveness(AgentStatus.ALIVE, 100.0, 139.0, 40.0) == []  # not after 5-39 s
    (lost,) = decide_liveness(AgentStatus.ALIVE, 100.0, 141.0, 40.0)
    assert (lost.type, lost.reason) == ("agent_terminated", "agent-lost")  # type: ignore[union-attr]
    (back,) = decide_liveness(AgentStatus.LOST, 140.0, 141.0, 40.0)
    assert (back.type, back.reason) == ("agent_started", "revived")  # type: ignore[union-attr]
    assert decide_liveness(AgentStatus.LOST, 100.0, 141.0, 40.0) == []  # still silent
    assert decide_liveness(AgentStatus.RESTARTING, 140.0, 141.0, 40.0) == []
    assert decide_liveness(None, 140.0, 141.0, 40.0) == []
