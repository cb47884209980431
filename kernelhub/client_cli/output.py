"""What each ``kh`` client command prints with ``--json``: one model per command, one JSON
document per run (``kh watch``: one per event, a line each), documented in docs/cli.md.

These are the contract scripts rely on; the human-readable output may change, these may
only grow.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from ..sdk.models import AppService, FileListing, SessionEvent, SessionInfo, SessionPage

__all__ = [
    "AppOutput",
    "DownloadOutput",
    "ExecOutput",
    "InfoOutput",
    "LogsOutput",
    "LsOutput",
    "PsOutput",
    "RmOutput",
    "RunOutput",
    "UploadOutput",
    "WatchOutput",
]


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True)


class RunOutput(_Output):
    """``kh run``."""

    session_id: UUID
    session_name: str
    status: str = Field(description="the session's status when kh run returned")
    exit_code: int | None = Field(description="the code's (or the batch command's) exit code")
    stdout: str
    stderr: str
    removed: bool = Field(description="destroyed afterwards (--rm)")
    correlation_id: str | None = Field(
        default=None, description="the create call's X-Correlation-ID (`kh trace` it)"
    )


class ExecOutput(_Output):
    """``kh exec``."""

    session_id: UUID
    run_id: str
    exit_code: int | None
    stdout: str
    stderr: str


InfoOutput = SessionInfo
"""``kh info``: the session as the read models show it, with its ``pending_reason`` and
``exit_code`` worked out."""


PsOutput = SessionPage
"""``kh ps``: ``items`` (sessions, newest first), ``total``, ``offset``, ``limit``."""


class RmOutput(_Output):
    """``kh rm``."""

    removed: list[UUID]


class LogsOutput(_Output):
    """``kh logs``."""

    session_id: UUID
    logs: str


class UploadOutput(_Output):
    """``kh upload``."""

    session_id: UUID
    files: list[str] = Field(description="paths in the session, relative to its work dir")


class DownloadOutput(_Output):
    """``kh download``."""

    session_id: UUID
    files: list[str] = Field(description="local paths written")


LsOutput = FileListing
"""``kh ls``: ``path`` and ``files`` (``name``, ``size``, ``mode``, ``modified``)."""


class AppOutput(_Output):
    """``kh app`` (printed once the listener is up; it then serves until interrupted)."""

    session_id: UUID
    app: str
    url: str
    host: str
    port: int
    services: list[AppService]


WatchOutput = SessionEvent
"""``kh watch``: one per line, ``name``, ``session_id``, ``session_name``, ``kernel_id``,
``reason``, ``exit_code``."""
