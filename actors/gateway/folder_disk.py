"""A folder's directory on the ``local:default`` host: made at create, removed at purge,
copied at clone. Blocking: the routes run these in the storage volume's threads.

The volume root is the operator's (``$KH_VFOLDER_ROOT``, else ``vfolders/`` beside the master
key); each folder is ``<root>/<folder id hex>``, a name no tenant chooses. What is *inside* a
folder is the tenants' (sessions mount it read-write), so the purge and the clone work from
descriptors and never follow a link a tenant left there: the purge removes a link, never what
it names (:meth:`actors.storage.tree.Tree.delete`), and the clone copies a symlink as a symlink
(its target text, never resolved on the host: only a kernel resolves it, inside its own
container) and skips FIFOs, sockets and devices, whose "content" is not data (documented in
docs/vfolders.md). Every walk is bounded (entries, depth).

A new folder's directory belongs to the kernels' ``work`` user (:data:`WORK_UID`, the Docker
backend's) when the gateway runs as root, so sessions can write in it; otherwise it is the
gateway's user's, which is the process backend's user too.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from actors.agents.safe_fs import (
    OverLimit,
    closing,
    open_dir,
    open_regular,
    open_root,
    refusal,
)

from ..domain.errors import VFolderOperationFailed

__all__ = [
    "GRAVEYARD",
    "MAX_CLONE_BYTES",
    "MAX_CLONE_DEPTH",
    "MAX_CLONE_ENTRIES",
    "MAX_SWEEP_ENTRIES",
    "WORK_UID",
    "CloneReport",
    "bury",
    "clone_budget",
    "clone_tree",
    "make_folder_dir",
    "remove_folder_dir",
    "sweep_graveyard",
]

WORK_UID = 1000
"""The kernels' ``work`` user (``actors.agents.backends.docker.WORK_UID``; a test keeps the
two equal: the gateway does not import the Docker backend)."""
MAX_CLONE_ENTRIES = 200_000
"""Names one clone copies at most (the usage walk's bound): past it the clone stops, says so,
and the partial copy is removed."""
MAX_CLONE_DEPTH = 64
MAX_CLONE_BYTES = 2**63 - 1
"""No bound of its own by default: the caller passes what the source measured (and the new
folder's quota)."""
VOLUME_RESERVE = 0.05
"""The share of the volume a clone leaves free."""
VOLUME_RESERVE_MIN = 1 << 30
"""And at least this many bytes."""
MAX_SWEEP_ENTRIES = 1_000_000
"""Names one purge removes before it answers (the rest waits in the graveyard for the next)."""
GRAVEYARD = ".kh-graveyard"
"""Beside the folders (named by 32 hex digits, so never this): purged trees on their way out,
reachable by no request, no agent and no session."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


def _volume_root_fd(root: Path) -> int:
    """The volume root, made when missing (``0755``: the agents refuse a root others may
    write, since a folder's name there could then be swapped for a link)."""
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if os.fstat(fd).st_mode & 0o022:
        os.close(fd)
        raise VFolderOperationFailed(
            f"the volume root {root} may be written by others than its owner; fix its mode"
        )
    return fd


def make_folder_dir(root: Path, folder_hex: str) -> None:
    """``<root>/<folder_hex>``, empty, owned by the kernels' user when we may give it away.
    An existing directory there (a retried create) is kept; anything else is refused."""
    with closing(_volume_root_fd(root)) as root_fd:
        try:
            os.mkdir(folder_hex, 0o755, dir_fd=root_fd)
        except FileExistsError:
            pass
        try:
            fd = os.open(folder_hex, _DIR_FLAGS, dir_fd=root_fd)
        except OSError as exc:
            raise VFolderOperationFailed(
                f"the folder's directory cannot be made: {exc.strerror}"
            ) from None
        with closing(fd):
            if os.geteuid() == 0:
                os.fchown(fd, WORK_UID, WORK_UID)


def remove_folder_dir(root: Path, folder_hex: str, *, budget: int = MAX_SWEEP_ENTRIES) -> bool:
    """Removes ``<root>/<folder_hex>`` and everything in it, never following a link: the
    directory is first renamed into the graveyard (one atomic ``renameat``: from then on no
    request and no agent finds it by its id), then the graveyard is swept. False when there
    was nothing to remove. A tree too large for one sweep's ``budget`` stays in the graveyard,
    out of every folder's reach, and the next purge's sweep goes on with it."""
    if not root.is_dir():
        return False
    buried = bury(root, folder_hex)
    sweep_graveyard(root, budget=budget)
    return buried


def bury(root: Path, folder_hex: str) -> bool:
    """``<root>/<folder_hex>`` moved to ``<root>/.kh-graveyard/`` under a new name; False
    when it is not there (a retried purge)."""
    with closing(_volume_root_fd(root)) as root_fd:
        try:
            os.mkdir(GRAVEYARD, 0o700, dir_fd=root_fd)
        except FileExistsError:
            pass
        with closing(os.open(GRAVEYARD, _DIR_FLAGS, dir_fd=root_fd)) as grave:
            try:
                os.rename(
                    folder_hex,
                    f"{folder_hex}-{secrets.token_hex(6)}",
                    src_dir_fd=root_fd,
                    dst_dir_fd=grave,
                )
            except FileNotFoundError:
                return False
    return True


def sweep_graveyard(root: Path, *, budget: int = MAX_SWEEP_ENTRIES) -> bool:
    """Removes what the graveyard holds, at most ``budget`` names this time; True when it is
    empty. No depth limit and one descriptor at a time: every directory met is renamed up
    into the graveyard itself before it is emptied, so however deep a tenant nested its tree
    the sweep never descends more than one level (and never follows a link: a link is a
    name to unlink like any other)."""
    grave_path = root / GRAVEYARD
    if not grave_path.is_dir():
        return True
    left = budget
    with closing(os.open(grave_path, _DIR_FLAGS)) as grave:
        while left > 0:
            with os.scandir(grave) as names:
                pending = [item.name for item in names]
            if not pending:
                return True
            for name in pending:
                left = _empty_and_remove(grave, name, left)
                if left <= 0:
                    break
    return False


def _empty_and_remove(grave: int, name: str, left: int) -> int:
    """One graveyard entry gone (its subdirectories moved up into the graveyard, its other
    names unlinked); what is left of the budget."""
    try:
        seen = os.stat(name, dir_fd=grave, follow_symlinks=False)
    except FileNotFoundError:
        return left
    if not stat.S_ISDIR(seen.st_mode):
        os.unlink(name, dir_fd=grave)
        return left - 1
    with closing(os.open(name, _DIR_FLAGS, dir_fd=grave)) as fd:
        while left > 0:
            with os.scandir(fd) as entries:
                inside = [(item.name, item.is_dir(follow_symlinks=False)) for item in entries]
            if not inside:
                break
            for entry, is_dir in inside:
                left -= 1
                try:
                    if is_dir:
                        os.rename(
                            entry, f"d-{secrets.token_hex(8)}", src_dir_fd=fd, dst_dir_fd=grave
                        )
                    else:
                        os.unlink(entry, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except IsADirectoryError:  # became one meanwhile: the next pass moves it
                    pass
                if left <= 0:
                    return 0
    try:
        os.rmdir(name, dir_fd=grave)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.ENOENT):
            raise
    return left - 1


def clone_budget(root: Path, measured: int, max_size: int) -> int:
    """The bytes a clone may write: what the source measured just before (a file grown
    meanwhile does not grow the copy), within the new folder's quota (0: none) and what the
    volume can spare (its free space less :data:`VOLUME_RESERVE`, so a clone never fills
    the disk the log and the other folders share)."""
    info = os.statvfs(root)
    spare = max(
        0,
        info.f_bavail * info.f_frsize
        - max(VOLUME_RESERVE_MIN, int(info.f_blocks * info.f_frsize * VOLUME_RESERVE)),
    )
    bounds = [measured, spare] + ([max_size] if max_size else [])
    return min(bounds)


@dataclass
class CloneReport:
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    skipped: int = 0
    """FIFOs, sockets, devices: not data, not copied."""


def clone_tree(
    root: Path, source_hex: str, target_hex: str, *, budget: int = MAX_CLONE_BYTES
) -> CloneReport:
    """Copies folder ``source_hex``'s tree into the (new, empty) folder ``target_hex``.
    Bounded by :data:`MAX_CLONE_ENTRIES`, :data:`MAX_CLONE_DEPTH` and ``budget`` bytes of data
    written (:func:`clone_budget`): an :class:`~actors.agents.safe_fs.OverLimit` past any of
    them, and the caller removes the target. Holes are not written: a sparse file stays
    sparse (only its data extents are copied, ``SEEK_DATA``/``SEEK_HOLE``), so a session's
    free ``truncate -s 100T`` costs the clone nothing, and a file grown while it is copied
    runs into the budget rather than into the host's disk (review F1)."""
    report = CloneReport()
    with closing(open_root(root / source_hex)) as src, closing(open_root(root / target_hex)) as dst:
        owner_uid = os.fstat(src).st_uid
        give = os.fstat(dst) if os.geteuid() == 0 else None
        _copy_dir(src, dst, (), report, _Copy(owner_uid, give, budget))
    return report


@dataclass
class _Copy:
    owner_uid: int
    give: os.stat_result | None
    budget: int
    """Bytes of data the copy may still write."""


def _copy_dir(
    src_root: int, dst_root: int, parts: tuple[str, ...], report: CloneReport, copy: _Copy
) -> None:
    if len(parts) >= MAX_CLONE_DEPTH:
        raise OverLimit(f"the folder is deeper than {MAX_CLONE_DEPTH} levels, the most cloned")
    label = "/".join(parts) or "."
    with (
        closing(open_dir(src_root, parts, label=label)) as src,
        closing(open_dir(dst_root, parts, label=label)) as dst,
        os.scandir(src) as names,
    ):
        entries = list(names)
        for item in entries:
            if report.files + report.dirs + report.links + report.skipped >= MAX_CLONE_ENTRIES:
                raise OverLimit(f"the folder holds more than {MAX_CLONE_ENTRIES} entries")
            name = item.name
            try:
                info = os.stat(name, dir_fd=src, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(name, 0o755, dir_fd=dst)
                _give(dst, name, copy.give)
                report.dirs += 1
                _copy_dir(src_root, dst_root, (*parts, name), report, copy)
            elif stat.S_ISLNK(info.st_mode):
                target = os.readlink(name, dir_fd=src)
                os.symlink(target, name, dir_fd=dst)
                if copy.give is not None:
                    os.chown(
                        name, copy.give.st_uid, copy.give.st_gid, dir_fd=dst, follow_symlinks=False
                    )
                report.links += 1
            elif stat.S_ISREG(info.st_mode):
                report.bytes += _copy_file(src, dst, name, f"{label}/{name}", copy)
                report.files += 1
            else:
                report.skipped += 1


def _copy_file(src: int, dst: int, name: str, label: str, copy: _Copy) -> int:
    """The file's data extents copied (``SEEK_DATA``/``SEEK_HOLE``), its size set with
    ``ftruncate`` (so a hole costs nothing), each byte counted against the budget."""
    fd, info = open_regular(src, name, label=label, owner_uid=copy.owner_uid)
    copied = 0
    with closing(fd):
        try:
            out = os.open(name, _NEW_FILE, info.st_mode & 0o777, dir_fd=dst)
        except OSError as exc:
            raise refusal(exc, label) from exc
        with closing(out):
            if copy.give is not None:
                os.fchown(out, copy.give.st_uid, copy.give.st_gid)
            size = info.st_size
            for start, end in _extents(fd, size):
                at = start
                while at < end:
                    want = min(_CHUNK, end - at)
                    if want > copy.budget:
                        raise OverLimit(
                            f"{label}: the clone would write more than its budget "
                            "(what the source held, within the new folder's quota and "
                            "what the volume can spare)"
                        )
                    chunk = os.pread(fd, want, at)
                    if not chunk:
                        break  # the file shrank meanwhile
                    view = memoryview(chunk)
                    offset = at
                    while view:
                        written = os.pwrite(out, view, offset)
                        view, offset = view[written:], offset + written
                    at += len(chunk)
                    copied += len(chunk)
                    copy.budget -= len(chunk)
            os.ftruncate(out, size)
    return copied


def _extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The (start, end) of each data extent of the file up to ``size`` (the whole file
    where the filesystem cannot tell holes)."""
    at = 0
    while at < size:
        try:
            start = os.lseek(fd, at, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # only a hole from here
            if exc.errno == errno.EINVAL:
                yield at, size
                return
            raise
        if start >= size:
            return
        try:
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError:
            end = size
        yield start, end
        at = end


def _give(dir_fd: int, name: str, give: os.stat_result | None) -> None:
    if give is None:
        return
    with closing(os.open(name, _DIR_FLAGS, dir_fd=dir_fd)) as fd:
        os.fchown(fd, give.st_uid, give.st_gid)
