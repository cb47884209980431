"""The chaos checker against histories written through the real store (no stack): a clean
one passes, and each invariant, broken on purpose, is named. Plus the pure pieces: the
fault schedule replays from its seed, the executed code counts its own runs, the
percentile and the RSS slope."""

from __future__ import annotations

import itertools
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from events import RedisEventStore
from events.readmodels import dump_generation
from kernelhub.chaos.checker import check
from kernelhub.chaos.faults import schedule
from kernelhub.chaos.memory import slope_per_hour
from kernelhub.chaos.record import ClientRecord, CreateAck, DestroyAck, ExecRecord
from kernelhub.chaos.recovery import percentile
from kernelhub.chaos.workload import exec_code
from kernelhub.workload import Workload, append_steps
from projections.models import default_projections
from projections.runtime import Projector


@pytest.mark.unit
def test_the_fault_schedule_replays_from_its_seed() -> None:
    first = list(itertools.islice(schedule(42, 3.0), 50))
    assert first == list(itertools.islice(schedule(42, 3.0), 50))
    assert first != list(itertools.islice(schedule(43, 3.0), 50))
    assert {f.kind for f in first} == {"kill_actor", "kill_redis", "stop_redis", "kill_node"}


@pytest.mark.unit
def test_the_executed_code_counts_its_own_runs(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    code = exec_code(ledger, "tok-abc")
    outputs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert [o.stdout for o in outputs] == ["chaos-count 1\n", "chaos-count 2\n"]
    assert ledger.read_text().split() == ["tok-abc", "tok-abc"]


@pytest.mark.unit
def test_percentiles_and_slopes() -> None:
    assert percentile([], 99) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 99) == 99.0
    growing = [(float(t), 100 + t / 60) for t in range(0, 600, 10)]  # 1 MiB a minute
    assert slope_per_hour(growing) == pytest.approx(60.0)
    assert slope_per_hour(growing[:2]) is None


async def _history(store: RedisEventStore, stop_after: float = 1.0) -> ClientRecord:
    """A synthetic cluster's log, its projections caught up, and the record a client that
    created (and destroyed, where it ended) each of its sessions would have kept."""
    await append_steps(
        store, Workload(sessions=40, agents=3, seed=8, stop_after=stop_after).steps()
    )
    projector = Projector(store, default_projections())
    await projector.load()
    await projector.catch_up()
    record = ClientRecord()
    for stream in await store.streams_named("session-"):
        events = await store.read_stream(stream)
        sid = stream.removeprefix("session-")
        name = events[0].data.spec.name  # type: ignore[union-attr]
        record.creates.append(CreateAck(name, "sim", 0.0, session_id=sid, acked_at=0.0))
        if events[-1].type in ("session_terminated", "session_cancelled"):
            record.destroys.append(DestroyAck(sid, 0.0, acked_at=0.0))
    return record


@pytest.mark.redis
async def test_a_clean_history_passes(store: RedisEventStore) -> None:
    record = await _history(store)
    verdict = await check(store, record, None)
    assert verdict.ok, verdict.summary()
    assert verdict.sessions == 40 and verdict.ended > 0
    assert set(verdict.projections_checked) == {p.name for p in default_projections()}


@pytest.mark.redis
async def test_a_destroy_acknowledged_for_a_session_still_running_is_named(
    store: RedisEventStore,
) -> None:
    record = await _history(store, stop_after=0.6)
    ended = {d.session_id for d in record.destroys}
    open_one = next(c.session_id for c in record.creates if c.session_id not in ended)
    assert open_one is not None
    record.destroys.append(DestroyAck(open_one, 0.0, acked_at=0.0))
    verdict = await check(store, record, None, projections=False)
    assert {(f.rule, f.subject) for f in verdict.findings} == {
        ("acked_lost", open_one),
        ("not_ended", open_one),
    }


@pytest.mark.redis
async def test_sessions_left_mid_flight_are_stuck_past_their_deadline(
    store: RedisEventStore,
) -> None:
    record = await _history(store, stop_after=0.6)
    assert (await check(store, record, None, projections=False)).stuck == 0
    late = await check(store, record, None, stuck_after_s=-1, projections=False)
    assert late.stuck > 0
    assert all(f.message.split()[1] != "RUNNING" for f in late.findings if f.rule == "stuck")


@pytest.mark.redis
async def test_a_read_model_that_differs_from_the_log_is_named(store: RedisEventStore) -> None:
    record = await _history(store)
    number = await store.read_models.active_number("sessions")
    assert number is not None
    prefix = store.keys.projection_generation("sessions", number)
    dump = await dump_generation(store.redis, prefix)
    records = next(k for k, v in dump.items() if isinstance(v, dict) and len(v) > 1)
    field = next(iter(dump[records]))
    await store.redis.hset(f"{prefix}:{records}", field, '{"tampered": true}')
    verdict = await check(store, record, None)
    assert [(f.rule, f.subject) for f in verdict.findings] == [("projection", "sessions")]


@pytest.mark.redis
async def test_executions_judged_by_the_ledger(store: RedisEventStore, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    ledger.write_text("tok-once\ntok-twice\ntok-twice\ntok-unknown\ntok-unknown\n")
    record = ClientRecord(
        executions=[
            ExecRecord(str(uuid.uuid4()), "tok-once", 0.0, result="chaos-count 1", count_seen=1),
            ExecRecord(str(uuid.uuid4()), "tok-twice", 0.0, result="chaos-count 1", count_seen=1),
            ExecRecord(str(uuid.uuid4()), "tok-missing", 0.0, result="x", count_seen=1),
            ExecRecord(str(uuid.uuid4()), "tok-unknown", 0.0, error="no answer"),
            ExecRecord(str(uuid.uuid4()), "tok-lost", 0.0, error="no answer"),
        ]
    )
    verdict = await check(store, record, ledger, projections=False)
    assert sorted((f.rule, f.subject) for f in verdict.findings) == [
        ("exec_twice", "tok-missing"),
        ("exec_twice", "tok-twice"),
        ("exec_unknown_twice", "tok-unknown"),
    ]
