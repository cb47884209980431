"""Session start in a container: kernelhub's create-to-RUNNING vs Docker's own start.

Setup (untimed): a local Ray, Redis, the actors with one Docker-backend agent, the base
image warm in dockerd. Then ``--rounds`` interleaved rounds of each:

- ``start_ms``: ``create`` through the session router until the session is RUNNING (the
  scheduler's decision, the agent creating and starting the container, the kernel runner
  answering its first status check, the events on the way); the session is destroyed
  after each round, untimed.
- ``docker_run_ms`` (the baseline): the same image through aiodocker in this process,
  created with the same limits and no network, started, waited for ``python3 -c pass`` to
  exit, removed.
- ``docker_start_ms``: starting a container created beforehand (untimed) and waiting for
  it to exit.
- ``docker_cli_ms`` (reference only): ``docker run --rm --network none IMAGE python3 -c pass``.

Medians. ``start_ratio = start_ms / docker_run_ms``; target ``<= 1.3``.

    .venv/bin/python bench/start.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import aiodocker

from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.slots import ResourceSlot
from actors.hosts import start_actors
from bench._baselines import machine, redis_version_at
from bench._ray import local_ray
from events import RedisEventStore
from kernelhub.logging import configure_logging
from kernelhub.testing import BASE_IMAGE, docker_missing, temporary_redis

TARGET_RATIO = 1.3
AGENT = "i-bench"
CPU, MEM = 1, 2**30


def plain_config() -> dict[str, Any]:
    """What the baseline starts: the kernel's limits, no network, a trivial command."""
    return {
        "Image": BASE_IMAGE,
        "Cmd": ["python3", "-c", "pass"],
        "User": "work",
        "HostConfig": {
            "Init": True,
            "NetworkMode": "none",
            "Memory": MEM,
            "MemorySwap": MEM,
            "CpuPeriod": 100_000,
            "CpuQuota": CPU * 100_000,
            "CpusetCpus": "0",
            "PidsLimit": 256,
        },
    }


async def measure(url: str, work_root: str, rounds: int) -> dict[str, float]:
    installation = start_actors(
        url,
        namespace=f"bench-{uuid.uuid4().hex[:6]}",
        backend="docker",
        work_root=work_root,
        agents=[(AGENT, {"cpu": 2, "mem": 4 * 2**30})],
        shards=1,
        safety_tick_s=0.5,
    )
    store = RedisEventStore.from_url(url)
    router = installation.router(store)
    docker = aiodocker.Docker()
    timings: dict[str, list[float]] = {"ours": [], "run": [], "start": [], "cli": []}

    async def ours() -> None:
        started = time.perf_counter()
        sid = await router.handle(
            CreateSession(
                name=f"b{uuid.uuid4().hex[:6]}",
                access_key="AKBENCH",
                scaling_group="default",
                image=BASE_IMAGE,
                requested=[ResourceSlot(cpu=CPU, mem=MEM)],
            )
        )
        assert await router.wait(sid, 60) == "RUNNING", "the session did not start"
        timings["ours"].append((time.perf_counter() - started) * 1000)
        await router.handle(DestroySession(session_id=sid))
        await router.wait(sid, 60, until=["TERMINATED"])

    async def docker_run() -> None:
        started = time.perf_counter()
        container = await docker.containers.create(plain_config())
        await container.start()
        await container.wait()
        await container.delete(force=True)
        timings["run"].append((time.perf_counter() - started) * 1000)

    async def docker_start() -> None:
        container = await docker.containers.create(plain_config())
        started = time.perf_counter()
        await container.start()
        await container.wait()
        timings["start"].append((time.perf_counter() - started) * 1000)
        await container.delete(force=True)

    def docker_cli() -> None:
        started = time.perf_counter()
        subprocess.run(
            ["docker", "run", "--rm", "--network", "none", BASE_IMAGE, "python3", "-c", "pass"],
            check=True,
            capture_output=True,
        )
        timings["cli"].append((time.perf_counter() - started) * 1000)

    try:
        await ours()  # warm-up: the first session pays for imports and page cache
        await docker_run()
        timings = {name: [] for name in timings}
        for _ in range(rounds):
            await ours()
            await docker_run()
            await docker_start()
            docker_cli()
    finally:
        await docker.close()
        await store.close()
    return {
        "start_ms": statistics.median(timings["ours"]),
        "docker_run_ms": statistics.median(timings["run"]),
        "docker_start_ms": statistics.median(timings["start"]),
        "docker_cli_ms": statistics.median(timings["cli"]),
        "start_max_ms": max(timings["ours"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    reason = docker_missing()
    if reason is not None:
        sys.exit(f"bench/start.py: {reason} (scripts/start-dockerd.sh, scripts/build-image.sh)")
    configure_logging("ERROR", json=False)
    with local_ray(), temporary_redis() as server, tempfile.TemporaryDirectory() as work_root:
        figures = asyncio.run(measure(server.url, work_root, args.rounds))
        redis_version = redis_version_at(server.url)
    ratio = figures["start_ms"] / figures["docker_run_ms"]
    print(
        json.dumps(
            {
                "bench": "start",
                "rounds": args.rounds,
                **{k: round(v, 1) for k, v in figures.items()},
                "start_ratio": round(ratio, 3),
                "targets_met": ratio <= TARGET_RATIO,
                "machine": machine(redis_version),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
