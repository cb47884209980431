"""What the SDK costs per call: ``session.execute("pass")`` through ``kernelhub.Client`` (the
sync client: a call handed to its event-loop thread, signed, sent, the result parsed into a
model) and through ``AsyncClient``, against the same request made with a bare ``httpx.Client``
signed by hand (no models, no thread hop: the cheapest honest client).

Setup (untimed): ``kh up`` in a temporary directory (the process backend, so the kernel is
the same runner with no container in the way), one RUNNING session, a warm-up.

Last line JSON: ``sdk_sync_ms``, ``sdk_async_ms``, ``bare_ms`` (median per execute),
``sync_ratio`` and ``async_ratio`` (bare / ours: 1.0 means the SDK adds nothing).

    .venv/bin/python bench/sdk.py [--calls 300]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import httpx

from bench._baselines import machine
from kernelhub.sdk import AsyncClient, Client, ClientConfig
from kernelhub.sdk._wire import signed_headers

KH = [sys.executable, "-m", "kernelhub.cli"]


def bare_execute(http: httpx.Client, config: ClientConfig, path: str) -> None:
    body = json.dumps({"mode": "query", "code": "pass", "runId": None, "options": {}})
    host = config.endpoint.removeprefix("http://")
    headers = {
        "Content-Type": "application/json",
        **signed_headers(
            "POST", path, host, "application/json", config.access_key, config.secret_key
        ),
    }
    reply = http.post(path, content=body, headers=headers)
    assert reply.json()["result"]["status"] == "finished", reply.text


def timed(call: object, calls: int) -> float:
    assert callable(call)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def async_median(config: ClientConfig, name: str, calls: int) -> float:
    async with AsyncClient(config) as client:
        session = await client.get_session(name)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            await session.execute("pass")
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kh-bench-sdk-") as root:
        env = {
            **os.environ,
            "KH_DATA_DIR": f"{root}/data",
            "KH_CONFIG_DIR": f"{root}/cfg",
            "KH_GATEWAY_PORT": "0",
        }
        env.pop("KH_REDIS_URL", None)
        subprocess.run(
            [*KH, "up", "--backend", "process"],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        try:
            config = ClientConfig.load(env)
            with Client(config) as client:
                session = client.create_session(name="bench-sdk", timeout=120)
                path = f"/session/{session.id}"
                with httpx.Client(base_url=config.endpoint) as http:
                    for _ in range(20):  # warm-up: connections, caches, the kernel
                        session.execute("pass")
                        bare_execute(http, config, path)
                    rounds = []
                    for _ in range(3):  # interleaved, so drift hits all three alike
                        sync_ms = timed(lambda: session.execute("pass"), args.calls)
                        bare_ms = timed(lambda: bare_execute(http, config, path), args.calls)
                        async_ms = asyncio.run(async_median(config, "bench-sdk", args.calls))
                        rounds.append((sync_ms, async_ms, bare_ms))
                session.destroy()
        finally:
            subprocess.run([*KH, "down"], env=env, capture_output=True, timeout=120)
    sync_ms, async_ms, bare_ms = (statistics.median(r[i] for r in rounds) for i in range(3))
    print(f"# {machine()}")
    print(
        f"execute('pass') median: sdk sync {sync_ms:.2f} ms, sdk async {async_ms:.2f} ms, "
        f"bare httpx {bare_ms:.2f} ms"
    )
    print(
        json.dumps(
            {
                "calls": args.calls,
                "sdk_sync_ms": round(sync_ms, 3),
                "sdk_async_ms": round(async_ms, 3),
                "bare_ms": round(bare_ms, 3),
                "sync_ratio": round(bare_ms / sync_ms, 3),
                "async_ratio": round(bare_ms / async_ms, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
