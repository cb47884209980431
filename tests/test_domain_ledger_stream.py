"""The ledger as its stream records it (fold, snapshot, the moves kernel events call for)
and what a scheduling pass appends for its outcomes: pure, no Ray, no Redis."""

from __future__ import annotations

import uuid

import pytest

from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import FailedAttempt, Ledger, known_slot_types
from actors.domain.scheduling.ledger_stream import (
    LEDGER_SNAPSHOT_EVERY,
    LedgerFold,
    ledger_command_id,
    ledger_stream,
)
from actors.domain.scheduling.outcomes import (
    failure_report,
    placement_events,
    scheduled_command_id,
    session_command_id,
    status_after,
)
from actors.domain.scheduling.records import (
    actual_allocation,
    agent_info_of,
    failure_key,
    recorded_failure,
    scaling_group_of,
)
from actors.domain.slots import ResourceSlot, SlotType
from actors.domain.statuses import SessionStatus
from events.catalogue import (
    AgentRegistered,
    Allocation,
    AllocReleased,
    AllocReserved,
    AllocSettled,
    KernelCancelled,
    KernelStarted,
    KernelTerminated,
    SessionStarted,
    SessionStatusChanged,
    SessionTerminated,
)

from .domain_builders import G, slots

pytestmark = pytest.mark.unit

SESSION, K1, K2 = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)


def reserved(*kernels: tuple[uuid.UUID, str, ResourceSlot]) -> AllocReserved:
    return AllocReserved(
        session_id=SESSION,
        scaling_group="default",
        allocations=[
            Allocation(kernel_id=k, agent_id=a, slots=dict(s), free_before=dict(s))
            for k, a, s in kernels
        ],
    )


def folded() -> LedgerFold:
    fold = LedgerFold({"a1": slots(8, 8 * G)})
    fold.apply(1, reserved((K1, "a1", slots(2, 2 * G)), (K2, "a1", slots(1, G))))
    return fold


def test_the_fold_applies_reservations_settlements_and_releases() -> None:
    fold = folded()
    assert fold.version == 1
    assert fold.ledger.occupied["a1"] == slots(3, 3 * G)
    settled = AllocSettled(
        session_id=SESSION, kernel_id=K1, agent_id="a1", actual=dict(slots(2, G))
    )
    fold.apply(2, settled)
    assert fold.ledger.occupied["a1"] == slots(3, 2 * G)
    fold.apply(
        3, AllocReleased(session_id=SESSION, kernel_id=K2, agent_id="a1", slots=dict(slots(1, G)))
    )
    assert fold.ledger.occupied["a1"] == slots(2, G)
    assert fold.version == 3


def test_the_fold_replays_what_it_holds_once_and_agents_it_does_not_know() -> None:
    fold = folded()
    fold.apply(2, reserved((K1, "a1", slots(2, 2 * G)), (uuid.UUID(int=9), "gone", slots(1))))
    assert fold.ledger.occupied["a1"] == slots(3, 3 * G)  # K1 is not held twice
    assert fold.ledger.capacity["gone"] == ResourceSlot()  # an agent gone from the read side
    assert fold.ledger.held(uuid.UUID(int=9)) == slots(1)
    settled = AllocSettled(session_id=SESSION, kernel_id=uuid.UUID(int=7), agent_id="a1", actual={})
    fold.apply(3, settled)  # a settlement of nothing held is a no-op
    assert fold.version == 3


def test_a_snapshot_restores_the_same_holds_at_its_version() -> None:
    fold = folded()
    fold.apply(2, reserved((uuid.UUID(int=5), "elsewhere", slots(4))))
    restored = LedgerFold.restore({"a1": slots(8, 8 * G)}, fold.snapshot(), fold.version)
    assert sorted(restored.ledger.holds()) == sorted(fold.ledger.holds())
    assert restored.ledger.occupied == fold.ledger.occupied
    assert restored.version == restored.snapshot_version == 2
    assert LedgerFold.restore({"a1": slots(1)}, None, 7).version == 0  # no snapshot: from the start


def test_a_snapshot_is_due_every_so_many_entries() -> None:
    fold = LedgerFold()
    fold.committed(LEDGER_SNAPSHOT_EVERY - 1)
    assert not fold.snapshot_due()
    fold.committed(1)
    assert fold.snapshot_due()
    fold.snapshotted()
    assert not fold.snapshot_due() and fold.snapshot_version == LEDGER_SNAPSHOT_EVERY


def test_capacities_are_applied_only_when_they_change() -> None:
    capacity = slots(8, 8 * G)
    fold = LedgerFold({"a1": capacity})
    fold.ledger.capacity["a1"] = slots(1)  # what set_capacity would overwrite
    fold.set_capacities([("a1", capacity)])  # the same object: nothing to do
    assert fold.ledger.capacity["a1"] == slots(1)
    fold.set_capacities([("a1", slots(4)), ("a2", slots(2))])
    assert fold.ledger.capacity == {"a1": slots(4), "a2": slots(2)}


def test_kernels_move_the_ledger_once() -> None:
    fold = folded()
    started_as_reserved = KernelStarted(
        kernel_id=K1,
        session_id=SESSION,
        creation_info={"occupied_slots": {"cpu": "2", "mem": str(2 * G)}},
    )
    started_smaller = KernelStarted(
        kernel_id=K2,
        session_id=SESSION,
        creation_info={"occupied_slots": {"cpu": "1", "mem": "1024"}},
    )
    assert fold.moves([started_as_reserved, KernelStarted(kernel_id=K1, session_id=SESSION)]) == []
    assert fold.moves([started_smaller]) == [
        AllocSettled(
            session_id=SESSION, kernel_id=K2, agent_id="a1", actual={"cpu": 1, "mem": 1024}
        )
    ]
    ended = [
        KernelTerminated(kernel_id=K1, session_id=SESSION),
        KernelCancelled(kernel_id=K1, session_id=SESSION),  # a second end of the same kernel
        KernelTerminated(kernel_id=uuid.UUID(int=99), session_id=SESSION),  # holds nothing
        SessionStarted(session_id=SESSION, creation_id=""),  # not a kernel event
    ]
    moves = fold.moves(ended)
    assert moves == [
        AllocReleased(session_id=SESSION, kernel_id=K1, agent_id="a1", slots=dict(slots(2, 2 * G)))
    ]
    fold.apply(2, moves[0])
    assert fold.moves(ended) == []  # a replay after a restart appends nothing


def test_command_ids_are_derived_as_the_log_already_records_them() -> None:
    """These ids are in the log: a retry, or a replay after an upgrade, must derive the
    same ones to be recognised as the same command."""
    first = uuid.UUID(int=42)
    assert ledger_command_id(first, 3) == uuid.uuid5(first, "ledger/3")
    assert scheduled_command_id(SESSION, 7) == uuid.uuid5(SESSION, "scheduled@7")
    assert session_command_id(first) == uuid.uuid5(first, "session")
    assert ledger_stream("gpu") == "alloc-gpu"


def test_a_placement_is_a_reservation_and_a_scheduled_session() -> None:
    book = Ledger({"a1": slots(8, 8 * G)})
    reservation = book.reserve(SESSION, [(K1, "a1", slots(2, G)), (K2, "a1", slots(1, G))])
    alloc, scheduled = placement_events(reservation, "gpu", "c-1")
    assert alloc.scaling_group == scheduled.scaling_group == "gpu"
    assert [(a.kernel_id, a.agent_id) for a in alloc.allocations] == [(K1, "a1"), (K2, "a1")]
    assert ResourceSlot(alloc.allocations[1].free_before) == slots(6, 7 * G)
    assert scheduled.creation_id == "c-1" and scheduled.reason == "scheduled"
    assert [(p.kernel_id, p.agent_id) for p in scheduled.placements or []] == [
        (K1, "a1"),
        (K2, "a1"),
    ]


def test_a_failure_report_and_what_the_read_model_shows_of_it() -> None:
    failure = FailedAttempt(
        SESSION,
        "predicate-checks-failed",
        failed_predicates=(("concurrency", "too many"),),
        passed_predicates=("dependencies",),
        msg="no",
    )
    report = failure_report(failure, retries=3)
    assert report.retries == 3 and report.passed_predicates == ["dependencies"]
    record = {
        "status_info": "predicate-checks-failed",
        "status_data": {
            "scheduler": {
                "failed_predicates": [{"name": "concurrency", "msg": "too many"}],
                "msg": "no",
            }
        },
    }
    assert recorded_failure(record) == failure_key(report)
    assert recorded_failure({"status_info": "", "status_data": None}) is None


def test_statuses_after_session_events() -> None:
    assert status_after(SessionStarted(session_id=SESSION, creation_id="")) is SessionStatus.RUNNING
    assert status_after(SessionTerminated(session_id=SESSION)) is SessionStatus.TERMINATED
    changed = SessionStatusChanged(session_id=SESSION, status="RUNNING_DEGRADED")
    assert status_after(changed) is SessionStatus.RUNNING_DEGRADED
    assert status_after(KernelTerminated(kernel_id=K1, session_id=SESSION)) is None


def test_what_an_agent_says_it_allocated() -> None:
    assert actual_allocation({"occupied_slots": {"cpu": "1.5"}}) == ResourceSlot(cpu="1.5")
    assert actual_allocation({"occupied_slots": {}}) is None
    assert actual_allocation({}) is None


def test_an_agent_and_a_scaling_group_as_a_pass_sees_them() -> None:
    registered = AgentRegistered(
        agent_id="i-1", architecture="aarch64", available_slots={"cpu": "4", "cuda.device": "2"}
    )
    info = agent_info_of("i-1", registered, alive=False)
    assert info.capacity == ResourceSlot({"cpu": 4, "cuda.device": 2})
    assert info.architecture == "aarch64" and info.schedulable and not info.alive
    known = known_slot_types([info])
    assert known["cuda.device"] is SlotType.COUNT and known["mem"] is SlotType.BYTES
    assert scaling_group_of("gpu", None) == ScalingGroup("gpu")
    record = {"scheduler": "drf", "pending_timeout": "5", "agent_selector": "dispersed"}
    group = scaling_group_of("gpu", record)
    assert (group.scheduler, group.pending_timeout, group.agent_selector) == (
        "drf",
        5.0,
        "dispersed",
    )
