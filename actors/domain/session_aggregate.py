"""One session and its kernels as the write side holds them: folded from the session's
stream, deciding what each report or command appends.

Kernel reports are checked against the kernel map (termination through its own idempotent
path), and the session's status is re-derived from its kernels after every change, with the
session events emitted from the *new* status: exactly one ``session_started`` after the last
kernel started (B2), exactly one ``session_terminated`` after the last one ended (B1), and
PULLING shown on the session (B15); the upstream bugs B1, B2 and B15 are in docs/upstream.md.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

from events.catalogue import (
    AnyPayload,
    KernelCancelled,
    KernelCreating,
    KernelPulling,
    KernelStarted,
    KernelTerminated,
    KernelTerminating,
    SessionActivity,
    SessionCancelled,
    SessionFailure,
    SessionIdleWarning,
    SessionPreparing,
    SessionSchedulingFailed,
    SessionStarted,
    SessionStatusChanged,
    SessionSuccess,
    SessionTerminated,
    SessionTerminating,
)
from events.catalogue.reasons import KernelLifecycleEventReason

from .destroy import DestroyPlan, KernelView, named_agents, plan_destroy
from .errors import GenericForbidden
from .lifecycle import DEFAULT_ROLE, kernel_accepts_termination, transit_session_status
from .statuses import (
    DEAD_SESSION_STATUSES,
    KernelStatus,
    SessionStatus,
    kernel_transition_allowed,
)

__all__ = ["KernelReport", "SessionAggregate"]


def _failure_signature(failure: SessionSchedulingFailed) -> tuple[Any, ...]:
    return (
        failure.status_info,
        tuple((p.name, p.msg) for p in failure.failed_predicates),
        failure.msg,
    )


KernelReport = KernelPulling | KernelCreating | KernelStarted | KernelTerminated | KernelCancelled

_REPORTED_STATUS = {
    "kernel_pulling": KernelStatus.PULLING,
    "kernel_creating": KernelStatus.PREPARING,
    "kernel_started": KernelStatus.RUNNING,
    "kernel_terminated": KernelStatus.TERMINATED,
    "kernel_cancelled": KernelStatus.CANCELLED,
}


@dataclass
class KernelState:
    kernel_id: uuid.UUID
    cluster_role: str = DEFAULT_ROLE
    status: KernelStatus = KernelStatus.PENDING
    agent: str | None = None
    reported: set[str] = field(default_factory=set)
    """Report types already recorded for this kernel (a repeated report is a no-op)."""

    @property
    def view(self) -> KernelView:
        return KernelView(self.kernel_id, self.status, self.cluster_role, self.agent)


@dataclass
class SessionAggregate:
    session_id: uuid.UUID
    creation_id: str = ""
    status: SessionStatus = SessionStatus.PENDING
    kernels: dict[uuid.UUID, KernelState] = field(default_factory=dict)
    scaling_group: str | None = None
    session_type: str = "interactive"
    result: str = "undefined"
    version: int = 0
    spec: dict[str, Any] | None = None
    commands: set[uuid.UUID] = field(default_factory=set)
    """Commands already applied: a retried command is recognised before it is re-decided."""
    last_failure: tuple[Any, ...] | None = None
    """What the last ``session_scheduling_failed`` said (appended only when it changes)."""
    last_activity: float | None = None
    """The latest access a ``session_activity`` noted (Redis time, s)."""
    warned: tuple[str, float] | None = None
    """The last ``session_idle_warning``'s checker and deadline."""

    # ---- fold ------------------------------------------------------------------------------
    def apply(self, payload: AnyPayload, version: int, command_id: uuid.UUID | None = None) -> None:
        self.version = version
        if command_id is not None:
            self.commands.add(command_id)
        kind = payload.type
        if kind == "session_enqueued":
            self.creation_id = payload.creation_id  # type: ignore[union-attr]
            spec = payload.spec  # type: ignore[union-attr]
            if spec is not None:
                self.spec = spec.model_dump(mode="json")
                self.scaling_group = spec.scaling_group
                self.session_type = spec.session_type
                for k in spec.kernels:
                    self.kernels[k.kernel_id] = KernelState(
                        k.kernel_id, k.cluster_role, agent=k.agent
                    )
        elif kind == "session_scheduled":
            self.status = SessionStatus.SCHEDULED
            self.scaling_group = payload.scaling_group or self.scaling_group  # type: ignore[union-attr]
            for placement in payload.placements or ():  # type: ignore[union-attr]
                self._kernel(placement.kernel_id).agent = placement.agent_id
            for kernel in self.kernels.values():
                kernel.status = KernelStatus.SCHEDULED
        elif kind == "session_preparing":
            self.status = SessionStatus.PREPARING
            for kernel in self.kernels.values():
                if kernel.status is KernelStatus.SCHEDULED:
                    kernel.status = KernelStatus.PREPARING
        elif kind in _REPORTED_STATUS:
            kernel = self._kernel(payload.kernel_id)  # type: ignore[union-attr]
            kernel.status = _REPORTED_STATUS[kind]
            kernel.reported.add(kind)
        elif kind == "kernel_terminating":
            self._kernel(payload.kernel_id).status = KernelStatus.TERMINATING  # type: ignore[union-attr]
        elif kind in ("session_started",):
            self.status = SessionStatus.RUNNING
        elif kind == "session_terminating":
            self.status = SessionStatus.TERMINATING
        elif kind == "session_terminated":
            self.status = SessionStatus.TERMINATED
        elif kind == "session_cancelled":
            self.status = SessionStatus.CANCELLED
        elif kind == "session_status_changed":
            self.status = SessionStatus[str(payload.status)]  # type: ignore[union-attr]
            if self.status is SessionStatus.RESTARTING:
                for kernel in self.kernels.values():
                    if kernel.status is KernelStatus.RUNNING:  # each comes back with a report
                        kernel.status = KernelStatus.RESTARTING
                        kernel.reported -= {"kernel_creating", "kernel_started"}
        elif kind == "session_scheduling_failed":
            self.last_failure = _failure_signature(payload)  # type: ignore[arg-type]
        elif kind == "session_activity":
            self.last_activity = payload.last_access  # type: ignore[union-attr]
        elif kind == "session_idle_warning":
            self.warned = (payload.checker, payload.deadline)  # type: ignore[union-attr]
        elif kind == "session_success":
            self.result = "success"
        elif kind == "session_failure":
            self.result = "failure"
        if kind == "kernel_pulling":
            self.status = SessionStatus.PULLING  # B15: set directly, as 23.3.5

    def _kernel(self, kernel_id: uuid.UUID) -> KernelState:
        if kernel_id not in self.kernels:
            self.kernels[kernel_id] = KernelState(kernel_id)
        return self.kernels[kernel_id]

    @property
    def ended(self) -> bool:
        return self.status in DEAD_SESSION_STATUSES

    # ---- decisions ---------------------------------------------------------------------------
    def decide_prepare(self) -> list[AnyPayload]:
        if self.status is not SessionStatus.SCHEDULED:
            return []
        return [
            SessionPreparing(
                session_id=self.session_id,
                creation_id=self.creation_id,
                agents=named_agents(k.agent for k in self.kernels.values()),
            )
        ]

    def decide_report(self, report: KernelReport) -> list[AnyPayload]:
        """A kernel's progress from its agent; duplicates and reports that would move a
        kernel backwards are ignored (an empty decision)."""
        kernel = self.kernels.get(report.kernel_id)
        if kernel is None or self.ended or report.type in kernel.reported:
            return []
        new = _REPORTED_STATUS[report.type]
        if new is KernelStatus.TERMINATED:
            if not kernel_accepts_termination(kernel.status):
                return []
        elif new is not kernel.status and not kernel_transition_allowed(kernel.status, new):
            return []  # e.g. kernel_creating after kernel_started: a step backwards
        events: list[AnyPayload] = [report]
        before = kernel.status
        kernel.status = new
        try:
            events += self._session_follows(str(getattr(report, "reason", "")))
        finally:
            kernel.status = before  # the fold applies it for real, from the log
        return events

    def _session_follows(self, reason: str) -> list[AnyPayload]:
        if any(k.status is KernelStatus.PULLING for k in self.kernels.values()) and (
            self.status in (SessionStatus.PREPARING, SessionStatus.SCHEDULED)
        ):
            return []  # B15: the kernel_pulling event itself makes the session PULLING
        if self.status is SessionStatus.RESTARTING and any(
            k.status is KernelStatus.RESTARTING for k in self.kernels.values()
        ):
            return []  # RUNNING again only once every kernel is back (23.03 restart_session)
        new = transit_session_status(self.status, [k.view for k in self.kernels.values()])
        if new is None:
            return []
        sid = self.session_id
        if new is SessionStatus.RUNNING and self.status is not SessionStatus.RESTARTING:
            return [SessionStarted(session_id=sid, creation_id=self.creation_id)]
        if new in (SessionStatus.TERMINATED, SessionStatus.CANCELLED):
            return [SessionTerminated(session_id=sid, reason=reason)]
        if new.name in ("RESTARTING", "RUNNING", "RUNNING_DEGRADED", "ERROR"):
            return [SessionStatusChanged(session_id=sid, status=new.name)]
        return []

    def decide_destroy(self, *, forced: bool = False, reason: str | None = None) -> DestroyPlan:
        return plan_destroy(
            self.session_id,
            self.creation_id,
            self.status,
            [k.view for k in self.kernels.values()],
            forced=forced,
            reason=reason,
        )

    def decide_destroy_events(
        self, *, forced: bool = False, reason: str | None = None
    ) -> list[AnyPayload]:
        """A destroy's events, with the session's end when they leave no kernel to wait for:
        a forced destroy ends SCHEDULED/PREPARING kernels at once, and no agent reports them
        again (the chaos run found such sessions TERMINATING for good)."""
        plan = self.decide_destroy(forced=forced, reason=reason)
        if plan.session_status is not SessionStatus.TERMINATING:
            return plan.events
        after = copy.deepcopy(self)
        for payload in plan.events:
            after.apply(payload, after.version)
        return plan.events + after._session_follows(plan.reason)

    def decide_idle_destroy(
        self, reason: str, evidence: dict[str, Any] | None = None
    ) -> list[AnyPayload]:
        """The reaper's reclaim: a destroy for ``reason``, the checkers' ``evidence`` (when
        given) recorded on its ``session_terminating``."""
        events = self.decide_destroy_events(reason=reason)
        if evidence is None:
            return events
        return [
            e.model_copy(update={"idle": evidence}) if isinstance(e, SessionTerminating) else e
            for e in events
        ]

    def decide_start_failed(
        self, reason: str = "failed-to-start", error: dict[str, Any] | None = None
    ) -> list[AnyPayload]:
        """An agent could not create the kernels: the whole session is cancelled (as 23.03's
        ``SchedulerDispatcher.start_session`` does), every kernel with it; the ledger releases
        their holds on the cancellations."""
        if self.ended or self.status in (SessionStatus.RUNNING, SessionStatus.TERMINATING):
            return []
        events: list[AnyPayload] = [
            KernelCancelled(kernel_id=k.kernel_id, session_id=self.session_id, reason=reason)
            for k in self.kernels.values()
            if k.status not in (KernelStatus.CANCELLED, KernelStatus.TERMINATED)
        ]
        events.append(
            SessionCancelled(
                session_id=self.session_id,
                creation_id=self.creation_id,
                reason=reason,
                error=error,
            )
        )
        return events

    def decide_note_activity(self, last_access: float) -> list[AnyPayload]:
        """Activity worth a line in the log: a running session used later than last noted."""
        if self.status is not SessionStatus.RUNNING:
            return []
        if self.last_activity is not None and last_access <= self.last_activity:
            return []
        return [SessionActivity(session_id=self.session_id, last_access=last_access)]

    def decide_idle_warning(self, warning: SessionIdleWarning) -> list[AnyPayload]:
        """A reclaim ahead, told once per checker and deadline, while the session runs."""
        if self.status is not SessionStatus.RUNNING:
            return []
        if self.warned == (warning.checker, warning.deadline):
            return []
        return [warning]

    def decide_scheduling_failed(self, failure: SessionSchedulingFailed) -> list[AnyPayload]:
        """Only a change of what the user would see is worth an event."""
        if self.status is not SessionStatus.PENDING:
            return []
        return [] if _failure_signature(failure) == self.last_failure else [failure]

    def decide_restart(self) -> list[AnyPayload]:
        """Restart every kernel in place (23.03 ``restart_session``): the session shows
        RESTARTING until each kernel's agent reports it started again, then RUNNING."""
        if self.status is not SessionStatus.RUNNING:
            raise GenericForbidden(f"Cannot restart sessions in {self.status.name.lower()} status")
        return [
            SessionStatusChanged(
                session_id=self.session_id, status="RESTARTING", status_info="restarting"
            )
        ]

    def decide_restart_failed(self, msg: str) -> list[AnyPayload]:
        """A kernel did not come back: the session is ERROR (a forced destroy ends it)."""
        if self.status is not SessionStatus.RESTARTING:
            return []
        error = {"error": {"src": "agent", "repr": msg}}
        return [
            SessionStatusChanged(
                session_id=self.session_id,
                status="ERROR",
                status_info="restart-failed",
                status_data=error,
            )
        ]

    def decide_agent_gone(self, agent_id: str) -> list[AnyPayload]:
        """The opt-in ``terminate_after`` policy for a lost agent: the session is destroyed
        (forced, reason ``agent-termination``); its kernels on that agent can never report
        again, so they are recorded TERMINATED here, the others are stopped by their agents
        as usual, and the session follows its kernels."""
        ended = (KernelStatus.TERMINATED, KernelStatus.CANCELLED)
        on_agent = {
            k.kernel_id
            for k in self.kernels.values()
            if k.agent == agent_id and k.status not in ended
        }
        if self.ended or not on_agent:
            return []
        reason = KernelLifecycleEventReason.AGENT_TERMINATION
        events: list[AnyPayload]
        if self.status is SessionStatus.TERMINATING:  # on its way already: end ours only
            events = [
                KernelTerminated(kernel_id=k, session_id=self.session_id, reason=reason)
                for k in on_agent
            ]
        else:
            plan = self.decide_destroy(forced=True, reason=str(reason))
            events = [
                KernelTerminated(kernel_id=e.kernel_id, session_id=self.session_id, reason=reason)
                if isinstance(e, KernelTerminating) and e.kernel_id in on_agent
                else e
                for e in plan.events
            ]
        after = copy.deepcopy(self)
        for payload in events:
            after.apply(payload, after.version)
        return events + after._session_follows(str(reason))

    def decide_result(self, result: SessionSuccess | SessionFailure) -> list[AnyPayload]:
        if self.result != "undefined" or self.ended:
            return []
        return [result]
