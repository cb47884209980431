"""Fair share on the live write side (real Redis, the scheduler as it runs, simulated
agents; docs/fairshare.md): a heavy user's older session waits while a light user's is
placed; ``kh why`` names the rank and who is ahead; ``kh fairshare`` shows the factors and
``--as-of`` reproduces the earlier ranking after it changed; the decision replay agrees."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.commands.tenancy import SetScalingGroup
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.history.decisions import replay_decisions
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import eventually
from projections.tenancy_queries import TenancyLookups
from tests.khstack import kh_on_log as kh

pytestmark = [pytest.mark.redis, pytest.mark.timeout(300)]
G = 2**30


def create(name: str, owner: str) -> CreateSession:
    return CreateSession(
        name=name,
        access_key=owner,
        scaling_group="default",
        image="kernelhub/python:3.11",
        requested=[ResourceSlot(cpu=1, mem=G)],
    )


async def test_the_lighter_user_goes_first_and_the_ranking_is_reproduced_as_of_then(
    store: RedisEventStore, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    cluster = await LocalCluster(
        store, [("i-a", {"cpu": 2, "mem": 8 * G})], safety_tick_s=0.3
    ).start()
    try:
        tenancy = await TenancyService(
            store, SecretBox.from_file(tmp_path / "k", create=True)
        ).load()
        await tenancy.handle(
            SetScalingGroup(
                name="default", scheduler="fair_share", scheduler_config={"half_life": "1h"}
            )
        )

        async def projected() -> bool:
            group = await TenancyLookups(store).scaling_group("default") or {}
            return group.get("scheduler") == "fair_share"

        await eventually(projected, timeout=20, message="the group projected")

        async def status(sid: uuid.UUID) -> str:
            return (await cluster.shard.get(sid)).status.name

        # the heavy user fills the agent for a while (usage), and keeps it full
        heavy = [await cluster.shard.handle(create(f"heavy-{n}", "AK-heavy")) for n in range(2)]
        for sid in heavy:
            await eventually(lambda sid=sid: _is(status, sid, "RUNNING"), timeout=20)
        await asyncio.sleep(2.0)
        older = await cluster.shard.handle(create("heavy-waits", "AK-heavy"))
        await asyncio.sleep(0.2)
        light = await cluster.shard.handle(create("light", "AK-light"))
        await eventually(lambda: _is(status, light, "PENDING"), timeout=10)
        await asyncio.sleep(1.0)  # both seen pending by a pass (the agent is full)

        url = redis_server.url
        why = await asyncio.to_thread(kh, url, "why", "heavy-waits")
        assert why.returncode == 0, why.stderr
        assert "fair share: #2 of 2" in why.stdout and "light (AK-light" in why.stdout
        before = await store.head()
        then = json.loads((await asyncio.to_thread(kh, url, "fairshare", "--json")).stdout)
        assert [r["name"] for r in then["pending"]] == ["light", "heavy-waits"]
        users = then["users"]
        assert users["AK-light"]["factor"] == 1.0 and users["AK-heavy"]["factor"] == 0.25
        assert users["AK-heavy"]["usage"] > 2 * 2 * 0.9  # two cpus for two seconds, decayed

        # room for one: the light user's younger session is placed, the heavy one's waits
        await cluster.shard.handle(DestroySession(session_id=heavy[0], forced=True))
        await eventually(lambda: _is(status, light, "RUNNING"), timeout=20)
        assert await status(older) == "PENDING"

        now = json.loads((await asyncio.to_thread(kh, url, "fairshare", "--json")).stdout)
        assert [r["name"] for r in now["pending"]] == ["heavy-waits"]
        as_of = await asyncio.to_thread(kh, url, "fairshare", "--as-of", before, "--json")
        reproduced = json.loads(as_of.stdout)
        assert [r["name"] for r in reproduced["pending"]] == ["light", "heavy-waits"]
        assert reproduced["users"]["AK-heavy"]["factor"] == users["AK-heavy"]["factor"]
        # another half-life, the same history: recomputed, not stored
        short = await asyncio.to_thread(
            kh, url, "fairshare", "--as-of", before, "--half-life", "1m", "--json"
        )
        assert json.loads(short.stdout)["half_life_s"] == 60
        refused = await asyncio.to_thread(kh, url, "fairshare", "--weight", "cpu=lots")
        assert refused.returncode == 1 and "weights['cpu']" in refused.stderr

        for sid in [heavy[1], older, light]:
            await cluster.shard.handle(DestroySession(session_id=sid, forced=True))
    finally:
        await cluster.stop()
    # the passes recorded the usage they ranked by, and decide the same again
    passes = [e.data for e in await store.read_stream("pass-default")]
    ranked_by = [p.fair_usage for p in passes if p.decisions and p.fair_usage]  # type: ignore[union-attr]
    assert any(u.name == "AK-heavy" and u.usage > 0 for u in ranked_by[-1])
    report = await replay_decisions(store)
    assert report.ok and report.decisions == 3, report.as_json()  # two heavy, then light


async def _is(status: object, sid: uuid.UUID, wanted: str) -> bool:
    return await status(sid) == wanted  # type: ignore[operator,no-any-return]
