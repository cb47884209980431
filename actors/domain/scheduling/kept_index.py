"""An agent index kept from one scheduling pass to the next.

Building :class:`~.agents.AgentIndex` converts every candidate's capacity and occupancy to
integer units and heaps them: with a thousand agents that is most of a pass that places a
handful of sessions (docs/scale.md, step 1). Between two passes almost nothing changes: a
few agents' occupancy (the last pass's reservations, kernels that started or ended), now
and then an agent joining, leaving or being resized. So the index is kept while the
candidates and the pass's shape (slot layout, selection policy) stay the same, and only the
agents whose ledger occupancy changed are brought up to date; anything else rebuilds it.

Changes are found from the ledger's record of the agents it changed
(:meth:`~.ledger.Ledger.touched_since`), and confirmed by identity: the ledger replaces an
agent's occupancy value whenever it changes (it never mutates a :class:`ResourceSlot` in
place), so an unchanged agent costs nothing and a changed one an ``is``. The candidates are
kept too when the caller passes the same tuple of agents again (a tuple cannot have changed
under us). The index itself is updated in place by the pass that uses it; the next pass
sets every changed agent back to what the ledger says, so a pass whose decisions never
landed leaves nothing wrong behind once the ledger is reloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..slots import ResourceSlot, SlotLayout
from .agents import AgentIndex, AgentState, selection_key
from .fragmentation import DemandMix
from .ledger import Ledger

if TYPE_CHECKING:
    from .schedule import AgentInfo

__all__ = ["KeptIndex"]

_Shape = tuple[tuple[str, ...], str, bool, bool, bool]
"""What an index is built for besides its agents: slot names, selection key, whether it
prefers agents without unused accelerators, round-robin, and whether it judges
fragmentation."""

_Agent = tuple[str, str, ResourceSlot]


class KeptIndex:
    """The scheduler's agent index across passes (one per scaling group)."""

    def __init__(self) -> None:
        self._index: AgentIndex | None = None
        self._shape: _Shape | None = None
        self._agents: list[AgentInfo] = []
        self._ledger: Ledger | None = None
        self._seen: dict[str, ResourceSlot] = {}
        self._cursor = 0
        self._given: tuple[AgentInfo, ...] | None = None
        self._candidates: list[AgentInfo] = []

    def candidates(self, agents: Sequence[AgentInfo]) -> list[AgentInfo]:
        """The schedulable, live agents of ``agents``, by id (kept for the same tuple)."""
        if isinstance(agents, tuple) and agents is self._given:
            return self._candidates
        chosen = sorted((a for a in agents if a.alive and a.schedulable), key=lambda a: a.agent_id)
        if isinstance(agents, tuple):
            self._given, self._candidates = agents, chosen
        return chosen

    def forget(self) -> None:
        """Drop the index: the next pass builds it afresh."""
        self._index = None

    def index_for(
        self,
        candidates: Sequence[AgentInfo],
        ledger: Ledger,
        layout: SlotLayout,
        key: str,
        *,
        prefer_fewer_extras: bool,
        round_robin: bool,
        last_chosen: str | None,
        demand: DemandMix | None = None,
    ) -> AgentIndex:
        """The index for a pass over ``candidates`` (sorted by agent id) at the ledger's
        current occupancy (``demand``: the mix the fragmentation selector judges by)."""
        shape = (tuple(layout.names), key, prefer_fewer_extras, round_robin, demand is not None)
        index = self._index
        if (
            index is None
            or shape != self._shape
            or ledger is not self._ledger
            or (candidates is not self._agents and not self._same_agents(candidates))
        ):
            index = self._build(candidates, ledger, layout, key, shape, demand)
        else:
            if demand is not None:
                index.set_demand(demand)
            touched, self._cursor = ledger.touched_since(self._cursor)
            for agent_id in touched if touched is not None else list(self._seen):
                seen = self._seen.get(agent_id)
                if seen is None:
                    continue  # not a candidate
                occupied = ledger.occupied[agent_id]
                if occupied is not seen:
                    index.update(agent_id, layout.to_units(occupied))
                    self._seen[agent_id] = occupied
        index.last_chosen = last_chosen
        return index

    def _same_agents(self, candidates: Sequence[AgentInfo]) -> bool:
        kept = self._agents
        if len(kept) != len(candidates):
            return False
        for old, new in zip(kept, candidates, strict=True):
            if old is not new and _identity(old) != _identity(new):
                return False
        return True

    def _build(
        self,
        candidates: Sequence[AgentInfo],
        ledger: Ledger,
        layout: SlotLayout,
        key: str,
        shape: _Shape,
        demand: DemandMix | None,
    ) -> AgentIndex:
        _, self._cursor = ledger.touched_since(0)
        self._seen = {a.agent_id: ledger.occupied[a.agent_id] for a in candidates}
        index = AgentIndex(
            [
                AgentState(
                    a.agent_id,
                    a.architecture,
                    layout.to_units(a.capacity),
                    list(layout.to_units(self._seen[a.agent_id])),
                )
                for a in candidates
            ],
            layout,
            selection_key(key),
            prefer_fewer_extras=shape[2],
            round_robin=shape[3],
            demand=demand,
        )
        self._index, self._shape, self._ledger = index, shape, ledger
        self._agents = candidates if candidates is self._candidates else list(candidates)
        return index


def _identity(agent: AgentInfo) -> _Agent:
    return (agent.agent_id, agent.architecture, agent.capacity)
