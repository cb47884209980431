"""The reaper on the log-driven write side: idle and lifetime reclaims with seconds-scale
configuration, activity pushing the deadline, the conditional destroy that activity wins,
exemptions, and the report (real Redis, simulated agents)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors.domain.commands.sessions import CreateSession, DestroyIfIdle, DestroyManyIfIdle
from actors.domain.commands.tenancy import SetPolicy
from actors.domain.idle import IdleConfig
from actors.domain.session import SessionType
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from actors.idle.reaper import touch
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.bootstrap import bootstrap
from kernelhub.testing import eventually
from projections.queries import ReadModels

pytestmark = pytest.mark.redis
G = 2**30
NETWORK_2S = IdleConfig.parse(
    {"enabled": "network_timeout", "checkers": {"network_timeout": {"threshold": "2s"}}}
)


@pytest.fixture
async def cluster(store: RedisEventStore) -> AsyncIterator[LocalCluster]:
    local = LocalCluster(
        store, [("i-a", {"cpu": 8, "mem": 16 * G})], safety_tick_s=0.5, idle=NETWORK_2S
    )
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


async def running(cluster: LocalCluster, access_key: str = "AK1", **extra: object) -> uuid.UUID:
    sid = await cluster.shard.handle(
        CreateSession(
            name="idle",
            access_key=access_key,
            scaling_group="default",
            image="kernelhub/python:3.11",
            requested=[ResourceSlot(cpu=1, mem=G)],
            **extra,
        )
    )

    async def started() -> bool:
        return (await cluster.shard.get(sid)).status.name == "RUNNING"

    await eventually(started, timeout=20, message="RUNNING")
    return sid


async def ended_with(store: RedisEventStore, sid: uuid.UUID, timeout: float = 20) -> str:
    async def reason() -> str | None:
        events = await store.read_stream(f"session-{sid}")
        last = events[-1]
        return str(last.data.reason) if last.type == "session_terminated" else None  # type: ignore[union-attr]

    return await eventually(reason, timeout=timeout, message="terminated")


async def test_an_untouched_session_is_reclaimed_by_its_session_id(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid = await running(cluster)
    assert await ended_with(store, sid) == "idle-timeout"  # B7: the session, not a kernel id
    types = [e.type for e in await store.read_stream(f"session-{sid}")]
    assert types.count("session_terminating") == 1  # one termination


async def test_activity_pushes_the_deadline(cluster: LocalCluster, store: RedisEventStore) -> None:
    sid = await running(cluster)
    loop_time = 0.0
    import asyncio

    while loop_time < 5.0:  # 2.5 thresholds of activity
        await touch(store, sid)
        await asyncio.sleep(0.5)
        loop_time += 0.5
    assert (await cluster.shard.get(sid)).status.name == "RUNNING"
    report = await cluster.reaper.report(str(sid))
    assert report["network_timeout"]["remaining"] > 0
    assert report["network_timeout"]["remaining_time_type"] == "expire_after"
    assert await ended_with(store, sid) == "idle-timeout"  # then it stops: reclaimed


async def test_activity_after_the_judgment_wins_over_a_late_destroy(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    """What a lagging read model or a touch in flight looks like to the shard: the reaper
    judged on an old access time; the session was touched since; nothing is destroyed."""
    sid = await running(cluster)
    judged = float(await store.redis.get(store.keys.idle_access(str(sid))))
    await touch(store, sid)
    idle = DestroyIfIdle(session_id=sid, reason="idle-timeout", judged_access=judged)
    assert await cluster.shard.handle(idle) == []
    assert (await cluster.shard.get(sid)).status.name == "RUNNING"
    lifetime = DestroyIfIdle(session_id=sid, reason="idle-session-lifetime", judged_access=judged)
    decided = await cluster.shard.handle(lifetime)
    assert decided[0].type == "session_terminating"  # lifetime does not wait


async def test_batch_sessions_are_not_network_checked(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid = await running(cluster, session_type=SessionType.BATCH, startup_command="sleep 60")
    await eventually(lambda: cluster.reaper.report(str(sid)), message="judged once")
    assert (await cluster.shard.get(sid)).status.name in ("RUNNING", "TERMINATING", "TERMINATED")
    report = await cluster.reaper.report(str(sid))
    assert report == {} or report["network_timeout"]["remaining"] is None


async def test_the_policy_lifetime_reclaims_with_its_reason(
    store: RedisEventStore, tmp_path: Path
) -> None:
    from actors.tenancy.writer import TenancyService

    box = SecretBox.from_file(tmp_path / "master.key", create=True)
    admin = await bootstrap(store, box)
    tenancy = await TenancyService(store, box).load()
    await tenancy.handle(SetPolicy(name="default", max_session_lifetime=2, idle_timeout=0))
    local = LocalCluster(
        store, [("i-a", {"cpu": 8, "mem": 16 * G})], safety_tick_s=0.5, idle=NETWORK_2S
    )
    await local.start()
    try:
        sid = await running(local, access_key=admin.access_key)
        for _ in range(3):
            await touch(store, sid)  # activity does not extend a lifetime
        assert await ended_with(store, sid) == "idle-session-lifetime"
        events = await store.read_stream(f"session-{sid}")
        assert events[-1].position_ms - events[0].position_ms >= 2000
    finally:
        await local.stop()


async def test_no_checker_and_no_policy_means_never_reclaimed(store: RedisEventStore) -> None:
    local = LocalCluster(store, [("i-a", {"cpu": 8, "mem": 16 * G})], safety_tick_s=0.5)
    await local.start()
    try:
        sid = await running(local)

        async def unscheduled() -> bool:  # judged, and nothing will ever be due
            judged = await store.redis.get(store.keys.idle_report(str(sid))) is not None
            return judged and await store.redis.zscore(store.keys.idle_due, str(sid)) is None

        await eventually(unscheduled, message="judged and left alone")
        assert (await local.shard.get(sid)).status.name == "RUNNING"
    finally:
        await local.stop()


async def test_one_refusal_in_a_batch_of_destroys_does_not_spare_the_others(
    store: RedisEventStore,
) -> None:
    """Destroys go to a shard together (one append); a session that may not be destroyed
    now (PREPARING, unless forced) makes the shard decide each on its own instead."""
    from actors.agents.backends.sim import SimBackend

    local = LocalCluster(
        store,
        [("i-fast", {"cpu": 8, "mem": 16 * G}), ("i-slow", {"cpu": 8, "mem": 16 * G})],
        safety_tick_s=0.3,
        backend=lambda agent: SimBackend(60.0 if agent == "i-slow" else 0.01),
    )
    await local.start()
    try:
        await local.agents["i-slow"].set_schedulable(False)
        done = [await running(local) for _ in range(2)]
        await local.agents["i-fast"].set_schedulable(False)
        await local.agents["i-slow"].set_schedulable(True)
        slow = await local.shard.handle(
            CreateSession(
                name="slow",
                access_key="AK1",
                scaling_group="default",
                image="kernelhub/python:3.11",
                requested=[ResourceSlot(cpu=1, mem=G)],
            )
        )

        async def preparing() -> bool:
            return (await local.shard.get(slow)).status.name == "PREPARING"

        await eventually(preparing, message="stuck starting")
        requests = [
            DestroyIfIdle(session_id=sid, reason="idle-session-lifetime") for sid in [*done, slow]
        ]
        outcomes = await local.shard.handle(DestroyManyIfIdle(items=requests))
        assert [bool(o) for o in outcomes] == [True, True, False]
        assert (await local.shard.get(slow)).status.name == "PREPARING"
        for sid in done:
            assert await ended_with(store, sid) == "idle-session-lifetime"
    finally:
        await local.stop()


async def test_a_new_user_is_given_the_grace_period_first(
    store: RedisEventStore, tmp_path: Path
) -> None:
    """The network timeout counts from the end of the user's grace period (an hour after
    the admin user was created), not from the session's last access."""
    box = SecretBox.from_file(tmp_path / "master.key", create=True)
    admin = await bootstrap(store, box)
    from actors.tenancy.writer import TenancyService

    tenancy = await TenancyService(store, box).load()
    await tenancy.handle(SetPolicy(name="default", idle_timeout=2))
    graceful = IdleConfig.parse(
        {
            "enabled": "network_timeout",
            "checkers": {"user_grace_period": {"user_initial_grace_period": "1h"}},
        }
    )
    local = LocalCluster(
        store, [("i-a", {"cpu": 8, "mem": 16 * G})], safety_tick_s=0.5, idle=graceful
    )
    await local.start()
    try:
        sid = await running(local, access_key=admin.access_key)

        async def judged() -> dict | None:  # type: ignore[type-arg]
            raw = await store.redis.get(store.keys.idle_report(str(sid)))
            return json.loads(raw) if raw else None

        report = await eventually(judged, message="judged")
        assert 3500 < report["network_timeout"]["remaining"] <= 3600 + 2  # grace end + timeout
        assert (await local.shard.get(sid)).status.name == "RUNNING"
    finally:
        await local.stop()


UTILIZATION = IdleConfig.parse(
    {
        "enabled": "utilization",
        "checkers": {
            "utilization": {
                "time-window": "2s",
                "initial-grace-period": "0s",
                "sample-interval": "0.5s",
                "resource-thresholds": {"cpu_util": {"average": 30}, "mem": {"average": 30}},
            }
        },
    }
)


@pytest.mark.parametrize(
    ("use", "reclaimed"), [({"cpu_util": 2, "mem": 5}, True), ({"cpu_util": 80, "mem": 5}, False)]
)
async def test_utilization_below_every_threshold_for_a_window_reclaims(
    store: RedisEventStore, use: dict[str, float], reclaimed: bool
) -> None:
    import asyncio

    from actors.agents.backends.sim import SimBackend

    local = LocalCluster(
        store,
        [("i-a", {"cpu": 8, "mem": 16 * G})],
        safety_tick_s=0.5,
        idle=UTILIZATION,
        backend=lambda _: SimBackend(utilization=use),
    )
    await local.start()
    try:
        sid = await running(local)
        if reclaimed:
            assert await ended_with(store, sid) == "idle-utilization"
            return
        await asyncio.sleep(4)  # two windows of busy samples
        assert (await local.shard.get(sid)).status.name == "RUNNING"
        report = json.loads(await store.redis.get(store.keys.idle_report(str(sid))))
        extra = report["utilization"]["extra"]
        assert extra["thresholds_check_operator"] == "and"
        assert extra["resources"]["cpu_util"] == [80.0, 30.0]
    finally:
        await local.stop()


async def test_an_open_app_holds_the_timer_and_closing_the_last_restarts_it(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    import asyncio

    from actors.idle.reaper import app_closed, app_opened

    sid = await running(cluster)
    await app_opened(store, sid, "jupyter-1")
    await app_opened(store, sid, "ttyd-1")
    await asyncio.sleep(3)  # longer than the 2 s threshold
    assert (await cluster.shard.get(sid)).status.name == "RUNNING"
    await app_closed(store, sid, "jupyter-1")
    await asyncio.sleep(2.5)  # one is still open
    assert (await cluster.shard.get(sid)).status.name == "RUNNING"
    await app_closed(store, sid, "ttyd-1")  # the last one: the timer restarts from now
    closed_at = float(await store.redis.get(store.keys.idle_access(str(sid))))
    assert await ended_with(store, sid) == "idle-timeout"
    terminating = next(
        e for e in await store.read_stream(f"session-{sid}") if e.type == "session_terminating"
    )
    assert terminating.position_ms / 1000 >= closed_at + 2


async def test_an_app_connection_whose_gateway_died_stops_holding_the_timer(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    """A connection not re-announced for ``APP_STALE_S`` (its gateway died with it, so no
    close ever comes) no longer holds the timer: the session is reclaimed from its last
    activity instead of living forever."""
    from actors.idle.facts import APP_STALE_S

    sid = await running(cluster)
    seconds, _ = await store.redis.time()
    await store.redis.zadd(store.keys.idle_apps(str(sid)), {"lost": seconds - APP_STALE_S - 1})
    assert await ended_with(store, sid) == "idle-timeout"


async def test_the_report_is_judged_fresh_and_activity_resets_it(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    """What the gateway shows as ``idleChecks`` (the must-test of API 23.03 #9): the
    network timer's remaining time decreases, and a touch sets it back to the threshold."""
    import asyncio

    from actors.idle.facts import IdleFacts

    sid = await running(cluster)
    facts, models = IdleFacts(store, NETWORK_2S), ReadModels(store)

    async def shown() -> dict[str, Any]:  # once the read model shows it running
        return await facts.report(await models.session(str(sid)))

    first = (await eventually(shown, message="reported"))["network_timeout"]["remaining"]
    await asyncio.sleep(0.5)
    later = (await facts.report(await models.session(str(sid))))["network_timeout"]["remaining"]
    assert 0 < later < first <= 2
    await touch(store, sid)
    reset = (await facts.report(await models.session(str(sid))))["network_timeout"]["remaining"]
    assert later < reset <= 2
    assert await facts.report(None) == {}


async def test_activity_is_noted_in_the_log_coalesced_and_the_reclaim_says_why(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    """Fifty touches make at most a few ``session_activity`` events (one per judgment that
    found a newer access), the last one at the last touch; the reclaim's
    ``session_terminating`` carries the evidence: the checker, the last access judged on,
    when it judged and every checker's report."""
    sid = await running(cluster)
    for _ in range(50):
        await touch(store, sid)
    last = float(await store.redis.get(store.keys.idle_access(str(sid))))
    assert await ended_with(store, sid) == "idle-timeout"
    events = await store.read_stream(f"session-{sid}")
    noted = [e.data.last_access for e in events if e.type == "session_activity"]  # type: ignore[union-attr]
    assert noted == sorted(set(noted)) and 1 <= len(noted) <= 3
    assert noted[-1] == last
    terminating = next(e for e in events if e.type == "session_terminating")
    evidence = terminating.data.idle  # type: ignore[union-attr]
    assert evidence["checker"] == "network_timeout" and evidence["last_access"] == last
    assert evidence["judged_at"] >= last + 2
    assert evidence["reports"]["network_timeout"]["remaining"] == -1
    record = await ReadModels(store).session(str(sid))
    assert record is not None and record["last_activity"] == last


async def test_a_warning_comes_before_the_reclaim_and_activity_after_it_cancels_it(
    store: RedisEventStore,
) -> None:
    """``warning-lead``: the session is told (``session_idle_warning``) before the network
    timer reclaims it; used after the warning, it outlives that deadline; left alone, it is
    warned again of the new deadline and then reclaimed."""
    import asyncio

    warned = IdleConfig.parse(
        {
            "enabled": "network_timeout",
            "warning-lead": "2s",
            "checkers": {"network_timeout": {"threshold": "3s"}},
        }
    )
    local = LocalCluster(
        store, [("i-a", {"cpu": 8, "mem": 16 * G})], safety_tick_s=0.5, idle=warned
    )
    await local.start()
    try:
        sid = await running(local)

        async def warnings() -> list[Any]:
            events = await store.read_stream(f"session-{sid}")
            return [e for e in events if e.type == "session_idle_warning"]

        first = (await eventually(warnings, timeout=10, message="warned"))[0].data
        assert (first.checker, first.reason) == ("network_timeout", "idle-timeout")
        assert 0 < first.remaining <= 2
        assert (await local.shard.get(sid)).status.name == "RUNNING"
        models = ReadModels(store)

        async def shown() -> Any:
            return ((await models.session(str(sid))) or {}).get("idle_warning")

        assert (await eventually(shown, timeout=5, message="in the read model"))["checker"] == (
            "network_timeout"
        )
        await told_as_the_api_and_the_stream_tell_it(models, sid, events_of_warning=warnings)
        await touch(store, sid)  # used after the warning: that reclaim is off
        clock = await store.clock.now()
        await asyncio.sleep(max(0.0, first.deadline - clock) + 0.8)
        assert (await local.shard.get(sid)).status.name == "RUNNING"

        assert await ended_with(store, sid) == "idle-timeout"
        events = await store.read_stream(f"session-{sid}")
        kinds = [e.type for e in events]
        told = [e.data for e in events if e.type == "session_idle_warning"]
        assert len(told) == 2 and told[1].deadline > first.deadline  # warned of each deadline
        assert kinds.index("session_terminating") > max(
            i for i, k in enumerate(kinds) if k == "session_idle_warning"
        )
    finally:
        await local.stop()


async def told_as_the_api_and_the_stream_tell_it(
    models: ReadModels, sid: uuid.UUID, events_of_warning: Any
) -> None:
    """The warning as ``GET /session/{id}`` (``idleWarning``), GraphQL and the SDK
    (``idle_warning``), ``kh info`` and the SSE stream (``session_idle_warning``) show it."""
    from actors.gateway.events import FORWARDED, _payloads
    from actors.gateway.views import compute_session, session_info
    from kernelhub.client_cli.app import describe_idle_warning
    from kernelhub.sdk.models import SessionInfo

    record = await models.session(str(sid))
    assert record is not None
    rest = session_info(record)["idleWarning"]
    assert rest["checker"] == "network_timeout" and rest["reason"] == "idle-timeout"
    assert rest["reclaimAt"].endswith("Z") and rest["warnedAt"] <= rest["reclaimAt"]
    sdk = SessionInfo.from_graphql(json.loads(json.dumps(compute_session(record), default=str)))
    assert sdk.idle_warning == rest
    assert describe_idle_warning(rest).startswith(
        f"network_timeout reclaims it at {rest['reclaimAt']} unless it is used"
    )
    event = (await events_of_warning())[0]
    assert "session_idle_warning" in FORWARDED
    ((name, payload),) = _payloads(event.type, event.data, record)
    assert name == "session_idle_warning" and payload["reason"] == "idle-timeout"
    assert payload["checker"] == "network_timeout" and payload["sessionId"] == str(sid)
    assert payload["reclaimAt"][:19] == rest["reclaimAt"][:19]
