"""Helpers for testing code that uses kernelhub (and for kernelhub's own suite).

Everything here runs the real thing: a real ``redis-server`` in a temporary directory, real
appends. Nothing is faked.
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from events import Durability, Event

from .redis_server import EmbeddedRedis

__all__ = ["assert_event_types", "eventually", "temporary_redis"]

T = TypeVar("T")


@contextmanager
def temporary_redis(
    durability: Durability = Durability.EVERYSEC,
    *,
    port: int | None = None,
    binary: str | None = None,
) -> Iterator[EmbeddedRedis]:
    """A fresh ``redis-server`` in a short-lived temp dir (short path: unix socket limits)."""
    with tempfile.TemporaryDirectory(prefix="kh-") as data_dir:
        server = EmbeddedRedis(data_dir, port=port, durability=durability, binary=binary)
        server.start()
        try:
            yield server
        finally:
            server.kill()


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
