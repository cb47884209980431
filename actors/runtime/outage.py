"""Waiting out a log that cannot be reached, in every loop of every actor, the same way.

While Redis is down, restarting, loading its AOF or stopped, every command fails
(:func:`events.server.log_unreachable` says which failures mean that). A loop that let such
an error escape would be gone for good (a task that raises is only logged), and one that
logged each failure with its traceback would print one per tick per agent. So each loop
keeps an :class:`Outages`: it says once that the log is away (a warning, no traceback) and
once that it is back (with how long it was away), backs off meanwhile, and reports any other
failure with its traceback as before. :func:`until_reachable` runs one step until it gets
through (an actor's boot, recording a follower's position).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from events.server import log_unreachable

__all__ = ["Backoff", "Outages", "until_reachable"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

FIRST_DELAY_S = 0.05
MOST_DELAY_S = 2.0
"""Between two tries while the log is away: short at first (a blip, a restart that took a
moment), never more than this (recovery is noticed within it)."""


class Backoff:
    """Doubling delays from ``first`` up to ``most``, back to ``first`` after a success."""

    def __init__(self, first: float = FIRST_DELAY_S, most: float = MOST_DELAY_S) -> None:
        if not 0 < first <= most:
            raise ValueError(f"backoff needs 0 < first <= most, got {first} and {most}")
        self.first = first
        self.most = most
        self._next = first

    def next(self) -> float:
        """The delay before the next try (each call doubles the one after, up to ``most``)."""
        delay = self._next
        self._next = min(delay * 2, self.most)
        return delay

    def reset(self) -> None:
        self._next = self.first


class Outages:
    """One loop's account of its failures (see the module docstring)."""

    def __init__(self, what: str, backoff: Backoff | None = None, **fields: Any) -> None:
        self.what = what
        self.fields = fields
        self.backoff = backoff or Backoff()
        self.down_since: float | None = None
        """When the current outage began (monotonic), ``None`` while the log answers."""

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, error: BaseException) -> float:
        """Report one failure; the seconds to wait before the next try (0 for a failure
        that is not an outage: the loop goes on at its own pace, as before)."""
        if not log_unreachable(error):
            log.error(
                f"{self.what} failed",
                error=f"{type(error).__name__}: {error}"[:500],
                exc_info=error,
                **self.fields,
            )
            return 0.0
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning(
                f"{self.what}: the log is unreachable; waiting for it",
                error=f"{type(error).__name__}: {error}"[:300],
                **self.fields,
            )
        return self.backoff.next()

    def succeeded(self) -> None:
        """The log answered: say so once if it had been away."""
        if self.down_since is not None:
            log.info(
                f"{self.what}: the log is reachable again",
                down_s=round(time.monotonic() - self.down_since, 2),
                **self.fields,
            )
            self.down_since = None
        self.backoff.reset()


async def until_reachable(
    what: str, attempt: Callable[[], Awaitable[T]], outages: Outages | None = None
) -> T:
    """``attempt()`` again and again while it fails because the log is away; its result once
    it gets through. Any other failure is raised at once (a bug is not waited out)."""
    account = outages or Outages(what)
    while True:
        try:
            result = await attempt()
        except Exception as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py may turn a cancelled read into a connection error: waiting it
                # out would swallow the cancellation
                raise asyncio.CancelledError from exc
            if not log_unreachable(exc):
                raise
            await asyncio.sleep(account.failed(exc))
            continue
        account.succeeded()
        return result
