"""The gateway's request rate: an authenticated ``GET /session/{id}`` vs aiohttp's hello world.

Setup (untimed): a local Ray, Redis, the actors with one simulated agent and the gateway
actor, a keypair (its rate limit out of the way), one RUNNING session. The baseline is an
unauthenticated aiohttp "hello world" in its own process (as the gateway is in its actor's).
The same client drives both: ``--connections`` keep-alive connections, ``--requests``
requests per round, ``--rounds`` rounds, interleaved. Ours are signed per request as the
official client signs them; each is served from the read model with the keypair cached,
and counted against the keypair's rate limit (one Redis round trip).

Last line JSON: ``ours_rps``, ``hello_rps``, ``ratio`` (= ours/hello), ``p99_ms`` (ours).
Targets: ``ratio >= 0.35``, ``p99_ms <= 25``. Where the CPU goes, per request, over the
measured rounds (``/proc``'s counters, read between rounds): ``cpu_ms_per_request`` with the
gateway actor's process, Redis and this client (which signs) for ours, and the hello world's
process for the baseline (docs/gateway.md, "What a request costs").

    .venv/bin/python bench/gateway.py [--requests 20000] [--rounds 3] [--connections 32]
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
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import aiohttp

from actors.domain.commands.sessions import CreateSession
from actors.domain.commands.tenancy import IssueKeypair
from actors.domain.slots import ResourceSlot
from actors.gateway import API_VERSION
from actors.hosts import Installation, start_actors
from actors.tenancy.writer import TenancyService
from bench._baselines import machine, redis_version_at
from bench._ray import local_ray
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.bootstrap import bootstrap
from kernelhub.logging import configure_logging
from kernelhub.signing import parse_date, sign, string_to_sign
from kernelhub.testing import eventually, temporary_redis
from projections.tenancy_queries import TenancyLookups

TARGET_RATIO, TARGET_P99_MS = 0.35, 25.0

HELLO = """
import sys
from aiohttp import web
async def hello(request):
    return web.Response(text="Hello, world")
app = web.Application()
app.add_routes([web.get("/", hello)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Signer:
    def __init__(self, endpoint: str, access_key: str, secret_key: str) -> None:
        self.host = endpoint.removeprefix("http://")
        self.access_key, self.secret_key = access_key, secret_key

    def headers(self, path: str) -> dict[str, str]:
        date = datetime.now(UTC).isoformat()
        text = string_to_sign("GET", path, date, self.host, "text/plain", API_VERSION)
        signature = sign(self.secret_key, parse_date(date), self.host, text)
        return {
            "Date": date,
            "X-BackendAI-Version": API_VERSION,
            "Content-Type": "text/plain",
            "Authorization": "BackendAI signMethod=HMAC-SHA256, "
            f"credential={self.access_key}:{signature}",
        }


async def drive(
    url: str, requests: int, connections: int, signer: Signer | None, path: str
) -> tuple[float, list[float]]:
    """``requests`` GETs over ``connections`` keep-alive connections; (rate, latencies ms)."""
    latencies: list[float] = []
    left = requests
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                headers = signer.headers(path) if signer else {}
                started = time.perf_counter()
                async with client.get(url + path, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


async def prepare(url: str, master_key: Path) -> tuple[Installation, Signer, str]:
    """The stack (kept referenced by the caller: actors go with their last handle), a
    signer for a keypair without a practical rate limit, the session's path."""
    installation = start_actors(
        url,
        namespace=f"bench-{uuid.uuid4().hex[:6]}",
        backend="sim",
        shards=1,
        master_key_path=str(master_key),
        gateway_port=0,
        agents=[("i-bench", {"cpu": 16, "mem": 64 * 2**30})],
    )
    endpoint = installation.gateway_endpoint()
    assert endpoint is not None
    store = RedisEventStore.from_url(url)
    box = SecretBox.from_file(master_key)
    admin = await bootstrap(store, box)
    tenancy = await TenancyService(store, box).load()
    access_key, secret_key = await tenancy.handle(
        IssueKeypair(user_id=admin.user_id, rate_limit=10**9)
    )
    lookups = TenancyLookups(store)
    await eventually(lambda: lookups.keypair(access_key), timeout=30, message="projected")
    router = installation.router(store)
    sid = await router.handle(
        CreateSession(
            name="bench",
            access_key=access_key,
            scaling_group="default",
            image="kernelhub/python:3.11",
            requested=[ResourceSlot(cpu=1, mem=2**30)],
        )
    )
    assert await router.wait(sid, 60) == "RUNNING"
    await store.close()
    return installation, Signer(endpoint, access_key, secret_key), f"/session/{sid}"


def cpu_ms(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far, in ms (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU ms of named processes, summed over the spans measured (:meth:`span`)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.used = dict.fromkeys(pids, 0.0)

    def start(self) -> dict[str, float]:
        return {name: self._now(name) for name in self.pids}

    def stop(self, started: dict[str, float]) -> None:
        for name in self.pids:
            self.used[name] += self._now(name) - started[name]

    def _now(self, name: str) -> float:
        if name == "client":
            return time.process_time() * 1000
        return cpu_ms(self.pids[name])


async def measure(
    url: str,
    master_key: Path,
    hello_url: str,
    args: argparse.Namespace,
    pids: dict[str, int | None],
) -> dict[str, float]:
    installation, signer, path = await prepare(url, master_key)
    endpoint = installation.gateway_endpoint() or ""
    assert installation.gateway is not None
    gateway_pid = await installation.gateway.process_id.remote()
    ours_cpu = CpuMeter({"gateway": gateway_pid, "redis": pids["redis"], "client": None})
    hello_cpu = CpuMeter({"hello": pids["hello"]})

    async def up() -> bool:
        try:
            await drive(hello_url, 1, 1, None, "/")
            return True
        except aiohttp.ClientError:
            return False

    await eventually(up, timeout=30, message="hello world up")
    await drive(endpoint, 500, args.connections, signer, path)  # warm-up
    await drive(hello_url, 500, args.connections, None, "/")
    ours, baseline, latencies = [], [], []
    for _ in range(args.rounds):
        started = ours_cpu.start()
        rate, lat = await drive(endpoint, args.requests, args.connections, signer, path)
        ours_cpu.stop(started)
        ours.append(rate)
        latencies += lat
        started = hello_cpu.start()
        baseline.append((await drive(hello_url, args.requests, args.connections, None, "/"))[0])
        hello_cpu.stop(started)
    latencies.sort()
    served = args.requests * args.rounds
    return {
        "ours_rps": statistics.median(ours),
        "hello_rps": statistics.median(baseline),
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        **{f"cpu_ms_per_request.{k}": v / served for k, v in ours_cpu.used.items()},
        **{f"cpu_ms_per_request.{k}": v / served for k, v in hello_cpu.used.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    configure_logging("ERROR", json=False)
    port = free_port()
    hello = subprocess.Popen([sys.executable, "-c", HELLO, str(port)])
    try:
        with local_ray(), temporary_redis() as server, tempfile.TemporaryDirectory() as tmp:
            pids = {"redis": server.pid, "hello": hello.pid}
            figures = asyncio.run(
                measure(
                    server.url, Path(tmp) / "master.key", f"http://127.0.0.1:{port}", args, pids
                )
            )
            redis_version = redis_version_at(server.url)
    finally:
        hello.terminate()
        hello.wait(10)
    ratio = figures["ours_rps"] / figures["hello_rps"]
    print(
        json.dumps(
            {
                "bench": "gateway",
                "requests": args.requests,
                "rounds": args.rounds,
                "connections": args.connections,
                **{k: round(v, 2) for k, v in figures.items() if "." not in k},
                "cpu_ms_per_request": {
                    k.partition(".")[2]: round(v, 3) for k, v in figures.items() if "." in k
                },
                "ratio": round(ratio, 3),
                "targets_met": ratio >= TARGET_RATIO and figures["p99_ms"] <= TARGET_P99_MS,
                "machine": machine(redis_version),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
