"""Deriving a session's status from its kernels, and the status bookkeeping (23.03's
``determine_session_status`` and ``status_info``/``status_data``, ``manager/models/session.py``).

A session's status is never set by hand: it is computed from its kernels after each kernel
change (``transit_session_status``) and written only when the transition map allows it.
The caller emits session events from the *returned* status, so "exactly one
session_started / session_terminated" holds (upstream bugs B1 and B2, docs/upstream.md, came
from deciding on a stale status).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .statuses import (
    KERNEL_SESSION_STATUS_MAPPING,
    LEADING_SESSION_STATUSES,
    KernelStatus,
    SessionStatus,
    kernel_transition_allowed,
    session_transition_allowed,
)

__all__ = [
    "DEFAULT_ROLE",
    "KernelState",
    "MainKernelNotFound",
    "StatusHistory",
    "determine_session_status",
    "error_status_data",
    "kernel_accepts_termination",
    "merge_status_history",
    "record_no_available_instances",
    "record_predicate_results",
    "status_changed_at",
    "terminating_status_data",
    "transit_kernel_status",
    "transit_session_status",
    "with_exit_code",
]

DEFAULT_ROLE = "main"

StatusHistory = Mapping[str, str]
"""``{STATUS_NAME: iso8601}``; a later visit to the same status overwrites its time."""


class MainKernelNotFound(Exception):
    """A session without a ``main`` kernel: a corrupt aggregate, never a user error."""


class KernelState(Protocol):
    @property
    def status(self) -> KernelStatus: ...

    @property
    def cluster_role(self) -> str: ...


def determine_session_status(kernels: Sequence[KernelState]) -> SessionStatus:
    """The session status the kernels imply, exactly as 23.03 computes it.

    The main kernel decides for "leading" statuses; RUNNING and TERMINATED need every sibling
    to agree (a sibling still PREPARING holds RUNNING back; one ERROR among TERMINATED kernels
    makes the session ERROR at once).
    """
    main = next((k for k in kernels if k.cluster_role == DEFAULT_ROLE), None)
    if main is None:
        raise MainKernelNotFound("the session has no main kernel")
    candidate = KERNEL_SESSION_STATUS_MAPPING[main.status]
    if candidate in LEADING_SESSION_STATUSES:
        return candidate
    for kernel in kernels:
        if candidate is SessionStatus.RUNNING:
            if kernel.status is KernelStatus.PULLING:
                candidate = SessionStatus.PULLING
            elif kernel.status is KernelStatus.PREPARING:
                candidate = SessionStatus.PREPARING
            elif kernel.status in (KernelStatus.TERMINATING, KernelStatus.ERROR):
                candidate = SessionStatus.RUNNING_DEGRADED
            # RUNNING / RESTARTING / RESIZING / BUILDING keep it; the rest "should not happen"
        elif candidate is SessionStatus.TERMINATED:
            if kernel.status is KernelStatus.TERMINATING:
                candidate = SessionStatus.TERMINATING
            elif kernel.status is KernelStatus.ERROR:
                return SessionStatus.ERROR
        elif candidate is SessionStatus.RUNNING_DEGRADED:
            continue
        else:
            break  # PULLING / PREPARING / TERMINATING: decided
    return candidate


def transit_session_status(
    current: SessionStatus, kernels: Sequence[KernelState]
) -> SessionStatus | None:
    """The new session status, or ``None`` when the map refuses it (or nothing changes)."""
    new = determine_session_status(kernels)
    return new if session_transition_allowed(current, new) else None


def transit_kernel_status(current: KernelStatus, new: KernelStatus) -> bool:
    """``update_kernel``'s check: ordinary kernel updates obey the map; TERMINATED never comes
    this way (see :func:`kernel_accepts_termination`)."""
    if new is KernelStatus.TERMINATED:
        raise ValueError("kernel termination goes through kernel_accepts_termination, not the map")
    return kernel_transition_allowed(current, new)


def kernel_accepts_termination(current: KernelStatus) -> bool:
    """``mark_kernel_terminated``: idempotent, and it bypasses the map on purpose."""
    return current not in (KernelStatus.CANCELLED, KernelStatus.TERMINATED, KernelStatus.RESTARTING)


def merge_status_history(
    history: StatusHistory | None, status: SessionStatus | KernelStatus, at: str
) -> dict[str, str]:
    return {**(history or {}), status.name: at}


def status_changed_at(history: StatusHistory, status: SessionStatus) -> str | None:
    """Sessions have no ``status_changed`` column: it is the history entry of the status."""
    return history.get(status.name)


def record_predicate_results(
    status_data: Mapping[str, Any] | None,
    at: str,
    passed: Sequence[str],
    failed: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """``status_data.scheduler`` after a scheduling attempt (as 23.03's
    ``manager/scheduler/dispatcher.py`` records it).

    A failed attempt bumps ``retries`` (created at 1); a passing one records the lists only.
    """
    scheduler = dict((status_data or {}).get("scheduler") or {})
    scheduler.update(
        last_try=at,
        failed_predicates=[{"name": name, "msg": msg} for name, msg in failed],
        passed_predicates=[{"name": name} for name in passed],
    )
    if failed:
        scheduler["retries"] = int(scheduler.get("retries", 0)) + 1
    return {**(status_data or {}), "scheduler": scheduler}


def record_no_available_instances(
    status_data: Mapping[str, Any] | None, at: str, msg: str
) -> dict[str, Any]:
    scheduler = dict((status_data or {}).get("scheduler") or {})
    scheduler.update(last_try=at, msg=msg, retries=int(scheduler.get("retries", 0)) + 1)
    return {**(status_data or {}), "scheduler": scheduler}


def terminating_status_data() -> dict[str, Any]:
    """``status_data`` of a kernel being destroyed, before its exit code is known."""
    return {"kernel": {"exit_code": None}, "session": {"status": "terminating"}}


def with_exit_code(status_data: Mapping[str, Any] | None, exit_code: int) -> dict[str, Any]:
    """``mark_kernel_terminated`` merges the exit code into what was there."""
    data = dict(status_data or {})
    data["kernel"] = {**(data.get("kernel") or {}), "exit_code": exit_code}
    return data


def error_status_data(
    src: str, name: str, representation: str, agent_id: str | None = None
) -> dict[str, Any]:
    """``convert_to_status_data``: where an error came from (``agent`` or ``other``)."""
    error: dict[str, Any] = {"src": src, "name": name, "repr": representation}
    if src == "agent":
        error["agent_id"] = agent_id
    return {"error": error}
