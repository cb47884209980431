"""The liveness monitor: reads heartbeats from telemetry, appends LOST and revived events.

Heartbeats are telemetry (``<p>:hb``, Redis time); only the *changes* they imply are
events, so a quiet cluster appends nothing. Runs where the manager side runs (one per
installation; two would only race on the agent stream's expected version).
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from events import RedisEventStore, WrongExpectedVersionError, events_for_command

from .domain.liveness import agent_status, decide_liveness

__all__ = ["LivenessMonitor"]

log = structlog.get_logger(__name__)


class LivenessMonitor:
    def __init__(self, store: RedisEventStore, *, lost_timeout_s: float) -> None:
        self.store = store
        self.lost_timeout_s = lost_timeout_s

    async def check(self) -> list[tuple[str, str]]:
        """One round; returns the (agent, event type) changes it appended."""
        seconds, micros = await self.store.redis.time()
        now = seconds + micros / 1e6
        beats: list[Any] = await self.store.redis.zrange(
            self.store.keys.heartbeats, 0, -1, withscores=True
        )
        changes: list[tuple[str, str]] = []
        for raw_agent, last_seen in beats:
            agent_id = raw_agent.decode() if isinstance(raw_agent, bytes) else str(raw_agent)
            stream = f"agent-{agent_id}"
            events = await self.store.read_stream(stream)
            status = agent_status(e.data for e in events)
            decided = decide_liveness(status, float(last_seen), now, self.lost_timeout_s)
            if not decided:
                continue
            command = uuid.uuid5(uuid.NAMESPACE_URL, f"{stream}/liveness/{len(events)}")
            batch = events_for_command(command, decided, actor="liveness")
            try:
                await self.store.append(stream, batch, len(events))
            except WrongExpectedVersionError:
                continue  # the agent itself wrote meanwhile: judge again next round
            log.info("agent liveness changed", agent=agent_id, event_type=decided[0].type)
            changes.append((agent_id, decided[0].type))
        return changes
