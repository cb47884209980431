"""With ``appendfsync always``, an acknowledged event survives a SIGKILL of redis-server."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from events import AppendResult, Durability, NewEvent, RedisEventStore
from events.catalogue import SessionEnqueued
from kernelhub.testing import eventually, temporary_redis

pytestmark = [pytest.mark.redis, pytest.mark.fault]


async def test_acknowledged_events_survive_sigkill() -> None:
    with temporary_redis(Durability.ALWAYS) as server:
        store = RedisEventStore.from_url(server.url)
        await store.check_server(Durability.ALWAYS)
        acknowledged: list[tuple[uuid.UUID, AppendResult]] = []

        async def writer() -> None:
            version = 0
            while True:
                event = NewEvent(data=SessionEnqueued(session_id=uuid.uuid4(), creation_id="d"))
                stream = f"session-{version % 4}"
                try:
                    result = await store.append(stream, [event], None)
                except (RedisConnectionError, ConnectionError, OSError):
                    return
                acknowledged.append((event.event_id, result))
                version += 1

        task = asyncio.create_task(writer())
        await eventually(lambda: len(acknowledged) >= 300, message="300 acknowledged appends")
        server.kill()  # SIGKILL while the writer is mid-flight
        await asyncio.wait_for(task, 30)
        await store.close()

        server.restart()
        store = RedisEventStore.from_url(server.url)
        try:
            log = [e async for e in store.iter_log()]
            by_id = {e.event_id: e for e in log}
            for event_id, result in acknowledged:
                assert event_id in by_id, f"acknowledged event {event_id} was lost"
                assert by_id[event_id].position == result.positions[0]
                assert by_id[event_id].version == result.version
            # in order, and nothing beyond at most the one append in flight at the kill
            ack_positions = [r.positions[0] for _, r in acknowledged]
            assert [e.position for e in log[: len(ack_positions)]] == ack_positions
            assert len(log) - len(acknowledged) in (0, 1)
            # the index survived too: each stream's versions are contiguous
            for n in range(4):
                versions = [e.version for e in await store.read_stream(f"session-{n}")]
                assert versions == list(range(1, len(versions) + 1))
        finally:
            await store.close()
