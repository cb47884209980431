"""Subscriptions deliver everything appended after they start, in order, across restarts."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from events import Durability, Event, NewEvent, RedisEventStore, Subscription
from events.catalogue import SessionEnqueued
from kernelhub.testing import eventually, temporary_redis

pytestmark = pytest.mark.redis


def event(tag: str) -> NewEvent:
    return NewEvent(data=SessionEnqueued(session_id=uuid.uuid4(), creation_id=tag))


async def take(subscription: Subscription, n: int, timeout: float = 20) -> list[Event]:
    async def collect() -> list[Event]:
        got = []
        async for e in subscription:
            got.append(e)
            if len(got) == n:
                break
        return got

    return await asyncio.wait_for(collect(), timeout)


async def test_sees_only_what_comes_after_it_started_in_log_order(store: RedisEventStore) -> None:
    await store.append("session-before", [event("old")], None)
    subscription = store.subscribe("$", block_ms=200)
    reader = asyncio.create_task(take(subscription, 150))
    await eventually(lambda: subscription.position is not None, message="start pinned")

    async def writer(w: int) -> None:
        for i in range(50):
            await store.append(f"session-w{w}", [event(f"{w}/{i}")], None)

    await asyncio.gather(*(writer(w) for w in range(3)))
    seen = await reader
    log = await store.read_log(count=1000)
    assert [e.position for e in seen] == [e.position for e in log[1:]]
    assert all(e.data.creation_id != "old" for e in seen)  # type: ignore[union-attr]


async def test_starts_after_a_given_position(store: RedisEventStore) -> None:
    results = [await store.append("session-p", [event(str(i))], None) for i in range(5)]
    subscription = store.subscribe(results[1].positions[0])
    seen = await take(subscription, 3)
    assert [e.version for e in seen] == [3, 4, 5]
    assert subscription.position == results[4].positions[0]


@pytest.mark.fault
async def test_resumes_after_a_redis_restart_without_gaps_or_repeats() -> None:
    with temporary_redis(Durability.ALWAYS) as server:
        store = RedisEventStore.from_url(server.url)
        subscription = store.subscribe("$", block_ms=200)
        seen: list[Event] = []

        async def follow() -> None:
            async for e in subscription:
                seen.append(e)

        reader = asyncio.create_task(follow())
        await eventually(lambda: subscription.position is not None, message="start pinned")
        for i in range(5):
            await store.append("session-r", [event(f"before-{i}")], None)
        await eventually(lambda: len(seen) == 5, message="5 events before the crash")
        server.kill()  # the reader is blocked in XREAD on a connection that now dies
        await eventually(lambda: subscription.reconnects >= 1, message="the loss noticed")
        server.restart()
        writer = RedisEventStore.from_url(server.url)
        for i in range(5):
            await writer.append("session-r", [event(f"after-{i}")], None)
        await eventually(lambda: len(seen) >= 10, timeout=30, message="10 events")
        await subscription.aclose()
        await asyncio.wait_for(reader, 10)
        assert [e.data.creation_id for e in seen] == (  # type: ignore[union-attr]
            [f"before-{i}" for i in range(5)] + [f"after-{i}" for i in range(5)]
        )
        assert [e.version for e in seen] == list(range(1, 11))
        await writer.close()
        await store.close()


async def test_a_blocked_follower_can_always_be_cancelled(store: RedisEventStore) -> None:
    """Cancelling a task blocked in XREAD must end it, whatever redis-py turns the
    cancellation into (a swallowed cancel would leave it running forever)."""
    for _ in range(20):
        subscription = store.subscribe("$", block_ms=200)

        async def follow(sub: Subscription = subscription) -> None:
            async for _event in sub:
                pass

        task = asyncio.create_task(follow())
        await eventually(lambda s=subscription: s.position is not None, message="started")  # type: ignore[misc]
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


async def test_filters_skip_other_types_and_streams_but_keep_the_position(
    store: RedisEventStore,
) -> None:
    from events.catalogue import SessionCancelled

    def cancelled(tag: str) -> NewEvent:
        return NewEvent(data=SessionCancelled(session_id=uuid.uuid4(), creation_id=tag))

    start = await store.head()
    await store.append("session-mine", [event("a"), cancelled("b")], None)
    await store.append("session-theirs", [cancelled("c")], None)
    await store.append("session-mine", [cancelled("d")], 2)
    subscription = store.subscribe(
        start,
        block_ms=200,
        types=frozenset({"session_cancelled"}),
        streams=lambda stream: stream == "session-mine",
    )
    seen = await take(subscription, 2)
    assert [e.data.creation_id for e in seen] == ["b", "d"]  # type: ignore[union-attr]
    assert subscription.position == await store.head()


async def test_a_tenant_string_cannot_pass_for_the_event_type(store: RedisEventStore) -> None:
    """The type is read from the entry's bytes before decoding: a value a tenant chose that
    spells a ``"type"`` key must not make the entry pass for another type."""
    from events.subscription import entry_type

    forged = 'x","type":"session_cancelled"}'
    start = await store.head()
    await store.append("session-forged", [event(forged)], None)
    entries = await store.redis.xrange(store.keys.log, "-", "+")
    body = entries[-1][1][b"e"]
    assert forged.encode() not in body  # escaped in canonical JSON
    assert entry_type(body) == "session_enqueued"
    assert entry_type(b'{"type": "session_cancelled"}') is None  # not canonical: decoded
    cancelled = store.subscribe(start, block_ms=100, types=frozenset({"session_cancelled"}))
    with pytest.raises(TimeoutError):
        await take(cancelled, 1, timeout=1)
    (seen,) = await take(store.subscribe(start, block_ms=100), 1)
    assert seen.data.creation_id == forged  # type: ignore[union-attr]


async def test_select_sees_each_entrys_stream_and_type_before_it_is_decoded(
    store: RedisEventStore,
) -> None:
    asked: list[tuple[str, str]] = []

    def select(stream: str, event_type: str) -> bool:
        asked.append((stream, event_type))
        return stream == "session-wanted"

    start = await store.head()
    await store.append("session-other", [event("a")], None)
    await store.append("session-wanted", [event("b")], None)
    subscription = store.subscribe(start, block_ms=100, select=select)
    (seen,) = await take(subscription, 1)
    assert seen.data.creation_id == "b"  # type: ignore[union-attr]
    assert asked == [("session-other", "session_enqueued"), ("session-wanted", "session_enqueued")]
    assert subscription.position == await store.head()
