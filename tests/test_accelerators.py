"""Accelerators on the write side (real Redis, simulated devices): allocation, exhaustion and
release through the scheduler and agents; fractional shares; a kernel seeing exactly its
devices; FIFO keeping GPU agents for GPU work; utilization-driven idle reclaim; an agent
restarted under a running kernel keeping that kernel's devices."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.agents.accelerators import Accelerators, make_accelerators
from actors.agents.agent import Agent
from actors.agents.backends.process import ProcessBackend
from actors.agents.backends.sim import SimBackend
from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.idle import IdleConfig
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from events import RedisEventStore
from kernelhub.testing import eventually
from projections.queries import ReadModels

pytestmark = pytest.mark.redis
G = 2**30


def sim_devices(**config: Any) -> Callable[[str], Accelerators | None]:
    """Every agent whose id starts with ``i-gpu`` gets simulated devices."""
    return lambda agent_id: (
        make_accelerators([{"plugin": "sim", **config}]) if agent_id.startswith("i-gpu") else None
    )


async def create(cluster: LocalCluster, name: str, **slots: Any) -> uuid.UUID:
    sid: uuid.UUID = await cluster.shard.handle(
        CreateSession(
            name=name,
            access_key="AK1",
            scaling_group="default",
            image="kernelhub/python:3.11",
            requested=[ResourceSlot({"cpu": 1, "mem": G, **slots})],
        )
    )
    return sid


async def status_of(
    cluster: LocalCluster, sid: uuid.UUID, wanted: str, timeout: float = 20
) -> None:
    async def reached() -> bool:
        record = await ReadModels(cluster.store).session(str(sid))
        return record is not None and record["status"] == wanted

    await eventually(reached, timeout=timeout, message=f"{sid} {wanted}")


async def devices_of(cluster: LocalCluster, sid: uuid.UUID) -> tuple[str, list[str]]:
    """(agent, device ids) of the session's main kernel, from the read model."""
    record = await ReadModels(cluster.store).session(str(sid))
    assert record is not None
    kernel = next(iter(record["kernels"].values()))
    attached = kernel.get("attached_devices") or {}
    return kernel["agent"], [d["device_id"] for d in attached.get("cuda", [])]


async def test_devices_are_given_out_once_exhausted_wait_and_released_come_back(
    store: RedisEventStore,
) -> None:
    async with LocalCluster(
        store,
        [("i-gpu0", {"cpu": 16, "mem": 64 * G})],
        safety_tick_s=0.3,
        accelerators=sim_devices(devices=2),
    ) as cluster:
        agent = await eventually(lambda: ReadModels(store).agent("i-gpu0"), message="agent")
        assert agent["available_slots"]["cuda.device"] == "2"
        assert agent["compute_plugins"]["cuda"]["plugin"] == "sim"
        first, second = [await create(cluster, f"gpu{n}", **{"cuda.device": 1}) for n in (1, 2)]
        for sid in (first, second):
            await status_of(cluster, sid, "RUNNING")
        held = {tuple((await devices_of(cluster, sid))[1]) for sid in (first, second)}
        assert held == {("0",), ("1",)}  # one device each, never the same one
        third = await create(cluster, "gpu3", **{"cuda.device": 1})
        await asyncio.sleep(1.0)  # several scheduling passes: no device is free
        record = await ReadModels(cluster.store).session(str(third))
        assert record is not None and record["status"] == "PENDING"
        freed = (await devices_of(cluster, first))[1]
        await cluster.shard.handle(DestroySession(session_id=first))
        await status_of(cluster, third, "RUNNING")
        assert (await devices_of(cluster, third))[1] == freed


async def test_fractional_shares_let_kernels_share_a_device(store: RedisEventStore) -> None:
    async with LocalCluster(
        store,
        [("i-gpu0", {"cpu": 16, "mem": 64 * G})],
        safety_tick_s=0.3,
        accelerators=sim_devices(devices=1, mode="fractional"),
    ) as cluster:
        sids = [await create(cluster, f"half{n}", **{"cuda.shares": "0.5"}) for n in (1, 2)]
        for sid in sids:
            await status_of(cluster, sid, "RUNNING")
            assert (await devices_of(cluster, sid))[1] == ["0"]


async def test_a_fraction_of_a_whole_device_fails_to_start_with_the_reason(
    store: RedisEventStore,
) -> None:
    async with LocalCluster(
        store,
        [("i-gpu0", {"cpu": 16, "mem": 64 * G})],
        safety_tick_s=0.3,
        accelerators=sim_devices(devices=1),
    ) as cluster:
        sid = await create(cluster, "half", **{"cuda.device": "0.5"})
        await status_of(cluster, sid, "CANCELLED")
        record = await ReadModels(cluster.store).session(str(sid))
        assert record is not None
        error = record["status_data"]["error"]
        assert error["name"] == "InvalidResourceArgument"
        assert "whole devices" in error["repr"] and error["agent_id"] == "i-gpu0"
        # the agent gave nothing away: a whole device is still there for the next one
        whole = await create(cluster, "whole", **{"cuda.device": 1})
        await status_of(cluster, whole, "RUNNING")


async def test_fifo_keeps_the_gpu_agent_for_gpu_work(store: RedisEventStore) -> None:
    """23.03's FIFO/LIFO prefer agents without accelerators the session did not ask for,
    even when the GPU agent is the bigger one."""
    async with LocalCluster(
        store,
        [("i-gpu0", {"cpu": 32, "mem": 128 * G}), ("i-cpu0", {"cpu": 8, "mem": 16 * G})],
        safety_tick_s=0.3,
        accelerators=sim_devices(devices=2),
    ) as cluster:
        cpu_only = await create(cluster, "cpu")
        gpu = await create(cluster, "gpu", **{"cuda.device": 1})
        for sid in (cpu_only, gpu):
            await status_of(cluster, sid, "RUNNING")
        assert (await devices_of(cluster, cpu_only)) == ("i-cpu0", [])
        assert (await devices_of(cluster, gpu)) == ("i-gpu0", ["0"])


async def test_a_process_kernel_sees_exactly_its_devices(
    store: RedisEventStore, tmp_path: Path
) -> None:
    async with LocalCluster(
        store,
        [("i-gpu0", {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.3,
        backend=lambda agent_id: ProcessBackend(tmp_path / agent_id),
        accelerators=sim_devices(devices=3),
    ) as cluster:
        taken = await create(cluster, "one", **{"cuda.device": 1})
        await status_of(cluster, taken, "RUNNING", timeout=30)
        sid = await create(cluster, "two", **{"cuda.device": 2})
        await status_of(cluster, sid, "RUNNING", timeout=30)
        code = (
            "import os; print(os.environ['BACKENDAI_MOCK_CUDA_DEVICES'], "
            "os.environ['BACKENDAI_MOCK_CUDA_DEVICE_COUNT'])"
        )
        result = await cluster.execution.execute(sid, None, "query", code)
        while result["status"] != "finished":
            result = await cluster.execution.execute(sid, result["runId"], "continue")
        out = "".join(d for kind, d in result["console"] if kind == "stdout")
        assert out == "1,2 2\n"
        environ = (tmp_path / "i-gpu0").glob("*/config/environ.txt")
        assert any("BACKENDAI_MOCK_CUDA_DEVICES=1,2" in p.read_text() for p in environ)


GPU_IDLE = IdleConfig.parse(
    {
        "enabled": "utilization",
        "checkers": {
            "utilization": {
                "time-window": "2s",
                "initial-grace-period": "0s",
                "sample-interval": "0.5s",
                "resource-thresholds": {"cuda_util": {"average": 10}},
            }
        },
    }
)


@pytest.mark.parametrize(("load", "reclaimed"), [(0.0, True), (60.0, False)])
async def test_an_idle_gpu_is_reclaimed_by_its_utilization(
    store: RedisEventStore, load: float, reclaimed: bool
) -> None:
    """A GPU session whose device stays under ``cuda_util`` for a window ends
    ``idle-utilization``, however busy its CPU; a session without a GPU is never judged
    on ``cuda_util`` (unallocated metrics are excluded, as 23.03's ``UtilizationIdleChecker``)."""
    async with LocalCluster(
        store,
        [("i-gpu0", {"cpu": 16, "mem": 64 * G})],
        safety_tick_s=0.3,
        idle=GPU_IDLE,
        backend=lambda _: SimBackend(utilization={"cpu_util": 90.0, "mem": 50.0}),
        accelerators=sim_devices(devices=1, load=load),
    ) as cluster:
        gpu = await create(cluster, "gpu", **{"cuda.device": 1})
        cpu_only = await create(cluster, "cpu")
        for sid in (gpu, cpu_only):
            await status_of(cluster, sid, "RUNNING")
        if reclaimed:
            await status_of(cluster, gpu, "TERMINATED")
            events = await store.read_stream(f"session-{gpu}")
            assert str(events[-1].data.reason) == "idle-utilization"  # type: ignore[union-attr]
        else:
            await asyncio.sleep(3.0)  # a window and a half of busy samples
            record = await ReadModels(cluster.store).session(str(gpu))
            assert record is not None and record["status"] == "RUNNING"
            util = await store.redis.get(store.keys.idle_utilization(next(iter(record["kernels"]))))
            assert b'"cuda_util":[60.0' in util
        record = await ReadModels(cluster.store).session(str(cpu_only))
        assert record is not None and record["status"] == "RUNNING"


async def test_an_agent_restarted_under_a_running_kernel_keeps_its_device_held(
    store: RedisEventStore, tmp_path: Path
) -> None:
    """The agent dies (its process gone, its kernel still running); the new one takes the
    kernel's device back from the log, so the next GPU session gets the other device."""
    root = tmp_path / "i-gpu0"
    async with LocalCluster(
        store,
        [("i-gpu0", {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.3,
        backend=lambda _: ProcessBackend(root),
        accelerators=sim_devices(devices=2),
    ) as cluster:
        first = await create(cluster, "first", **{"cuda.device": 1})
        await status_of(cluster, first, "RUNNING", timeout=30)
        assert (await devices_of(cluster, first))[1] == ["0"]
        old = cluster.agents["i-gpu0"]
        await old.close()  # gone without stopping its kernels, as a crashed agent
        devices = make_accelerators([{"plugin": "sim", "devices": 2}])
        reborn = Agent(
            store,
            cluster.shard,
            "i-gpu0",
            {"cpu": 4, "mem": 8 * G},
            backend=ProcessBackend(root),
            accelerators=devices,
        )
        cluster.agents["i-gpu0"] = reborn
        await reborn.register()
        kernel = str(next(iter(reborn.backend.known())))

        async def held() -> dict[str, list[str]]:
            return reborn.accelerators.held(kernel).device_ids()

        assert await eventually(held, message="hold restored") == {"cuda": ["0"]}
        second = await create(cluster, "second", **{"cuda.device": 1})
        await status_of(cluster, second, "RUNNING", timeout=30)
        assert (await devices_of(cluster, second))[1] == ["1"]
        await cluster.shard.handle(DestroySession(session_id=first))
        await status_of(cluster, first, "TERMINATED", timeout=30)
        assert reborn.accelerators.maps["cuda"].free() == {"0": Decimal(1), "1": Decimal(0)}


@pytest.mark.parametrize(
    ("selector", "second_half_on", "second_whole"),
    [("fragmentation", "i-gpu-roomy", "RUNNING"), ("concentrated", "i-gpu-tight", "PENDING")],
)
async def test_the_fragmentation_selector_keeps_a_whole_gpu_for_whole_gpu_work(
    store: RedisEventStore, tmp_path: Path, selector: str, second_half_on: str, second_whole: str
) -> None:
    """Two agents of one fractional GPU each; the roomy one has more CPU. After a whole-GPU
    session and a half on the roomy agent, a second half goes where it strands nothing: onto
    the roomy agent's free half (fragmentation), where concentrated (fewest free CPUs first)
    splits the tight agent's whole GPU and the next whole-GPU session waits."""
    from actors.domain.commands.tenancy import SetScalingGroup
    from actors.tenancy.writer import TenancyService
    from events.secrets import SecretBox
    from projections.tenancy_queries import TenancyLookups

    async with LocalCluster(
        store,
        [("i-gpu-roomy", {"cpu": 16, "mem": 64 * G}), ("i-gpu-tight", {"cpu": 8, "mem": 64 * G})],
        safety_tick_s=0.3,
        accelerators=sim_devices(devices=1, mode="fractional"),
    ) as cluster:
        tenancy = await TenancyService(
            store, SecretBox.from_file(tmp_path / "k", create=True)
        ).load()
        await tenancy.handle(SetScalingGroup(name="default", agent_selector=selector))

        async def projected() -> bool:
            group = await TenancyLookups(store).scaling_group("default")
            return (group or {}).get("agent_selector") == selector

        await eventually(projected, timeout=20, message="the group projected")
        whole = await create(cluster, "whole", **{"cuda.shares": 1})
        await status_of(cluster, whole, "RUNNING")
        assert (await devices_of(cluster, whole))[0] == "i-gpu-tight"  # fewer free CPUs
        half = await create(cluster, "half", **{"cuda.shares": "0.5"})
        await status_of(cluster, half, "RUNNING")
        assert (await devices_of(cluster, half))[0] == "i-gpu-roomy"  # the only room
        await cluster.shard.handle(DestroySession(session_id=whole))
        await status_of(cluster, whole, "TERMINATED")
        second = await create(cluster, "half2", **{"cuda.shares": "0.5"})
        await status_of(cluster, second, "RUNNING")
        assert (await devices_of(cluster, second))[0] == second_half_on
        again = await create(cluster, "whole2", **{"cuda.shares": 1})
        if second_whole == "RUNNING":
            await status_of(cluster, again, "RUNNING")
            assert (await devices_of(cluster, again))[0] == "i-gpu-tight"
        else:
            await asyncio.sleep(1.0)  # several passes: no agent has a whole GPU free
            record = await ReadModels(cluster.store).session(str(again))
            assert record is not None and record["status"] == "PENDING"
