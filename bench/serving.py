"""Requests through the inference proxy to an endpoint's 2 replicas vs the same requests sent
straight to one replica through its runner's tunnel.

Setup (untimed): ``kh up`` in a temporary directory (Docker: each replica needs its own
loopback), a model folder holding the test model server (``tests/serving_assets.py``), an
endpoint with 2 replicas, private (a token per request, as callers use it), both routes
HEALTHY. The same client drives both sides: ``--connections`` keep-alive HTTP/1.1
connections, each sending ``GET /predict`` and reading the answer before the next.
- proxy: TCP to the gateway, ``/serving/<endpoint id>/predict`` with the token; the gateway
  checks it, picks a HEALTHY route by traffic ratio and forwards through that replica's
  tunnel;
- direct: the replica's tunnel socket itself (found through its agent, as the gateway finds
  it), past the tunnel's ``tcp 8000`` line: the model server with nothing in between.
Rounds interleave the two; medians of the rounds' rates.

Last line JSON: ``proxy_rps``, ``direct_rps``, ``ratio`` (= proxy/direct), ``p99_ms``
(proxy), plus ``machine``. Target: ``ratio >= 0.5``.

    .venv/bin/python bench/serving.py [--requests 4000] [--rounds 3] [--connections 8]
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from actors.agents.kernel_sockets import KernelSocket
from actors.gateway.apps import open_tunnel
from actors.sessions.routing import ShardRouter
from bench._baselines import machine, redis_version_at
from events import RedisEventStore
from events.install import installed_shard_count
from kernelhub import ray_head
from kernelhub.sdk.aio import AsyncClient
from kernelhub.sdk.config import ClientConfig
from kernelhub.sdk.vfolders import AsyncVFolders
from kernelhub.testing import docker_missing
from tests.serving_assets import MODEL_PORT, MODEL_SERVER, model_definition

TARGET_RATIO = 0.5
KH = [sys.executable, "-m", "kernelhub.cli"]

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """One request on a keep-alive connection; the answer's status (its body read whole)."""
    writer.write(request)
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _drive(connect: Connect, request: bytes, total: int, connections: int) -> list[float]:
    """``total`` requests over ``connections`` connections; each request's latency (s)."""
    latencies: list[float] = []
    left = [total]

    async def one() -> None:
        reader, writer = await connect()
        try:
            while left[0] > 0:
                left[0] -= 1
                started = time.perf_counter()
                status = await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"answered {status}")
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return latencies


def _request(path: str, token: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: bench", "Connection: keep-alive"]
    if token:
        lines.append(f"Authorization: BackendAI {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _kh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KH, *args], env=env, capture_output=True, text=True, timeout=600)


async def _endpoint(client: AsyncClient, work: Path) -> tuple[str, str, dict[str, Any]]:
    """A private endpoint of 2 HEALTHY replicas: its id, a token and its info."""
    folders = AsyncVFolders(client)
    await folders.create("bench-model", usage_mode="model")
    (work / "server.py").write_text(MODEL_SERVER)
    (work / "model-definition.yaml").write_text(model_definition(interval=2.0))
    await folders.upload(
        "bench-model", [work / "server.py", work / "model-definition.yaml"], base_dir=work
    )
    created = await client.request(
        "POST",
        "/services",
        json_body={
            "name": "bench",
            "desired_session_count": 2,
            "image": "python",
            "open_to_public": False,
            "config": {"model": "bench-model", "resources": {"cpu": 1, "mem": "512m"}},
        },
    )
    endpoint_id = str(created.json()["endpoint_id"])
    deadline = time.monotonic() + 300
    while True:
        info = (await client.request("GET", f"/services/{endpoint_id}")).json()
        routes = info["active_routes"]
        if len(routes) == 2 and all(r.get("status") == "HEALTHY" for r in routes):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replicas did not become HEALTHY: {info}")
        await asyncio.sleep(0.5)
    token = (
        await client.request("POST", f"/services/{endpoint_id}/token", json_body={"duration": "1h"})
    ).json()["token"]
    return endpoint_id, str(token), info


async def main(requests: int, rounds: int, connections: int) -> dict[str, Any]:
    missing = docker_missing()
    if missing is not None:
        raise SystemExit(f"bench/serving.py needs Docker (a loopback per replica): {missing}")
    with tempfile.TemporaryDirectory(prefix="kh-bench-serving-") as tmp:
        root = Path(tmp)
        env = {
            **os.environ,
            "KH_DATA_DIR": str(root / "data"),
            "KH_CONFIG_DIR": str(root / "cfg"),
            "KH_GATEWAY_PORT": "0",
            "KH_STOP_GRACE_S": "1",
        }
        env.pop("KH_REDIS_URL", None)
        up = _kh(env, "up")
        if up.returncode:
            raise SystemExit(f"kh up failed: {up.stderr[-2000:]}")
        try:
            exports = dict(
                line.removeprefix("export ").split("=", 1)
                for line in up.stdout.splitlines()
                if line.startswith("export ")
            )
            state = json.loads((root / "data" / "embedded.json").read_text())
            config = ClientConfig(
                endpoint=exports["BACKEND_ENDPOINT"],
                access_key=exports["BACKEND_ACCESS_KEY"],
                secret_key=exports["BACKEND_SECRET_KEY"],
            )
            work = root / "work"
            work.mkdir()
            async with AsyncClient(config) as client:
                endpoint_id, token, info = await _endpoint(client, work)
            ray_head.connect(state["ray_address"])
            store = RedisEventStore.from_url(state["redis_url"])
            shards = installed_shard_count(state["redis_url"], "kh") or 1
            router = ShardRouter.named(store, shards, "kernelhub")
            session_id = uuid.UUID(info["active_routes"][0]["session_id"])
            target = KernelSocket.from_wire(await router.execution.call(session_id, "app_tunnel"))
            host, port = config.endpoint.removeprefix("http://").split(":")

            async def via_proxy() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await asyncio.open_connection(host, int(port))

            async def direct() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await open_tunnel(target, f"tcp {MODEL_PORT}", "the bench's replica")

            proxied_request = _request(f"/serving/{endpoint_id}/predict", token)
            direct_request = _request("/predict", None)
            await _drive(via_proxy, proxied_request, 200, connections)  # warm both paths
            await _drive(direct, direct_request, 200, connections)
            proxy_rates, direct_rates, proxy_latencies = [], [], []
            for _ in range(rounds):
                started = time.perf_counter()
                latencies = await _drive(via_proxy, proxied_request, requests, connections)
                proxy_rates.append(requests / (time.perf_counter() - started))
                proxy_latencies += latencies
                started = time.perf_counter()
                await _drive(direct, direct_request, requests, connections)
                direct_rates.append(requests / (time.perf_counter() - started))
            redis_version = redis_version_at(state["redis_url"])
            await store.close()
        finally:
            _kh(env, "down")
    proxy_rps, direct_rps = statistics.median(proxy_rates), statistics.median(direct_rates)
    proxy_latencies.sort()
    return {
        "requests": requests,
        "rounds": rounds,
        "connections": connections,
        "proxy_rps": round(proxy_rps, 1),
        "direct_rps": round(direct_rps, 1),
        "ratio": round(proxy_rps / direct_rps, 3),
        "p99_ms": round(proxy_latencies[int(len(proxy_latencies) * 0.99) - 1] * 1000, 2),
        "target_ratio": TARGET_RATIO,
        "machine": machine(redis_version),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.requests, options.rounds, options.connections))))
