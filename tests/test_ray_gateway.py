"""The gateway actor on Ray: killed, it comes back on the same port (a free port it took
at first is remembered), still checking signatures against the tenancy read model."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actors.hosts import Installation, start_actors
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.bootstrap import bootstrap
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.signing import parse_date, sign, string_to_sign
from kernelhub.testing import eventually
from projections.tenancy_queries import TenancyLookups

pytestmark = [pytest.mark.ray, pytest.mark.redis]


@pytest.fixture
def stack(
    ray_local: None, redis_server: EmbeddedRedis, store: RedisEventStore, tmp_path: Path
) -> Iterator[Installation]:
    installation = start_actors(
        redis_server.url,
        namespace=f"t-{uuid.uuid4().hex[:8]}",
        backend="sim",
        shards=1,
        master_key_path=str(tmp_path / "master.key"),
        gateway_port=0,
    )
    try:
        yield installation
    finally:
        installation.kill()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def signed_headers(endpoint: str, path: str, access_key: str, secret_key: str) -> dict[str, str]:
    host, date = endpoint.removeprefix("http://"), datetime.now(UTC).isoformat()
    text = string_to_sign("GET", path, date, host, "application/octet-stream", "v7.20230615")
    signature = sign(secret_key, parse_date(date), host, text)
    return {
        "Date": date,
        "X-BackendAI-Version": "v7.20230615",
        "Authorization": f"BackendAI signMethod=HMAC-SHA256, credential={access_key}:{signature}",
    }


async def keypair(store: RedisEventStore, master_key: Path) -> tuple[str, str]:
    """The admin keypair ``kh up`` would make, once the read model has it."""
    keys = await bootstrap(store, SecretBox.from_file(master_key))
    access_key, secret_key = keys.access_key, keys.secret_key
    lookups = TenancyLookups(store)
    await eventually(lambda: lookups.keypair(access_key), timeout=20, message="projected")
    return access_key, secret_key


async def test_a_killed_gateway_comes_back_on_the_same_port(
    stack: Installation, store: RedisEventStore, tmp_path: Path
) -> None:
    import ray

    endpoint = stack.gateway_endpoint()
    assert endpoint is not None and endpoint.startswith("http://127.0.0.1:")
    probe = await asyncio.to_thread(get, endpoint + "/")
    assert probe == (200, {"version": "v7.20230615", "manager": "23.03.12"})
    access_key, secret_key = await keypair(store, tmp_path / "master.key")
    path = "/manager/announcement"

    async def announcement(secret: str) -> tuple[int, dict[str, object]]:
        headers = signed_headers(endpoint, path, access_key, secret)
        return await asyncio.to_thread(get, endpoint + path, headers)

    assert (await announcement(secret_key))[0] == 200
    killed = await stack.gateway.process_id.remote()
    ray.kill(stack.gateway, no_restart=False)

    async def restarted() -> bool:  # the old process may answer a moment before it dies
        try:
            return bool(await stack.gateway.process_id.remote() != killed)
        except ray.exceptions.RayActorError:  # restarting
            return False

    await eventually(restarted, timeout=60, interval=0.2, message="a new gateway process")

    async def answers() -> bool:
        try:
            return (await asyncio.to_thread(get, endpoint + "/"))[0] == 200
        except OSError:  # restarting: nothing listens yet
            return False

    await eventually(answers, timeout=60, interval=0.2, message="the gateway back")
    assert stack.gateway_endpoint() == endpoint
    status, body = await announcement("wrong")
    assert (status, body["title"]) == (401, "Credential/signature mismatch.")
    assert (await announcement(secret_key))[0] == 200
