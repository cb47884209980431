"""NVIDIA GPUs through NVML, for real: discovery, live utilization samples, a kernel given
exactly its GPU (a host process by ``CUDA_VISIBLE_DEVICES``, a container by Docker's device
requests, checked with ``nvidia-smi -L`` inside it). Skipped on a machine without an
NVIDIA driver; run them wherever one is lent (see the closing notes for recorded runs)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from actors.agents.accelerators import NvmlAccelerator, make_accelerators
from actors.agents.backends.process import ProcessBackend
from actors.domain.commands.sessions import CreateSession
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from events import RedisEventStore
from kernelhub.testing import eventually
from projections.queries import ReadModels

pytestmark = pytest.mark.gpu
G = 2**30


@pytest.fixture(scope="module")
def gpus() -> NvmlAccelerator:
    plugin = NvmlAccelerator()
    if not plugin.devices():
        pytest.skip(plugin.unavailable or "NVML found no GPU")
    return plugin


def test_nvml_discovers_every_gpu_with_its_identity(gpus: NvmlAccelerator) -> None:
    for device in gpus.devices():
        assert device.uuid and device.uuid.startswith(("GPU-", "MIG-"))
        assert device.model_name and device.memory_bytes > 0 and device.bus_id
    assert make_accelerators([{"plugin": "nvml"}]).slots() == {"cuda.device": len(gpus.devices())}
    assert gpus.info()["driver_version"]


def test_nvml_samples_utilization_and_memory_of_each_gpu(gpus: NvmlAccelerator) -> None:
    sample = gpus.stats({})
    assert set(sample) == {d.device_id for d in gpus.devices()}
    for stat in sample.values():
        assert 0 <= stat.utilization <= 100
        assert 0 <= stat.memory_used <= stat.memory_total and stat.memory_total > 0


async def run(cluster: LocalCluster, sid: uuid.UUID, code: str) -> str:
    result = await cluster.execution.execute(sid, None, "query", code)
    while result["status"] != "finished":
        result = await cluster.execution.execute(sid, result["runId"], "continue")
    return "".join(d for kind, d in result["console"] if kind == "stdout")


async def gpu_session(cluster: LocalCluster) -> uuid.UUID:
    sid: uuid.UUID = await cluster.shard.handle(
        CreateSession(
            name="gpu",
            access_key="AK1",
            scaling_group="default",
            image="kernelhub/python:3.11",
            requested=[ResourceSlot({"cpu": 1, "mem": G, "cuda.device": 1})],
        )
    )

    async def running() -> bool:
        record = await ReadModels(cluster.store).session(str(sid))
        return record is not None and record["status"] == "RUNNING"

    await eventually(running, timeout=60, message="GPU session RUNNING")
    return sid


@pytest.mark.redis
async def test_a_process_kernel_is_pointed_at_its_gpu(
    gpus: NvmlAccelerator, store: RedisEventStore, tmp_path: Path
) -> None:
    async with LocalCluster(
        store,
        [("i-gpu", {"cpu": 2, "mem": 4 * G})],
        safety_tick_s=0.3,
        backend=lambda agent_id: ProcessBackend(tmp_path / agent_id),
        accelerators=lambda _: make_accelerators([{"plugin": "nvml"}]),
    ) as cluster:
        sid = await gpu_session(cluster)
        first = gpus.devices()[0]
        out = await run(cluster, sid, "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])")
        assert out.strip() == first.uuid
        agent = cluster.agents["i-gpu"]
        assert await agent.sample_utilization() >= 0
        devices = await store.redis.get(store.keys.agent_devices("i-gpu"))
        assert devices is not None and first.device_id.encode() in devices


@pytest.mark.docker
@pytest.mark.redis
async def test_a_container_sees_exactly_its_gpu(
    gpus: NvmlAccelerator, store: RedisEventStore, tmp_path: Path, docker: None
) -> None:
    from actors.agents.backends.docker import DockerBackend

    if shutil.which("nvidia-container-cli") is None:
        pytest.skip("the NVIDIA container toolkit is not installed")
    async with LocalCluster(
        store,
        [("i-gpu", {"cpu": 2, "mem": 4 * G})],
        safety_tick_s=0.3,
        backend=lambda agent_id: DockerBackend(tmp_path / agent_id, owner=agent_id),
        accelerators=lambda _: make_accelerators([{"plugin": "nvml"}]),
    ) as cluster:
        sid = await gpu_session(cluster)
        code = (
            "import subprocess; print(subprocess.run(['nvidia-smi', '-L'], "
            "capture_output=True, text=True).stdout)"
        )
        lines = [line for line in (await run(cluster, sid, code)).splitlines() if line.strip()]
        first = gpus.devices()[0]
        assert len(lines) == 1 and first.uuid in lines[0]
