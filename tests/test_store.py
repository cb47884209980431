"""The event store against a real redis-server: concurrency, idempotency, atomicity, reads."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    NO_STREAM,
    DuplicateBatchError,
    EventStoreError,
    InvalidEventError,
    NewEvent,
    RedisEventStore,
    StreamBatch,
    WrongExpectedVersionError,
    events_for_command,
    position_key,
)
from events.catalogue import KernelTerminated, SessionEnqueued, SessionStarted

from .strategies import new_events

pytestmark = pytest.mark.redis


def enqueued(sid: uuid.UUID | None = None, creation: str = "c") -> SessionEnqueued:
    return SessionEnqueued(session_id=sid or uuid.uuid4(), creation_id=creation)


class TestOptimisticConcurrency:
    async def test_concurrent_writers_with_the_same_expected_version_exactly_one_wins(
        self, store: RedisEventStore
    ) -> None:
        await store.append("session-a", [NewEvent(data=enqueued())], NO_STREAM)
        writers = 20

        async def write(i: int) -> bool:
            try:
                await store.append("session-a", [NewEvent(data=enqueued(creation=f"w{i}"))], 1)
                return True
            except WrongExpectedVersionError as exc:
                assert exc.actual == 2 and exc.expected == 1
                return False

        outcomes = await asyncio.gather(*(write(i) for i in range(writers)))
        assert outcomes.count(True) == 1
        assert await store.stream_version("session-a") == 2

    async def test_retry_with_reload_converges_with_nothing_lost_or_duplicated(
        self, store: RedisEventStore
    ) -> None:
        writers, per_writer = 8, 5
        conflicts = 0

        async def write(w: int) -> None:
            nonlocal conflicts
            for n in range(per_writer):
                command = uuid.uuid4()
                while True:
                    version = await store.stream_version("session-b")  # reload
                    events = events_for_command(command, [enqueued(creation=f"{w}/{n}")])
                    try:
                        await store.append("session-b", events, version)
                        break
                    except WrongExpectedVersionError:
                        conflicts += 1

        await asyncio.gather(*(write(w) for w in range(writers)))
        events = await store.read_stream("session-b")
        assert [e.version for e in events] == list(range(1, writers * per_writer + 1))
        creations = sorted(e.data.creation_id for e in events)  # type: ignore[union-attr]
        assert creations == sorted(f"{w}/{n}" for w in range(writers) for n in range(per_writer))
        assert conflicts > 0, "the writers never raced: the test proved nothing"


class TestIdempotentRetries:
    async def test_a_retried_command_is_stored_once_and_gets_its_original_positions(
        self, store: RedisEventStore
    ) -> None:
        command = uuid.uuid4()
        events = events_for_command(command, [enqueued(), enqueued()])
        first = await store.append("session-c", events, NO_STREAM)
        retry = await store.append(
            "session-c", events_for_command(command, [enqueued(), enqueued()]), NO_STREAM
        )
        assert not first.duplicate and retry.duplicate
        assert retry.positions == first.positions
        assert retry.version == first.version == 2
        assert await store.log_length() == 2

    async def test_concurrent_retries_store_once(self, store: RedisEventStore) -> None:
        command = uuid.uuid4()
        payloads = [enqueued(), SessionStarted(session_id=uuid.uuid4(), creation_id="c")]
        results = await asyncio.gather(
            *(
                store.append("session-d", events_for_command(command, payloads), NO_STREAM)
                for _ in range(10)
            )
        )
        assert sum(not r.duplicate for r in results) == 1
        assert len({r.positions for r in results}) == 1
        assert await store.stream_version("session-d") == 2
        assert await store.log_length() == 2

    async def test_a_retry_after_other_appends_is_not_a_conflict(
        self, store: RedisEventStore
    ) -> None:
        command = uuid.uuid4()
        original = await store.append("session-e", events_for_command(command, [enqueued()]), 0)
        await store.append("session-e", [NewEvent(data=enqueued())], 1)
        retry = await store.append("session-e", events_for_command(command, [enqueued()]), 0)
        assert retry.duplicate and retry.positions == original.positions and retry.version == 1

    async def test_a_partly_stored_batch_is_an_error_and_stores_nothing(
        self, store: RedisEventStore
    ) -> None:
        command = uuid.uuid4()
        (stored,) = events_for_command(command, [enqueued()])
        await store.append("session-f", [stored], NO_STREAM)
        fresh = NewEvent(data=enqueued())
        with pytest.raises(DuplicateBatchError, match="1 of 2 event ids are already stored"):
            await store.append("session-f", [stored, fresh], None)
        assert await store.log_length() == 1


class TestAppendMulti:
    async def test_all_streams_or_none_when_one_expected_version_is_stale(
        self, store: RedisEventStore
    ) -> None:
        await store.append("alloc-default", [NewEvent(data=enqueued())], NO_STREAM)
        batches = [
            StreamBatch("session-g1", [NewEvent(data=enqueued())], NO_STREAM),
            StreamBatch("session-g2", [NewEvent(data=enqueued())], NO_STREAM),
            StreamBatch("alloc-default", [NewEvent(data=enqueued())], NO_STREAM),  # stale: at 1
        ]
        with pytest.raises(WrongExpectedVersionError) as info:
            await store.append_multi(batches)
        assert (info.value.stream, info.value.expected, info.value.actual) == (
            "alloc-default",
            0,
            1,
        )
        assert await store.stream_version("session-g1") == 0
        assert await store.stream_version("session-g2") == 0
        assert await store.log_length() == 1

    async def test_success_appends_every_stream_in_order(self, store: RedisEventStore) -> None:
        results = await store.append_multi(
            [
                ("session-h1", NO_STREAM, [NewEvent(data=enqueued()), NewEvent(data=enqueued())]),
                ("session-h2", None, [NewEvent(data=enqueued())]),
                ("alloc-default", NO_STREAM, []),  # a pure version guard: checked, writes nothing
            ]
        )
        assert [(r.stream, len(r.positions), r.version) for r in results] == [
            ("session-h1", 2, 2),
            ("session-h2", 1, 1),
            ("alloc-default", 0, 0),
        ]
        log = await store.read_log()
        assert [e.position for e in log] == [*results[0].positions, *results[1].positions]
        assert [position_key(e.position) for e in log] == sorted(
            position_key(e.position) for e in log
        )

    async def test_the_same_stream_twice_is_refused(self, store: RedisEventStore) -> None:
        with pytest.raises(ValueError, match="appears twice"):
            await store.append_multi([("s-1", 0, []), ("s-1", 0, [])])


class TestBadInputNeverReachesTheLog:
    async def test_invalid_payload(self, store: RedisEventStore) -> None:
        bogus = KernelTerminated.model_construct(
            type="kernel_terminated",
            kernel_id=uuid.uuid4(),
            session_id=uuid.uuid4(),
            reason="exploded",
            exit_code=1,
        )
        good = NewEvent(data=enqueued())
        event = good.model_copy(update={"data": bogus, "event_id": uuid.uuid4()})
        with pytest.raises(InvalidEventError, match="reason"):
            await store.append("session-i", [good, event], NO_STREAM)
        assert await store.log_length() == 0

    @pytest.mark.parametrize("name", ["", "has space", "-leading", "x" * 201, "a\nb", "kh:log}"])
    async def test_bad_stream_names(self, store: RedisEventStore, name: str) -> None:
        with pytest.raises(ValueError, match="invalid stream name"):
            await store.append(name, [NewEvent(data=enqueued())], None)
        assert await store.log_length() == 0

    async def test_negative_expected_version(self, store: RedisEventStore) -> None:
        with pytest.raises(ValueError, match="expected_version"):
            await store.append("s", [NewEvent(data=enqueued())], -2)


@settings(max_examples=50, deadline=None)
@given(batch=st.lists(new_events, min_size=1, max_size=5, unique_by=lambda e: e.event_id))
async def test_every_event_type_round_trips_through_redis(
    redis_server: object, batch: list[NewEvent]
) -> None:
    store = RedisEventStore.from_url(redis_server.url, prefix=f"rt{uuid.uuid4().hex[:8]}")  # type: ignore[attr-defined]
    try:
        result = await store.append("roundtrip", batch, NO_STREAM)
        read = await store.read_stream("roundtrip")
        assert [e.data for e in read] == [e.data for e in batch]
        assert [e.event_id for e in read] == [e.event_id for e in batch]
        assert [e.position for e in read] == list(result.positions)
        assert [e.version for e in read] == list(range(1, len(batch) + 1))
    finally:
        await store.redis.flushall()
        await store.close()


class TestReads:
    async def test_read_stream_pages_past_a_thousand_events(self, store: RedisEventStore) -> None:
        for chunk in range(3):
            batch = [NewEvent(data=enqueued(creation=f"{chunk}-{i}")) for i in range(900)]
            await store.append("session-long", batch, chunk * 900)
        events = await store.read_stream("session-long")
        assert [e.version for e in events] == list(range(1, 2701))
        middle = await store.read_stream("session-long", 1000, 1005)
        assert [e.version for e in middle] == [1000, 1001, 1002, 1003, 1004, 1005]
        assert await store.read_stream("session-long", 2701) == []

    async def test_read_log_is_exclusive_of_its_start_and_pages(
        self, store: RedisEventStore
    ) -> None:
        for i in range(25):
            await store.append(f"session-{i % 3}", [NewEvent(data=enqueued())], None)
        page = await store.read_log(count=10)
        rest = await store.read_log(after=page[-1].position, count=100)
        assert len(page) == 10 and len(rest) == 15
        assert page[-1].position not in {e.position for e in rest}
        everything = [e.position async for e in store.iter_log(page_size=7)]
        assert everything == [e.position for e in page + rest]
        assert await store.head() == rest[-1].position

    async def test_empty_log(self, store: RedisEventStore) -> None:
        assert await store.head() == "0-0"
        assert await store.read_log() == []
        assert await store.read_stream("nothing") == []
        assert await store.stream_version("nothing") == 0


class TestSnapshots:
    async def test_latest_snapshot_is_kept_and_loaded(self, store: RedisEventStore) -> None:
        await store.append("session-s", [NewEvent(data=enqueued()) for _ in range(5)], 0)
        assert await store.save_snapshot("session-s", 3, {"status": "PENDING"}, "v1")
        assert await store.save_snapshot("session-s", 5, {"status": "RUNNING"}, "v1")
        assert not await store.save_snapshot("session-s", 4, {"status": "OLDER"}, "v1")
        snap = await store.load_snapshot("session-s", "v1")
        assert snap is not None and (snap.version, snap.state) == (5, {"status": "RUNNING"})

    async def test_a_snapshot_of_other_code_is_discarded(self, store: RedisEventStore) -> None:
        await store.append("session-t", [NewEvent(data=enqueued())], 0)
        await store.save_snapshot("session-t", 1, {"x": 1}, "fold-v1")
        assert await store.load_snapshot("session-t", "fold-v2") is None
        assert await store.load_snapshot("session-t", "fold-v1") is None  # discarded for good

    async def test_a_snapshot_past_the_head_is_refused(self, store: RedisEventStore) -> None:
        with pytest.raises(Exception, match="past the head"):
            await store.save_snapshot("session-u", 1, {}, "v1")


async def test_a_redis_that_may_evict_is_refused(store: RedisEventStore) -> None:
    await store.redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(EventStoreError, match="noeviction"):
            await store.check_server()
    finally:
        await store.redis.config_set("maxmemory-policy", "noeviction")
    await store.check_server()
