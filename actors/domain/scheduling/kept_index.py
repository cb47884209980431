"""An agent index kept from one scheduling pass to the next.

Building :class:`~.agents.AgentIndex` converts every candidate's capacity and occupancy to
integer units and heaps them: with a thousand agents that is most of a pass that places a
handful of sessions (docs/scale.md, step 1). Between two passes almost nothing changes: a
few agents' occupancy (the last pass's reservations, kernels that started or ended), now
and then an agent joining, leaving or being resized. So the index is kept while the
candidates and the pass's shape (slot layout, selection policy) stay the same, and only the
agents whose ledger occupancy changed are brought up to date; anything else rebuilds it.

Changes are found by identity: the ledger replaces an agent's occupancy value whenever it
changes (:class:`~.ledger.Ledger` never mutates a :class:`ResourceSlot` in place), so an
unchanged agent costs one ``is`` per pass. The index itself is updated in place by the pass
that uses it; the next pass sets every changed agent back to what the ledger says, so a
pass whose decisions never landed leaves nothing wrong behind once the ledger is reloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..slots import ResourceSlot, SlotLayout
from .agents import AgentIndex, AgentState, selection_key
from .ledger import Ledger

if TYPE_CHECKING:
    from .schedule import AgentInfo

__all__ = ["KeptIndex"]

_Shape = tuple[tuple[str, ...], str, bool, bool]
"""What an index is built for besides its agents: slot names, selection key, whether it
prefers agents without unused accelerators, and round-robin."""

_Agent = tuple[str, str, ResourceSlot]


class KeptIndex:
    """The scheduler's agent index across passes (one per scaling group)."""

    def __init__(self) -> None:
        self._index: AgentIndex | None = None
        self._shape: _Shape | None = None
        self._agents: list[AgentInfo] = []
        self._ledger: Ledger | None = None
        self._seen: dict[str, ResourceSlot] = {}

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
    ) -> AgentIndex:
        """The index for a pass over ``candidates`` (sorted by agent id) at the ledger's
        current occupancy."""
        shape = (tuple(layout.names), key, prefer_fewer_extras, round_robin)
        index = self._index
        if (
            index is None
            or shape != self._shape
            or ledger is not self._ledger
            or not self._same_agents(candidates)
        ):
            index = self._build(candidates, ledger, layout, key, shape)
        else:
            for agent in candidates:
                occupied = ledger.occupied[agent.agent_id]
                if occupied is not self._seen[agent.agent_id]:
                    index.update(agent.agent_id, layout.to_units(occupied))
                    self._seen[agent.agent_id] = occupied
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
    ) -> AgentIndex:
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
        )
        self._index, self._shape, self._ledger = index, shape, ledger
        self._agents = list(candidates)
        return index


def _identity(agent: AgentInfo) -> _Agent:
    return (agent.agent_id, agent.architecture, agent.capacity)
