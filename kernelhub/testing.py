"""Helpers for testing code that uses kernelhub (and for kernelhub's own suite).

Everything here runs the real thing: a real ``redis-server`` in a temporary directory, real
appends. Nothing is faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from events import Durability, Event

from .redis_server import EmbeddedRedis

__all__ = [
    "BASE_IMAGE",
    "assert_event_types",
    "docker_missing",
    "docker_required",
    "eventually",
    "kill_processes_mentioning",
    "temporary_redis",
]

BASE_IMAGE = "kernelhub/python:3.11"

T = TypeVar("T")


@contextmanager
def temporary_redis(
    durability: Durability = Durability.EVERYSEC,
    *,
    port: int | None = None,
    binary: str | None = None,
) -> Iterator[EmbeddedRedis]:
    """A fresh ``redis-server`` in a short-lived temp dir (short path: unix socket limits),
    killed on the way out, even when its start was cut short (a timeout mid-start would
    otherwise leave a server nobody stops)."""
    with tempfile.TemporaryDirectory(prefix="kh-") as data_dir:
        server = EmbeddedRedis(data_dir, port=port, durability=durability, binary=binary)
        try:
            server.start()
            yield server
        finally:
            server.kill()


def docker_missing(image: str = BASE_IMAGE) -> str | None:
    """Why Docker tests cannot run here (no daemon, or no base image), or None when they can.
    A suite run with ``KH_REQUIRE_DOCKER=1`` must fail on a reason, not skip."""
    try:
        probe = subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no docker: {exc}"
    if probe.returncode != 0:
        detail = probe.stderr.decode(errors="replace").strip().splitlines()
        return f"docker cannot give {image}: {detail[-1] if detail else probe.returncode}"
    return None


def docker_required() -> bool:
    return os.environ.get("KH_REQUIRE_DOCKER") == "1"


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds.

    Tests wait for outcomes with this (or a log subscription), never with bare sleeps.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        result = predicate()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not reached within {timeout}s (last value: {last!r})")
        await asyncio.sleep(interval)


def assert_event_types(events: Sequence[Event], expected: Sequence[str]) -> None:
    """Assert the exact sequence of event types, with a readable diff on failure."""
    actual = [e.type for e in events]
    if actual != list(expected):
        raise AssertionError(
            f"event types differ:\n  expected {list(expected)}\n  actual   {actual}"
        )


def kill_processes_mentioning(root: os.PathLike[str] | str) -> None:
    """SIGKILL every process whose command line or environment names ``root`` (a stack's
    temporary directory, which nothing else names): process kernels outlive ``kh down``."""
    needle = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
