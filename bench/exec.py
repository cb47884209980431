"""Exec round trip of a trivial statement: through the agent actor vs straight to the runner.

Setup (untimed): a local Ray, Redis, the actors with one process-backend agent, one RUNNING
session. ``exec_ms``: one ``execute`` (mode ``query``, code ``pass``) the way the API
serves it: the session's stream caught up in the router, then the ``agent:<id>`` actor's
call to the kernel's runner, until its result is back (median of ``--calls`` x
``--rounds``). The baseline ``runner_direct_ms``: the same request written straight to
the runner's unix socket by a blocking client in this process, until ``finished``
(median, same run, in blocks of 50 interleaved with ours so drift hits both alike).
``exec_overhead_ms = exec_ms - runner_direct_ms``. Target: ``<= 3``. Also shown:
``agent_actor_ms`` (the actor call alone, without the session lookup).

    .venv/bin/python bench/exec.py [--calls 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from actors.agents.backends.base import KernelDirs
from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.slots import ResourceSlot
from actors.hosts import start_actors
from actors.sessions.execution import main_kernel
from bench._baselines import machine, redis_version_at
from bench._ray import local_ray
from events import RedisEventStore
from kernelhub.in_kernel.kernel_runner.framing import encode, read_frame
from kernelhub.logging import configure_logging
from kernelhub.testing import temporary_redis

TARGET_OVERHEAD_MS = 3.0
AGENT = "i-bench"
BLOCK = 50


class DirectClient:
    """The baseline: ``code`` straight to the runner's socket, until ``finished``."""

    def __init__(self, socket_path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(socket_path)
        self.stream = self.sock.makefile("rb")

    def round_trip(self) -> None:
        self.sock.sendall(encode("code", b"pass"))
        while True:
            frame = read_frame(self.stream)
            assert frame is not None
            if frame[0] == "finished":
                return

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


async def measure(url: str, work_root: str, calls: int, rounds: int) -> dict[str, float]:
    installation = start_actors(
        url,
        namespace=f"bench-{uuid.uuid4().hex[:6]}",
        backend="process",
        work_root=work_root,
        agents=[(AGENT, {"cpu": 2, "mem": 4 * 2**30})],
        shards=1,
        safety_tick_s=0.5,
    )
    store = RedisEventStore.from_url(url)
    router = installation.router(store)
    sid = await router.handle(
        CreateSession(
            name="bench",
            access_key="AKBENCH",
            scaling_group="default",
            image="kernelhub/python:3.11",
            requested=[ResourceSlot(cpu=1, mem=2**30)],
        )
    )
    assert await router.wait(sid, 60) == "RUNNING", "the session did not start"
    kernel_id, _ = main_kernel(await router.execution.session(sid))
    socket_path = str(KernelDirs(Path(work_root) / AGENT / kernel_id.hex).socket)
    host = installation.agent_host(AGENT)
    timings: dict[str, list[float]] = {"ours": [], "actor": [], "direct": []}

    async def ours() -> None:
        result = await router.execution.execute(sid, None, "query", "pass", {}, None)
        assert result["status"] == "finished"

    async def actor() -> None:
        await host.kernel_call.remote(
            AGENT, "execute", kernel_id, uuid.uuid4().hex, "query", "pass", {}, None
        )

    for block in range(rounds * calls // BLOCK + 1):  # short blocks: drift hits all alike
        for name, call in (("ours", ours), ("actor", actor)):
            for _ in range(BLOCK):
                started = time.perf_counter()
                await call()
                if block:  # the first block warms up
                    timings[name].append((time.perf_counter() - started) * 1000)
        # the runner serves one connection at a time: this one takes over from the agent's,
        # which reconnects on its next call
        direct = DirectClient(socket_path)
        for _ in range(BLOCK):
            started = time.perf_counter()
            direct.round_trip()
            if block:
                timings["direct"].append((time.perf_counter() - started) * 1000)
        direct.close()
    await router.handle(DestroySession(session_id=sid))
    await router.wait(sid, 30, until=["TERMINATED"])
    await store.close()
    ours_ms = sorted(timings["ours"])
    return {
        "exec_ms": statistics.median(ours_ms),
        "agent_actor_ms": statistics.median(timings["actor"]),
        "runner_direct_ms": statistics.median(timings["direct"]),
        "exec_p99_ms": ours_ms[int(len(ours_ms) * 0.99) - 1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("ERROR", json=False)
    with local_ray(), temporary_redis() as server, tempfile.TemporaryDirectory() as work_root:
        figures = asyncio.run(measure(server.url, work_root, args.calls, args.rounds))
        redis_version = redis_version_at(server.url)
    overhead = figures["exec_ms"] - figures["runner_direct_ms"]
    print(
        json.dumps(
            {
                "bench": "exec",
                "calls": args.calls * args.rounds,
                **{k: round(v, 3) for k, v in figures.items()},
                "exec_overhead_ms": round(overhead, 3),
                "targets_met": overhead <= TARGET_OVERHEAD_MS,
                "machine": machine(redis_version),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
