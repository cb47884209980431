"""Agent liveness as pure decisions: LOST and revived from heartbeats, when a lost agent's
sessions are given up (an opt-in), and the command ids that make each append once."""

from __future__ import annotations

import uuid

import pytest

from actors.domain.liveness import (
    agent_gone_command_id,
    decide_liveness,
    liveness_command_id,
    lost_for_too_long,
)
from actors.domain.statuses import AgentStatus

pytestmark = pytest.mark.unit


def test_silence_makes_an_agent_lost_and_a_heartbeat_revives_it() -> None:
    (lost,) = decide_liveness(AgentStatus.ALIVE, last_seen=0.0, now=41.0, timeout=40.0)
    assert lost.type == "agent_terminated" and lost.reason == "agent-lost"
    assert decide_liveness(AgentStatus.ALIVE, last_seen=1.0, now=41.0, timeout=40.0) == []
    (revived,) = decide_liveness(AgentStatus.LOST, last_seen=40.0, now=41.0, timeout=40.0)
    assert revived.type == "agent_started" and revived.reason == "revived"
    assert decide_liveness(None, last_seen=0.0, now=99.0, timeout=1.0) == []


def test_a_lost_agents_sessions_go_only_when_asked_and_after_the_delay() -> None:
    assert lost_for_too_long(AgentStatus.LOST, lost_since=0.0, now=61.0, terminate_after=60.0)
    assert not lost_for_too_long(AgentStatus.LOST, lost_since=0.0, now=60.0, terminate_after=60.0)
    assert not lost_for_too_long(AgentStatus.LOST, lost_since=0.0, now=1e9, terminate_after=None)
    assert not lost_for_too_long(AgentStatus.ALIVE, lost_since=0.0, now=1e9, terminate_after=1.0)


def test_command_ids_are_derived_as_the_log_already_records_them() -> None:
    session = uuid.UUID(int=5)
    assert liveness_command_id("agent-i-1", 4) == uuid.uuid5(
        uuid.NAMESPACE_URL, "agent-i-1/liveness/4"
    )
    assert agent_gone_command_id(session, "i-1", 4) == uuid.uuid5(session, "agent-gone/i-1/4")
