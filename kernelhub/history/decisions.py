"""``kh replay decisions``: every recorded scheduling decision, decided again.

The log is folded from its start (the archive included): the sessions read model in memory
(the scheduler reads its pending queue from it), each agent's stream version by version,
each group's ledger. At every ``scheduling_pass`` the pass's inputs are rebuilt from that
fold and from what the record copied (:mod:`actors.domain.scheduling.pass_record`), and the
policy runs again. Every ``session_scheduled`` that names the pass must come out the same
(the same agent for every kernel), and the pass must place as many sessions as it did; any
that does not is named with both answers. A decision recorded but not committed (its session
had moved on) is no disagreement: the pass decided it, the commit found it gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from actors.domain.liveness import agent_status
from actors.domain.scheduling import AgentInfo
from actors.domain.scheduling.ledger_stream import LedgerFold
from actors.domain.scheduling.pass_record import replay_pass
from actors.domain.scheduling.records import agent_info_of, spec_of
from actors.domain.session import SessionSpec
from actors.domain.slots import ResourceSlot
from actors.domain.statuses import AgentStatus
from events import Event, RedisEventStore
from events.archive import merged_entries
from events.catalogue import AgentRegistered, SchedulingPass, SessionScheduled
from projections.base import WorkingSet
from projections.models import SessionsProjection

from .positions import Cutoff

__all__ = ["DecisionReport", "Disagreement", "replay_decisions"]

Placement = tuple[tuple[str, str], ...]
"""(kernel id, agent id) per kernel, in kernel order."""


@dataclass(frozen=True)
class Disagreement:
    pass_id: str
    position: str
    at: datetime
    session_id: str | None
    """None: the pass as a whole (it placed another number of sessions)."""
    recorded: str
    replayed: str

    def line(self) -> str:
        who = f"session {self.session_id}" if self.session_id else "the pass"
        return (
            f"{self.at.isoformat(timespec='seconds')} pass {self.pass_id[:8]} ({self.position}):"
            f" {who}: recorded {self.recorded}; replayed {self.replayed}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "pass_id": self.pass_id,
            "position": self.position,
            "at": self.at.isoformat(),
            "session_id": self.session_id,
            "recorded": self.recorded,
            "replayed": self.replayed,
        }


@dataclass
class DecisionReport:
    passes: int = 0
    decisions: int = 0
    """Recorded ``session_scheduled`` events of the passes replayed."""
    agreed: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)
    unreplayable: list[str] = field(default_factory=list)
    """Passes that could not be run again, with why (a pass larger than a record holds)."""
    events: int = 0

    @property
    def ok(self) -> bool:
        return not self.disagreements and not self.unreplayable

    def as_json(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "decisions": self.decisions,
            "agreed": self.agreed,
            "disagreements": [d.as_json() for d in self.disagreements],
            "unreplayable": self.unreplayable,
            "events": self.events,
        }


@dataclass
class _AgentHistory:
    """An agent's stream folded version by version: what it was at any version."""

    states: list[tuple[int, AgentRegistered | None, AgentStatus | None]] = field(
        default_factory=list
    )

    def apply(self, event: Event) -> None:
        registration, status = self.states[-1][1:] if self.states else (None, None)
        if isinstance(event.data, AgentRegistered):
            registration = event.data
        status = agent_status([event.data]) or status
        self.states.append((event.version, registration, status))

    def at(self, version: int) -> tuple[AgentRegistered | None, AgentStatus | None]:
        found: tuple[AgentRegistered | None, AgentStatus | None] = (None, None)
        for v, registration, status in self.states:
            if v > version:
                break
            found = (registration, status)
        return found


@dataclass
class _Replayed:
    record: SchedulingPass
    position: str
    placements: dict[str, Placement] | None
    """Session -> placement, as the replay decided (None: the replay failed)."""
    why: str = ""


class _Fold:
    def __init__(self, group: str | None) -> None:
        self.group = group
        self.sessions = SessionsProjection()
        self.working = WorkingSet(complete=True)
        self.agents: dict[str, _AgentHistory] = {}
        self.ledgers: dict[str, LedgerFold] = {}
        self.chains: dict[uuid.UUID, dict[str, int]] = {}
        self.replayed: list[_Replayed] = []
        self.recorded: dict[uuid.UUID, dict[str, Placement]] = {}

    def apply(self, store: RedisEventStore, position: str, fields: Mapping[Any, Any]) -> None:
        stored = store.codec.decode_stored(position, fields)
        self.sessions.apply(stored, self.working)
        stream = stored.stream
        if stream.startswith("agent-"):
            event = store.codec.decode(position, fields)
            self.agents.setdefault(stream[len("agent-") :], _AgentHistory()).apply(event)
        elif stream.startswith("alloc-"):
            event = store.codec.decode(position, fields)
            ledger = self.ledgers.setdefault(stream[len("alloc-") :], LedgerFold())
            ledger.apply(event.version, event.data)
        elif stream.startswith("pass-"):
            event = store.codec.decode(position, fields)
            if isinstance(event.data, SchedulingPass):
                group = event.data.scaling_group
                self._pass(event.data, self.ledgers.setdefault(group, LedgerFold()), position)
        elif stored.type == "session_scheduled" and stored.data.get("pass_id"):
            data = store.codec.decode(position, fields).data
            assert isinstance(data, SessionScheduled)
            if data.pass_id is not None and data.placements:
                placed = tuple((str(p.kernel_id), p.agent_id) for p in data.placements)
                self.recorded.setdefault(data.pass_id, {})[str(data.session_id)] = placed

    def _agents_of(self, record: SchedulingPass) -> list[AgentInfo]:
        view = self.chains.setdefault(record.chain, {})
        if record.agents_full:
            view.clear()
        view.update((a.agent_id, a.version) for a in record.agents)
        agents = []
        for agent_id, version in view.items():
            registration, status = self.agents.get(agent_id, _AgentHistory()).at(version)
            if registration is None or registration.scaling_group != record.scaling_group:
                continue
            alive = status is AgentStatus.ALIVE
            agents.append(agent_info_of(agent_id, registration, alive=alive))
        return agents

    def _spec(self, session_id: uuid.UUID) -> SessionSpec:
        record = self.working.get("session", str(session_id))
        if record is None:
            raise KeyError(f"session {session_id} is not in the log")
        return spec_of(record)

    def _pass(self, record: SchedulingPass, book: LedgerFold, position: str) -> None:
        if self.group not in (None, record.scaling_group):
            return
        if not record.recorded:  # the chain's next record is relative to its last recorded
            self.replayed.append(_Replayed(record, position, None, "its inputs were too many"))
            return
        agents = self._agents_of(record)
        if book.version != record.ledger_version:
            why = f"its ledger (version {record.ledger_version}) is not the log's ({book.version})"
            self.replayed.append(_Replayed(record, position, None, why))
            return
        capacities: dict[str, ResourceSlot] = {a.agent_id: a.capacity for a in agents}
        ledger = LedgerFold.restore(capacities, book.snapshot(), book.version).ledger
        for agent in agents:
            ledger.set_capacity(agent.agent_id, agent.capacity)
        try:
            absent = set(record.absent)
            held = [sid for sid in ledger.occupying_by_session() if sid not in absent]
            specs = {sid: self._spec(sid) for sid in [*record.pending, *held]}
            result = replay_pass(record, specs=specs, agents=agents, ledger=ledger)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            self.replayed.append(_Replayed(record, position, None, str(exc)[:300]))
            return
        placements = {
            str(d.session_id): tuple(
                (str(a.kernel_id), a.agent_id) for a in d.reservation.allocations
            )
            for d in result.decisions
        }
        self.replayed.append(_Replayed(record, position, placements))


def _shown(placement: Placement | None) -> str:
    if placement is None:
        return "not placed"
    agents = [agent for _, agent in placement]
    return "on " + ", ".join(agents)


def _judge(fold: _Fold, since: Cutoff | None, report: DecisionReport) -> None:
    for replayed in fold.replayed:
        record = replayed.record
        if since is not None and int(replayed.position.split("-", 1)[0]) < since.ms:
            continue
        report.passes += 1
        pid = str(record.pass_id)
        if replayed.placements is None:
            report.unreplayable.append(f"pass {pid} ({replayed.position}): {replayed.why}")
            continue
        recorded = fold.recorded.get(record.pass_id, {})
        report.decisions += len(recorded)
        if len(replayed.placements) != record.decisions:
            report.disagreements.append(
                Disagreement(
                    pid,
                    replayed.position,
                    record.now,
                    None,
                    f"{record.decisions} placed",
                    f"{len(replayed.placements)} placed",
                )
            )
        for session_id, placement in recorded.items():
            again = replayed.placements.get(session_id)
            if again == placement:
                report.agreed += 1
                continue
            report.disagreements.append(
                Disagreement(
                    pid,
                    replayed.position,
                    record.now,
                    session_id,
                    _shown(placement),
                    _shown(again),
                )
            )


async def replay_decisions(
    store: RedisEventStore,
    *,
    since: Cutoff | None = None,
    until: Cutoff | None = None,
    group: str | None = None,
) -> DecisionReport:
    """Replay the passes recorded between ``since`` and ``until`` (the log before ``since``
    is folded too: a pass's inputs reach back to the start)."""
    fold = _Fold(group)
    report = DecisionReport()
    async for position, fields in merged_entries(store, until=until.until if until else None):
        fold.apply(store, position, fields)
        report.events += 1
    _judge(fold, since, report)
    return report
