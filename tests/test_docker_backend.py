"""Kernels in real Docker containers (issue "Real containers"): limits the container can see,
no network, exits that Docker reports (OOM kills, ``docker kill`` from outside) becoming the
right kernel and session events, an agent restart that re-attaches, images dockerd lacks.
The runner's own behaviour on this backend is covered by tests/test_execution.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.agents.agent import Agent
from actors.agents.backends.base import KernelLaunch
from actors.agents.backends.docker import OWNER_LABEL, DockerBackend
from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from events import Durability, RedisEventStore
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import BASE_IMAGE, eventually, temporary_redis

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]
G = 2**30
M = 2**20
AGENT = "i-docker"
_RUNNER_OPTIONS = ("--snapshot-interval", "0.2")
"""Process snapshots often enough that a short-lived OOM victim is in one."""


@pytest.fixture
async def cluster(store: RedisEventStore, tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(
        store,
        [(AGENT, {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.5,
        backend=lambda agent_id: DockerBackend(
            tmp_path / agent_id, owner=agent_id, runner_options=_RUNNER_OPTIONS
        ),
        stop_grace_s=1.0,
    ) as local:
        yield local


async def session(
    cluster: LocalCluster, status: str = "RUNNING", *, cpu: float = 1, mem: int = G, **kwargs: Any
) -> uuid.UUID:
    kwargs.setdefault("image", BASE_IMAGE)
    sid = await cluster.shard.handle(
        CreateSession(
            name="dk",
            access_key="AK1",
            scaling_group="default",
            requested=[ResourceSlot(cpu=cpu, mem=mem)],
            **kwargs,
        )
    )
    await reach(cluster, sid, status)
    return sid


async def reach(cluster: LocalCluster, sid: uuid.UUID, status: str) -> None:
    """The session has the status in the log and in the read model (which tests read)."""

    async def reached() -> bool:
        if (await cluster.shard.get(sid)).status.name != status:
            return False
        record = await cluster.agents[AGENT].models.session(str(sid))
        return record is not None and record["status"] == status

    await eventually(reached, timeout=30, message=status)


async def run(cluster: LocalCluster, sid: uuid.UUID, code: str) -> str:
    result = await cluster.execution.execute(sid, None, "query", code)
    console = list(result["console"])
    while result["status"] != "finished":
        result = await cluster.execution.execute(sid, result["runId"], "continue")
        console += result["console"]
    return "".join(data for kind, data in console if kind in ("stdout", "stderr"))


def docker_cli(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def container_of(cluster: LocalCluster) -> str:
    backend = cluster.agents[AGENT].backend
    assert isinstance(backend, DockerBackend)
    (record,) = backend._kernels.values()
    return record.container_id


async def session_record(cluster: LocalCluster, sid: uuid.UUID) -> dict[str, Any]:
    record = await cluster.agents[AGENT].models.session(str(sid))
    assert record is not None
    return record


_LIMITS = """
import os
from pathlib import Path
def first(*paths):
    for path in paths:
        if Path(path).exists():
            return Path(path).read_text().split()
print(len(os.sched_getaffinity(0)))
print(first('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes')[0])
quota = first('/sys/fs/cgroup/cpu.max', '/sys/fs/cgroup/cpu/cpu.cfs_quota_us')
print(quota[0])
print(first('/sys/fs/cgroup/pids.max', '/sys/fs/cgroup/pids/pids.max')[0])
print(sorted(os.listdir('/sys/class/net')))
print(os.getuid(), os.getcwd(), os.stat('/home/work').st_uid)
"""


async def test_a_container_sees_its_limits_and_no_network(cluster: LocalCluster) -> None:
    sid = await session(cluster, cpu=1, mem=512 * M)
    lines = (await run(cluster, sid, _LIMITS)).splitlines()
    assert lines[0] == "1"  # one core pinned
    assert lines[1] == str(512 * M)
    assert lines[2] == "100000"  # one core's worth of CFS quota per 100 ms period
    assert lines[3] == "256"
    assert lines[4] == "['lo']"  # --network none
    uid, cwd, owner = lines[5].split()
    assert (uid, cwd, owner) == ("1000", "/home/work", "1000")
    host = json.loads(docker_cli("inspect", container_of(cluster)))[0]["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 512 * M  # no swap beyond the limit
    assert host["NetworkMode"] == "none" and host["Init"] is True


async def test_the_runner_is_mounted_read_only(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    out = await run(
        cluster,
        sid,
        (
            "try:\n    open('/opt/kernelhub/kernel_runner/x', 'w')\n"
            "except OSError as e:\n    print(type(e).__name__, e.errno)"
        ),
    )
    assert out.strip() == "OSError 30"  # EROFS


async def test_two_kernels_get_different_cores_when_there_are_enough(
    cluster: LocalCluster,
) -> None:
    backend = cluster.agents[AGENT].backend
    assert isinstance(backend, DockerBackend)
    if len(backend.cores) < 2:
        pytest.skip("one core: nothing to spread over")
    first = await session(cluster)
    second = await session(cluster)
    seen = {
        (await run(cluster, sid, "import os; print(os.sched_getaffinity(0))")).strip()
        for sid in (first, second)
    }
    assert len(seen) == 2


async def test_an_oom_killed_child_is_logged_with_its_process_tree(
    cluster: LocalCluster,
) -> None:
    sid = await session(cluster, mem=128 * M)
    out = await run(
        cluster,
        sid,
        (
            "import subprocess\n"
            "r = subprocess.run(['python3', '-c', 'import time; time.sleep(1); "
            "x = bytearray(400 << 20)'])\nprint('child', r.returncode)"
        ),
    )
    assert "child -9" in out

    async def forensics() -> bool:
        return "python3 -c import time" in await cluster.execution.logs(sid)

    await eventually(forensics, timeout=20, message="the OOM victim in the kernel log")
    assert (await cluster.shard.get(sid)).status.name == "RUNNING"  # the container lives on


async def test_a_container_killed_by_the_oom_killer_ends_its_session_oom_killed(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid = await session(cluster, mem=128 * M)
    await cluster.execution.execute(sid, None, "query", "x = bytearray(400 << 20)", {}, 0.5)
    await reach(cluster, sid, "TERMINATED")
    record = await session_record(cluster, sid)
    assert record["status_info"] == "oom-killed"
    (kernel,) = record["kernels"].values()
    assert kernel["status_info"] == "oom-killed" and kernel["exit_code"] == 137
    assert "oom-killed, exit code 137" in await cluster.execution.logs(sid)
    assert docker_cli("ps", "-aq", "--filter", f"label={OWNER_LABEL}={AGENT}").strip() == ""


async def test_docker_kill_from_outside_ends_its_session(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    docker_cli("kill", container_of(cluster))
    await reach(cluster, sid, "TERMINATED")
    record = await session_record(cluster, sid)
    assert record["status_info"] == "self-terminated"
    (kernel,) = record["kernels"].values()
    assert kernel["exit_code"] == 137


async def test_an_image_dockerd_lacks_cancels_the_session_naming_it(
    cluster: LocalCluster,
) -> None:
    sid = await session(cluster, "CANCELLED", image="kernelhub/absent:0.1")
    record = await session_record(cluster, sid)
    assert record["status_info"] == "failed-to-start"
    error = record["status_data"]["error"]
    assert error["image"] == "kernelhub/absent:0.1" and error["name"] == "ImageNotAvailable"
    assert error["src"] == "agent" and error["agent_id"] == AGENT


async def test_a_restarted_agent_reattaches_and_still_executes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    sid = await session(cluster)
    await run(cluster, sid, "kept = 6 * 7")
    container = container_of(cluster)
    old = cluster.agents[AGENT]
    await old.drain()
    await old.close()  # the agent goes; its container stays
    new = Agent(
        cluster.store,
        cluster.shard,
        AGENT,
        old.capacity,
        backend=DockerBackend(tmp_path / AGENT, owner=AGENT),
        stop_grace_s=1.0,
    )
    cluster.agents[AGENT] = new
    await new.register()
    assert container_of(cluster) == container
    assert (await run(cluster, sid, "print(kept)")).strip() == "42"
    for _ in range(3):
        assert await new.reconcile() == {
            "stray": set(),
            "missing": set(),
            "stalled": set(),
            "unstopped": set(),
        }


async def test_a_container_that_ended_while_no_agent_watched_is_reported(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    sid = await session(cluster)
    old = cluster.agents[AGENT]
    await old.drain()
    await old.close()
    docker_cli("kill", container_of(cluster))
    new = Agent(
        cluster.store,
        cluster.shard,
        AGENT,
        old.capacity,
        backend=DockerBackend(tmp_path / AGENT, owner=AGENT),
        stop_grace_s=1.0,
    )
    cluster.agents[AGENT] = new
    await new.register()
    await reach(cluster, sid, "TERMINATED")
    assert (await session_record(cluster, sid))["status_info"] == "self-terminated"


async def test_redis_killed_between_a_container_start_and_its_event(tmp_path: Path) -> None:
    """The container runs but ``kernel_started`` cannot be appended: the agent keeps the
    container and waits the outage out (stopping it would leave the session PREPARING for
    good); once Redis is back the same container is reported, once, and it runs code."""
    with temporary_redis(Durability.ALWAYS) as server:

        class RedisDiesAfterStart(DockerBackend):
            armed = True
            first = ""

            async def start(self, launch: KernelLaunch) -> dict[str, Any]:
                info = await super().start(launch)
                if self.armed:
                    self.armed, self.first = False, info["container_id"]
                    server.kill()
                return info

        store = RedisEventStore.from_url(server.url)
        backend = RedisDiesAfterStart(tmp_path / AGENT, owner=AGENT)
        local = LocalCluster(
            store,
            [(AGENT, {"cpu": 4, "mem": 8 * G})],
            safety_tick_s=0.5,
            backend=lambda _: backend,
            stop_grace_s=1.0,
        )
        await local.start()
        try:
            sid = await local.shard.handle(
                CreateSession(
                    name="dk",
                    access_key="AK1",
                    scaling_group="default",
                    image=BASE_IMAGE,
                    requested=[ResourceSlot(cpu=1, mem=G)],
                )
            )
            agent = local.agents[AGENT]
            await eventually(lambda: not backend.armed, timeout=30, message="redis killed")
            await asyncio.sleep(3)  # several of the report's retries, and safety ticks
            # still waiting to report the start; the container it could not report is kept
            assert agent._starting and len(backend.known()) == 1
            server.restart()

            async def running() -> bool:
                return (await local.shard.get(sid)).status.name == "RUNNING"

            await eventually(running, timeout=60, interval=0.5, message="reported")
            labelled = docker_cli("ps", "-aq", "--filter", f"label={OWNER_LABEL}={AGENT}")
            assert len(labelled.split()) == 1 and container_of(local) == backend.first
            started = [
                e for e in await store.read_stream(f"session-{sid}") if e.type == "kernel_started"
            ]
            assert len(started) == 1
            assert (await run(local, sid, "print(6*7)")).strip() == "42"
        finally:
            await local.stop()
            await store.close()


async def test_live_stats_come_from_the_containers_cgroup(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid = await session(cluster, mem=256 * M)
    await run(
        cluster,
        sid,
        (
            "import time\nkept = bytearray(64 << 20)\nt = time.process_time()\n"
            "while time.process_time() - t < 0.5: pass"
        ),
    )
    agent = cluster.agents[AGENT]
    (kernel_id,) = agent.backend.running()
    stats = agent.backend.stats(kernel_id)
    assert stats is not None
    assert stats["cpu_used_ns"] >= 400_000_000 and stats["rss_bytes"] >= 64 * M
    assert stats["mem_limit_bytes"] == 256 * M and stats["pids"] >= 2  # init + the runner
    assert {"io_read_bytes", "io_write_bytes", "cpu_ticks"} <= set(stats)
    await agent.heartbeat()  # telemetry, not events
    published = json.loads(await store.redis.get(store.keys.kernel_stats(str(kernel_id))))
    assert published["rss_bytes"] >= 64 * M and published["agent"] == AGENT


async def test_a_container_the_log_does_not_know_is_stopped_as_a_stray(
    cluster: LocalCluster,
) -> None:
    """A container of this agent's that no session placed here (started before a crash
    that lost its report, say) is found and stopped: seen twice, then acted on."""
    agent = cluster.agents[AGENT]
    stray = uuid.uuid4()
    await agent.backend.start(
        KernelLaunch(
            stray,
            uuid.uuid4(),
            {"cpu": Decimal(1), "mem": Decimal(G)},
            image=BASE_IMAGE,
        )
    )
    assert await agent.reconcile() == {
        "stray": set(),
        "missing": set(),
        "stalled": set(),
        "unstopped": set(),
    }
    assert (await agent.reconcile())["stray"] == {stray}
    assert agent.backend.known() == set()
    assert docker_cli("ps", "-aq", "--filter", f"label={OWNER_LABEL}={AGENT}").strip() == ""


@pytest.mark.ray
async def test_a_killed_agent_actor_reattaches_to_its_running_container(
    ray_local: None, redis_server: EmbeddedRedis, store: RedisEventStore, tmp_path: Path
) -> None:
    """Unlike a process kernel, a container outlives its agent's Ray actor: the restarted
    actor adopts it and code runs on in the same interpreter."""
    import ray

    from actors.hosts import start_actors

    stack = start_actors(
        redis_server.url,
        namespace=f"t-{uuid.uuid4().hex[:8]}",
        backend="docker",
        work_root=str(tmp_path / "kernels"),
        shards=1,
        safety_tick_s=0.5,
        heartbeat_interval_s=0.5,
        reconcile_interval_s=0.5,
        agents=[(AGENT, {"cpu": 2, "mem": 4 * G})],
    )
    try:
        router = stack.router(store)
        sid = await router.handle(
            CreateSession(
                name="dk",
                access_key="AK1",
                scaling_group="default",
                image=BASE_IMAGE,
                requested=[ResourceSlot(cpu=1, mem=G)],
            )
        )
        assert await router.wait(sid, 60) == "RUNNING"
        await router.execution.execute(sid, None, "query", "kept = 6 * 7")
        before = docker_cli("ps", "-q", "--filter", f"label={OWNER_LABEL}={AGENT}").split()
        ray.kill(stack.agent_host(AGENT), no_restart=False)

        async def answers() -> str:
            try:
                result = await router.execution.execute(sid, None, "query", "print(kept)")
            except Exception:  # the actor is restarting
                return ""
            return "".join(d for kind, d in result["console"] if kind == "stdout")

        assert await eventually(answers, timeout=60, interval=0.5, message="re-attached") == "42\n"
        assert docker_cli("ps", "-q", "--filter", f"label={OWNER_LABEL}={AGENT}").split() == before
        assert (await router.status(sid)) == "RUNNING"
        await router.handle(DestroySession(session_id=sid))
        assert await router.wait(sid, 60, until=["TERMINATED"]) == "TERMINATED"
    finally:
        stack.kill()
        left = docker_cli("ps", "-aq", "--filter", f"label={OWNER_LABEL}={AGENT}").split()
        if left:  # the test's own containers, whatever became of them
            docker_cli("rm", "-f", *left)
