"""Agent liveness from heartbeats (23.03's ``handle_heartbeat`` in ``manager/registry.py`` and
``check_agent_lost`` in ``manager/api/session.py``): silence longer than the timeout makes an
ALIVE agent LOST; a heartbeat from a LOST (or TERMINATED) agent revives it. Kernels on a lost
agent are left as they are (faithful to 23.03); they resync when it returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from events.catalogue import AgentStarted, AgentTerminated, AnyPayload

from .statuses import AgentStatus

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL_S",
    "DEFAULT_LOST_TIMEOUT_S",
    "agent_gone_command_id",
    "agent_status",
    "decide_liveness",
    "liveness_command_id",
    "lost_for_too_long",
]

DEFAULT_HEARTBEAT_INTERVAL_S = 20.0
DEFAULT_LOST_TIMEOUT_S = 40.0
"""23.3.1 raised it from 5 s, which made agents flap (B6, docs/upstream.md)."""


def agent_status(payloads: Iterable[AnyPayload]) -> AgentStatus | None:
    """An agent's status from its stream (``None``: never started)."""
    status: AgentStatus | None = None
    for payload in payloads:
        if isinstance(payload, AgentStarted):
            status = AgentStatus.ALIVE
        elif isinstance(payload, AgentTerminated):
            status = {"agent-lost": AgentStatus.LOST, "agent-restart": AgentStatus.RESTARTING}.get(
                payload.reason, AgentStatus.TERMINATED
            )
    return status


def decide_liveness(
    status: AgentStatus | None, last_seen: float | None, now: float, timeout: float
) -> list[AnyPayload]:
    if status is None or last_seen is None:
        return []
    silent = now - last_seen > timeout
    if status is AgentStatus.ALIVE and silent:
        return [AgentTerminated(reason="agent-lost")]
    if status in (AgentStatus.LOST, AgentStatus.TERMINATED) and not silent:
        return [AgentStarted(reason="revived")]
    return []


def lost_for_too_long(
    status: AgentStatus | None, lost_since: float, now: float, terminate_after: float | None
) -> bool:
    """Whether a LOST agent's sessions are to be destroyed: only with ``terminate_after``
    set (an opt-in), once it has been LOST for longer than that."""
    return (
        status is AgentStatus.LOST
        and terminate_after is not None
        and now - lost_since > terminate_after
    )


def liveness_command_id(agent_stream: str, version: int) -> uuid.UUID:
    """The command id of a liveness change judged at the agent stream's ``version``: two
    monitors (or one retrying) judging the same version append it once."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{agent_stream}/liveness/{version}")


def agent_gone_command_id(session_id: uuid.UUID, agent_id: str, lost_version: int) -> uuid.UUID:
    """The command id of destroying a session whose agent was lost (at the agent stream's
    ``lost_version``): once per session and loss, a repeat after a restart is harmless."""
    return uuid.uuid5(session_id, f"agent-gone/{agent_id}/{lost_version}")
