"""Agent lifecycle events (Backend.AI ``agent_*``), written to ``agent-<id>`` streams.

The agent id is the stream's suffix and the envelope's ``actor``, as upstream carries it in
the event ``source``. ``agent_heartbeat`` is telemetry, not a log event (see the catalogue).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from ._base import EventPayload, JsonObject
from .reasons import LogSeverity

__all__ = ["AgentError", "AgentStarted", "AgentTerminated"]


class AgentStarted(EventPayload):
    """The agent came up (``reason="self-started"`` from the agent itself)."""

    type: Literal["agent_started"] = "agent_started"
    reason: str = ""


class AgentTerminated(EventPayload):
    """The agent went away: ``shutdown``, ``agent-lost`` (heartbeat timeout), ``agent-restart``."""

    type: Literal["agent_terminated"] = "agent_terminated"
    reason: str = ""


class AgentError(EventPayload):
    """An error the agent reported for operators (upstream's error-monitor input)."""

    type: Literal["agent_error"] = "agent_error"
    message: str
    traceback: str | None = None
    user: UUID | None = None
    context_env: JsonObject = Field(default_factory=dict)
    severity: LogSeverity = LogSeverity.ERROR
