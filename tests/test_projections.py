"""The read side against a real Redis: folds, queries, rebuild-with-swap, halting, no scans."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import NewEvent, RedisEventStore, position_key
from events.catalogue import (
    AgentRegistered,
    AgentStarted,
    AgentTerminated,
    Allocation,
    AllocReleased,
    AllocReserved,
    AllocSettled,
    KernelCreationSpec,
    KernelStarted,
    KernelTerminated,
    SessionCreationSpec,
    SessionEnqueued,
    SessionScheduled,
    SessionStarted,
    SessionTerminated,
)
from kernelhub.workload import Workload, append_steps
from projections.inspect import dump_generation
from projections.models import default_projections
from projections.queries import ReadModels
from projections.runtime import Projector

pytestmark = pytest.mark.redis
G = 2**30


async def folded(store: RedisEventStore, **kwargs: Any) -> Projector:
    projector = Projector(store, default_projections(), **kwargs)
    await projector.catch_up()
    return projector


def spec(name: str, kernel: uuid.UUID, access_key: str = "AK1", **more: Any) -> SessionCreationSpec:
    return SessionCreationSpec(
        name=name,
        access_key=access_key,
        scaling_group="default",
        kernels=[
            KernelCreationSpec(
                kernel_id=kernel, requested_slots={"cpu": Decimal(2), "mem": Decimal(G)}
            )
        ],
        **more,
    )


async def test_a_session_story_folds_into_the_spec_record(store: RedisEventStore) -> None:
    sid, kid = uuid.uuid4(), uuid.uuid4()
    s = f"session-{sid}"
    slots = {"cpu": Decimal(2), "mem": Decimal(G)}
    await store.append(
        "agent-i-1",
        [
            NewEvent(
                data=AgentRegistered(
                    agent_id="i-1", available_slots={"cpu": Decimal(8), "mem": Decimal(8 * G)}
                )
            ),
            NewEvent(data=AgentStarted(reason="self-started")),
        ],
        0,
    )
    await store.append(
        s,
        [NewEvent(data=SessionEnqueued(session_id=sid, creation_id="c1", spec=spec("web", kid)))],
        0,
    )
    await store.append_multi(
        [
            (
                "alloc-default",
                None,
                [
                    NewEvent(
                        data=AllocReserved(
                            session_id=sid,
                            scaling_group="default",
                            allocations=[
                                Allocation(
                                    kernel_id=kid,
                                    agent_id="i-1",
                                    slots=slots,
                                    free_before={"cpu": Decimal(8), "mem": Decimal(8 * G)},
                                )
                            ],
                        )
                    )
                ],
            ),
            (
                s,
                1,
                [
                    NewEvent(
                        data=SessionScheduled(
                            session_id=sid, creation_id="c1", scaling_group="default", placements=[]
                        )
                    )
                ],
            ),
        ]
    )
    projector = await folded(store)
    models = ReadModels(store)
    record = await models.session(str(sid))
    assert record is not None
    assert (record["name"], record["status"], record["status_info"]) == (
        "web",
        "SCHEDULED",
        "scheduled",
    )
    assert list(record["status_history"]) == ["PENDING", "SCHEDULED"]
    assert (await models.pending_queue("default")).total == 0
    assert (await models.scaling_group_slots("default"))["occupied"] == {"cpu": "2", "mem": str(G)}

    await store.append(
        s,
        [
            NewEvent(
                data=KernelStarted(
                    kernel_id=kid, session_id=sid, creation_info={"container_id": "abc"}
                )
            ),
            NewEvent(data=SessionStarted(session_id=sid, creation_id="c1")),
        ],
        2,
    )
    await store.append(
        "alloc-default",
        [
            NewEvent(
                data=AllocSettled(
                    session_id=sid,
                    kernel_id=kid,
                    agent_id="i-1",
                    actual={"cpu": Decimal(2), "mem": Decimal(G // 2)},
                )
            )
        ],
        1,
    )
    await projector.catch_up()
    record = await models.session(str(sid))
    assert record is not None and record["status"] == "RUNNING"
    assert record["kernels"][str(kid)]["container_id"] == "abc"
    assert (await models.agent("i-1"))["occupied_slots"] == {"cpu": "2", "mem": str(G // 2)}  # type: ignore[index]
    kernel = await models.kernel(str(kid))
    assert kernel is not None and kernel["session_id"] == str(sid)

    await store.append(
        s,
        [
            NewEvent(
                data=KernelTerminated(
                    kernel_id=kid, session_id=sid, reason="idle-timeout", exit_code=0
                )
            ),
            NewEvent(data=SessionTerminated(session_id=sid, reason="idle-timeout")),
        ],
        4,
    )
    released = AllocReleased(session_id=sid, kernel_id=kid, agent_id="i-1", slots=slots)
    await store.append("alloc-default", [NewEvent(data=released)], 2)
    await store.append("alloc-default", [NewEvent(data=released)], 3)  # a duplicate release: no-op
    await store.append("agent-i-1", [NewEvent(data=AgentTerminated(reason="agent-lost"))], 2)
    await projector.catch_up()
    record = await models.session(str(sid))
    assert record is not None
    assert (record["status"], record["status_info"]) == ("TERMINATED", "idle-timeout")
    assert record["kernels"][str(kid)]["status_data"] == {"kernel": {"exit_code": 0}}
    agent = await models.agent("i-1")
    assert agent is not None and agent["occupied_slots"] == {} and agent["status"] == "LOST"
    usage = await models.usage("keypair:AK1", 0, 2**62, now_ms=0)
    assert sum(b.num_sessions for b in usage) >= 1


async def test_listing_filters_and_pages(store: RedisEventStore) -> None:
    await append_steps(store, Workload(sessions=120, agents=4, seed=3).steps())
    await folded(store)
    models = ReadModels(store)
    everything = await models.sessions(limit=1000)
    assert everything.total == 120
    by_owner: dict[str, int] = {}
    for record in everything.items:
        by_owner[record["access_key"]] = by_owner.get(record["access_key"], 0) + 1
    page1 = await models.sessions(owner="AK0002", limit=5)
    page2 = await models.sessions(owner="AK0002", limit=5, offset=5)
    assert page1.total == by_owner["AK0002"]
    assert {r["id"] for r in page1.items}.isdisjoint(r["id"] for r in page2.items)
    created = [r["created_ms"] for r in page1.items + page2.items]
    assert created == sorted(created, reverse=True)
    both = await models.sessions(owner="AK0002", statuses=["TERMINATED", "CANCELLED"], limit=1000)
    expected = [
        r
        for r in everything.items
        if r["access_key"] == "AK0002" and r["status"] in ("TERMINATED", "CANCELLED")
    ]
    assert both.total == len(expected) > 0
    batch = await models.sessions(session_type="batch", scaling_group="default", limit=1000)
    assert batch.total == sum(1 for r in everything.items if r["type"] == "batch")


async def test_queries_never_scan(store: RedisEventStore) -> None:
    await append_steps(store, Workload(sessions=30, agents=3, seed=4).steps())
    await folded(store)
    models = ReadModels(store)
    await store.redis.config_resetstat()
    some = (await models.sessions(limit=3)).items[0]
    await models.sessions(owner=some["access_key"], statuses=["TERMINATED"], session_type="batch")
    await models.session(some["id"])
    await models.session_by_name(some["access_key"], some["name"])
    await models.kernel(next(iter(some["kernels"])))
    await models.pending_queue("default")
    await models.agents("default", status="ALIVE")
    await models.scaling_group_slots("default")
    await models.usage("keypair:" + some["access_key"], 0, 2**62, now_ms=2**41)
    stats = await store.redis.info("commandstats")
    used = {name.removeprefix("cmdstat_") for name in stats}
    assert {"hmget", "zrevrange"} <= used, used
    assert not used & {"scan", "keys", "hscan", "zscan", "sscan"}, used


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    sessions=st.integers(1, 40),
    batch=st.integers(1, 60),
    stop_after=st.sampled_from([1.0, 0.6]),
)
async def test_a_rebuilt_projection_equals_the_live_one_byte_for_byte(
    redis_server: Any, seed: int, sessions: int, batch: int, stop_after: float
) -> None:
    store = RedisEventStore.from_url(redis_server.url, prefix=f"rb{uuid.uuid4().hex[:8]}")
    try:
        workload = Workload(sessions=sessions, agents=3, seed=seed, stop_after=stop_after)
        steps = list(workload.steps())
        projector = Projector(store, default_projections(), batch_size=batch)
        await projector.load()
        for start in range(0, len(steps), 7):  # the live projector folds while the log grows
            await append_steps(store, steps[start : start + 7])
            await projector.step()
        await projector.catch_up()
        for name in ("sessions", "agents"):
            live_prefix = store.keys.projection_generation(name, projector.states[name].generation)
            live = await dump_generation(store.redis, live_prefix)
            generation = await projector.rebuild(name)
            rebuilt = await dump_generation(
                store.redis, store.keys.projection_generation(name, generation)
            )
            assert rebuilt == live
            assert live, "nothing was folded: the test proved nothing"
        await projector.wait_cleanup()
    finally:
        await store.redis.flushall()
        await store.close()


async def test_rebuild_swaps_atomically_and_drops_the_old_generation(
    store: RedisEventStore,
) -> None:
    await append_steps(store, Workload(sessions=20, agents=2, seed=5).steps())
    projector = await folded(store)
    models = ReadModels(store)
    before = await models.sessions(limit=100)
    old = projector.states["sessions"].generation
    seen: list[int] = []
    new = await projector.rebuild("sessions", progress=lambda done, total: seen.append(done))
    assert new == old + 1 and seen and seen[-1] == await store.log_length()
    assert await models.sessions(limit=100) == before
    await projector.wait_cleanup()
    leftovers = [
        k
        async for k in store.redis.scan_iter(
            match=f"{store.keys.projection_generation('sessions', old)}:*"
        )
    ]
    assert leftovers == []
    # the live projector follows the new generation
    await append_steps(store, Workload(sessions=3, agents=2, seed=6).steps())
    await projector.catch_up()
    assert (await models.sessions(limit=100)).total == before.total + 3


async def test_an_undecodable_event_halts_with_an_alarm_and_is_not_skipped(
    store: RedisEventStore,
) -> None:
    await append_steps(store, Workload(sessions=5, agents=1, seed=7).steps())
    bad = await store.redis.xadd(
        store.keys.log, {"s": "session-x", "v": "1", "e": '{"type": "session_exploded"}'}
    )
    await append_steps(store, Workload(sessions=2, agents=1, seed=8).steps())
    projector = await folded(store)
    for state in projector.states.values():
        assert not state.running
        assert state.error is not None and bad.decode() in state.error
        assert "unknown event type 'session_exploded'" in state.error
        assert position_key(state.checkpoint) < position_key(bad.decode())
    alarms = await store.redis.hgetall(store.keys.projection_alarms)
    assert {a.decode() for a in alarms} == {p.name for p in default_projections()}
    models = ReadModels(store)
    assert (await models.sessions(limit=100)).total == 5  # before the bad event: folded; after: not
    await projector.run(asyncio.Event())  # returns at once: every projection halted


async def test_usage_is_binned_by_15_minutes_in_slot_seconds(store: RedisEventStore) -> None:
    sid, kid = uuid.uuid4(), uuid.uuid4()
    s = f"session-{sid}"
    await store.append(
        s,
        [
            NewEvent(
                data=SessionEnqueued(session_id=sid, creation_id="c", spec=spec("u", kid, "AKU"))
            ),
            NewEvent(data=KernelStarted(kernel_id=kid, session_id=sid)),
            NewEvent(data=SessionStarted(session_id=sid, creation_id="c")),
        ],
        0,
    )
    await folded(store)
    models = ReadModels(store)
    record = await models.session(str(sid))
    assert record is not None
    start = record["running_since_ms"]
    now = start + 1_800_000  # still running half an hour later
    bins = await models.usage("keypair:AKU", start - 3_600_000, now + 3_600_000, now_ms=now)
    assert all(b.start_ms % 900_000 == 0 for b in bins)
    assert [b.start_ms for b in bins] == list(
        range(bins[0].start_ms, bins[-1].start_ms + 1, 900_000)
    )
    assert bins[0].start_ms <= start < bins[0].start_ms + 900_000
    assert all(b.num_sessions == 1 for b in bins)
    total_cpu = sum(Decimal(b.slot_seconds["cpu"]) for b in bins)
    total_mem = sum(Decimal(b.slot_seconds["mem"]) for b in bins)
    assert total_cpu == 2 * 1800  # 2 cpus for 1800 s
    assert total_mem == G * 1800
    # a window that ends before the session started sees nothing
    assert await models.usage("keypair:AKU", 0, start - 1, now_ms=now) == []
    # other scopes of the same session
    assert await models.usage("domain:default", start, now, now_ms=now)
