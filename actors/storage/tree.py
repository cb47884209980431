"""One folder's tree, worked on from a descriptor of its root, never following a link.

Sessions mount the folder, so its tenants can make any name a symlink, a FIFO or a
directory at any moment. Every operation here opens the parent directory with
:func:`actors.agents.safe_fs.open_dir` (``openat2`` with ``RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS``, or a walk of ``O_NOFOLLOW`` opens), then acts on one name in it with
the ``*at`` system calls: ``unlinkat``, ``renameat``, ``mkdirat``. A symlink met as the last
name is acted on as a link (deleted, moved, listed as ``SYMLINK``), never through. Directories
are opened ``O_NONBLOCK | O_NOFOLLOW | O_DIRECTORY``, so a FIFO swapped in for one fails the
open instead of hanging a thread. Every loop is bounded (entries listed, entries deleted,
depth), and what is made is given to the folder root's owner when the gateway runs as root,
so a session's user can still write it.

These functions block: :mod:`.volume` runs them in a thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from actors.agents.safe_fs import (
    OverLimit,
    Owner,
    Refused,
    closing,
    describe,
    open_dir,
    open_regular,
    open_root,
    owner_of,
    refusal,
    replace_file,
)

from ..domain.errors import ObjectNotFound, VFolderOperationFailed

__all__ = [
    "MAX_DELETE_DEPTH",
    "MAX_DELETE_ENTRIES",
    "MAX_LIST_ENTRIES",
    "Entry",
    "Tree",
    "label_of",
]

MAX_LIST_ENTRIES = 20_000
"""Entries one listing returns; a larger directory is refused, naming the cap (its JSON
would be megabytes, and the client prints it as one table anyway)."""
MAX_DELETE_ENTRIES = 1_000_000
"""Entries one recursive delete removes before it stops and says so."""
MAX_DELETE_DEPTH = 128
"""Directory levels a recursive delete descends (one descriptor held per level)."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_KINDS = {stat.S_IFDIR: "DIRECTORY", stat.S_IFLNK: "SYMLINK"}


@dataclass(frozen=True)
class Entry:
    """One name in a listed directory, as ``lstat`` sees it (a symlink is not followed)."""

    name: str
    kind: str
    """``FILE``, ``DIRECTORY`` or ``SYMLINK`` (the storage proxy's types; FIFOs, sockets and
    devices are ``FILE``, their ``mode`` says which)."""
    size: int
    mode: int
    mtime: float
    ctime: float


def label_of(parts: Sequence[str]) -> str:
    """How messages name a path in the folder."""
    return "/".join(parts) or "."


class Tree:
    """A folder's root directory, opened once for the operations of one request."""

    def __init__(self, root_fd: int) -> None:
        self.fd = root_fd
        self.owner: Owner | None = owner_of(root_fd)
        self.uid = os.fstat(root_fd).st_uid

    @classmethod
    @contextmanager
    def opened(cls, path: Path) -> Iterator[Tree]:
        """The folder at ``path`` (the host's path, which no tenant chooses)."""
        try:
            fd = open_root(path)
        except (Refused, ObjectNotFound):
            raise VFolderOperationFailed("the folder's directory is missing on its host") from None
        with closing(fd):
            yield cls(fd)

    def _parent(self, parts: Sequence[str], *, create: bool = False) -> int:
        return open_dir(self.fd, parts[:-1], label=label_of(parts), create=create, owner=self.owner)

    def listing(self, parts: Sequence[str], *, limit: int = MAX_LIST_ENTRIES) -> list[Entry]:
        """The directory ``parts``' entries, each ``lstat``-ed (none followed)."""
        label = label_of(parts)
        found: list[Entry] = []
        with closing(open_dir(self.fd, parts, label=label)) as fd, os.scandir(fd) as names:
            for item in names:
                if len(found) >= limit:
                    raise OverLimit(f"{label} holds more than {limit} entries, the most listed")
                try:
                    info = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed meanwhile
                kind = _KINDS.get(stat.S_IFMT(info.st_mode), "FILE")
                found.append(
                    Entry(item.name, kind, info.st_size, info.st_mode, info.st_mtime, info.st_ctime)
                )
        return found

    def make_dir(self, parts: Sequence[str], *, parents: bool, exist_ok: bool) -> None:
        """``mkdir`` (``-p`` with ``parents``); an existing directory is fine with
        ``exist_ok``, anything else at the name (a file, a link) never is."""
        label = label_of(parts)
        if not parts:
            if exist_ok:
                return
            raise Refused("the folder's root exists already")
        with closing(self._parent(parts, create=parents)) as parent:
            name = parts[-1]
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                seen = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if exist_ok and stat.S_ISDIR(seen.st_mode):
                    return
                raise Refused(f"{label} exists already ({describe(seen.st_mode)})") from None
            except OSError as exc:
                raise refusal(exc, label) from exc
            if self.owner is not None:
                with closing(os.open(name, _DIR_FLAGS, dir_fd=parent)) as made:
                    os.fchown(made, self.owner.uid, self.owner.gid)

    def delete(self, parts: Sequence[str], *, recursive: bool) -> None:
        """Removes a file or link (the link, not what it names), an empty directory, or with
        ``recursive`` a whole directory, descending by ``O_NOFOLLOW`` opens only."""
        label = label_of(parts)
        if not parts:
            raise Refused("the folder's root cannot be deleted here (delete the folder)")
        with closing(self._parent(parts)) as parent:
            name = parts[-1]
            try:
                seen = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(seen.st_mode):
                    os.unlink(name, dir_fd=parent)
                elif recursive:
                    _remove_tree(parent, name, label, [0], 0)
                else:
                    os.rmdir(name, dir_fd=parent)
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    raise Refused(f"{label} is a directory that is not empty") from exc
                raise refusal(exc, label) from exc

    def rename(self, parts: Sequence[str], new_name: str) -> None:
        """``parts`` renamed ``new_name`` in the same directory; an existing ``new_name`` is
        refused, never replaced (``renameat2(RENAME_NOREPLACE)``)."""
        label = label_of(parts)
        if not parts:
            raise Refused("the folder's root cannot be renamed here (rename the folder)")
        with closing(self._parent(parts)) as parent:
            os_name = parts[-1]
            try:
                os.stat(os_name, dir_fd=parent, follow_symlinks=False)
                _rename_noreplace(parent, os_name, parent, new_name)
            except FileExistsError as exc:
                raise Refused(f"{new_name!r} exists already beside {label}") from exc
            except OSError as exc:
                raise refusal(exc, label) from exc

    def move(self, src: Sequence[str], dst: Sequence[str]) -> None:
        """``mv src dst``: into ``dst`` when it is a directory (not a link to one), else to
        the name ``dst``, replacing a file there (as the client's help says)."""
        if not src:
            raise Refused("the folder's root cannot be moved")
        label = label_of(src)
        with closing(self._parent(src)) as from_fd:
            try:
                os.stat(src[-1], dir_fd=from_fd, follow_symlinks=False)
            except OSError as exc:
                raise refusal(exc, label) from exc
            into, name = _destination(self.fd, dst, src[-1])
            with closing(into):
                try:
                    os.rename(src[-1], name, src_dir_fd=from_fd, dst_dir_fd=into)
                except OSError as exc:
                    if exc.errno == errno.EINVAL:
                        raise Refused(f"{label} cannot be moved into itself") from exc
                    if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                        raise Refused(f"{label_of(dst)} is a directory in the way") from exc
                    raise refusal(exc, label_of(dst)) from exc

    def open_file(self, parts: Sequence[str]) -> tuple[int, os.stat_result]:
        """A regular file opened for reading (never a link, FIFO or device; a hard link only
        when the folder's owner owns it). The caller closes the descriptor."""
        label = label_of(parts)
        if not parts:
            raise Refused("the folder's root is a directory, not a file")
        with closing(self._parent(parts)) as parent:
            return open_regular(parent, parts[-1], label=label, owner_uid=self.uid)

    def check_upload(self, parts: Sequence[str]) -> None:
        """Refuse at once an upload that could not land: a link or a file among the parents
        that exist, or a directory at the name. (Checked again where it lands: a tenant may
        plant a link meanwhile, and the landing refuses it then.)"""
        label = label_of(parts)
        try:
            parent = self._parent(parts)
        except ObjectNotFound:
            return  # missing parents are made when the upload completes
        with closing(parent):
            try:
                seen = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(seen.st_mode):
                raise Refused(f"{label} is a directory")

    def create_empty(self, parts: Sequence[str]) -> None:
        """An empty regular file at ``parts`` (a 0-byte upload sends no data at all),
        replacing a file or link there; parents are made."""
        label = label_of(parts)
        with closing(self._parent(parts, create=True)) as parent:
            replace_file(parent, parts[-1], b"", label=label, owner=self.owner)

    def place(self, staging_fd: int, staged: str, parts: Sequence[str]) -> None:
        """The complete upload ``staged`` (in the staging directory) renamed to ``parts``:
        rename replaces a file or link there, never writes through it; parents are made."""
        label = label_of(parts)
        with closing(self._parent(parts, create=True)) as parent:
            try:
                os.rename(staged, parts[-1], src_dir_fd=staging_fd, dst_dir_fd=parent)
            except IsADirectoryError as exc:
                raise Refused(f"{label} is a directory") from exc
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    raise Refused(f"{label}: the staging area is on another filesystem") from exc
                raise refusal(exc, label) from exc


def _destination(root_fd: int, dst: Sequence[str], name: str) -> tuple[int, str]:
    """The directory descriptor and name a move lands on."""
    label = label_of(dst)
    if not dst:
        return os.dup(root_fd), name
    try:
        return open_dir(root_fd, dst, label=label), name
    except ObjectNotFound:
        pass
    except Refused:
        pass  # not a directory (a file to replace, or a link, which is replaced not followed)
    return open_dir(root_fd, dst[:-1], label=label), dst[-1]


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """``renameat2`` with ``RENAME_NOREPLACE``; where libc or the filesystem lacks it, a
    check then a rename (a race only lets a tenant replace their own file)."""
    call = getattr(_libc, "renameat2", None)
    if call is not None:
        result = call(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(code, os.strerror(code), dst)
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


def _remove_tree(parent: int, name: str, label: str, count: list[int], depth: int) -> None:
    """``rm -r`` of the directory ``name`` in ``parent``, by descriptors: each level opened
    ``O_NOFOLLOW | O_DIRECTORY | O_NONBLOCK`` (a link or FIFO swapped in fails the open), each
    name unlinked with ``unlinkat``. Scans again until a pass finds nothing, since removing
    while reading a directory may skip names."""
    if depth >= MAX_DELETE_DEPTH:
        raise OverLimit(f"{label} is nested deeper than {MAX_DELETE_DEPTH} directories")
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # no longer a directory: a name
            os.unlink(name, dir_fd=parent)
            return
        raise
    with closing(fd):
        while True:
            removed = 0
            with os.scandir(fd) as names:
                for item in names:
                    count[0] += 1
                    if count[0] > MAX_DELETE_ENTRIES:
                        raise OverLimit(
                            f"{label} holds more than {MAX_DELETE_ENTRIES} entries; "
                            "part of it was deleted, delete the rest again"
                        )
                    if item.is_dir(follow_symlinks=False):
                        _remove_tree(fd, item.name, label, count, depth + 1)
                    else:
                        try:
                            os.unlink(item.name, dir_fd=fd)
                        except FileNotFoundError:
                            pass
                        except IsADirectoryError:  # became one: next pass
                            continue
                    removed += 1
            if not removed:
                break
    os.rmdir(name, dir_fd=parent)
