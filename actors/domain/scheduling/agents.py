"""Agents as the scheduler sees them, and the index that picks one without scanning all.

Inside a pass everything is integer units in one :class:`~actors.domain.slots.SlotLayout`
order; only the chosen agent's occupancy changes per pick. :class:`AgentIndex` keeps one
lazy heap per architecture and *signature* (the set of slots an agent has capacity for),
keyed by the selection policy; a pick pops until it finds an agent that fits, puts the
skipped ones back, and re-keys only the chosen agent. Agents that can no longer fit any
request (no free cpu or no free memory) leave the index for the rest of the pass. Under
``largest``, whose key (the capacity) never changes, a tree over the fixed order takes the
heap's place (:class:`_SortedGroup`): the same choice, without popping past full agents.

Tie-breaks are explicit (ResourceSlot's order is only partial): whatever the policy's key
leaves equal is decided by the smallest agent id.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..slots import SlotLayout
from .fragmentation import DemandMix, FragmentationPlacer

__all__ = ["AgentIndex", "AgentState", "SelectionKey", "selection_key"]

Units = tuple[int, ...]


@dataclass(eq=False, slots=True)
class AgentState:
    agent_id: str
    architecture: str
    capacity: Units
    """Total capacity (upstream ``available_slots``)."""
    occupied: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.occupied:
            self.occupied = [0] * len(self.capacity)

    def free(self) -> Units:
        return tuple(c - o for c, o in zip(self.capacity, self.occupied, strict=True))

    def fits(self, request: Units) -> bool:
        return all(
            o + r <= c for c, o, r in zip(self.capacity, self.occupied, request, strict=True)
        )

    def reserve(self, request: Units) -> None:
        for i, r in enumerate(request):
            self.occupied[i] += r

    def release(self, amount: Units) -> None:
        for i, r in enumerate(amount):
            self.occupied[i] -= r
            if self.occupied[i] < 0:
                raise ValueError(f"agent {self.agent_id} would go negative on slot #{i}")

    @property
    def signature(self) -> frozenset[int]:
        """Indexes of the slots this agent has any capacity for."""
        return frozenset(i for i, c in enumerate(self.capacity) if c > 0)


SelectionKey = Callable[[AgentState], tuple[int, ...]]
"""Smaller is preferred; the agent id breaks what the key leaves equal."""


def largest_first(agent: AgentState) -> tuple[int, ...]:
    """``largest``: a key of the capacity alone, which never changes while an index lives
    (:class:`_SortedGroup` is kept for it)."""
    return tuple(-c for c in agent.capacity)


def selection_key(name: str) -> SelectionKey:
    """The agent preference of a plugin or selector.

    * ``largest`` (fifo, lifo, drf): the biggest total capacity first, compared slot by slot
      in the layout's (alphabetical) slot order.
    * ``least-occupied`` (mof): the smallest occupancy first, same comparison.
    * ``concentrated`` (extension, 23.09): the least free capacity that fits (bin packing).
    * ``dispersed`` (extension, 23.09): the most free capacity first (spreading).

    ``round-robin`` (extension, 23.09) is not a key but a turn: see ``AgentIndex``.
    ``fragmentation`` (kernelhub) is not a key either but a judgement of each choice
    (:mod:`.fragmentation`); its heaps are kept in the concentrated order.
    """
    if name == "largest":
        return largest_first
    if name == "least-occupied":
        return lambda a: tuple(a.occupied)
    if name in ("concentrated", "fragmentation"):
        return lambda a: a.free()
    if name == "dispersed":
        return lambda a: tuple(-f for f in a.free())
    raise ValueError(f"unknown agent selection {name!r}")


class _Group:
    """Agents of one architecture and signature in a lazy heap.

    Every entry pushed gets a number never used before in this group, and ``version`` maps
    each agent still in the group to its current entry's number: an entry is stale when
    the numbers differ (an agent that left as exhausted and came back can never be taken
    for one of its old entries, with an old key). A heap kept from pass to pass gathers
    stale entries; it is rebuilt from the current ones when they are under half."""

    def __init__(self, agents: Iterable[AgentState], key: SelectionKey) -> None:
        self.key = key
        self.version: dict[str, int] = {}
        self.heap: list[tuple[tuple[int, ...], str, int, AgentState]] = []
        self._numbers = itertools.count()
        for agent in agents:
            number = next(self._numbers)
            self.version[agent.agent_id] = number
            self.heap.append((key(agent), agent.agent_id, number, agent))
        heapq.heapify(self.heap)

    def best_fit(
        self, request: Units, exclude: frozenset[str], exhausted: Callable[[AgentState], bool]
    ) -> AgentState | None:
        skipped = []
        found = None
        while self.heap:
            entry = heapq.heappop(self.heap)
            _, agent_id, version, agent = entry
            if self.version.get(agent_id) != version:
                continue  # stale entry
            if exhausted(agent):
                del self.version[agent_id]
                continue
            if agent_id not in exclude and agent.fits(request):
                found = entry
                break
            skipped.append(entry)
        for entry in skipped:
            heapq.heappush(self.heap, entry)
        if found is not None:
            heapq.heappush(self.heap, found)  # still a candidate until re-keyed
            return found[3]
        return None

    def rekey(self, agent: AgentState) -> None:
        """Re-place an agent whose occupancy changed (one that left as exhausted, too)."""
        number = next(self._numbers)
        self.version[agent.agent_id] = number
        heapq.heappush(self.heap, (self.key(agent), agent.agent_id, number, agent))
        if len(self.heap) > 2 * len(self.version) + 64:
            self._compact()

    def _compact(self) -> None:
        current = {}
        for entry in self.heap:
            if self.version.get(entry[1]) == entry[2]:
                current[entry[1]] = entry
        self.heap = list(current.values())
        heapq.heapify(self.heap)


_NONE = -(1 << 62)
"""The free amount an agent that can hold nothing is kept at (it fits no request)."""


class _SortedGroup:
    """Agents of one architecture and signature under a key that never changes (``largest``)
    in a fixed order, with a tree over it that keeps, for every run of agents, the most of
    each slot any of them has free: a pick goes down to the first agent that fits, skipping
    every run where some slot has too little, and a change re-counts one path up.

    The lazy heap (:class:`_Group`) serves keys that move with occupancy; under a fixed one
    it keeps the biggest agents at its top however full they are, and every pick popped
    past them (about 480 pops a pick on the Alibaba trace's 1,523 nodes). The choice is the
    heap's: the first in (key, agent id) order that fits, is not excluded and is not
    exhausted."""

    def __init__(
        self,
        agents: Iterable[AgentState],
        key: SelectionKey,
        exhausted: Callable[[AgentState], bool],
    ) -> None:
        self.key = key
        self._exhausted = exhausted
        self.order = sorted(agents, key=lambda a: (key(a), a.agent_id))
        self._position = {a.agent_id: i for i, a in enumerate(self.order)}
        width = len(self.order[0].capacity) if self.order else 0
        self._nothing: Units = (_NONE,) * width
        self._leaves = 1
        while self._leaves < len(self.order):
            self._leaves *= 2
        self._tree: list[Units] = [self._nothing] * (2 * self._leaves)
        for i, agent in enumerate(self.order):
            self._tree[self._leaves + i] = self._free(agent)
        for node in range(self._leaves - 1, 0, -1):
            self._tree[node] = self._most(node)

    def _free(self, agent: AgentState) -> Units:
        return self._nothing if self._exhausted(agent) else agent.free()

    def _most(self, node: int) -> Units:
        return tuple(map(max, self._tree[2 * node], self._tree[2 * node + 1]))

    def best_fit(
        self, request: Units, exclude: frozenset[str], exhausted: Callable[[AgentState], bool]
    ) -> AgentState | None:
        tree, leaves = self._tree, self._leaves
        stack = [1]
        while stack:
            node = stack.pop()
            if any(free < wanted for free, wanted in zip(tree[node], request, strict=True)):
                continue  # nobody below has enough of some slot
            if node >= leaves:
                agent = self.order[node - leaves]
                if agent.agent_id not in exclude and agent.fits(request):
                    return agent  # (fits: the occupancy itself, as the heap judges it)
                continue
            stack.append(2 * node + 1)
            stack.append(2 * node)  # the left (earlier in order) first
        return None

    def rekey(self, agent: AgentState) -> None:
        node = self._leaves + self._position[agent.agent_id]
        self._tree[node] = self._free(agent)
        node //= 2
        while node:
            most = self._most(node)
            if most == self._tree[node]:
                break  # nothing above changes either
            self._tree[node] = most
            node //= 2


class AgentIndex:
    """Candidate agents of one scaling group: built for one pass, or kept across passes
    while the candidates and their capacities stay the same (:class:`KeptIndex`)."""

    def __init__(
        self,
        agents: Sequence[AgentState],
        layout: SlotLayout,
        key: SelectionKey,
        *,
        prefer_fewer_extras: bool = False,
        round_robin: bool = False,
        last_chosen: str | None = None,
        demand: DemandMix | None = None,
    ) -> None:
        self.layout = layout
        self.round_robin = round_robin
        self.last_chosen = last_chosen
        """Round-robin's turn: the agent chosen last (kept by the caller across passes)."""
        self._order = sorted(a.agent_id for a in agents)
        self.agents = {a.agent_id: a for a in agents}
        self.prefer_fewer_extras = prefer_fewer_extras
        by_kind: dict[tuple[str, frozenset[int]], list[AgentState]] = {}
        for agent in agents:
            by_kind.setdefault((agent.architecture, agent.signature), []).append(agent)
        self._intrinsic = [layout.names.index(n) for n in ("cpu", "mem") if n in layout.names]
        self.groups: dict[tuple[str, frozenset[int]], _Group | _SortedGroup] = {
            kind: _SortedGroup(members, key, self._exhausted)
            if key is largest_first
            else _Group(members, key)
            for kind, members in by_kind.items()
        }
        self.architectures = frozenset(a.architecture for a in agents)
        width = len(layout.names)
        self._total = tuple(sum(a.capacity[i] for a in agents) for i in range(width))
        self.placer: FragmentationPlacer | None = None
        """With the ``fragmentation`` selector (a demand mix given): its placer."""
        if demand is not None:
            self.placer = FragmentationPlacer(demand)
            for agent in agents:
                self.placer.add(agent.agent_id, agent.architecture, agent.free())

    def set_demand(self, demand: DemandMix) -> None:
        """The mix the ``fragmentation`` selector judges by, for this pass."""
        if self.placer is not None:
            self.placer.set_mix(demand)

    def _exhausted(self, agent: AgentState) -> bool:
        return any(agent.capacity[i] - agent.occupied[i] <= 0 for i in self._intrinsic)

    def total_capacity(self) -> Units:
        """Every agent's capacity summed (capacities are fixed for an index's life)."""
        return self._total

    def pick(
        self,
        request: Units,
        *,
        architecture: str | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> AgentState | None:
        """The preferred agent that fits ``request`` (and the architecture), or ``None``."""
        if self.placer is not None:
            chosen = self.placer.pick(request, architecture, exclude)
            return None if chosen is None else self.agents[chosen]
        if self.round_robin:
            return self._next_in_turn(request, architecture, exclude)
        used = {i for i, r in enumerate(request) if r > 0}
        candidates: list[tuple[int, tuple[int, ...], str, AgentState]] = []
        for (arch, signature), group in self.groups.items():
            if not used <= signature or (architecture is not None and arch != architecture):
                continue
            agent = group.best_fit(request, exclude, self._exhausted)
            if agent is None:
                continue
            # upstream fifo/lifo: prefer agents without accelerators the request does not use
            extras = len(signature - used) if self.prefer_fewer_extras else 0
            candidates.append((extras, group.key(agent), agent.agent_id, agent))
        if not candidates:
            return None
        return min(candidates, key=lambda c: c[:3])[3]

    def _next_in_turn(
        self, request: Units, architecture: str | None, exclude: frozenset[str]
    ) -> AgentState | None:
        """Round-robin (extension): the first agent after the last one chosen, in id order,
        that fits; the turn passes on only when an agent is chosen."""
        start = bisect.bisect_right(self._order, self.last_chosen) if self.last_chosen else 0
        count = len(self._order)
        for step in range(count):
            agent = self.agents[self._order[(start + step) % count]]
            if agent.agent_id in exclude or (architecture and agent.architecture != architecture):
                continue
            if agent.fits(request):
                self.last_chosen = agent.agent_id
                return agent
        return None

    def reserve(self, agent: AgentState, request: Units) -> None:
        self._unplace(agent)
        agent.reserve(request)
        self._rekey(agent)

    def release(self, agent: AgentState, amount: Units) -> None:
        self._unplace(agent)
        agent.release(amount)
        self._rekey(agent)

    def _unplace(self, agent: AgentState) -> None:
        if self.placer is not None:
            self.placer.remove(agent.agent_id, agent.architecture, agent.free())

    def _rekey(self, agent: AgentState) -> None:
        self.groups[(agent.architecture, agent.signature)].rekey(agent)
        if self.placer is not None:
            self.placer.add(agent.agent_id, agent.architecture, agent.free())

    def update(self, agent_id: str, occupied: Units) -> None:
        """Set an agent's occupancy to what the ledger now says (an index kept across
        passes learns only what changed since it last looked)."""
        agent = self.agents[agent_id]
        self._unplace(agent)
        agent.occupied = list(occupied)
        self._rekey(agent)
