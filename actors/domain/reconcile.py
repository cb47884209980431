"""An agent's reconciliation, judged: what the backend runs against what the log says runs
on the agent, and what follows from a difference; and the command ids of what an agent
appends or reports (each derived from what it is about, so a retry is deduplicated).

A difference is acted on when it is seen twice in a row (once may be a report still on its
way): a kernel running that the log does not expect is a **stray** (stopped, and reported
``terminated-unknown-container`` when the log knows it); a kernel the log calls running that
the backend lost is **missing** (reported ``already-terminated``); a kernel the log is
preparing here that nobody is starting (the agent restarted mid-start) is **stalled**
(started); a kernel the log has TERMINATING here that nobody is stopping (the agent was
killed after its follower had recorded the ``session_terminating`` but before the kernel's
end was reported, or the report failed) is **unstopped** (stopped again and reported, so
the session ends instead of staying TERMINATING for good). Kernels being started or
stopped right now are none of these, nor is a kernel the agent stopped itself while the
read model still shows it running.

Pure: the agent (:mod:`actors.agents.agent`) reads the log and the backend, and does what
the judgement says.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from events.catalogue import KernelLifecycleEventReason, KernelTerminated

from .commands.sessions import ReportKernel

__all__ = [
    "LIVE_IN_LOG",
    "STARTED_IN_LOG",
    "Reconciliation",
    "Suspects",
    "agent_schedulable_command_id",
    "agent_start_command_id",
    "batch_result_command_id",
    "batch_run_id",
    "exited_command_id",
    "judge",
    "missing_command_id",
    "restarted_command_id",
    "stray_command_id",
]

LIVE_IN_LOG = frozenset(
    {"SCHEDULED", "PREPARING", "PULLING", "RUNNING", "RESTARTING", "TERMINATING", "ERROR"}
)
"""Kernel statuses under which a running kernel is expected (not a stray)."""
STARTED_IN_LOG = frozenset({"RUNNING"})
"""Kernel statuses under which the backend must be running it."""
_STALLED_IN_LOG = frozenset({"SCHEDULED", "PREPARING"})
"""Kernel statuses under which, in a PREPARING session, some agent should be starting it."""

KINDS = ("stray", "missing", "stalled", "unstopped")


# ---- command ids -------------------------------------------------------------------------------
def stray_command_id(kernel_id: uuid.UUID) -> uuid.UUID:
    """The report of a stray kernel the agent stopped."""
    return uuid.uuid5(kernel_id, "stray")


def missing_command_id(kernel_id: uuid.UUID) -> uuid.UUID:
    """The report of a kernel the backend lost."""
    return uuid.uuid5(kernel_id, "missing")


def exited_command_id(kernel_id: uuid.UUID) -> uuid.UUID:
    """The report of a kernel that ended on its own (exited, OOM-killed, killed)."""
    return uuid.uuid5(kernel_id, "exited")


def batch_result_command_id(kernel_id: uuid.UUID) -> uuid.UUID:
    """The report of a batch session's result, by its main kernel."""
    return uuid.uuid5(kernel_id, "result")


def batch_run_id(kernel_id: uuid.UUID) -> str:
    """The runner's run id of a batch kernel's command (the same after an agent restart)."""
    return str(uuid.uuid5(kernel_id, "batch"))


def restarted_command_id(kernel_id: uuid.UUID, session_version: int) -> uuid.UUID:
    """The report of a kernel started again, for the session's restart at that version."""
    return uuid.uuid5(kernel_id, f"up@{session_version}")


def agent_start_command_id(agent_id: str, stream_version: int) -> uuid.UUID:
    """An agent's registration when it starts, its stream at that version."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{agent_id}/start/{stream_version}")


def agent_schedulable_command_id(agent_id: str, stream_version: int) -> uuid.UUID:
    """An agent drained or undrained, its stream at that version."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{agent_id}/schedulable/{stream_version}")


# ---- the judgement -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Suspects:
    """The differences of each kind seen in the last round, to be confirmed by the next."""

    stray: frozenset[uuid.UUID] = frozenset()
    missing: frozenset[uuid.UUID] = frozenset()
    stalled: frozenset[uuid.UUID] = frozenset()
    unstopped: frozenset[uuid.UUID] = frozenset()


@dataclass(frozen=True)
class Reconciliation:
    """One round's findings and what follows from them."""

    stray: frozenset[uuid.UUID]
    """Running here, not expected by the log: to be stopped."""
    missing: frozenset[uuid.UUID]
    """Running by the log, unknown to the backend: to be reported ended."""
    stalled: frozenset[uuid.UUID]
    """Being prepared here by the log, started by nobody: to be started."""
    unstopped: frozenset[uuid.UUID]
    """Terminating here by the log, stopped by nobody: to be stopped and reported ended."""
    suspects: Suspects
    """Seen this round for the first time: the next round's :class:`Suspects`."""
    stopped: frozenset[uuid.UUID]
    """The kernels the agent stopped itself that the log still places here (the rest are
    forgotten)."""
    stray_reports: Mapping[uuid.UUID, ReportKernel] = field(default_factory=dict)
    """For each stray the log knows (a kernel of an ended session): its report to the
    session, sent once the kernel is stopped."""
    missing_reports: tuple[ReportKernel, ...] = ()
    """Each missing kernel's report to its session."""
    stalled_by_session: Mapping[uuid.UUID, tuple[uuid.UUID, ...]] = field(default_factory=dict)
    """The stalled kernels, by session (a session's kernels are started together)."""
    unstopped_by_session: Mapping[uuid.UUID, tuple[tuple[uuid.UUID, ...], str]] = field(
        default_factory=dict
    )
    """The unstopped kernels, by session, with the reason their session is ending (what
    their report will carry)."""

    def acted(self) -> dict[str, set[uuid.UUID]]:
        """What the round acts on, by kind."""
        return {
            "stray": set(self.stray),
            "missing": set(self.missing),
            "stalled": set(self.stalled),
            "unstopped": set(self.unstopped),
        }


def judge(
    expected: Mapping[uuid.UUID, Mapping[str, Any]],
    *,
    running: Set[uuid.UUID],
    known: Set[uuid.UUID],
    starting: Set[uuid.UUID],
    stopped: Set[uuid.UUID],
    suspects: Suspects,
    stopping: Set[uuid.UUID] = frozenset(),
) -> Reconciliation:
    """One round. ``expected``: the kernels the log places on the agent, with their read
    model records (``status``, ``session_status``, ``session_id``, ``status_info``);
    ``running`` and ``known``: what the backend runs and tracks; ``starting``: kernels being
    created or restarted now; ``stopped``: kernels the agent stopped itself; ``suspects``:
    the last round's; ``stopping``: kernels being stopped now."""
    live = {k for k, r in expected.items() if r["status"] in LIVE_IN_LOG}
    started = {k for k, r in expected.items() if r["status"] in STARTED_IN_LOG}
    stalled_now = {
        k
        for k, r in expected.items()
        if r["status"] in _STALLED_IN_LOG and r["session_status"] == "PREPARING"
    }
    still_stopped = frozenset(stopped) & set(expected)
    seen = {
        "stray": set(running) - live - starting,
        "missing": started - known - starting - still_stopped,
        "stalled": stalled_now - known - starting,
        "unstopped": {k for k, r in expected.items() if r["status"] == "TERMINATING"}
        - set(stopping)
        - starting,
    }
    confirmed = {kind: frozenset(seen[kind] & getattr(suspects, kind)) for kind in KINDS}
    stray_reports = {
        kernel_id: ReportKernel(
            session_id=uuid.UUID(expected[kernel_id]["session_id"]),
            report=KernelTerminated(
                kernel_id=kernel_id,
                session_id=uuid.UUID(expected[kernel_id]["session_id"]),
                reason=KernelLifecycleEventReason.TERMINATED_UNKNOWN_CONTAINER,
            ),
            command_id=stray_command_id(kernel_id),
        )
        for kernel_id in confirmed["stray"]
        if kernel_id in expected and expected[kernel_id]["session_id"] is not None
    }
    missing_reports = tuple(
        ReportKernel(
            session_id=uuid.UUID(expected[kernel_id]["session_id"]),
            report=KernelTerminated(
                kernel_id=kernel_id,
                session_id=uuid.UUID(expected[kernel_id]["session_id"]),
                reason=KernelLifecycleEventReason.ALREADY_TERMINATED,
                exit_code=-1,
            ),
            command_id=missing_command_id(kernel_id),
        )
        for kernel_id in confirmed["missing"]
    )
    by_session: dict[uuid.UUID, list[uuid.UUID]] = {}
    for kernel_id in confirmed["stalled"]:
        by_session.setdefault(uuid.UUID(expected[kernel_id]["session_id"]), []).append(kernel_id)
    unstopped: dict[uuid.UUID, list[uuid.UUID]] = {}
    for kernel_id in confirmed["unstopped"]:
        if expected[kernel_id].get("session_id") is not None:
            unstopped.setdefault(uuid.UUID(expected[kernel_id]["session_id"]), []).append(kernel_id)
    return Reconciliation(
        stray=confirmed["stray"],
        missing=confirmed["missing"],
        stalled=confirmed["stalled"],
        unstopped=confirmed["unstopped"],
        suspects=Suspects(**{kind: frozenset(seen[kind] - confirmed[kind]) for kind in KINDS}),
        stopped=still_stopped,
        stray_reports=stray_reports,
        missing_reports=missing_reports,
        stalled_by_session={sid: tuple(ids) for sid, ids in by_session.items()},
        unstopped_by_session={
            sid: (tuple(ids), _ending_reason(expected[ids[0]])) for sid, ids in unstopped.items()
        },
    )


def _ending_reason(record: Mapping[str, Any]) -> str:
    """Why a terminating kernel is ending, as its ``kernel_terminating`` said (the read
    model's ``status_info``); ``unknown`` for anything that is not a lifecycle reason."""
    try:
        return KernelLifecycleEventReason(record.get("status_info") or "unknown").value
    except ValueError:
        return KernelLifecycleEventReason.UNKNOWN.value
