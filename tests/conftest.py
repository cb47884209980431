"""Shared fixtures: one real redis-server per test session, a clean keyspace per test."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import settings

from events import RedisEventStore
from kernelhub.logging import configure_logging
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import docker_missing, docker_required, temporary_redis

from . import leftovers

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
def no_kernel_outlives_the_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Kernel runners started by tests live in their own sessions (as kernels do), so an
    actor killed by a test leaves them behind; the suite stops what it started (this run's
    only: the ones under its own base temp dir, not another pytest's on the machine)."""
    base = os.path.join(str(tmp_path_factory.getbasetemp()), "")
    yield
    kernels = [
        left
        for left in leftovers.processes(leftovers.run_mark(), [base])
        if "kernel_runner" in left.what
    ]
    leftovers.kill(kernels)


_LEFT_KEY = pytest.StashKey[list[leftovers.Leftover]]()
_MARKED_OUTSIDE = leftovers.MARK in os.environ
"""``.ci/run`` marked the run and checks again after it; a run of our own cleans its list."""


def _run_dirs(session: pytest.Session) -> list[str]:
    """The directories whose mention makes a process the run's: pytest's base temp dir and
    each ``kh up``'s root (khstack tracks them)."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        leftovers.track(factory.getbasetemp())
    return leftovers.roots()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Mark the run's environment (every process the suite starts inherits it) and note what
    already carries the mark, so the check at the end names only what the suite started."""
    mark = leftovers.run_mark()
    session.stash[_LEFT_KEY] = leftovers.leftovers(mark, _run_dirs(session), group=os.getpgid(0))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite leaves nothing behind: after every fixture's teardown (this runs after
    pytest's own, which tears down what ``-x`` or an interrupt left set up), anything of
    kernelhub's the run started and that still runs fails the run, named, and is killed."""
    mark = leftovers.run_mark()
    before = session.stash.get(_LEFT_KEY, [])
    found = leftovers.leftovers(mark, _run_dirs(session), before, group=os.getpgid(0))
    if not _MARKED_OUTSIDE:
        leftovers.forget(mark)
    if not found:
        return
    lines = "\n".join(f"  {left}" for left in found)
    message = (
        f"\nkernelhub: the test run left {len(found)} thing(s) running (killed now); "
        f"the fixture that started each must stop it, even when its test fails:\n{lines}\n"
    )
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message, red=True, bold=True)
    else:
        sys.stderr.write(message)
    leftovers.kill(found)
    if exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
