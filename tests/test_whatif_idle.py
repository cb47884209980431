"""Idle policy what-if (docs/idle.md, "What if"): the recorded activity under another
checker, what it reclaims and frees, and how many owners came back (pure, then the real
CLI on a real log)."""

from __future__ import annotations

import asyncio
import json

import pytest

from actors.domain.idle import IdleConfig
from actors.domain.whatif.idle import IdleSession, idle_what_if
from tests.khstack import kh_on_log as kh

M = 60.0


def session(
    sid: str,
    start: float,
    end: float | None,
    activity: list[float],
    *,
    owner: str = "alice",
    image: str = "python",
    kind: str = "interactive",
    reason: str | None = None,
) -> IdleSession:
    return IdleSession(
        sid, owner, image, kind, {"cpu": 2.0, "cuda.device": 1.0}, start, start, end, reason,
        activity,
    )  # fmt: skip


@pytest.mark.unit
def test_a_tighter_timer_reclaims_at_the_first_long_gap_and_counts_who_came_back() -> None:
    sessions = [
        # used every 10 minutes for an hour, then idle until its end at 3h
        session("steady", 0, 180 * M, [10 * M * i for i in range(1, 7)]),
        # a 40-minute gap, then used again 5 minutes after a 30-minute timer would fire
        session("gap", 0, 120 * M, [5 * M, 45 * M, 50 * M]),
        # reclaimed, and its owner started over on the same image 10 minutes later
        session("restart", 0, 60 * M, [5 * M], owner="bob", reason="idle-timeout"),
        session("bob-again", 45 * M, None, [50 * M], owner="bob"),
        session("batch", 0, 300 * M, [], kind="batch"),  # not network-checked
        session("serving", 0, 300 * M, [], kind="inference"),  # never checked
    ]
    report = idle_what_if(sessions, "network_timeout", 30 * M, 30 * M, horizon_s=300 * M)
    at = {r.session_id: r for r in report.reclaims}
    assert report.judged == 4 and report.recorded == 1
    assert at["steady"].at_s == 90 * M and at["steady"].freed_s == 90 * M
    assert not at["steady"].came_back
    assert at["gap"].at_s == 35 * M and at["gap"].came_back  # an execution it would refuse
    assert at["restart"].at_s == 35 * M and at["restart"].came_back  # a new session
    assert at["bob-again"].at_s == 80 * M and not at["bob-again"].came_back  # runs to horizon
    freed_hours = (90 + 85 + 25 + 220) / 60
    assert report.slot_hours == pytest.approx({"cpu": 2 * freed_hours, "cuda.device": freed_hours})
    facts = report.as_json()
    assert (facts["would_reclaim"], facts["came_back"], facts["came_back_share"]) == (4, 2, 0.5)
    # looser, fewer: a 2-hour timer reclaims only what idled for two hours
    loose = idle_what_if(sessions, "network_timeout", 120 * M, 30 * M, horizon_s=300 * M)
    assert {r.session_id for r in loose.reclaims} == {"bob-again"}


@pytest.mark.unit
def test_a_lifetime_reclaims_what_ran_longer_whatever_its_activity() -> None:
    sessions = [
        session("long", 0, 600 * M, [i * M for i in range(1, 600)]),
        session("short", 0, 60 * M, []),
        session("batch", 0, 600 * M, [], kind="batch"),  # a lifetime applies to batch too
    ]
    report = idle_what_if(sessions, "session_lifetime", 8 * 60 * M, 30 * M, horizon_s=600 * M)
    assert {r.session_id: r.at_s for r in report.reclaims} == {
        "long": 480 * M,
        "batch": 480 * M,
    }
    assert [r.came_back for r in report.reclaims] == [True, False]  # long was still in use


@pytest.mark.redis
async def test_kh_whatif_idle_on_a_live_log(store: object, redis_server: object) -> None:
    """A session used for a few seconds and then left to the 2 s timer, one destroyed while
    in use: a 1 s timer would have reclaimed both; the record reclaimed one."""
    from actors.domain.commands.sessions import CreateSession, DestroySession
    from actors.domain.slots import ResourceSlot
    from actors.hosts.local import LocalCluster
    from actors.idle.reaper import touch
    from kernelhub.testing import eventually

    config = IdleConfig.parse(
        {"enabled": "network_timeout", "checkers": {"network_timeout": {"threshold": "2s"}}}
    )
    cluster = await LocalCluster(
        store,  # type: ignore[arg-type]
        [("i-a", {"cpu": 8, "mem": 16 * 2**30})],
        safety_tick_s=0.3,
        idle=config,
    ).start()

    async def make(name: str) -> object:
        sid = await cluster.shard.handle(
            CreateSession(
                name=name,
                access_key="AK1",
                scaling_group="default",
                image="kernelhub/python:3.11",
                requested=[ResourceSlot(cpu=1, mem=2**30)],
            )
        )

        async def running() -> bool:
            return (await cluster.shard.get(sid)).status.name == "RUNNING"

        await eventually(running, timeout=20)
        return sid

    try:
        idle_one = await make("left")
        used = await make("used")
        for _ in range(6):  # used every 0.5 s for 3 s (the reaper notes it)
            await touch(store, idle_one)  # type: ignore[arg-type]
            await touch(store, used)  # type: ignore[arg-type]
            await asyncio.sleep(0.5)

        async def reclaimed() -> bool:
            return (await cluster.shard.get(idle_one)).status.name == "TERMINATED"  # type: ignore[arg-type]

        await cluster.shard.handle(DestroySession(session_id=used))  # type: ignore[arg-type]
        await eventually(reclaimed, timeout=20)
    finally:
        await cluster.stop()
    url = redis_server.url  # type: ignore[attr-defined]
    done = await asyncio.to_thread(
        kh, url, "whatif", "idle", "--threshold", "1s", "--came-back", "10m", "--json"
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["sessions_judged"] == 2 and facts["recorded_reclaims"] == 1
    assert facts["would_reclaim"] >= 1 and facts["slot_hours_freed"]["cpu"] > 0
    text = await asyncio.to_thread(kh, url, "whatif", "idle", "--threshold", "1h")
    assert text.returncode == 0 and "0 of 2 sessions reclaimed" in text.stdout, text.stdout
    for args, message in (
        (["whatif", "idle", "--checker", "utilization", "--threshold", "1m"], "--checker"),
        (["whatif", "idle"], "--threshold: the checker's threshold is needed"),
        (["whatif", "idle", "--threshold", "1m", "--policy", "drf"], "--policy: not with"),
        (["whatif", "--checker", "network_timeout"], "--checker: only with kh whatif idle"),
    ):
        refused = await asyncio.to_thread(kh, url, *args)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
