"""The allocation ledger (docs/architecture.md, Streams and their writers; 23.03 reserves with
``_reserve_agent`` and settles with ``settle_agent_alloc``) and its invariants, by property."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.domain.errors import InstanceNotAvailable
from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import Ledger, PendingSession, schedule_pass
from actors.domain.slots import ResourceSlot

from .domain_builders import G, agent, context, make_session, slots

pytestmark = pytest.mark.unit


def ledger() -> Ledger:
    return Ledger({"a1": slots(16, 64 * G), "a2": slots(8, 32 * G)})


def test_reserve_settle_release() -> None:
    book = ledger()
    session, k1, k2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    reservation = book.reserve(session, [(k1, "a1", slots(4, 4 * G)), (k2, "a1", slots(2, 2 * G))])
    assert book.occupied["a1"] == slots(6, 6 * G)
    assert reservation.fitted()
    assert reservation.allocations[1].free_before == slots(12, 60 * G)  # the first already deducted
    assert book.settle(k1, slots(4, 3 * G)) == ResourceSlot(cpu=0, mem=-G)  # actual allocation
    assert book.occupied["a1"] == slots(6, 5 * G)
    assert book.release(k1) == slots(4, 3 * G)
    assert book.release(k1) is None  # idempotent
    assert book.release_session(session) == [k2]
    assert book.occupied["a1"] == ResourceSlot(cpu=0, mem=0)


def test_reservation_is_all_or_nothing() -> None:
    book = ledger()
    placements = [(uuid.uuid4(), "a1", slots(8)), (uuid.uuid4(), "a2", slots(9))]
    with pytest.raises(InstanceNotAvailable, match="agent a2 has"):
        book.reserve(uuid.uuid4(), placements)
    assert book.occupied == {"a1": ResourceSlot(), "a2": ResourceSlot()}
    with pytest.raises(InstanceNotAvailable, match="unknown agent"):
        book.reserve(uuid.uuid4(), [(uuid.uuid4(), "zz", slots(1))])


def test_a_ledger_entry_proves_it_fitted() -> None:
    book = ledger()
    entry = book.reserve(uuid.uuid4(), [(uuid.uuid4(), "a2", slots(8, 32 * G))])
    assert entry.fitted()
    forged = entry.allocations[0].__class__(uuid.uuid4(), "a2", slots(9), slots(8))
    assert not forged.fitted()


def test_scheduling_reserves_requested_slots_on_the_ledger() -> None:
    book = Ledger({"a1": slots(16, 64 * G)})
    sessions = [PendingSession(make_session(request=slots(3, 3 * G))) for _ in range(6)]
    result = schedule_pass(
        group=ScalingGroup("default", scheduler="mof"),
        pending=sessions,
        existing=[],
        agents=[agent("a1")],
        ctx=context(),
        ledger=book,
    )
    assert len(result.decisions) == 5  # the sixth does not fit 16 cpus
    assert book.occupied["a1"] == slots(15, 15 * G)
    assert all(d.reservation.fitted() for d in result.decisions)


operations = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "release"]),
        st.integers(0, 7),  # kernel
        st.sampled_from(["a1", "a2"]),
        st.integers(1, 12),  # cpu
    ),
    max_size=60,
)


@given(operations)
def test_property_occupancy_never_negative_and_never_over_capacity(ops: list) -> None:  # type: ignore[type-arg]
    book = ledger()
    kernels = [uuid.UUID(int=i + 1) for i in range(8)]
    for op, k, agent_id, cpu in ops:
        kernel = kernels[k]
        if op == "reserve":
            try:
                book.reserve(uuid.uuid4(), [(kernel, agent_id, slots(cpu, G))])
            except (InstanceNotAvailable, ValueError):
                pass
        elif op == "settle" and book.held(kernel) is not None:
            held = book.held(kernel)
            assert held is not None
            book.settle(kernel, ResourceSlot(cpu=min(held["cpu"], cpu), mem=held["mem"]))
        elif op == "release":
            book.release(kernel)
        for a in ("a1", "a2"):
            assert all(v >= 0 for v in book.occupied[a].values())
            assert book.occupied[a] <= book.capacity[a]
