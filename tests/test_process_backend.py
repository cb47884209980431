"""Sessions on the process backend: real processes, real exit codes, groups killed."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.agents.backends.process import ProcessBackend
from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.session import SessionType
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from events import RedisEventStore
from kernelhub.testing import eventually

pytestmark = pytest.mark.redis
G = 2**30


@pytest.fixture
async def cluster(store: RedisEventStore, tmp_path: Path) -> AsyncIterator[LocalCluster]:
    local = LocalCluster(
        store,
        [("i-proc", {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.5,
        backend=lambda agent_id: ProcessBackend(tmp_path / agent_id),
        stop_grace_s=1.0,
    )
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


async def run(cluster: LocalCluster, **kwargs: object) -> uuid.UUID:
    return await cluster.shard.handle(
        CreateSession(
            name="p",
            access_key="AK1",
            scaling_group="default",
            image="kernelhub/python:3.11",
            requested=[ResourceSlot(cpu=1, mem=G)],
            **kwargs,
        )
    )


async def wait_status(cluster: LocalCluster, sid: uuid.UUID, status: str) -> None:
    async def reached() -> bool:
        return (await cluster.shard.get(sid)).status.name == status

    await eventually(reached, timeout=30, message=status)


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_an_interactive_kernel_is_a_process_until_destroyed(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid = await run(cluster)
    await wait_status(cluster, sid, "RUNNING")
    started = next(
        e for e in await store.read_stream(f"session-{sid}") if e.type == "kernel_started"
    )
    info = started.data.creation_info  # type: ignore[union-attr]
    pid = int(info["pid"])
    assert _alive(pid) and _is_dir(str(info["work_dir"]))
    backend = cluster.agents["i-proc"].backend
    assert isinstance(backend, ProcessBackend)
    stats = backend.stats(started.data.kernel_id)  # type: ignore[union-attr]
    assert stats is not None and stats["rss_bytes"] > 0
    await cluster.shard.handle(DestroySession(session_id=sid))
    await wait_status(cluster, sid, "TERMINATED")
    assert not _alive(pid)
    terminated = next(
        e for e in await store.read_stream(f"session-{sid}") if e.type == "kernel_terminated"
    )
    assert terminated.data.reason == "user-requested"  # type: ignore[union-attr]
    assert terminated.data.exit_code == -15  # SIGTERM  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("command", "result", "exit_code"),
    [
        ('test -n "$_BACKEND_BATCH_MODE" && echo done > out.txt', "session_success", 0),
        ("exit 3", "session_failure", 3),
    ],
)
async def test_a_batch_session_runs_its_command(
    cluster: LocalCluster, store: RedisEventStore, command: str, result: str, exit_code: int
) -> None:
    sid = await run(cluster, session_type=SessionType.BATCH, startup_command=command)
    await wait_status(cluster, sid, "TERMINATED")
    events = await store.read_stream(f"session-{sid}")
    outcome = next(e for e in events if e.type in ("session_success", "session_failure"))
    assert outcome.type == result
    assert outcome.data.exit_code == exit_code  # type: ignore[union-attr]
    assert (await cluster.shard.get(sid)).result == ("success" if exit_code == 0 else "failure")


def test_utilization_is_a_share_of_the_allocation() -> None:
    from decimal import Decimal

    from actors.agents.utilization import _TICKS, UtilizationSampler

    sampler = UtilizationSampler()
    kernel = uuid.uuid4()
    slots = {"cpu": Decimal(2), "mem": Decimal(4 * G)}
    assert sampler.sample(kernel, {"cpu_ticks": 0, "rss_bytes": G}, slots, now=100.0) is None
    series = sampler.sample(kernel, {"cpu_ticks": _TICKS * 10, "rss_bytes": G}, slots, now=110.0)
    assert series == {"cpu_util": [50.0], "mem": [25.0]}  # 1 of 2 cores, 1 of 4 GiB
