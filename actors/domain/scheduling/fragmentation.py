"""The ``fragmentation`` agent selector: place a session where it least reduces the
cluster's ability to hold what is expected next (after Weng et al., ATC'23, "Beware of
Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent").

An agent's **fragmentation** under a demand mix is the free accelerator capacity that the
mix cannot use there: for each request type (weighted by how often it is asked for) that
does not fit the agent's free slots, all its free accelerators. Placing a request on an
agent changes that agent's fragmentation and no other's, so the selector picks the agent
whose fragmentation grows least (it may shrink: filling a half-used GPU agent removes the
stranded half), then the least free room (bin packing), then the smallest id.

The mix is the demand the caller expects (the scheduler: the last kernels it saw pending;
what-if: the last arrivals), kept to its most common types. Agents with the same
free slots are judged once (on the Alibaba trace, about 300 distinct states among 1,523
agents per placement).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

from ..slots import INTRINSIC_SLOTS, SlotLayout, SlotType

__all__ = ["MAX_MIX_TYPES", "DemandMix", "FragmentationPlacer", "demand_mix", "units_or_none"]

Units = tuple[int, ...]
MAX_MIX_TYPES = 32


class DemandMix:
    """The expected requests, as (units, count) pairs over the most common types (counts,
    not shares: fragmentation compared in integers has no rounding to break ties with)."""

    def __init__(self, requests: Iterable[Units | None], accelerators: Sequence[int]) -> None:
        counts = Counter(
            r for r in requests if r is not None and any(r[i] > 0 for i in accelerators)
        )
        self.types: tuple[tuple[Units, int], ...] = tuple(counts.most_common(MAX_MIX_TYPES))
        self.total = sum(c for _, c in self.types)
        self.accelerators = tuple(accelerators)

    def unfit(self, free: Units) -> int:
        """The request types that do not fit ``free``, as a bit mask over :attr:`types`
        (what depends only on the types, not their weights: kept while the weights move)."""
        mask = 0
        for bit, (request, _) in enumerate(self.types):
            for r, f in zip(request, free, strict=True):
                if r > f:
                    mask |= 1 << bit
                    break
        return mask

    def weight(self, mask: int) -> int:
        return sum(c for bit, (_, c) in enumerate(self.types) if mask >> bit & 1)

    def fragmented(self, free: Units) -> float:
        """Free accelerator units on an agent with ``free`` that the mix cannot use."""
        stranded = sum(free[i] for i in self.accelerators)
        if stranded <= 0 or not self.total:
            return 0.0
        return stranded * self.weight(self.unfit(free)) / self.total


class FragmentationPlacer:
    """Agents by their free slots, and the choice that grows fragmentation least."""

    def __init__(self, mix: DemandMix) -> None:
        self.mix = mix
        self.by_free: dict[tuple[str, Units], dict[str, None]] = {}
        self._unfit: dict[Units, int] = {}
        self._weights: dict[int, int] = {}

    def add(self, agent_id: str, architecture: str, free: Units) -> None:
        self.by_free.setdefault((architecture, free), {})[agent_id] = None

    def remove(self, agent_id: str, architecture: str, free: Units) -> None:
        key = (architecture, free)
        members = self.by_free.get(key)
        if members is not None:
            members.pop(agent_id, None)
            if not members:
                del self.by_free[key]

    def set_mix(self, mix: DemandMix) -> None:
        if mix.types == self.mix.types:
            return
        if tuple(r for r, _ in mix.types) != tuple(r for r, _ in self.mix.types):
            self._unfit.clear()  # other types: what fits where must be judged again
        self._weights.clear()
        self.mix = mix

    def _fragmented(self, free: Units) -> int:
        """:meth:`DemandMix.fragmented` times the mix's total count: exact, for comparing."""
        stranded = 0
        for i in self.mix.accelerators:
            stranded += free[i]
        if stranded <= 0:
            return 0
        mask = self._unfit.get(free)
        if mask is None:
            if len(self._unfit) > 65_536:
                self._unfit.clear()
            mask = self._unfit[free] = self.mix.unfit(free)
        weight = self._weights.get(mask)
        if weight is None:
            weight = self._weights[mask] = self.mix.weight(mask)
        return stranded * weight

    def pick(self, request: Units, architecture: str | None, exclude: frozenset[str]) -> str | None:
        best: tuple[int, Units, str] | None = None
        for (arch, free), members in self.by_free.items():
            if architecture is not None and arch != architecture:
                continue
            if any(r > f for r, f in zip(request, free, strict=True)):
                continue
            allowed = [a for a in members if a not in exclude] if exclude else members
            if not allowed:
                continue
            agent_id = min(allowed)
            after = tuple(f - r for f, r in zip(free, request, strict=True))
            growth = self._fragmented(after) - self._fragmented(free)
            candidate = (growth, free, agent_id)
            if best is None or candidate < best:
                best = candidate
        return None if best is None else best[2]


def demand_mix(
    requests: Iterable[Mapping[str, Decimal]], known_slot_types: Mapping[str, SlotType]
) -> DemandMix:
    """A mix from per-kernel requests, in the units of a pass over ``known_slot_types``."""
    layout = SlotLayout(known_slot_types)
    accelerators = [i for i, n in enumerate(layout.names) if n not in INTRINSIC_SLOTS]
    return DemandMix((units_or_none(layout, r) for r in requests), accelerators)


def units_or_none(layout: SlotLayout, slots: Mapping[str, Decimal]) -> Units | None:
    """A request in units, or None for one no agent could ever hold (a slot the group does
    not know, a NaN, a negative or unbounded amount: the log may hold one written before
    requests were bounded). Such a request is no part of what the mix expects, and must
    not fail the pass that judges by it: the pass records it as the session's failure."""
    for name, value in slots.items():
        if value is None or not value.is_finite() or value < 0 or value > _MAX_AMOUNT:
            return None
        if name not in layout.names and value != 0:
            return None
    try:
        return layout.to_units(slots)
    except (ArithmeticError, ValueError, TypeError):
        return None


_MAX_AMOUNT = Decimal(2**64)
