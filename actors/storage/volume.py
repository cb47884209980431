"""The local volume as the gateway uses it: each folder operation of :mod:`.tree` run in a
thread of the volume's own small pool, so a slow disk or a huge directory never blocks the
event loop, and file work can never take every thread of the loop's default executor (which
the rest of the gateway shares).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .quota import QuotaBook
from .staging import Staging
from .tree import Entry, Tree
from .usage import Usage, measure

__all__ = ["THREADS", "Volume"]

THREADS = 8
"""Blocking file calls the volume runs at once (more wait their turn)."""

T = TypeVar("T")


class Volume:
    """The folders under ``root`` (``<root>/<folder hex>``) and the staging area beside them."""

    def __init__(self, root: Path, *, threads: int = THREADS) -> None:
        self.root = root
        self.staging = Staging(root)
        self.quota = QuotaBook(self.measure)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kh-storage")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in the volume's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    async def on_tree(self, path: Path, op: Callable[[Tree], T]) -> T:
        """``op`` on the folder at ``path``, opened for it, in a thread."""

        def work() -> T:
            with Tree.opened(path) as tree:
                return op(tree)

        return await self.run(work)

    async def measure(self, path: Path) -> Usage:
        def work() -> Usage:
            with Tree.opened(path) as tree:
                return measure(tree.fd)

        return await self.run(work)

    async def listing(self, path: Path, parts: Sequence[str]) -> list[Entry]:
        return await self.on_tree(path, lambda t: t.listing(parts))

    async def make_dir(
        self, path: Path, parts: Sequence[str], *, parents: bool, exist_ok: bool
    ) -> None:
        await self.on_tree(path, lambda t: t.make_dir(parts, parents=parents, exist_ok=exist_ok))

    async def delete(
        self, folder: str, path: Path, parts: Sequence[str], *, recursive: bool
    ) -> None:
        try:
            await self.on_tree(path, lambda t: t.delete(parts, recursive=recursive))
        finally:
            self.quota.forget_usage(folder)

    async def rename(self, path: Path, parts: Sequence[str], new_name: str) -> None:
        await self.on_tree(path, lambda t: t.rename(parts, new_name))

    async def move(self, path: Path, src: Sequence[str], dst: Sequence[str]) -> None:
        await self.on_tree(path, lambda t: t.move(src, dst))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
