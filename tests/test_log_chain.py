"""The log's hash chain and signed checkpoints (docs/audit.md), played as the attacker who
can write to Redis: every entry appended carries a link the append script computed; an
entry edited, removed or moved behind the store's back is named by ``kh events verify``;
a chain recomputed after the edit is caught by a signed checkpoint; a checkpoint deleted
from Redis is caught by the file beside the master key. Real Redis, the real CLI."""

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

from events import NewEvent, RedisEventStore, StreamBatch
from events.catalogue import SessionEnqueued
from events.chain import ChainVerifier, link
from events.secrets import SecretBox
from kernelhub.history.transfer import export_log, import_log
from kernelhub.redis_server import EmbeddedRedis

pytestmark = pytest.mark.redis


def enqueued(n: int) -> list[NewEvent]:
    sid = uuid.uuid4()
    return [NewEvent(data=SessionEnqueued(session_id=sid, creation_id=f"c{i}")) for i in range(n)]


async def some_history(store: RedisEventStore, sessions: int = 10) -> None:
    """Sessions asked for, one append each and then several in one append (a valid log:
    ``kh events verify`` finds nothing in it)."""
    for _ in range(sessions):
        await store.append(f"session-{uuid.uuid4()}", enqueued(1), 0)
    await store.append_multi(
        [StreamBatch(f"session-{uuid.uuid4()}", enqueued(1), 0) for _ in range(3)]
    )


async def entries(store: RedisEventStore) -> list[tuple[str, dict[bytes, bytes]]]:
    raw = await store.redis.xrange(store.keys.log)
    return [(p.decode(), dict(f)) for p, f in raw]


async def rewrite(
    store: RedisEventStore, edit: dict[str, dict[bytes, bytes]], *, relink: bool = False
) -> None:
    """The attacker: the log written again with the same positions, some entries' fields
    replaced (``relink``: every link from the first edit on recomputed, and the head)."""
    old = await entries(store)
    await store.redis.delete(store.keys.log)
    prev_position, prev_hash, relinking = "", "", False
    for position, fields in old:
        fields = {**fields, **edit.get(position, {})}
        relinking = relinking or (relink and position in edit)
        if relinking:
            fields[b"h"] = link(
                prev_hash, prev_position, fields[b"s"].decode(), fields[b"v"].decode(), fields[b"e"]
            ).encode()
        await store.redis.xadd(store.keys.log, fields, id=position)
        prev_position, prev_hash = position, fields[b"h"].decode()
    if relink:
        await store.redis.set(store.keys.chain, f"{prev_position} {prev_hash}")


def kh(redis: EmbeddedRedis, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KH_REDIS_URL": redis.url, "KH_DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "kernelhub.cli", "events", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def verify(redis: EmbeddedRedis, data: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = kh(redis, data, "verify", "--grace", "0", "--json", *extra)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    SecretBox.from_file(tmp_path / "data" / "master.key", create=True)
    return tmp_path / "data"


async def test_every_append_links_to_the_entry_before_it(store: RedisEventStore) -> None:
    # a log written before the chain existed: entries without links
    await store.redis.xadd(store.keys.log, {"s": "config", "v": "1", "e": "{}"}, id="5-0")
    await some_history(store)
    chain = ChainVerifier()
    log = await entries(store)
    assert [chain.feed(p, f) for p, f in log] == [None] * len(log)
    assert (chain.unchained, chain.chained) == (1, len(log) - 1)
    first = log[1][1]  # the chain's first link names the unchained entry before it
    assert first[b"h"].decode() == link("", "5-0", first[b"s"].decode(), 1, first[b"e"])
    assert await store.chain_head() == (log[-1][0], log[-1][1][b"h"].decode())
    # a retried batch is a duplicate: nothing appended, the chain untouched
    events = enqueued(1)
    await store.append("session-retried", events, 0)
    head = await store.chain_head()
    assert (await store.append("session-retried", events, 0)).duplicate
    assert await store.chain_head() == head


async def test_verify_names_the_entry_edited_behind_the_store(
    store: RedisEventStore, redis_server: EmbeddedRedis, data: Path
) -> None:
    await some_history(store)
    code, report = verify(redis_server, data)
    assert code == 0 and report["chained"] == 13 and report["unchained"] == 0, report
    log = await entries(store)
    victim, fields = log[5]
    body = json.loads(fields[b"e"])
    body["data"]["creation_id"] = "forged"
    await rewrite(store, {victim: {b"e": json.dumps(body, separators=(",", ":")).encode()}})
    code, report = verify(redis_server, data)
    assert code == 1
    chain = [v for v in report["violations"] if v["rule"] == "chain"]
    assert [v["position"] for v in chain] == [victim]  # that one, not the ones after it
    assert "edited" in chain[0]["message"]
    text = kh(redis_server, data, "verify", "--grace", "0")
    assert text.returncode == 1 and victim in text.stdout and "chain" in text.stdout


async def test_verify_names_the_entry_after_one_removed_or_moved(
    store: RedisEventStore, redis_server: EmbeddedRedis, data: Path
) -> None:
    await some_history(store)
    log = await entries(store)
    await store.redis.xdel(store.keys.log, log[3][0])  # removed
    code, report = verify(redis_server, data)
    assert code == 1
    assert [v["position"] for v in report["violations"] if v["rule"] == "chain"] == [log[4][0]]


async def test_verify_names_entries_swapped_behind_the_store(
    store: RedisEventStore, redis_server: EmbeddedRedis, data: Path
) -> None:
    """Two entries swapped (each keeps its content and its link, at the other's place)."""
    await some_history(store)
    log = await entries(store)
    (a, fields_a), (b, fields_b) = log[6], log[7]
    await rewrite(store, {a: fields_b, b: fields_a})
    code, report = verify(redis_server, data)
    assert code == 1
    # both places, and the entry after them (it links to the link its place used to hold)
    flagged = [v["position"] for v in report["violations"] if v["rule"] == "chain"]
    assert flagged == [a, b, log[8][0]]


async def test_a_recomputed_chain_is_caught_by_a_signed_checkpoint(
    store: RedisEventStore, redis_server: EmbeddedRedis, data: Path
) -> None:
    await some_history(store)
    made = kh(redis_server, data, "checkpoint", "--json")
    assert made.returncode == 0, made.stderr
    signed = json.loads(made.stdout)
    assert (data / "log-checkpoints.jsonl").stat().st_mode & 0o077 == 0
    await some_history(store, sessions=2)
    assert verify(redis_server, data)[0] == 0
    assert verify(redis_server, data, "--from-checkpoint")[1]["from"] == signed["position"]

    # the attacker edits an early entry and recomputes every link after it, and the head
    log = await entries(store)
    victim = log[2][0]
    body = json.loads(log[2][1][b"e"])
    body["data"]["creation_id"] = "forged"
    forged = json.dumps(body, separators=(",", ":")).encode()
    await rewrite(store, {victim: {b"e": forged}}, relink=True)
    code, report = verify(redis_server, data)
    assert code == 1
    assert not [v for v in report["violations"] if v["rule"] == "chain"]  # the chain holds...
    caught = [v for v in report["violations"] if v["rule"] == "checkpoint"]
    assert caught and all("rewritten" in v["message"] for v in caught)  # ...the signature not
    assert {v["position"] for v in caught} >= {signed["position"]}
    code, report = verify(redis_server, data, "--from-checkpoint")
    assert code == 1 and "no longer carries the signed link" in report["violations"][0]

    # and deleting the checkpoint event too (links recomputed again) leaves the file's
    log = await entries(store)
    checkpoint_entry = next(p for p, f in log if b"log_checkpointed" in f[b"e"])
    await store.redis.xdel(store.keys.log, checkpoint_entry)
    await rewrite(store, {log[1][0]: {}}, relink=True)
    code, report = verify(redis_server, data)
    messages = [v["message"] for v in report["violations"] if v["rule"] == "checkpoint"]
    assert code == 1 and any("not in the log: removed from Redis" in m for m in messages)


async def test_a_forged_checkpoint_does_not_hold(
    store: RedisEventStore, redis_server: EmbeddedRedis, data: Path
) -> None:
    """A checkpoint signed with another key (the attacker has Redis, not the master key)."""
    from kernelhub.history.audit import make_checkpoint

    await some_history(store)
    await make_checkpoint(store, b"k" * 32, data / "elsewhere.jsonl")
    code, report = verify(redis_server, data)
    assert code == 1
    assert [v["message"] for v in report["violations"]] == [
        "its signature does not hold: not signed with this key"
    ]
    refused = kh(redis_server, data, "verify", "--from-checkpoint")
    assert refused.returncode == 1 and "no signed checkpoint" in refused.stderr
    nokey = kh(redis_server, data.parent / "elsewhere", "checkpoint")
    assert nokey.returncode == 1 and nokey.stderr.startswith("kh: error: no master key")


async def test_export_import_keeps_the_chain_and_appends_go_on_linking(
    store: RedisEventStore, tmp_path: Path, data: Path
) -> None:
    await some_history(store)
    dump = tmp_path / "log.jsonl"
    with dump.open("w") as out:
        await export_log(store, out, with_secrets=True)
    assert all("chain" in json.loads(line) for line in dump.read_text().splitlines())
    with EmbeddedRedis(tmp_path / "other") as other:
        copy = RedisEventStore.from_url(other.url)
        try:
            await import_log(copy, dump)
            assert await copy.chain_head() == await store.chain_head()
            await copy.append("session-after-import", enqueued(1), 0)
            chain = ChainVerifier()
            log = await entries(copy)
            assert [chain.feed(p, f) for p, f in log] == [None] * len(log)
            assert chain.unchained == 0
        finally:
            await copy.close()


async def test_audit_finds_who_changed_what(
    store: RedisEventStore, redis_server: EmbeddedRedis, data: Path
) -> None:
    """In-process tenancy commands stamped as the gateway stamps them (the live path is
    tests/test_admin_keys.py's)."""
    from actors.domain.commands.tenancy import SetPolicy
    from actors.tenancy.writer import TenancyService
    from events.envelope import Initiator
    from kernelhub.bootstrap import bootstrap

    box = SecretBox.from_file(data / "master.key")
    await bootstrap(store, box)
    tenancy = await TenancyService(store, box).load()
    dana = Initiator(access_key="AKDANA", email="dana@lab.org", role="admin", peer="127.0.0.9")
    await tenancy.handle(SetPolicy(name="gpu-bob", max_concurrent_sessions=2, initiator=dana))
    await asyncio.sleep(0)
    found = kh(redis_server, data, "audit", "--who", "dana@", "--json")
    assert found.returncode == 0, found.stderr
    rows = [json.loads(line) for line in found.stdout.splitlines()]
    assert [r["type"] for r in rows] == ["keypair_policy_set"]
    assert rows[0]["who"] == "dana@lab.org/AKDANA@127.0.0.9" and rows[0]["data"]["name"] == (
        "gpu-bob"
    )
    assert kh(redis_server, data, "audit", "--about", "gpu-bob").stdout.count("\n") == 1
    none = kh(redis_server, data, "audit", "--who", "dana", "--what", "user_*")
    assert none.returncode == 0 and none.stdout == "" and "no administrative event" in none.stderr
    later = kh(redis_server, data, "audit", "--since", "1m", "--what", "keypair_policy_set")
    assert "gpu-bob" in later.stdout
    bad = kh(redis_server, data, "audit", "--since", "whenever")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


async def test_entries_cut_from_the_end_and_a_removed_head_are_named(
    store: RedisEventStore, redis_server: EmbeddedRedis, data: Path
) -> None:
    await some_history(store)
    assert kh(redis_server, data, "checkpoint").returncode == 0
    await some_history(store, sessions=3)
    log = await entries(store)
    await store.redis.xdel(store.keys.log, *[p for p, _ in log[-3:]])  # the newest, gone
    code, report = verify(redis_server, data)
    assert code == 1
    assert any("removed from its end" in v["message"] for v in report["violations"])
    code, report = verify(redis_server, data, "--from-checkpoint")
    assert code == 1 and any("removed from its end" in v for v in report["violations"])


async def test_a_missing_head_is_named_and_the_next_append_links_on(
    store: RedisEventStore, redis_server: EmbeddedRedis, data: Path
) -> None:
    await some_history(store)
    await store.redis.delete(store.keys.chain)
    code, report = verify(redis_server, data)
    assert code == 1 and [v["message"] for v in report["violations"]] == [
        "the chain's head is gone: removed behind the store"
    ]
    await store.append(f"session-{uuid.uuid4()}", enqueued(1), 0)  # links to the last entry
    assert verify(redis_server, data)[0] == 0
    await store.redis.set(store.keys.chain, "garbage")  # an unreadable head: writes go on
    await store.append(f"session-{uuid.uuid4()}", enqueued(1), 0)
    assert verify(redis_server, data)[0] == 0


async def test_from_a_checkpoint_its_own_entry_is_judged_too(
    store: RedisEventStore, redis_server: EmbeddedRedis, data: Path
) -> None:
    """The signed entry's body edited while it keeps its link: the walk from the entry
    before it names it."""
    await some_history(store)
    signed = json.loads(kh(redis_server, data, "checkpoint", "--json").stdout)
    await some_history(store, sessions=2)
    fields = dict((await entries(store))[[p for p, _ in await entries(store)].index(
        signed["position"]
    )][1])  # fmt: skip
    body = json.loads(fields[b"e"])
    body["data"]["creation_id"] = "forged"
    await rewrite(
        store, {signed["position"]: {b"e": json.dumps(body, separators=(",", ":")).encode()}}
    )
    code, report = verify(redis_server, data, "--from-checkpoint")
    assert code == 1 and any(signed["position"] in v for v in report["violations"])


async def test_a_logged_checkpoint_whose_entry_is_gone_is_named_without_the_file(
    store: RedisEventStore, redis_server: EmbeddedRedis, data: Path
) -> None:
    await some_history(store)
    signed = json.loads(kh(redis_server, data, "checkpoint", "--json").stdout)
    await some_history(store, sessions=2)
    (data / "log-checkpoints.jsonl").unlink()  # a crash between the log and the file
    await store.redis.xdel(store.keys.log, signed["position"])
    await rewrite(store, {(await entries(store))[0][0]: {}}, relink=True)
    code, report = verify(redis_server, data)
    messages = [v["message"] for v in report["violations"]]
    assert code == 1 and any("no chained entry at" in m for m in messages), messages
