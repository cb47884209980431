"""Event-replay tooling against real logs (real Redis, the write side in one process):
``--as-of`` answers what the history says, ``verify`` passes on a real workload and names
the offending event on injected faults, export -> import -> rebuild reproduces the read
models and positions, ``kh why`` explains a blocked session and an idle reclaim, and no
secret shows in a tail or a redacted export."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from actors.domain.commands.sessions import CreateSession, DestroySession, RestartSession
from actors.domain.commands.tenancy import SetPolicy
from actors.domain.idle import IdleConfig
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from actors.idle.reaper import touch
from actors.tenancy.writer import TenancyService
from events import RedisEventStore, canonical_dumps
from events.secrets import SecretBox
from kernelhub.bootstrap import bootstrap
from kernelhub.history.asof import cluster_as_of, session_as_of
from kernelhub.history.positions import parse_cutoff
from kernelhub.history.transfer import ImportRefused, export_log, import_log
from kernelhub.history.verify import LogVerifier
from kernelhub.history.why import explain
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import eventually
from projections.inspect import dump_generation
from projections.models import default_projections
from projections.queries import ReadModels
from projections.runtime import Projector

pytestmark = pytest.mark.redis
G = 2**30
NETWORK_2S = IdleConfig.parse(
    {"enabled": "network_timeout", "checkers": {"network_timeout": {"threshold": "2s"}}}
)


async def wait_status(store: RedisEventStore, sid: uuid.UUID, wanted: str) -> None:
    async def reached() -> bool:
        record = await ReadModels(store).session(str(sid))
        return record is not None and record["status"] == wanted

    try:
        await eventually(reached, timeout=30, message=f"{sid} {wanted}")
    except AssertionError:
        for event in await store.read_stream(f"session-{sid}"):
            print("EV", event.type, event.data)
        raise


async def create(cluster: LocalCluster, access_key: str, name: str, **extra: Any) -> uuid.UUID:
    sid: uuid.UUID = await cluster.shard.handle(
        CreateSession(
            name=name,
            access_key=access_key,
            scaling_group="default",
            image="kernelhub/python:3.11",
            requested=[ResourceSlot(cpu=1, mem=G)],
            **extra,
        )
    )
    return sid


async def verify(store: RedisEventStore, grace_ms: int = 0) -> list[Any]:
    """What ``kh events verify`` says: the whole log, the archive in its place."""
    from events.archive import merged_entries

    verifier = LogVerifier(
        store.codec, grace_ms=grace_ms, head=await store.chain_head(), judges_head=True
    )
    async for position, fields in merged_entries(store):
        verifier.feed(position, fields)
    return verifier.finish()


async def workload(store: RedisEventStore, tmp_path: Path) -> dict[str, Any]:
    """A real history: a session run and destroyed, one restarted, one blocked by its
    keypair's concurrency limit and then let through, one reclaimed as idle."""
    box = SecretBox.from_file(tmp_path / "master.key", create=True)
    admin = await bootstrap(store, box)
    tenancy = await TenancyService(store, box).load()
    await tenancy.handle(SetPolicy(name="default", max_concurrent_sessions=1, idle_timeout=2))
    facts: dict[str, Any] = {"access_key": admin.access_key}
    async with LocalCluster(
        store, [("i-a", {"cpu": 8, "mem": 16 * G})], safety_tick_s=0.3, idle=NETWORK_2S
    ) as cluster:
        first = await create(cluster, admin.access_key, "first")
        await wait_status(store, first, "RUNNING")
        facts["running_at"] = await store.head()
        blocked = await create(cluster, admin.access_key, "blocked")

        async def refused() -> bool:
            events = await store.read_stream(f"session-{blocked}")
            return any(e.type == "session_scheduling_failed" for e in events)

        await eventually(refused, timeout=20, message="refused for concurrency")
        facts["blocked_why"] = explain(await store.read_stream(f"session-{blocked}"), 0)
        await cluster.shard.handle(RestartSession(session_id=first))
        await wait_status(store, first, "RUNNING")
        await cluster.shard.handle(DestroySession(session_id=first, reason="user-requested"))
        await wait_status(store, first, "TERMINATED")
        await wait_status(store, blocked, "RUNNING")  # the slot is free: it runs now
        for _ in range(3):
            await touch(store, blocked)
        await wait_status(store, blocked, "TERMINATED")  # idle for 2 s: reclaimed
        facts.update(first=first, blocked=blocked)
        await asyncio.sleep(0.5)  # the releases of the last end
    return facts


async def test_history_of_a_real_workload(store: RedisEventStore, tmp_path: Path) -> None:
    facts = await workload(store, tmp_path)
    first, blocked = facts["first"], facts["blocked"]

    # --as-of: the status the history says the session had then
    then = parse_cutoff(facts["running_at"], 0)
    assert (await session_as_of(store, str(first), then))["status"] == "RUNNING"  # type: ignore[index]
    assert await session_as_of(store, str(blocked), then) is None  # not created yet
    now = parse_cutoff(await store.head(), 0)
    assert (await session_as_of(store, str(first), now))["status"] == "TERMINATED"  # type: ignore[index]
    cluster = await cluster_as_of(store, then)
    assert cluster["sessions"] == {"RUNNING": 1}
    assert cluster["agents"]["i-a"]["occupied_slots"] == {"cpu": "1", "mem": str(G)}
    assert (await cluster_as_of(store, now))["agents"]["i-a"]["occupied_slots"] == {}

    # verify passes on the real log
    assert await verify(store) == []

    # why: blocked by concurrency (while it was), then ended by the idle timeout
    pending = facts["blocked_why"]
    assert pending.status == "PENDING"
    assert any("concurrency" in line and "concurrent" in line for line in pending.lines)
    ended = explain(await store.read_stream(f"session-{blocked}"), 0)
    assert ended.status == "TERMINATED"
    assert any(
        line.startswith("destroy asked at") and "idle-timeout" in line for line in ended.lines
    )
    assert any("no activity for 0m 2s" in line for line in ended.lines)


async def test_export_then_import_into_a_fresh_redis_reproduces_everything(
    store: RedisEventStore, tmp_path: Path
) -> None:
    await workload(store, tmp_path)
    secret_export, redacted_export = tmp_path / "full.jsonl", tmp_path / "redacted.jsonl"
    with secret_export.open("w") as out:
        count = await export_log(store, out, with_secrets=True)
    with redacted_export.open("w") as out:
        await export_log(store, out)
    assert count == await store.log_length()
    encrypted = [
        json.loads(line)
        for line in secret_export.read_text().splitlines()
        if '"keypair_issued"' in line
    ]
    assert encrypted and all(e["body"]["data"]["secret_key"] != "***" for e in encrypted)
    assert '"secret_key": "***"' in redacted_export.read_text()
    original = Projector(store, default_projections())
    await original.rebuild_many(["sessions", "agents", "tenancy"])

    with EmbeddedRedis(tmp_path / "other") as other:
        fresh = RedisEventStore.from_url(other.url, prefix=store.keys.prefix)
        try:
            with pytest.raises(ImportRefused, match="secrets redacted"):
                await import_log(fresh, redacted_export)
            assert await fresh.log_length() == 0  # a refused file writes nothing
            assert await import_log(fresh, secret_export) == count
            with pytest.raises(ImportRefused, match="already holds a log"):
                await import_log(fresh, secret_export)
            assert await fresh.head() == await store.head()
            theirs = await fresh.redis.xrange(fresh.keys.log)
            ours = await store.redis.xrange(store.keys.log)
            assert theirs == ours  # every position and byte
            rebuilt = Projector(fresh, default_projections())
            await rebuilt.rebuild_many(["sessions", "agents", "tenancy"])
            for name in ("sessions", "agents", "tenancy"):
                mine = await dump_generation(store.redis, await _active(store, name))
                copy = await dump_generation(fresh.redis, await _active(fresh, name))
                assert copy == mine, name
            assert await verify(fresh) == []
            # the keypairs work: the same secrets, decrypted with the same master key
            from actors.gateway.auth import Authenticator
            from projections.tenancy_queries import TenancyLookups

            box = SecretBox.from_file(tmp_path / "master.key")
            before = Authenticator(TenancyLookups(store), box)
            after = Authenticator(TenancyLookups(fresh), box)
            access_key = encrypted[0]["body"]["data"]["access_key"]
            secret = await after.secret_of(access_key)
            assert secret and secret == await before.secret_of(access_key)
        finally:
            await fresh.close()


async def _active(store: RedisEventStore, name: str) -> str:
    generation = await store.redis.get(store.keys.projection_active(name))
    return store.keys.projection_generation(name, int(generation))


def entry(stream: str, version: int, body: dict[str, Any]) -> dict[bytes, bytes]:
    return {
        b"s": stream.encode(),
        b"v": str(version).encode(),
        b"e": canonical_dumps(body).encode(),
    }


async def test_verify_names_the_offending_events_of_injected_faults(
    store: RedisEventStore, tmp_path: Path
) -> None:
    """An over-allocation, an illegal transition, a second session_started and a version
    gap, each injected into a copy of a real log: verify names each one."""
    await workload(store, tmp_path)
    raw = await store.read_raw("0-0", 100_000)
    decoded = [store.codec.decode_stored(p, f) for p, f in raw]
    started = next(e for e in decoded if e.type == "session_started")
    reserved = next(e for e in decoded if e.type == "alloc_reserved")
    last_ms = decoded[-1].position_ms

    def forged(
        after_ms: int, seq: int, stream: str, version: int, kind: str, data: dict[str, Any]
    ) -> tuple[str, dict[bytes, bytes]]:
        body = {**started.body, "event_id": str(uuid.uuid4()), "type": kind, "data": data}
        return f"{after_ms + 1}-{seq}", entry(stream, version, body)

    def check(extra: list[tuple[str, dict[bytes, bytes]]], rule: str, needle: str) -> None:
        verifier = LogVerifier(store.codec, grace_ms=10**9)
        for position, fields in raw + extra:
            verifier.feed(position, fields)
        found = [v for v in verifier.finish() if v.rule == rule]
        assert found and needle in found[0].message and found[0].position == extra[-1][0]

    stream = started.stream
    version = max(e.version for e in decoded if e.stream == stream)
    check(
        [forged(last_ms, 0, stream, version + 1, "session_started", {**started.data})],
        "once",
        "already started",
    )
    check(
        [
            forged(
                last_ms,
                0,
                stream,
                version + 1,
                "session_scheduled",
                {"session_id": started.data["session_id"], "creation_id": "x"},
            )
        ],
        "transition",
        "session_scheduled while the session is TERMINATED",
    )
    check(
        [
            forged(
                last_ms,
                0,
                stream,
                version + 3,
                "session_activity",
                {"session_id": started.data["session_id"], "last_access": 1.0},
            )
        ],
        "versions",
        "a gap",
    )
    greedy = {
        **reserved.data,
        "session_id": str(uuid.uuid4()),
        "allocations": [
            {
                **reserved.data["allocations"][0],
                "kernel_id": str(uuid.uuid4()),
                "slots": {"cpu": "9", "mem": str(G)},
            }
        ],
    }
    ledger_version = max(e.version for e in decoded if e.stream == reserved.stream)
    check(
        [forged(last_ms, 0, reserved.stream, ledger_version + 1, "alloc_reserved", greedy)],
        "capacity",
        "got {cpu: 9",
    )
    broken = (
        f"{last_ms + 1}-0",
        {
            b"s": stream.encode(),
            b"v": str(version + 1).encode(),
            b"e": b'{"type": "no_such_event"}',
        },
    )
    check([broken], "decode", "")


def kh(*args: str, redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "KH_REDIS_URL": redis_url, **env}
    return subprocess.run(
        [sys.executable, "-m", "kernelhub.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_cli_tails_shows_replays_explains_and_never_shows_a_secret(
    store: RedisEventStore, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    facts = await workload(store, tmp_path)
    url, prefix = redis_server.url, {"KH_KEY_PREFIX": store.keys.prefix}
    tail = await asyncio.to_thread(kh, "events", "tail", "-n", "500", redis_url=url, **prefix)
    assert tail.returncode == 0, tail.stderr
    assert "keypair_issued" in tail.stdout and "secret_key=***" in tail.stdout
    lines = await _export_lines(store, tmp_path)
    secrets = [
        json.loads(line)["body"]["data"]["secret_key"]
        for line in lines
        if '"keypair_issued"' in line
    ]
    assert secrets and not any(s in tail.stdout for s in secrets)
    as_json = await asyncio.to_thread(
        kh, "events", "tail", "--json", "--type", "session_started", redis_url=url, **prefix
    )
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert rows and {r["body"]["type"] for r in rows} == {"session_started"}
    shown = await asyncio.to_thread(kh, "events", "show", "blocked", redis_url=url, **prefix)
    assert shown.returncode == 0 and f"session-{facts['blocked']}" in shown.stdout
    assert "session_scheduling_failed" in shown.stdout
    replay = await asyncio.to_thread(
        kh,
        "replay",
        "--as-of",
        facts["running_at"],
        "session",
        str(facts["first"]),
        "--json",
        redis_url=url,
        **prefix,
    )
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["status"] == "RUNNING"
    why = await asyncio.to_thread(kh, "why", "blocked", redis_url=url, **prefix)
    assert why.returncode == 0 and "idle-timeout" in why.stdout, why.stderr
    verified = await asyncio.to_thread(
        kh, "events", "verify", "--grace", "0", redis_url=url, **prefix
    )
    assert verified.returncode == 0 and verified.stdout.strip().endswith("ok"), verified.stdout
    bad = await asyncio.to_thread(
        kh, "replay", "--as-of", "yesterday-ish", "cluster", redis_url=url, **prefix
    )
    assert bad.returncode == 1 and bad.stderr.startswith("kh: error: not a time or position")
    missing = await asyncio.to_thread(kh, "why", "nobody", redis_url=url, **prefix)
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "kh: error: no stream, session or agent 'nobody' in the log",
    )


async def _export_lines(store: RedisEventStore, tmp_path: Path) -> list[str]:
    path = tmp_path / "with-secrets.jsonl"
    with path.open("w") as out:
        await export_log(store, out, with_secrets=True)
    return path.read_text().splitlines()


async def test_archive_moves_ended_sessions_out_and_every_reader_still_answers(
    store: RedisEventStore, tmp_path: Path
) -> None:
    """Ended sessions' streams go to a compressed file and leave Redis (memory drops);
    ``--as-of`` before the archive point, ``show``, ``verify``, a rebuild and an export
    all still see them in their place."""
    from events.archive import archive_files
    from kernelhub.history.archive import archive_before
    from kernelhub.history.asof import stream_history
    from kernelhub.workload import Workload, append_steps

    await append_steps(store, Workload(sessions=600, agents=4, seed=3).steps())
    projector = Projector(store, default_projections())
    await projector.load()
    await projector.catch_up()
    models = ReadModels(store)
    ended = (await models.sessions(statuses=["TERMINATED"], limit=1)).items[0]
    before_archive = parse_cutoff(await store.head(), 0)
    as_of_before = await session_as_of(store, ended["id"], before_archive)
    events_before = await store.log_length()
    assert await verify(store) == []
    original_export = tmp_path / "before.jsonl"
    with original_export.open("w") as out:
        await export_log(store, out, with_secrets=True)

    result = await archive_before(store, before_archive, tmp_path / "archive")
    assert result.sessions >= 100 and result.file is not None
    assert await store.log_length() == events_before - result.events
    assert await store.stream_version(f"session-{ended['id']}") == 0  # gone from Redis
    assert result.memory_after < result.memory_before
    assert [f.events for f in await archive_files(store.redis, store.keys.archive)] == [
        result.events
    ]

    assert await session_as_of(store, ended["id"], before_archive) == as_of_before
    assert [e.type for e in await stream_history(store, f"session-{ended['id']}")][-1] == (
        "session_terminated"
    )
    assert await verify(store) == []
    after_export = tmp_path / "after.jsonl"
    with after_export.open("w") as out:
        await export_log(store, out, with_secrets=True)
    assert after_export.read_text() == original_export.read_text()  # nothing lost, same order
    await projector.rebuild_many(["sessions"])
    assert await models.session(ended["id"]) == ended  # the read model still shows it
    assert (await archive_before(store, before_archive, tmp_path / "archive")).sessions == 0


async def test_tail_follow_prints_new_events_as_they_are_appended(
    store: RedisEventStore, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    from kernelhub.workload import Workload, append_steps

    await append_steps(store, Workload(sessions=2, agents=1, seed=1).steps())
    environ = {**os.environ, "KH_REDIS_URL": redis_server.url, "NO_COLOR": "1"}

    async def reading_the_log() -> int:
        clients = await store.redis.client_list()
        return sum(1 for c in clients if c.get("cmd") == "xread")

    readers = await reading_the_log()
    follower = subprocess.Popen(  # noqa: ASYNC220 (started once, read in a thread)
        [
            sys.executable,
            "-m",
            "kernelhub.cli",
            "events",
            "tail",
            "--follow",
            "-n",
            "0",
            "--type",
            "session_enqueued",
        ],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # it subscribed (from the head: nothing old is shown) once it blocks on the log
        async def subscribed() -> bool:
            assert follower.poll() is None, f"kh events tail exited: {follower.stderr}"
            return await reading_the_log() > readers

        await eventually(subscribed, timeout=60, message="kh events tail subscribed")
        await append_steps(store, Workload(sessions=3, agents=1, seed=2).steps())
        lines: list[str] = []
        assert follower.stdout is not None

        def read_three() -> None:
            while len(lines) < 3:
                lines.append(follower.stdout.readline())  # type: ignore[union-attr]

        await asyncio.wait_for(asyncio.to_thread(read_three), timeout=30)
        assert all("session_enqueued" in line for line in lines)
        assert all("\033[" not in line for line in lines)  # no colour when asked not to
    finally:
        follower.kill()
        follower.wait(10)
