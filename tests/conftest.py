"""Shared fixtures: one real redis-server per test session, a clean keyspace per test."""

from __future__ import annotations

import contextlib
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
    "chaos",
    "multinode",
    "gpu",
]


SHARED_STACKS: dict[str, dict[str, str]] = {
    "process_stack": {"KH_ALLOW_UNISOLATED": "1", "DOCKER_HOST": "tcp://127.0.0.1:9"},
    "shared_stack": {"KH_SERVING_TIMEOUT_S": "5"},
}
"""The ``kh up`` stacks modules share (a stack costs 15-30 s to start): the process backend
(no containers, tenants allowed on it), and the default one (Docker where it runs; with
``KH_SERVING_TIMEOUT_S`` short, so a stuck serving replica is a 504 in seconds). A module
that needs other settings (idle checkers, quotas, callbacks) keeps a ``kh up`` of its own.
Each sharing module makes its own tenants (users, domains, policies, scaling groups) with
names no other sharing module uses, and changes nothing the others rely on; the sessions it
leaves open are destroyed and the superadmin's folders purged when it ends (they count
against one ``max_vfolder_count``)."""

SERVING = "serving_stack"
"""The serving modules' name for the shared stack: they run last, and their endpoints'
replicas are left alone between them (the reconciler would only start them again)."""


def _shared_rank(item: pytest.Item) -> int:
    """0: no shared stack; then each shared stack's users together, the serving ones last."""
    names = getattr(item, "fixturenames", ())
    if SERVING in names:
        return len(SHARED_STACKS) + 1
    for rank, name in enumerate(SHARED_STACKS, start=1):
        if name in names:
            return rank
    return 0


def _layer(item: pytest.Item) -> int:
    for rank, name in enumerate(_LAYER_ORDER):
        if item.get_closest_marker(name):
            return rank
    return len(_LAYER_ORDER)


_LAST_USER = pytest.StashKey[dict[str, str]]()


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Run the fast pure layer first, so a broken domain fails the run in seconds; the
    tests sharing a stack run after the rest, each stack's users together and one module
    after another, so a shared stack is up once and never runs beside another module's
    ``kh up``; the last of its users stops it. A module's tests past the pure layer run
    together, at the layer of the lowest of them: split by layer, a module's own ``kh up``
    (module-scoped) was started again for each part (up to five times)."""
    modules: dict[Any, int] = {}
    layers: dict[Any, int] = {}
    for item in items:
        module = getattr(item, "module", None)
        modules.setdefault(module, len(modules))
        if not _shared_rank(item) and (layer := _layer(item)) > 0:
            layers[module] = min(layers.get(module, len(_LAYER_ORDER)), layer)

    def order(item: pytest.Item) -> tuple[int, int, int]:
        module = getattr(item, "module", None)
        shared = _shared_rank(item)
        if shared:
            return shared, modules[module], 0
        layer = _layer(item)
        return 0, layer if layer == 0 else layers[module], modules[module]

    items.sort(key=order)
    last: dict[str, str] = {}
    for item in items:
        for name in SHARED_STACKS:
            if name in getattr(item, "fixturenames", ()):
                last[name] = item.nodeid
    config.stash[_LAST_USER] = last


class _SharedStacks:
    """The shared stacks, started on first use and stopped after their last user."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[contextlib.ExitStack, Any]] = {}

    def get(self, name: str) -> Any:
        if name not in self._open:
            from .khstack import kh_up

            exits = contextlib.ExitStack()
            stack = exits.enter_context(kh_up(**SHARED_STACKS[name]))
            self._open[name] = (exits, stack)
        return self._open[name][1]

    def running(self, name: str) -> Any | None:
        opened = self._open.get(name)
        return opened[1] if opened else None

    def close(self, name: str) -> None:
        opened = self._open.pop(name, None)
        if opened is not None:
            opened[0].close()


_SHARED = _SharedStacks()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a module that shared a stack (its own fixtures torn down by now): the sessions
    it left open are destroyed, the superadmin's folders purged; after a stack's last user,
    the stack is stopped."""
    yield
    names = getattr(item, "fixturenames", ())
    leaving = nextitem is None or getattr(nextitem, "module", None) is not item.module
    last = item.config.stash.get(_LAST_USER, {})
    for name in SHARED_STACKS:
        if name not in names:
            continue
        if last.get(name) == item.nodeid:
            _SHARED.close(name)
        elif leaving and SERVING not in names and (stack := _SHARED.running(name)):
            from .khstack import hand_over

            hand_over(stack)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with temporary_redis() as server:
        yield server


@pytest.fixture(scope="module")
def own_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of the module's own: for a module whose tests share one installation, so its
    log is not flushed between them (``store`` flushes the shared server per test). A module
    may define its own (test_redis_outage kills it)."""
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
def shared_stack() -> Iterator[Any]:
    """The default ``kh up`` (Docker where it runs), shared (see ``SHARED_STACKS``)."""
    try:
        yield _SHARED.get("shared_stack")
    finally:
        _SHARED.close("shared_stack")


@pytest.fixture(scope="session")
def process_stack() -> Iterator[Any]:
    """``kh up`` on the process backend (no containers), shared (see ``SHARED_STACKS``)."""
    try:
        yield _SHARED.get("process_stack")
    finally:
        _SHARED.close("process_stack")


@pytest.fixture(scope="session")
def serving_stack(shared_stack: Any) -> Any:
    """The shared stack, as the serving modules know it (they need replicas, the proxy, and
    ``KH_SERVING_TIMEOUT_S`` short); each makes its own tenants and endpoints."""
    return shared_stack


@pytest.fixture(scope="session")
def docker() -> None:
    """Docker tests need a daemon and the base image (``.ci/run`` prepares both): without
    them they skip, or fail where ``KH_REQUIRE_DOCKER=1`` says they must run."""
    reason = docker_missing()
    if reason is not None:
        if docker_required():
            pytest.fail(f"KH_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
