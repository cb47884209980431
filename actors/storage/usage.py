"""How much a folder holds: bytes and files, counted without following a link and within
bounds, so a tenant's tree can neither lead the walk outside the folder nor keep it going.

The walk is breadth first and reopens each directory from the root with
:func:`actors.agents.safe_fs.open_dir` (``openat2`` beneath the root, no symlinks), listing it
whole and closing it before the next: it holds one descriptor at a time however deep the tree.
Sizes are ``lstat``'s (a symlink counts as the link, a hard-linked file once). Past
:data:`MAX_ENTRIES` entries or :data:`MAX_DEPTH` levels it stops and says the figure is
incomplete, which a quota check treats as a refusal rather than a guess.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass

from actors.agents.safe_fs import Refused, closing, open_dir

from ..domain.errors import ObjectNotFound

__all__ = ["MAX_DEPTH", "MAX_ENTRIES", "Usage", "measure"]

MAX_ENTRIES = 200_000
"""Entries one measurement looks at (a few hundred milliseconds of ``lstat``)."""
MAX_DEPTH = 64


@dataclass(frozen=True)
class Usage:
    bytes: int
    files: int
    """Regular files (and links, FIFOs, ... : every name that is not a directory)."""
    dirs: int
    complete: bool
    """False when a bound stopped the walk: the figures are then a lower bound."""


def measure(root_fd: int, *, max_entries: int = MAX_ENTRIES, max_depth: int = MAX_DEPTH) -> Usage:
    """The folder's usage from a descriptor of its root (blocking: run it in a thread)."""
    total = files = dirs = seen = 0
    inodes: set[tuple[int, int]] = set()
    pending: deque[tuple[str, ...]] = deque([()])
    device = os.fstat(root_fd).st_dev
    complete = True
    while pending:
        parts = pending.popleft()
        try:
            fd = open_dir(root_fd, parts, label="/".join(parts) or ".")
        except (Refused, ObjectNotFound):
            continue  # became a link or vanished since it was listed: not ours to count
        with closing(fd), os.scandir(fd) as names:
            for item in names:
                seen += 1
                if seen > max_entries:
                    return Usage(total, files, dirs, False)
                try:
                    info = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    dirs += 1
                    if info.st_dev != device:
                        continue  # a mount point: another filesystem's usage
                    if len(parts) + 1 >= max_depth:
                        complete = False
                        continue
                    pending.append((*parts, item.name))
                    continue
                files += 1
                if info.st_nlink > 1:
                    if (info.st_dev, info.st_ino) in inodes:
                        continue
                    inodes.add((info.st_dev, info.st_ino))
                total += info.st_size
    return Usage(total, files, dirs, complete)
