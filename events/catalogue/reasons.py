"""Enumerations carried inside event payloads, with Backend.AI 23.03's exact string values."""

from __future__ import annotations

import enum

__all__ = ["KernelLifecycleEventReason", "LogSeverity"]


class KernelLifecycleEventReason(enum.StrEnum):
    """Why a kernel (or a batch session) ended or changed; the complete 23.03.5 list (26)
    plus ``oom-killed``."""

    AGENT_TERMINATION = "agent-termination"
    ALREADY_TERMINATED = "already-terminated"
    ANOMALY_DETECTED = "anomaly-detected"
    EXEC_TIMEOUT = "exec-timeout"
    FAILED_TO_START = "failed-to-start"
    FORCE_TERMINATED = "force-terminated"
    IDLE_TIMEOUT = "idle-timeout"
    IDLE_SESSION_LIFETIME = "idle-session-lifetime"
    IDLE_UTILIZATION = "idle-utilization"
    KILLED_BY_EVENT = "killed-by-event"
    SERVICE_SCALED_DOWN = "service-scaled-down"
    NEW_CONTAINER_STARTED = "new-container-started"
    PENDING_TIMEOUT = "pending-timeout"
    RESTARTING = "restarting"
    RESTART_TIMEOUT = "restart-timeout"
    RESUMING_AGENT_OPERATION = "resuming-agent-operation"
    SELF_TERMINATED = "self-terminated"
    TASK_DONE = "task-done"
    TASK_FAILED = "task-failed"
    TASK_TIMEOUT = "task-timeout"
    TASK_CANCELLED = "task-cancelled"
    TASK_FINISHED = "task-finished"
    TERMINATED_UNKNOWN_CONTAINER = "terminated-unknown-container"
    UNKNOWN = "unknown"
    USER_REQUESTED = "user-requested"
    NOT_FOUND_IN_MANAGER = "not-found-in-manager"
    OOM_KILLED = "oom-killed"
    """kernelhub's one addition (docs/deviations.md): 23.03 says ``self-terminated``."""

    @classmethod
    def from_value(cls, value: str | None) -> KernelLifecycleEventReason | None:
        """Parse a reason from outside input; unknown values give ``None``, as upstream does.

        Inside the log reasons are validated on append, so this is only for foreign input.
        """
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            return None


class LogSeverity(enum.StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"
