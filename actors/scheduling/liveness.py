"""The liveness monitor: reads heartbeats from telemetry, appends LOST and revived events.

Heartbeats are telemetry (``<p>:hb``, Redis time); only the *changes* they imply are
events, so a quiet cluster appends nothing. Runs where the manager side runs (one per
installation; two would only race on the agent stream's expected version).

Kernels on a lost agent are left as they are (23.03). With ``terminate_after_s`` set (an
opt-in, docs/deviations.md), an agent LOST for longer than that has its sessions destroyed:
their kernels there are recorded TERMINATED (``agent-termination``), since that agent will
never report them.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from actors.domain.commands.sessions import AgentGone
from actors.domain.liveness import (
    agent_gone_command_id,
    decide_liveness,
    liveness_command_id,
    lost_for_too_long,
)
from actors.domain.statuses import AgentStatus
from actors.scheduling.agent_streams import AgentStreams
from events import RedisEventStore, WrongExpectedVersionError, events_for_command
from projections.queries import ReadModels

__all__ = ["LivenessMonitor"]

log = structlog.get_logger(__name__)

_LIVE_SESSION_STATUSES = [
    "SCHEDULED",
    "PREPARING",
    "PULLING",
    "RUNNING",
    "RESTARTING",
    "RUNNING_DEGRADED",
    "TERMINATING",
    "ERROR",
]


class LivenessMonitor:
    def __init__(
        self,
        store: RedisEventStore,
        *,
        lost_timeout_s: float,
        terminate_after_s: float | None = None,
        shard: Any = None,
    ) -> None:
        if terminate_after_s is not None and shard is None:
            raise ValueError("terminating a lost agent's sessions needs the session shards")
        self.store = store
        self.lost_timeout_s = lost_timeout_s
        self.terminate_after_s = terminate_after_s
        self.shard = shard
        self.models = ReadModels(store)
        self._reclaimed: set[tuple[str, int]] = set()
        self.streams = AgentStreams(store)
        """(agent, version of its LOST event) whose sessions were already destroyed."""
        self._deaf = False
        self._heard_from = 0.0
        """Redis time from which silence counts: after the log was away, agents could not
        beat either, so their silence is counted from when heartbeats could be heard again."""

    def deaf(self) -> None:
        """The monitor could not read heartbeats for a while (the log was away, or Redis
        restarted): no agent is judged lost for the silence up to the next check."""
        self._deaf = True

    def forget(self) -> None:
        """The log changed under the monitor (Redis restarted): the agents' streams are
        read afresh at the next check, and no agent is lost for the restart's silence."""
        self.streams = AgentStreams(self.store)
        self.deaf()

    async def check(self) -> list[tuple[str, str]]:
        """One round; returns the (agent, event type) changes it appended."""
        now = await self.store.clock.now()
        if self._deaf:
            self._deaf, self._heard_from = False, now
        beats = await self.store.telemetry.heartbeats()
        agent_ids = [agent_id for agent_id, _ in beats]
        views = await self.streams.refresh(agent_ids)
        changes: list[tuple[str, str]] = []
        for known, (_, last_seen) in zip(views, beats, strict=True):
            agent_id = known.agent_id
            stream = f"agent-{agent_id}"
            heard = float(last_seen)
            if known.status is AgentStatus.ALIVE:  # the grace spares the living, revives no one
                heard = max(heard, self._heard_from)
            decided = decide_liveness(known.status, heard, now, self.lost_timeout_s)
            if not decided:
                lost_since = known.changed_ms / 1000
                if lost_for_too_long(known.status, lost_since, now, self.terminate_after_s):
                    await self._reclaim(agent_id, known.version)
                continue
            command = liveness_command_id(stream, known.version)
            batch = events_for_command(command, decided, actor="liveness")
            try:
                await self.store.append(stream, batch, known.version)
            except WrongExpectedVersionError:
                continue  # the agent itself wrote meanwhile: judge again next round
            log.info("agent liveness changed", agent=agent_id, event_type=decided[0].type)
            changes.append((agent_id, decided[0].type))
        return changes

    async def _reclaim(self, agent_id: str, lost_version: int) -> None:
        """Destroy every live session with a kernel on the lost agent, once per loss (the
        command ids make a repeat after a restart harmless)."""
        if (agent_id, lost_version) in self._reclaimed:
            return
        page = await self.models.sessions(statuses=_LIVE_SESSION_STATUSES, limit=1_000_000)
        for record in page.items:
            if any(k["agent"] == agent_id for k in record["kernels"].values()):
                session_id = uuid.UUID(record["id"])
                command = agent_gone_command_id(session_id, agent_id, lost_version)
                log.info("terminating a lost agent's session", agent=agent_id, session=record["id"])
                await self.shard.handle(
                    AgentGone(session_id=session_id, agent_id=agent_id, command_id=command)
                )
        self._reclaimed.add((agent_id, lost_version))
