"""A folder's ``max_size`` (bytes, 0 = unlimited) held against what uploads would make it.

An upload is admitted (at ``request-upload`` and again at every PATCH, so a quota lowered
meanwhile applies) only when the folder's measured usage, plus every other unfinished
upload's declared size (or its staged bytes, when this process has not seen its
declaration, e.g. after a restart), plus this upload's whole declared size fit in the quota.
A PATCH never writes past its declared size, so nothing lands beyond the quota either way.
The check and the registration of this upload happen under one lock per folder, so two
uploads racing for the last free bytes cannot both be admitted.

Usage is measured (:mod:`.usage`) at most once per :data:`USAGE_TTL_S` per folder, and
measured anew after an upload lands. What sessions write into a mounted folder is outside
this check (the issue's "hard limit inside sessions" needs filesystem project quotas).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..domain.errors import QuotaExceeded, VFolderOperationFailed
from .usage import Usage

__all__ = ["USAGE_TTL_S", "QuotaBook"]

USAGE_TTL_S = 2.0


class QuotaBook:
    """Usage measurements and declared uploads, per folder, for one gateway process."""

    def __init__(self, measure: Callable[[Path], Awaitable[Usage]]) -> None:
        self._measure = measure
        self._usage: dict[str, tuple[float, Usage]] = {}
        self._declared: dict[str, dict[str, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, folder: str) -> asyncio.Lock:
        return self._locks.setdefault(folder, asyncio.Lock())

    async def usage(self, folder: str, path: Path) -> Usage:
        cached = self._usage.get(folder)
        if cached is not None and time.monotonic() - cached[0] <= USAGE_TTL_S:
            return cached[1]
        usage = await self._measure(path)
        self._usage[folder] = (time.monotonic(), usage)
        return usage

    def forget_usage(self, folder: str) -> None:
        self._usage.pop(folder, None)

    async def admit(
        self,
        folder: str,
        path: Path,
        max_size: int,
        size: int,
        *,
        others: dict[str, int],
        upload_id: str | None = None,
    ) -> None:
        """Refuse (412 ``quota-exceeded``) an upload of ``size`` bytes that would not fit;
        with ``upload_id``, remember its declaration. Call it under :meth:`lock`."""
        declared = self._declared.setdefault(folder, {})
        for gone in set(declared) - set(others) - {upload_id}:
            del declared[gone]  # finished or swept
        if max_size > 0:
            usage = await self.usage(folder, path)
            if not usage.complete:
                raise VFolderOperationFailed(
                    "the folder holds too many entries to measure its usage against its quota"
                )
            pending = sum(max(staged, declared.get(name, 0)) for name, staged in others.items())
            if usage.bytes + pending + size > max_size:
                raise QuotaExceeded(
                    f"the folder's quota is {max_size} bytes; it holds {usage.bytes}, "
                    f"unfinished uploads {pending}, and this upload needs {size}"
                )
        if upload_id is not None:
            declared[upload_id] = size

    def finished(self, folder: str, upload_id: str) -> None:
        self._declared.get(folder, {}).pop(upload_id, None)
        self.forget_usage(folder)
