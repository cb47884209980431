"""Redis gone, stopped, or back with its last second lost, under a running installation: the
gateway says 503 (with ``Retry-After`` and a problem body) while the log is unreachable,
and every actor carries on by itself once Redis is back, without being restarted.

The pure pieces (which errors mean "the log is away", when an actor must reload, the
backoff) are tested first, without services. The stack tests own their Redis (a test
kills it) and run the actors on the session's Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.exceptions

from actors.hosts import Installation, start_actors
from actors.runtime.outage import Backoff, Outages
from events import RedisEventStore, WrongExpectedVersionError, position_key
from events.readmodels import dump_generation
from events.secrets import SecretBox
from events.server import ServerMark, log_unreachable, needs_reload
from kernelhub.bootstrap import bootstrap
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.sdk import AsyncClient
from kernelhub.sdk._wire import HMACAuth
from kernelhub.sdk.config import ClientConfig
from kernelhub.testing import eventually, temporary_redis
from projections.models import default_projections
from projections.queries import ReadModels
from projections.runtime import Projector
from projections.tenancy_queries import TenancyLookups

G = 2**30
UNAVAILABLE = "https://api.backend.ai/probs/service-unavailable"


# ---- the pure pieces ---------------------------------------------------------------------------
@pytest.mark.unit
def test_which_errors_mean_the_log_is_unreachable() -> None:
    from ray.exceptions import RayTaskError

    away = [
        redis.exceptions.ConnectionError("Error 111 connecting"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    ]
    for error in away:
        assert log_unreachable(error), error
        # an actor that failed on Redis answers its caller with Ray's wrapper
        assert log_unreachable(RayTaskError("handle", "tb", error).as_instanceof_cause())
    try:
        try:
            raise redis.exceptions.ConnectionError("gone")
        except redis.exceptions.ConnectionError as exc:
            raise RuntimeError("could not append") from exc
    except RuntimeError as wrapped:
        assert log_unreachable(wrapped)  # raised *from* the outage
    try:
        try:
            raise redis.exceptions.ConnectionError("gone")
        except redis.exceptions.ConnectionError:
            raise KeyError("a bug in the handler") from None
    except KeyError as unrelated:
        assert not log_unreachable(unrelated)  # a bug is reported, not waited out
    for bug in (ValueError("x"), WrongExpectedVersionError("s", 3, 2), OSError("disk")):
        assert not log_unreachable(bug)
    assert not log_unreachable(redis.exceptions.ResponseError("WRONGTYPE"))


@pytest.mark.unit
def test_an_actor_reloads_when_redis_restarted_or_the_log_went_back() -> None:
    before = ServerMark(run_id="a" * 40, head="1700000000000-3")
    assert not needs_reload(None, before)  # the first mark is the baseline
    assert not needs_reload(before, before)
    assert not needs_reload(before, ServerMark("a" * 40, "1700000000001-0"))  # the log grew
    # a restart, even one that lost nothing (nothing tells which second was lost)
    assert needs_reload(before, ServerMark("b" * 40, "1700000000000-3"))
    assert needs_reload(before, ServerMark("b" * 40, "1699999999999-0"))
    # the same server with its log put back (an older copy loaded)
    assert needs_reload(before, ServerMark("a" * 40, "1700000000000-2"))
    # positions compare as numbers, not strings
    assert not needs_reload(ServerMark("a", "9-0"), ServerMark("a", "10-0"))


@pytest.mark.unit
def test_backoff_doubles_to_its_ceiling_and_starts_over_after_a_success() -> None:
    backoff = Backoff(0.05, 0.3)
    assert [backoff.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next() == 0.05
    with pytest.raises(ValueError):
        Backoff(1.0, 0.5)


@pytest.mark.unit
def test_a_loop_waits_out_an_outage_but_not_a_bug() -> None:
    outages = Outages("a loop", Backoff(0.05, 0.2))
    assert outages.failed(ValueError("a bug")) == 0.0  # its own pace, as before
    assert not outages.down
    waits = [outages.failed(redis.exceptions.ConnectionError("gone")) for _ in range(4)]
    assert waits == [0.05, 0.1, 0.2, 0.2] and outages.down
    outages.succeeded()
    assert not outages.down
    assert outages.failed(redis.exceptions.TimeoutError("stopped")) == 0.05


# ---- a stack on a Redis the test owns ----------------------------------------------------------
@dataclass
class Stack:
    redis: EmbeddedRedis
    actors: Installation
    store: RedisEventStore
    endpoint: str
    client: AsyncClient
    http: httpx.AsyncClient
    """Signed requests whose status and headers the test reads itself."""


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    with temporary_redis() as server:  # everysec: the embedded default
        try:
            yield server
        finally:
            if server.pid is not None:  # never leave it stopped (SIGKILL ends it anyway)
                with contextlib.suppress(OSError):
                    os.kill(server.pid, signal.SIGCONT)


@pytest.fixture
async def stack(ray_local: None, own_redis: EmbeddedRedis, tmp_path: Path) -> AsyncIterator[Stack]:
    master_key = tmp_path / "master.key"
    store = RedisEventStore.from_url(own_redis.url)
    actors = await asyncio.to_thread(
        start_actors,
        own_redis.url,
        namespace=f"t-{uuid.uuid4().hex[:8]}",
        backend="sim",
        shards=2,
        agents=[("i-out", {"cpu": 8, "mem": 16 * G})],
        master_key_path=str(master_key),
        gateway_port=0,
        safety_tick_s=0.3,
        heartbeat_interval_s=0.5,
        lost_timeout_s=3.0,
    )
    try:
        endpoint = await asyncio.to_thread(actors.gateway_endpoint)
        assert endpoint is not None
        keys = await bootstrap(store, SecretBox.from_file(master_key))
        lookups = TenancyLookups(store)
        await eventually(lambda: lookups.keypair(keys.access_key), timeout=30, message="keypair")
        config = ClientConfig(
            endpoint=endpoint, access_key=keys.access_key, secret_key=keys.secret_key
        )
        auth = HMACAuth(keys.access_key, keys.secret_key, "default")
        async with (
            AsyncClient(config) as client,
            httpx.AsyncClient(base_url=endpoint, auth=auth, timeout=30.0) as http,
        ):
            yield Stack(own_redis, actors, store, endpoint, client, http)
    finally:
        actors.kill()
        await store.close()


async def session_status(stack: Stack, session_id: uuid.UUID) -> tuple[int, Any]:
    """``GET /session/<id>``: the status code and the body (the session's status, or the
    problem). The read model answers it, so it needs the log."""
    reply = await stack.http.get(f"/session/{session_id}")
    return reply.status_code, reply.json()


def assert_log_unreachable(reply: httpx.Response) -> None:
    """A 503 with ``Retry-After`` and a problem body that names nothing internal."""
    assert reply.status_code == 503, reply.text
    assert reply.headers["Retry-After"].isdigit() and 0 < int(reply.headers["Retry-After"]) <= 10
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    body = reply.json()
    assert set(body) == {"type", "title"}, body
    assert body["type"] == UNAVAILABLE
    assert "log" in body["title"].lower()
    for leak in ("redis", "sock", "traceback", "127.0.0.1", "error "):
        assert leak not in reply.text.lower(), reply.text


async def refused_while_away(stack: Stack, session_id: uuid.UUID) -> None:
    """While Redis is away each kind of request is a 503: a read, a create, a destroy."""

    async def read_refused() -> bool:
        reply = await stack.http.get(f"/session/{session_id}")
        return reply.status_code == 503

    await eventually(read_refused, timeout=60, interval=0.2, message="a 503 while Redis is away")
    assert_log_unreachable(await stack.http.get(f"/session/{session_id}"))
    create = await stack.http.post(
        "/session", json={"image": "python", "sessionName": "during", "enqueueOnly": True}
    )
    assert_log_unreachable(create)
    assert_log_unreachable(await stack.http.delete(f"/session/{session_id}"))


async def create_when_back(stack: Stack, name: str) -> uuid.UUID:
    """A session created (it may take a few tries while Redis comes back) and RUNNING."""

    async def created() -> uuid.UUID | None:
        try:
            session = await stack.client.create_session("python", name=name, wait=False)
        except Exception as exc:  # a 503 while the installation finds Redis again
            if getattr(exc, "status", None) != 503:
                raise
            return None
        return session.id

    session_id = await eventually(created, timeout=60, interval=0.3, message="a create accepted")
    await wait_status(stack, session_id, "RUNNING")
    return session_id


async def wait_status(stack: Stack, session_id: uuid.UUID, wanted: str) -> None:
    """Until the sessions read model shows ``wanted`` (the gateway answers 404 for an ended
    session, so the projection is asked directly)."""

    async def reached() -> bool:
        record = await ReadModels(stack.store).session(str(session_id))
        return record is not None and record.get("status") == wanted

    await eventually(reached, timeout=90, interval=0.2, message=f"{session_id} {wanted}")


async def projections_equal_a_rebuild(store: RedisEventStore) -> bool:
    """Each read model, caught up to the head, equals one rebuilt from the log."""
    projector = Projector(store, default_projections())
    await projector.load()
    for name in ("sessions", "agents"):
        head = await store.head()
        if projector.states[name].checkpoint != head:
            return False  # not caught up yet
        live_prefix = store.keys.projection_generation(name, projector.states[name].generation)
        live = await dump_generation(store.redis, live_prefix)
        generation = await projector.rebuild(name)
        rebuilt = await dump_generation(
            store.redis, store.keys.projection_generation(name, generation)
        )
        if rebuilt != live or await store.head() != head:
            return False
    await projector.wait_cleanup()
    return True


@pytest.mark.fault
@pytest.mark.ray
@pytest.mark.redis
@pytest.mark.timeout(300)
async def test_redis_killed_and_restarted_gateway_503s_then_everything_resumes(
    stack: Stack,
) -> None:
    before = await create_when_back(stack, "before")
    gateway_pid = await stack.actors.gateway.process_id.remote()
    stack.redis.kill()
    await refused_while_away(stack, before)
    stack.redis.restart()
    after = await create_when_back(stack, "after")  # no actor was restarted by anyone
    assert (await session_status(stack, before))[1]["status"] == "RUNNING"
    await stack.client.request("DELETE", f"/session/{after}")
    await wait_status(stack, after, "TERMINATED")
    assert await stack.actors.gateway.process_id.remote() == gateway_pid
    await eventually(lambda: projections_equal_a_rebuild(stack.store), timeout=60, interval=0.5)


@pytest.mark.fault
@pytest.mark.ray
@pytest.mark.redis
@pytest.mark.timeout(300)
async def test_redis_stopped_requests_get_503_not_a_hang_then_resume(stack: Stack) -> None:
    before = await create_when_back(stack, "before")
    pid = stack.redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        # each request is bounded: the client's 30 s timeout would fail the test on a hang
        assert_log_unreachable(await stack.http.get(f"/session/{before}"))
        create = await stack.http.post(
            "/session", json={"image": "python", "sessionName": "stopped", "enqueueOnly": True}
        )
        assert_log_unreachable(create)
    finally:
        os.kill(pid, signal.SIGCONT)
    after = await create_when_back(stack, "after")
    assert (await session_status(stack, before))[1]["status"] == "RUNNING"
    await stack.client.request("DELETE", f"/session/{after}")
    await wait_status(stack, after, "TERMINATED")


def _aof_files(server: EmbeddedRedis) -> list[Path]:
    """The AOF as Redis keeps it: a directory of parts (Redis 7), else one file."""
    parts = server.data_dir / "appendonlydir"
    if parts.is_dir():
        return [parts]
    return [path for path in server.data_dir.iterdir() if path.name.endswith(".aof")]


def _aof_holds(server: EmbeddedRedis, text: str) -> bool:
    needle = text.encode()
    files = [p for f in _aof_files(server) for p in (f.iterdir() if f.is_dir() else [f])]
    return any(needle in path.read_bytes() for path in files)


def _copy_aof(server: EmbeddedRedis, into: Path) -> None:
    into.mkdir()
    for path in _aof_files(server):
        copy = shutil.copytree if path.is_dir() else shutil.copy2
        copy(path, into / path.name)


def _put_back_aof(server: EmbeddedRedis, copy: Path) -> None:
    for path in _aof_files(server):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for path in copy.iterdir():
        put = shutil.copytree if path.is_dir() else shutil.copy2
        put(path, server.data_dir / path.name)


@pytest.mark.fault
@pytest.mark.ray
@pytest.mark.redis
@pytest.mark.timeout(300)
async def test_a_lost_tail_is_noticed_and_reloaded_without_restarting_an_actor(
    stack: Stack, tmp_path: Path
) -> None:
    """As ``everysec`` can lose its last second in a crash, for real: an older copy of the
    AOF put back under a running installation. A session that was PENDING in the copy and
    RUNNING (in every actor's memory) when Redis died is PENDING again in the log: the
    actors must notice and reload, so it is scheduled and started again, exactly once in
    the log; a session created after the copy is gone; new work goes through."""
    await stack.actors.scheduler.set_paused.remote(True)
    pending = (await stack.client.create_session("python", name="kept", wait=False)).id
    await eventually(lambda: _aof_holds(stack.redis, str(pending)), timeout=30, message="in AOF")
    copy = tmp_path / "aof-copy"
    _copy_aof(stack.redis, copy)
    await stack.actors.scheduler.set_paused.remote(False)
    await wait_status(stack, pending, "RUNNING")
    lost = await create_when_back(stack, "lost")
    head_before = await stack.store.head()

    stack.redis.kill()
    _put_back_aof(stack.redis, copy)
    stack.redis.restart()
    head_after = await eventually(stack.store.head, timeout=30, message="Redis back")
    assert position_key(head_after) < position_key(head_before), "the log did not go back"

    await wait_status(stack, pending, "RUNNING")  # scheduled and started again, by itself
    types = [e.type for e in await stack.store.read_stream(f"session-{pending}")]
    assert types.count("session_started") == 1, types
    assert (await session_status(stack, lost))[0] == 404
    fresh = await create_when_back(stack, "fresh")
    for session_id in (fresh, pending):
        await stack.client.request("DELETE", f"/session/{session_id}")
        await wait_status(stack, session_id, "TERMINATED")
    await eventually(lambda: projections_equal_a_rebuild(stack.store), timeout=60, interval=0.5)


@pytest.mark.fault
@pytest.mark.redis
async def test_the_first_commands_after_a_restart_reach_the_new_server(
    own_redis: EmbeddedRedis,
) -> None:
    """Connections the pool kept were closed by the dead server: the commands sent on them
    right after the restart go through (each sent again once on a new connection), and the
    store says which server it now talks to."""
    store = RedisEventStore.from_url(own_redis.url)
    try:
        await asyncio.gather(*(store.head() for _ in range(8)))  # eight pooled connections
        before = await store.server_mark()
        own_redis.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            await store.head()  # away: fails at once, never hangs
        own_redis.restart()
        assert await asyncio.gather(*(store.head() for _ in range(8))) == ["0-0"] * 8
        assert needs_reload(before, await store.server_mark())
    finally:
        await store.close()
