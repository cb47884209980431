"""What the SDK returns: pydantic models, parsed from the API's wire shapes once, here.

The wire keeps 23.03's quirks (JSON-encoded strings inside JSON, upper-case enums, camelCase
in some places and snake_case in others); these models are what a Python caller wants to
hold instead. ``extra="ignore"`` so that a newer server's added fields break nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, computed_field

__all__ = [
    "DEAD_STATUSES",
    "LIVE_STATUSES",
    "AppService",
    "ExecutionResult",
    "FileEntry",
    "FileListing",
    "Kernel",
    "Output",
    "SessionEvent",
    "SessionInfo",
    "SessionPage",
]

LIVE_STATUSES = (
    "PENDING",
    "SCHEDULED",
    "PREPARING",
    "PULLING",
    "RUNNING",
    "RESTARTING",
    "RUNNING_DEGRADED",
    "TERMINATING",
    "ERROR",
)
"""What ``ps`` lists by default: sessions that still hold (or wait for) resources. 23.03's
statuses only: the server refuses a status it does not know by name (PREPARED and CREATING
came after 23.03), and ``ps`` sends these as its filter."""
DEAD_STATUSES = ("TERMINATED", "CANCELLED")
WAITING_STATUSES = frozenset({"PENDING", "SCHEDULED", "PREPARING", "PULLING", "RESTARTING"})
"""On the way to RUNNING."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def _json_field(value: Any) -> Any:
    """23.03's JSONString fields arrive as JSON text; null stays None."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class Kernel(_Model):
    """One container (or process) of a session."""

    id: UUID
    role: str = Field(description="main or sub")
    hostname: str | None = None
    agent: str | None = None
    status: str
    status_info: str | None = None
    container_id: str | None = None
    exit_code: int | None = Field(default=None, description="once it ended")
    occupied_slots: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_graphql(cls, item: dict[str, Any]) -> Kernel:
        data = _json_field(item.get("status_data")) or {}
        kernel = data.get("kernel") if isinstance(data, dict) else None
        return cls(
            id=item["id"],
            role=item.get("cluster_role") or "main",
            hostname=item.get("cluster_hostname"),
            agent=item.get("agent"),
            status=item.get("status") or "",
            status_info=item.get("status_info"),
            container_id=item.get("container_id"),
            exit_code=(kernel or {}).get("exit_code") if isinstance(kernel, dict) else None,
            occupied_slots={
                k: str(v) for k, v in (_json_field(item.get("occupied_slots")) or {}).items()
            },
        )


class SessionInfo(_Model):
    """A session as the read models show it now."""

    id: UUID
    name: str
    type: Literal["interactive", "batch", "inference"] = "interactive"
    image: str
    status: str
    status_info: str | None = None
    status_data: dict[str, Any] = Field(default_factory=dict)
    status_history: dict[str, str] = Field(default_factory=dict)
    result: Literal["undefined", "success", "failure"] = "undefined"
    result_exit_code: int | None = Field(
        default=None, description="a batch session's command exit code, once it ended"
    )
    access_key: str | None = None
    scaling_group: str | None = None
    startup_command: str | None = None
    tag: str | None = Field(default=None, description="the user's annotation (--tag)")
    architecture: str | None = None
    starts_at: datetime | None = Field(
        default=None, description="not scheduled before this (--starts-at)"
    )
    created_at: datetime | None = None
    terminated_at: datetime | None = None
    requested_slots: dict[str, str] = Field(default_factory=dict)
    occupying_slots: dict[str, str] = Field(default_factory=dict)
    kernels: list[Kernel] = Field(default_factory=list)
    idle_checks: dict[str, Any] = Field(default_factory=dict)
    estimated_start_at: datetime | None = Field(
        default=None, description="while PENDING: when the scheduler expects to place it"
    )
    estimated_start_interval: tuple[datetime | None, datetime | None] | None = Field(
        default=None, description="earliest and latest of that estimate"
    )
    estimate_basis: str | None = Field(
        default=None, description="where the run times it assumed came from"
    )
    idle_warning: dict[str, Any] | None = Field(
        default=None,
        description="while RUNNING: a reclaim ahead (checker, reason, reclaimAt, warnedAt)",
    )

    @property
    def is_live(self) -> bool:
        return self.status not in DEAD_STATUSES

    @property
    def is_waiting(self) -> bool:
        """Still on its way to RUNNING (queued, being placed, pulled or started)."""
        return self.status in WAITING_STATUSES

    @computed_field  # type: ignore[prop-decorator]
    @property
    def exit_code(self) -> int | None:
        """A batch session's command exit code, else the main kernel's once it ended."""
        if self.result_exit_code is not None:
            return self.result_exit_code
        main = [k for k in self.kernels if k.role == "main"] or self.kernels
        return main[0].exit_code if main else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pending_reason(self) -> str | None:
        """Why the scheduler has not placed it yet, in the scheduler's words."""
        if self.status != "PENDING":
            return None
        scheduler = self.status_data.get("scheduler") or {}
        failures = [p.get("msg") or p.get("name") for p in scheduler.get("failed_predicates", [])]
        reasons = [str(f) for f in failures if f] or (
            [scheduler["msg"]] if scheduler.get("msg") else []
        )
        return "; ".join(reasons) or self.status_info or None

    @classmethod
    def from_graphql(cls, item: dict[str, Any]) -> SessionInfo:
        def slots(key: str) -> dict[str, str]:
            return {k: str(v) for k, v in (_json_field(item.get(key)) or {}).items()}

        def when(key: str) -> datetime | None:
            value = item.get(key)
            if not value:
                return None
            if isinstance(value, int | float):  # seconds since the epoch
                return datetime.fromtimestamp(value, UTC)
            parsed = datetime.fromisoformat(str(value))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

        return cls(
            id=item["id"],
            name=item["name"],
            type=str(item.get("type") or "interactive").lower(),
            image=item.get("image") or "",
            status=item.get("status") or "",
            status_info=item.get("status_info"),
            status_data=_json_field(item.get("status_data")) or {},
            status_history=_json_field(item.get("status_history")) or {},
            result=str(item.get("result") or "undefined").lower(),
            result_exit_code=item.get("exit_code"),
            access_key=item.get("access_key"),
            scaling_group=item.get("scaling_group"),
            startup_command=item.get("startup_command"),
            tag=item.get("tag"),
            architecture=item.get("architecture"),
            starts_at=when("starts_at"),
            created_at=when("created_at"),
            terminated_at=when("terminated_at"),
            requested_slots=slots("requested_slots"),
            occupying_slots=slots("occupying_slots"),
            kernels=[Kernel.from_graphql(k) for k in item.get("containers") or []],
            idle_checks=_json_field(item.get("idle_checks")) or {},
            estimated_start_at=when("estimated_start_at"),
            estimated_start_interval=_interval(item.get("estimated_start_interval")),
            estimate_basis=item.get("estimate_basis"),
            idle_warning=_json_field(item.get("idle_warning")),
        )


def _interval(value: Any) -> tuple[datetime | None, datetime | None] | None:
    """``[earliest, latest]`` ISO times (either may be null)."""
    if not isinstance(value, list) or len(value) != 2:
        return None
    parsed = [datetime.fromisoformat(str(v).replace("Z", "+00:00")) if v else None for v in value]
    return parsed[0], parsed[1]


class SessionPage(_Model):
    """One page of a listing, newest first."""

    items: list[SessionInfo]
    total: int = Field(description="how many match, over all pages")
    offset: int
    limit: int


class Output(_Model):
    """One piece of console output, as it arrived."""

    kind: str = Field(description="stdout, stderr, or a media kind (html, media, log...)")
    text: str


class ExecutionResult(_Model):
    """A finished execution: its output gathered, its exit code."""

    run_id: str
    exit_code: int | None
    stdout: str
    stderr: str
    console: list[Output]

    @property
    def ok(self) -> bool:
        return not self.exit_code


class FileEntry(_Model):
    name: str
    size: int
    mode: str = Field(description="as ls -l prints it, e.g. -rw-r--r--")
    modified: datetime

    @property
    def is_dir(self) -> bool:
        return self.mode.startswith("d")


class FileListing(_Model):
    path: str = Field(description="the absolute path inside the session")
    files: list[FileEntry]


class SessionEvent(_Model):
    """One lifecycle event of ``GET /events/session`` (server-sent events)."""

    name: str = Field(description="session_started, kernel_terminated, ...")
    session_id: UUID | None = None
    session_name: str | None = None
    owner_access_key: str | None = None
    kernel_id: UUID | None = None
    reason: str = ""
    exit_code: int | None = None

    @classmethod
    def from_sse(cls, name: str, data: dict[str, Any]) -> SessionEvent:
        return cls(
            name=name,
            session_id=data.get("sessionId") or None,
            session_name=data.get("sessionName"),
            owner_access_key=data.get("ownerAccessKey"),
            kernel_id=data.get("kernelId") or None,
            reason=data.get("reason") or "",
            exit_code=data.get("exitCode"),
        )


class AppService(_Model):
    """A service in a session that ``forward_app`` can reach (``kh app``)."""

    name: str
    protocol: str
    ports: list[int]
