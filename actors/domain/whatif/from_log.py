"""An installation's own history as a what-if workload: the log already holds every
demand (``session_enqueued``: who, what, when), every decision (``session_scheduled``:
where, when) and every departure (``session_terminated``), and every agent's capacity
(``agent_registered``).

A session's recorded start is its scheduling decision, and its run time runs from there to
the moment the scheduler's ledger freed its room (``alloc_released``; its termination when
there is none): the replay's clock holds a session's room exactly while the recorded
scheduler held it. Sessions cancelled before any decision are left out (their users gave up;
a replay cannot know when they would have under another policy). Sessions still running
or pending when the log ends are censored. Pure: the caller feeds events in log order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..bounds import known_slot_types
from .workload import MAX_AGENTS, MAX_JOBS, Workload, WorkloadAgent, WorkloadJob

__all__ = ["LogWorkload"]

INTERESTS = frozenset(
    {
        "agent_registered",
        "session_enqueued",
        "session_scheduled",
        "session_terminated",
        "session_cancelled",
        "alloc_released",
    }
)
"""The event types a workload is made of (others are never decoded)."""


@dataclass
class _Session:
    arrived: datetime
    spec: Any
    scheduled: datetime | None = None
    agents: tuple[str, ...] | None = None
    ended: datetime | None = None
    released: datetime | None = None
    """When the scheduler's ledger last freed one of its kernels' holds: the moment its room
    was free for others, a little before the session is recorded terminated."""
    cancelled: bool = False


class LogWorkload:
    """Folds events (in log order) into a :class:`Workload`."""

    def __init__(self, scaling_group: str | None = None) -> None:
        self.scaling_group = scaling_group
        self.agents: dict[str, WorkloadAgent] = {}
        self.sessions: dict[str, _Session] = {}
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.skipped = 0
        """Sessions past :data:`MAX_JOBS` (counted, not kept)."""

    def apply(self, event: Any) -> None:
        data = event.data
        at: datetime = event.occurred_at
        self.first = self.first or at
        self.last = at
        kind = event.type
        if kind == "agent_registered":
            if self.scaling_group not in (None, data.scaling_group):
                return
            if data.agent_id in self.agents or len(self.agents) < MAX_AGENTS:
                self.agents[data.agent_id] = WorkloadAgent(
                    agent_id=data.agent_id,
                    capacity={k: Decimal(str(v)) for k, v in data.available_slots.items()},
                    architecture=data.architecture,
                )
        elif kind == "session_enqueued":
            spec = data.spec
            if spec is None or self.scaling_group not in (None, spec.scaling_group):
                return
            if len(self.sessions) >= MAX_JOBS:
                self.skipped += 1
                return
            self.sessions[str(data.session_id)] = _Session(at, spec)
        else:
            session = self.sessions.get(str(data.session_id))
            if session is None:
                return
            if kind == "session_scheduled":
                session.scheduled = at
                if data.placements:
                    session.agents = tuple(p.agent_id for p in data.placements)
            elif kind == "session_terminated":
                session.ended = at
            elif kind == "alloc_released":
                session.released = at
            elif kind == "session_cancelled" and session.scheduled is None:
                session.cancelled = True

    def workload(self, source: str) -> Workload:
        start = self.first
        span = (self.last - start).total_seconds() if start and self.last else 0.0
        jobs = []
        for session_id, s in self.sessions.items():
            if s.cancelled or start is None:
                continue
            spec = s.spec
            waited = (s.scheduled - s.arrived).total_seconds() if s.scheduled else None
            ran = None
            if s.scheduled is not None:
                until = s.released or s.ended or self.last or s.scheduled
                ran = max(0.0, (until - s.scheduled).total_seconds())
            jobs.append(
                WorkloadJob(
                    job_id=session_id,
                    arrival_s=max(0.0, (s.arrived - start).total_seconds()),
                    owner=spec.access_key,
                    group=spec.scaling_group,
                    session_type=spec.session_type,
                    requested={
                        k: Decimal(str(v)) for k, v in spec.kernels[0].requested_slots.items()
                    },
                    cluster_size=len(spec.kernels),
                    multi_node=spec.cluster_mode == "multi-node",
                    run_s=ran,
                    censored=s.ended is None,
                    dependencies=tuple(str(d) for d in spec.dependencies),
                    observed_wait_s=max(0.0, waited) if waited is not None else None,
                    observed_agents=s.agents,
                )
            )
        offered = {name for a in self.agents.values() for name in a.capacity}
        return Workload(
            source=source,
            span_s=span,
            slot_types=known_slot_types(offered),
            agents=sorted(self.agents.values(), key=lambda a: a.agent_id),
            jobs=jobs,
        )
