"""What ``kh`` tells a person while it works: a spinner with the session's status (and why
it waits), progress bars for transfers, short notes. All of it on stderr and only on a
terminal, so that stdout carries nothing but the result (``kh run ... | wc`` counts the
program's output, not kh's chatter).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from ..sdk.models import SessionInfo

__all__ = ["Feedback", "describe_status", "estimate_text"]


def describe_status(info: SessionInfo, now: datetime | None = None) -> str:
    """``PENDING: you have reached your concurrency limit`` style, for one line; a pending
    session's estimated start follows (``expected to start in ~4m (2m-9m)``)."""
    reason = info.pending_reason or (info.status_info if info.is_waiting else None)
    line = f"{info.name} {info.status}" + (f": {reason}" if reason else "")
    expected = estimate_text(info, now or datetime.now(UTC))
    return f"{line}; {expected}" if expected else line


def estimate_text(info: SessionInfo, now: datetime) -> str | None:
    """When a pending session is expected to start, in words (None: no estimate)."""
    if info.status != "PENDING" or info.estimated_start_at is None:
        return None
    text = f"expected to start in ~{_span(info.estimated_start_at - now)}"
    low, high = info.estimated_start_interval or (None, None)
    if low is not None and high is not None and high > low:
        text += f" ({_span(low - now)}-{_span(high - now)})"
    return text


def _span(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class Feedback:
    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.enabled = self.console.is_terminal and not quiet

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, markup=False)

    @contextmanager
    def status(self, text: str) -> Iterator[Callable[[SessionInfo], None]]:
        """A spinner while the block runs; the yielded function shows a new session state."""
        if not self.enabled:
            yield lambda _info: None
            return
        with self.console.status(text) as spinner:
            yield lambda info: spinner.update(describe_status(info))

    @contextmanager
    def progress(self, description: str) -> Iterator[Callable[[int, int], None] | None]:
        """A transfer's bar; the yielded callback takes (bytes done, bytes in all)."""
        if not self.enabled:
            yield None
            return
        columns = (
            *Progress.get_default_columns()[:2],
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total or None)
