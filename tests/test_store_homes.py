"""The store's named homes beside the log (clock, telemetry, idle activity, follower positions,
install facts, rate limits, read-model storage) keep the Redis layout they replaced: the keys
and values here are spelled out as they were written by hand before issue 27, so data written
by an older kernelhub stays readable and a newer one writes the same."""

from __future__ import annotations

import json
import time

import pytest

from events import RedisEventStore
from events.install import install_shard_count, installed_shard_count
from events.keys import AgentIndexes, SessionIndexes, TenancyIndexes, record_hash
from events.server import server_probe
from events.telemetry import DeviceStats
from kernelhub.redis_server import EmbeddedRedis

pytestmark = pytest.mark.redis


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def test_the_clock_is_the_servers(store: RedisEventStore) -> None:
    seconds, micros = await store.redis.time()
    now, now_ms = await store.clock.now(), await store.clock.now_ms()
    assert seconds <= now < seconds + 5
    assert int(seconds) * 1000 + int(micros) // 1000 <= now_ms < (seconds + 5) * 1000
    assert abs(now - time.time()) < 60


async def test_telemetry_writes_the_keys_it_always_wrote(store: RedisEventStore) -> None:
    await store.telemetry.beat("a1", 1234.5, {"k1": '{"cpu":1}'}, ttl_s=60)
    assert await store.redis.zrange("kh:hb", 0, -1, withscores=True) == [(b"a1", 1234.5)]
    assert await store.redis.get("kh:stat:k1") == b'{"cpu":1}'
    assert 0 < await store.redis.ttl("kh:stat:k1") <= 60
    assert await store.telemetry.heartbeats() == [("a1", 1234.5)]
    assert await store.telemetry.heartbeat_agents() == ["a1"]

    await store.telemetry.record_samples({}, ttl_s=10)  # nothing to record: no round trip
    await store.telemetry.record_samples(
        {"k1": "[1]"}, ttl_s=3600, devices=DeviceStats("a1", '{"at":1}', 60)
    )
    assert await store.redis.get("kh:idle:util:k1") == b"[1]"
    assert await store.redis.get("kh:stat:agent:a1:devices") == b'{"at":1}'
    assert await store.telemetry.utilization(["k1", "k2"]) == ["[1]", None]
    assert await store.telemetry.agent_devices("a1") == '{"at":1}'

    await store.telemetry.keep_kernel_log("k1", b"out\xff", ttl_s=30)
    assert await store.redis.get("kh:logs:k1") == b"out\xff"
    assert await store.telemetry.kernel_log("k1") == "out\ufffd"
    assert await store.telemetry.kernel_log("gone") == ""


async def test_idle_activity_writes_the_keys_it_always_wrote(store: RedisEventStore) -> None:
    await store.idle.touch("s1")
    access = float(_s(await store.redis.get("kh:idle:access:s1")))
    assert 86_000 < await store.redis.ttl("kh:idle:access:s1") <= 86_400
    assert await store.redis.zscore("kh:idle:due", "s1") == access
    assert await store.idle.last_accesses(["s1", "s2"]) == [access, None]

    await store.idle.app_opened("s1", "c1", stale_s=90)
    assert await store.redis.zrange("kh:idle:apps:s1", 0, -1) == [b"c1"]
    assert await store.idle.activity(["s1", "s2"], apps_since=0) == ([access, None], [1, 0])
    assert await store.idle.app_closed("s1", "c1", stale_s=90) == 0

    batch = store.idle.batch()
    batch.started("s2", 10.0)
    batch.schedule("s3", 20.0)
    batch.report("s3", '{"x":1}', ttl_s=150)
    batch.unschedule("s1")
    await batch.execute()
    assert await store.redis.get("kh:idle:access:s2") == b"10.0"
    assert await store.redis.get("kh:idle:report:s3") == b'{"x":1}'
    assert await store.idle.due(15.0) == ["s2"]
    assert await store.idle.next_due() == 10.0


async def test_followers_install_and_rate_limits_keep_their_keys(store: RedisEventStore) -> None:
    assert await store.followers.get("shard-0") is None
    await store.followers.set("shard-0", "5-0")
    assert await store.redis.get("kh:follow:shard-0") == b"5-0"
    assert await store.followers.get("shard-0") == "5-0"

    assert not await store.install.allow_unisolated()
    await store.install.set_allow_unisolated(True)
    assert await store.redis.hget("kh:install", "allow_unisolated") == b"1"
    assert await store.install.allow_unisolated()

    assert await store.install.gateway_port() is None
    await store.install.remember_gateway_port(8123)
    assert await store.redis.get("kh:gateway:port") == b"8123"
    assert await store.install.gateway_port() == 8123

    assert [await store.rate_limits.hit("AK", 900) for _ in range(3)] == [1, 2, 3]
    assert await store.redis.zcard("kh:ratelimit:AK") == 3
    assert await store.redis.get("kh:ratelimit:seq") == b"3"


async def test_the_synchronous_install_facts(
    store: RedisEventStore, redis_server: EmbeddedRedis
) -> None:
    address = redis_server.url
    assert installed_shard_count(address, "kh") is None
    assert install_shard_count(address, "kh", 3) == 3
    assert install_shard_count(address, "kh", 5) == 3  # fixed at install
    assert await store.redis.hget("kh:install", "shards") == b"3"
    assert installed_shard_count(address, "kh") == 3
    assert server_probe(address) is None
    assert server_probe("redis://127.0.0.1:1/0", timeout=0.5, connect_timeout=0.5) is not None


async def test_read_model_storage_reads_the_generation_layout(store: RedisEventStore) -> None:
    storage = store.read_models
    assert await storage.active("sessions") is None
    number = await storage.next_number("sessions")
    assert await store.redis.get("kh:p:sessions:next") == b"1"
    assert await storage.activate_first("sessions", number) == 1
    assert await storage.activate_first("sessions", 7) == 1
    assert await store.redis.get("kh:p:sessions:active") == b"1"
    generation = await storage.active("sessions")
    assert generation is not None and generation.prefix == "kh:p:sessions:g1"

    await generation.set_version(3)
    assert await store.redis.hget("kh:p:sessions:g1:meta", "version") == b"3"
    assert await generation.version() == 3
    assert await generation.checkpoint() == "0-0"
    await generation.commit(
        expected_checkpoint="0-0",
        checkpoint="9-0",
        records={("session", "s1"): json.dumps({"id": "s1"})},
        ops=[
            ("zadd", SessionIndexes.status("RUNNING"), 5, "s1"),
            ("hset", SessionIndexes.KERNEL, "k1", "s1"),
        ],
        status={"checkpoint": "9-0", "state": "running"},
    )
    assert await store.redis.get("kh:p:sessions:g1:ckpt") == b"9-0"
    assert await store.redis.hget("kh:p:sessions:g1:r:session", "s1") == b'{"id": "s1"}'
    assert await store.redis.zscore("kh:p:sessions:g1:i:status:RUNNING", "s1") == 5
    assert await store.redis.hget("kh:p:sessions:g1:i:kernel", "k1") == b"s1"
    assert await store.redis.hget("kh:p:sessions:status", "checkpoint") == b"9-0"
    assert await storage.checkpoints(["sessions", "agents"]) == ["9-0", None]
    assert await storage.status("sessions") == {"checkpoint": "9-0", "state": "running"}
    assert await storage.active_records("sessions", "session", ["s1", "nope"]) == [{"id": "s1"}]
    assert await generation.records("session", ["s1"]) == [{"id": "s1"}]
    assert await generation.fields(SessionIndexes.KERNEL, ["k1", "k2"]) == ["s1", None]
    assert await generation.scored(SessionIndexes.status("RUNNING")) == [("s1", 5.0)]
    assert await generation.sizes([SessionIndexes.status("RUNNING"), SessionIndexes.ALL]) == [1, 0]

    await storage.halt("sessions", "stopped at 9-0")
    assert await store.redis.hget("kh:p:alarms", "sessions") == b"stopped at 9-0"
    assert await storage.flip("sessions", 2) == 1
    await storage.clear_alarm("sessions")
    assert await store.redis.hget("kh:p:alarms", "sessions") is None
    await generation.unlink()
    assert not [k async for k in store.redis.scan_iter(match="kh:p:sessions:g1:*")]


def test_index_names_are_the_ones_the_read_models_hold() -> None:
    assert record_hash("session") == "r:session"
    assert SessionIndexes.usage_open("keypair:AK") == "i:usage:open:keypair:AK"
    assert SessionIndexes.usage_closed("user:u") == "i:usage:closed:user:u"
    assert SessionIndexes.pending("default") == "i:pending:default"
    assert SessionIndexes.name("AK") == "i:name:AK"
    assert AgentIndexes.scaling_group("g") == "i:sg:g"
    assert TenancyIndexes.scaling_groups_for("domain", "d") == "i:sg_for:domain:d"
    assert TenancyIndexes.project_names("d") == "i:project:d"
    assert TenancyIndexes.USER_EMAIL == "i:user:email"
