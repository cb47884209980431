"""Agents as their own streams say, folded incrementally: which agents exist, their status,
and their registration facts (capacity, architecture, scaling group, schedulable).

Both the liveness monitor and the scheduler need this every second or every pass, for up to
thousands of agents; re-reading every stream (or every read-model record) each time would
cost more than the decisions. One scripted length check finds the streams that grew, and
only those are read, so a quiet cluster costs one round trip. Read straight from the log,
this view is never behind what was appended before the check (a drain is seen at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.domain.liveness import agent_status
from actors.domain.statuses import AgentStatus
from events import Event, RedisEventStore
from events.catalogue import AgentRegistered

__all__ = ["AgentFacts", "AgentStreams"]


@dataclass
class AgentFacts:
    agent_id: str
    version: int = 0
    status: AgentStatus | None = None
    changed_ms: int = 0
    """Log time of the event that set the status (when a LOST agent was lost)."""
    registration: AgentRegistered | None = None


class AgentStreams:
    def __init__(self, store: RedisEventStore) -> None:
        self.store = store
        self.agents: dict[str, AgentFacts] = {}
        self.stale: set[str] = set()
        """Agents whose events arrived out of order (or unseen ones): re-read next time."""

    def apply(self, event: Event) -> bool:
        """Fold one agent event delivered by a log follower; returns whether it was folded
        (events already folded are skipped, a gap marks the agent stale)."""
        if not event.stream.startswith("agent-"):
            return False
        agent_id = event.stream[len("agent-") :]
        facts = self.agents.get(agent_id)
        if facts is None or event.version > facts.version + 1:
            self.stale.add(agent_id)
            return False
        if event.version <= facts.version:
            return False
        self._fold(facts, event)
        return True

    def _fold(self, facts: AgentFacts, event: Event) -> None:
        if isinstance(event.data, AgentRegistered):
            facts.registration = event.data
        status = agent_status([event.data])
        if status is not None and status is not facts.status:
            facts.status, facts.changed_ms = status, event.position_ms
        facts.version = event.version

    async def known_ids(self) -> list[str]:
        """Every agent that ever heartbeated (registration heartbeats at once)."""
        return await self.store.telemetry.heartbeat_agents()

    async def refresh(self, agent_ids: list[str]) -> list[AgentFacts]:
        """Fold what is new in these agents' streams; their facts, in the given order."""
        lengths = await self.store.stream_versions([f"agent-{a}" for a in agent_ids])
        for agent_id, length in zip(agent_ids, lengths, strict=True):
            facts = self.agents.setdefault(agent_id, AgentFacts(agent_id))
            if int(length) < facts.version:  # the log went back (a lost tail): fold afresh
                facts = self.agents[agent_id] = AgentFacts(agent_id)
            if int(length) <= facts.version:
                continue
            for event in await self.store.read_stream(f"agent-{agent_id}", facts.version + 1):
                self._fold(facts, event)
        self.stale.difference_update(agent_ids)
        return [self.agents[a] for a in agent_ids]
