"""``kh replay decisions``: a recorded mixed workload (four policies, several selectors,
multi-node sessions, bursts that one pass places together, an agent lost and revived) is
decided again from the log, and every decision comes out the same; a log whose decision a
test altered is named, session and both answers."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.commands.tenancy import SetScalingGroup
from actors.domain.session import ClusterMode
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.catalogue import SchedulingPass
from events.secrets import SecretBox
from kernelhub.history.decisions import DecisionReport, replay_decisions
from kernelhub.history.positions import Cutoff
from kernelhub.history.transfer import export_log, import_log
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import eventually, temporary_redis
from projections.tenancy_queries import TenancyLookups
from tests.agent_hooks import HookedAgent, hooked
from tests.khstack import kh_on_log as kh

pytestmark = [pytest.mark.redis]

G = 2**30
AGENTS = [
    ("i-a", {"cpu": 8, "mem": 16 * G}),
    ("i-b", {"cpu": 4, "mem": 8 * G}),
    ("i-c", {"cpu": 4, "mem": 8 * G}),
    ("i-d", {"cpu": 2, "mem": 4 * G}),
]
POLICIES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("fifo", None, {}),
    ("lifo", "dispersed", {}),
    ("drf", "round-robin", {}),
    ("mof", "fragmentation", {}),
    ("fifo", "concentrated", {"num_retries_to_skip": 1}),
]


def create(name: str, cpu: int, owner: str, size: int = 1) -> CreateSession:
    return CreateSession(
        name=name,
        access_key=owner,
        scaling_group="default",
        image="kernelhub/python:3.11",
        requested=[ResourceSlot(cpu=cpu, mem=G)],
        cluster_size=size,
        cluster_mode=ClusterMode.MULTI_NODE if size > 1 else ClusterMode.SINGLE_NODE,
    )


async def statuses(cluster: LocalCluster, sids: list[uuid.UUID]) -> list[str]:
    return [(await cluster.shard.get(sid)).status.name for sid in sids]


async def quiet(cluster: LocalCluster, sids: list[uuid.UUID], still_s: float = 1.0) -> None:
    """Until no session's status has changed for ``still_s`` (at most a minute)."""
    loop = asyncio.get_running_loop()
    deadline, since, last = loop.time() + 60, loop.time(), None
    while loop.time() < deadline:
        now = await statuses(cluster, sids)
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since >= still_s:
            return
        await asyncio.sleep(0.1)


async def record_workload(store: RedisEventStore, tmp_path: Path) -> list[uuid.UUID]:
    """Waves of sessions under each policy; returns every session made."""
    cluster = await LocalCluster(
        store,
        AGENTS,
        safety_tick_s=0.3,
        heartbeat_interval_s=0.2,
        lost_timeout_s=1.0,
        agent_class=HookedAgent,
    ).start()
    made: list[uuid.UUID] = []
    try:
        tenancy = await TenancyService(
            store, SecretBox.from_file(tmp_path / "k", create=True)
        ).load()
        lookups = TenancyLookups(store)
        for wave, (scheduler, selector, config) in enumerate(POLICIES):
            await tenancy.handle(
                SetScalingGroup(
                    name="default",
                    scheduler=scheduler,  # type: ignore[arg-type]
                    agent_selector=selector,  # type: ignore[arg-type]
                    scheduler_config=config,
                )
            )

            async def projected(
                scheduler: str = scheduler, selector: str | None = selector
            ) -> bool:
                group = await lookups.scaling_group("default") or {}
                return (group.get("scheduler"), group.get("agent_selector")) == (
                    scheduler,
                    selector,
                )

            await eventually(projected, timeout=20, message="the group projected")
            if wave == 2:  # an agent lost (not placed on) and revived
                frozen = hooked(cluster, "i-b")
                frozen.heartbeating = False
                await eventually(lambda: _agent_is(store, "i-b", "agent_terminated"), timeout=15)
                wave_sids = [
                    await cluster.shard.handle(create(f"lost-{n}", 1, "AK7")) for n in (0, 1)
                ]
                made += wave_sids
                await quiet(cluster, made)
                frozen.heartbeating = True
                await eventually(lambda: _agent_is(store, "i-b", "agent_started"), timeout=15)
            burst = [
                create(f"w{wave}-{n}", cpu, f"AK{n % 3}", size)
                for n, (cpu, size) in enumerate([(3, 1), (2, 2), (4, 1), (1, 1), (2, 1), (3, 1)])
            ]
            wave_sids = list(await asyncio.gather(*(cluster.shard.handle(c) for c in burst)))
            made += wave_sids
            await quiet(cluster, made)
            now = await statuses(cluster, made)
            running = [s for s, st in zip(made, now, strict=True) if st == "RUNNING"]
            for sid in running[::2]:  # room is made: waiting sessions are placed into it
                await cluster.shard.handle(DestroySession(session_id=sid, forced=True))
            await quiet(cluster, made)
            for sid in made:
                await cluster.shard.handle(DestroySession(session_id=sid, forced=True))
            await eventually(
                lambda made=made: _all_ended(cluster, made),  # type: ignore[misc]
                timeout=60,
                message="every session ended",
            )
    finally:
        await cluster.stop()
    return made


async def _agent_is(store: RedisEventStore, agent: str, last: str) -> bool:
    return [e.type for e in await store.read_stream(f"agent-{agent}")][-1:] == [last]


async def _all_ended(cluster: LocalCluster, sids: list[uuid.UUID]) -> bool:
    return all(s in ("TERMINATED", "CANCELLED") for s in await statuses(cluster, sids))


async def replayed_from(path: Path, lines: list[str]) -> DecisionReport:
    """The decisions of an exported log (as edited) imported into a Redis of its own."""
    await asyncio.to_thread(path.write_text, "\n".join(lines) + "\n")
    with temporary_redis() as other:
        imported = RedisEventStore.from_url(other.url)
        try:
            await import_log(imported, path)
            return await replay_decisions(imported)
        finally:
            await imported.close()


@pytest.mark.timeout(420)
async def test_every_recorded_decision_is_decided_again_the_same_and_an_altered_one_is_named(
    store: RedisEventStore, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    made = await record_workload(store, tmp_path)
    passes = [
        e.data
        for e in await store.read_stream("pass-default")
        if isinstance(e.data, SchedulingPass)
    ]
    assert {p.scheduler for p in passes} == {"fifo", "lifo", "drf", "mof"}
    assert {p.agent_selector for p in passes} >= {"dispersed", "round-robin", "fragmentation"}
    assert max(p.decisions for p in passes) >= 2, "no pass placed more than one session"
    scheduled = 0
    multi_node = False
    for sid in made:
        for event in await store.read_stream(f"session-{sid}"):
            if event.type == "session_scheduled":
                scheduled += 1
                placements = event.data.placements or []  # type: ignore[union-attr]
                multi_node |= len({p.agent_id for p in placements}) > 1
    assert multi_node, "no multi-node session spread over agents"

    report = await replay_decisions(store)
    assert report.disagreements == [] and report.unreplayable == []
    assert report.passes == len(passes)
    assert report.decisions == report.agreed == scheduled >= 20

    done = await asyncio.to_thread(kh, redis_server.url, "replay", "decisions", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["agreed"] == scheduled

    # a window: only the passes from the last wave's first one on
    last_wave = [e for e in await store.read_stream("pass-default") if e.type == "scheduling_pass"]
    start = next(e for e in last_wave if e.data.agent_selector == "concentrated")  # type: ignore[union-attr]
    since = Cutoff(until=start.position, shown=start.position, exact=True)
    windowed = await replay_decisions(store, since=since)
    assert 0 < windowed.passes == sum(p.agent_selector == "concentrated" for p in passes)

    exported = tmp_path / "log.jsonl"
    with exported.open("w") as out:
        await export_log(store, out, with_secrets=True)
    lines = exported.read_text().splitlines()

    # the recorded policy altered: the dispersed wave's passes said to be concentrated
    policy_altered = []
    for line in lines:
        entry = json.loads(line)
        if entry["body"]["data"].get("agent_selector") == "dispersed":
            entry["body"]["data"]["agent_selector"] = "concentrated"
        policy_altered.append(json.dumps(entry))
    other_policy = await replayed_from(tmp_path / "policy.jsonl", policy_altered)
    assert other_policy.disagreements, "the selector changed nothing: the replay ignores it"

    # the log altered: one decision moved to another agent
    altered_sid = ""
    for i, line in enumerate(lines):
        entry = json.loads(line)
        data = entry["body"]["data"]
        if entry["body"]["type"] == "session_scheduled" and len(data.get("placements") or []) == 1:
            was = data["placements"][0]["agent_id"]
            data["placements"][0]["agent_id"] = "i-d" if was != "i-d" else "i-c"
            altered_sid = data["session_id"]
            lines[i] = json.dumps(entry)
            break
    assert altered_sid
    exported.write_text("\n".join(lines) + "\n")
    with temporary_redis() as other:
        tampered = RedisEventStore.from_url(other.url)
        try:
            await import_log(tampered, exported)
            again = await replay_decisions(tampered)
        finally:
            await tampered.close()
        assert [d.session_id for d in again.disagreements] == [altered_sid]
        line = again.disagreements[0].line()
        assert f"recorded on {'i-d' if was != 'i-d' else 'i-c'}" in line
        assert f"replayed on {was}" in line
        shown = await asyncio.to_thread(kh, other.url, "replay", "decisions")
    assert shown.returncode == 1 and "Traceback" not in shown.stderr
    assert altered_sid in shown.stdout and "1 not" in shown.stdout


async def test_a_window_replays_only_its_passes_and_bad_usage_is_refused(
    store: RedisEventStore, redis_server: EmbeddedRedis
) -> None:
    report = await replay_decisions(store)  # an empty log: nothing to disagree with
    assert report.passes == 0 and report.ok
    mixed = await asyncio.to_thread(kh, redis_server.url, "replay", "decisions", "--as-of", "10m")
    assert mixed.returncode == 2 and "Traceback" not in mixed.stderr
    missing = await asyncio.to_thread(kh, redis_server.url, "replay", "cluster")
    assert missing.returncode == 2 and "--as-of" in missing.stderr
