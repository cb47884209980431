"""Shared fixtures: one real redis-server per test session, a clean keyspace per test."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from events import RedisEventStore
from kernelhub.logging import configure_logging
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import docker_missing, docker_required, temporary_redis

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
configure_logging(os.environ.get("KH_TEST_LOG_LEVEL", "WARNING"), json=False)

settings.register_profile("ci", max_examples=50, deadline=None)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_LAYER_ORDER = [
    "unit",
    "redis",
    "fault",
    "ray",
    "docker",
    "hostile",
    "bench_smoke",
    "e2e",
    "multinode",
    "gpu",
]


SHARED_SERVING_STACK = "serving_stack"
"""The session fixture the serving modules share (one ``kh up`` for all of them)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the fast pure layer first, so a broken domain fails the run in seconds; the
    tests sharing the serving stack run last, together, so that stack (which lives until
    the session ends) never runs beside another module's."""

    def layer(item: pytest.Item) -> tuple[int, int]:
        shared = int(SHARED_SERVING_STACK in getattr(item, "fixturenames", ()))
        for rank, name in enumerate(_LAYER_ORDER):
            if item.get_closest_marker(name):
                return shared, rank
        return shared, len(_LAYER_ORDER)

    items.sort(key=layer)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with temporary_redis() as server:
        yield server


@pytest.fixture
async def store(redis_server: EmbeddedRedis) -> AsyncIterator[RedisEventStore]:
    event_store = RedisEventStore.from_url(redis_server.url)
    await event_store.redis.flushall()
    try:
        yield event_store
    finally:
        await event_store.close()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray for the whole session, bound to loopback (testing.md)."""
    import ray

    ray.init(
        address="local",  # a new instance, whatever ray_current_cluster says
        num_cpus=2,
        object_store_memory=256 * 1024 * 1024,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        namespace="kernelhub-tests",
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def no_kernel_outlives_the_suite() -> Iterator[None]:
    """Kernel runners started by tests live in their own sessions (as kernels do), so an
    actor killed by a test leaves them behind; the suite stops what it started."""
    yield
    import signal

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ours = b"kernel_runner" in cmdline and b"/pytest-of-" in cmdline
        if ours and b"BACKENDAI_KERNEL_ID=" in environ:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture(scope="session")
def serving_stack() -> Iterator[Any]:
    """One ``kh up`` (Docker where it runs) for every serving module: a stack costs 20-40 s
    and the serving tests need the same one (replicas, the proxy, ``KH_SERVING_TIMEOUT_S``
    short so a stuck replica is a 504 in seconds). Each module makes its own tenants and
    endpoints; none changes what the others rely on."""
    from .khstack import kh_up

    with kh_up(KH_SERVING_TIMEOUT_S="5") as stack:
        yield stack


@pytest.fixture(scope="session")
def docker() -> None:
    """Docker tests need a daemon and the base image (``.ci/run`` prepares both): without
    them they skip, or fail where ``KH_REQUIRE_DOCKER=1`` says they must run."""
    reason = docker_missing()
    if reason is not None:
        if docker_required():
            pytest.fail(f"KH_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
