"""Files in a kernel's work dir (``/home/work`` inside the kernel), for upload, download and
listing. The agent reaches the work dir on the host (the process backend's directory, or
the Docker bind mount), so no request passes through user code — which is why every
operation here goes through :mod:`.safe_fs`: the agent is root on the host and the tenant
owns every name in the work dir, so no symlink is followed, no FIFO or device is opened,
and nothing is read whole or without a cap.

Names arrive percent-encoded (the official client quotes ``sub/b.txt`` as ``sub%2Fb.txt``)
and relative to ``/home/work``; ``/home/work/...`` is accepted too. A name with ``..``,
another absolute path, a NUL, or a symlink anywhere on its way is refused (400), whatever
the symlink points at: a link that stays inside today may point out a moment later.

These functions block (file I/O on a tenant's files); the agent runs them in a thread.
"""

from __future__ import annotations

import heapq
import io
import json
import os
import posixpath
import stat
import tarfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..domain.errors import InvalidAPIParameters, ObjectNotFound
from .safe_fs import (
    OverLimit,
    Refused,
    closing,
    describe,
    open_dir,
    open_regular,
    open_root,
    owner_of,
    read_capped,
    refusal,
    replace_file,
)

__all__ = [
    "KERNEL_WORK_DIR",
    "MAX_ARCHIVE_BYTES",
    "MAX_CHUNK_BYTES",
    "MAX_DOWNLOAD_BYTES",
    "download",
    "download_single",
    "list_files",
    "parts_of",
    "read_chunk",
    "upload",
]

KERNEL_WORK_DIR = "/home/work"
MAX_UPLOAD_BYTES = 64 * 2**20
"""One upload call, all its files together: the gateway's cap per call
(``actors.gateway.sessions.MAX_UPLOAD_CALL_BYTES``), checked again here."""
MAX_DOWNLOAD_BYTES = 64 * 2**20
"""One file, downloaded alone: the gateway's per-file upload cap, the same both ways."""
MAX_CHUNK_BYTES = 4 * 2**20
"""The most one :func:`read_chunk` returns."""
MAX_ARCHIVE_BYTES = 64 * 2**20
"""A tar download in all (headers included), the single-file cap: it is built in memory
(files are copied in chunks straight from their fds, so the buffer is the only copy), then
crosses Ray whole and waits in the gateway until the client has read it."""
MAX_ARCHIVE_ENTRIES = 10_000
"""Names in a tar download, counted as directories are read: a walk never holds more than
this many names (about 3 MiB), however deep or wide the tree, and a directory with more
names than are left is refused after reading no more than that."""
MAX_ARCHIVE_DEPTH = 64
_COPY_BYTES = 2**20
"""One read of a file into the archive."""
MAX_LISTED = 10_000
"""Entries one listing returns (the first, by name); the rest are counted in ``errors``."""


def parts_of(name: str) -> tuple[str, ...]:
    """The path components of ``name`` below the work dir (``()`` is the work dir itself)."""
    text = urllib.parse.unquote(name)
    if "\0" in text:
        raise InvalidAPIParameters(f"invalid file name {name!r}")
    if text == KERNEL_WORK_DIR or text.startswith(KERNEL_WORK_DIR + "/"):
        text = text[len(KERNEL_WORK_DIR) :]
    elif text.startswith("/"):
        raise InvalidAPIParameters(f"{name!r} is outside the work dir ({KERNEL_WORK_DIR})")
    parts = tuple(part for part in text.split("/") if part not in ("", "."))
    if ".." in parts:
        raise InvalidAPIParameters(f"{name!r}: '..' is not allowed in file names")
    return parts


def _label(parts: tuple[str, ...]) -> str:
    return "/".join(parts) or KERNEL_WORK_DIR


def upload(work_dir: os.PathLike[str] | str, files: list[tuple[str, bytes]]) -> list[str]:
    """Write each file (parents created, owned like the work dir); the names written,
    relative to the work dir. Every name is checked before anything is written, so a
    batch refused for a bad name writes nothing."""
    total = sum(len(data) for _, data in files)
    if total > MAX_UPLOAD_BYTES:
        raise InvalidAPIParameters(f"uploads are limited to {MAX_UPLOAD_BYTES} bytes per call")
    targets = [(parts_of(name), data) for name, data in files]
    with closing(open_root(work_dir)) as root:
        for parts, _ in targets:
            _check_target(root, parts)
        owner = owner_of(root)
        written = []
        for parts, data in targets:
            label = _label(parts)
            with closing(
                open_dir(root, parts[:-1], label=label, create=True, owner=owner)
            ) as parent:
                replace_file(parent, parts[-1], data, label=label, owner=owner)
            written.append(label)
    return written


def _check_target(root: int, parts: tuple[str, ...]) -> None:
    """Refuse now what the write would refuse later (the write checks again, race-free)."""
    label = _label(parts)
    if not parts:
        raise Refused(f"{label} is a directory")
    try:
        parent = open_dir(root, parts[:-1], label=label)
    except ObjectNotFound:  # parents are made on the way
        return
    with closing(parent):
        try:
            info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except OSError:
            return
    if stat.S_ISDIR(info.st_mode):
        raise Refused(f"{label} is a directory")


def download_single(work_dir: os.PathLike[str] | str, name: str) -> bytes:
    """One regular file's bytes, up to :data:`MAX_DOWNLOAD_BYTES`."""
    with _regular_file(work_dir, name) as (fd, _, label):
        return read_capped(fd, MAX_DOWNLOAD_BYTES, label=label)


@contextmanager
def _regular_file(
    work_dir: os.PathLike[str] | str, name: str
) -> Iterator[tuple[int, os.stat_result, str]]:
    """The named regular file opened as :mod:`.safe_fs` opens one (no symlink followed on the
    way, no FIFO or device opened), with its ``fstat`` and its label for errors."""
    parts = parts_of(name)
    label = _label(parts)
    if not parts:
        raise Refused(f"{label} is a directory, not a regular file")
    with closing(open_root(work_dir)) as root:
        owner_uid = os.fstat(root).st_uid
        with closing(open_dir(root, parts[:-1], label=label)) as parent:
            fd, info = open_regular(parent, parts[-1], label=label, owner_uid=owner_uid)
            with closing(fd):
                yield fd, info, label


def read_chunk(
    work_dir: os.PathLike[str] | str, name: str, offset: int, length: int
) -> tuple[bytes, int]:
    """Up to ``length`` bytes of one regular file from ``offset``, and the file's size now:
    the gateway streams a download in such chunks, so no process holds more than a chunk.
    The file is opened afresh each time, as safely as :func:`download_single` does."""
    if offset < 0 or not 0 < length <= MAX_CHUNK_BYTES:
        raise InvalidAPIParameters(f"a chunk is 1 to {MAX_CHUNK_BYTES} bytes from offset >= 0")
    with _regular_file(work_dir, name) as (fd, info, label):
        if info.st_size > MAX_DOWNLOAD_BYTES:
            raise OverLimit(
                f"{label} is larger than {MAX_DOWNLOAD_BYTES} bytes, the limit for a download"
            )
        return os.pread(fd, length, offset), info.st_size


def download(work_dir: os.PathLike[str] | str, names: list[str]) -> bytes:
    """A tar archive of the named files or directories (as upstream's download parts).
    Directories are walked without following anything: symlinks are stored as symlinks
    (those pointing outside the work dir are left out), FIFOs, sockets and devices inside
    them are left out; a named one is refused. The archive is capped in bytes, entries and
    depth."""
    wanted = [parts_of(name) for name in names]
    buffer = io.BytesIO()
    with (
        closing(open_root(work_dir)) as root,
        tarfile.TarFile(fileobj=buffer, mode="w", copybufsize=_COPY_BYTES) as tar,
    ):
        archive = _Archive(tar, buffer, os.fstat(root).st_uid)
        for parts in wanted:
            if not parts:
                archive.directory(os.dup(root), ".", os.fstat(root), depth=0)
                continue
            label = _label(parts)
            with closing(open_dir(root, parts[:-1], label=label)) as parent:
                archive.named(parent, parts[-1], label)
    return buffer.getvalue()  # the buffer's own bytes (CPython shares them, no copy)


class _Archive:
    """One tar download being built: what it holds so far, against its caps."""

    def __init__(self, tar: tarfile.TarFile, buffer: io.BytesIO, owner_uid: int) -> None:
        self.tar, self.buffer, self.owner_uid = tar, buffer, owner_uid
        self.entries = 0
        self.pending = 0
        """Names read from directories and not yet added (nor left out)."""

    def _room(self, size: int) -> int:
        """Bytes left for one more member of ``size`` data bytes, refusing when none."""
        self.entries += 1
        if self.entries + self.pending > MAX_ARCHIVE_ENTRIES:
            raise OverLimit(f"the download has more than {MAX_ARCHIVE_ENTRIES} entries")
        left = MAX_ARCHIVE_BYTES - self.buffer.tell() - 1024
        if size > left:
            raise OverLimit(f"the download is larger than {MAX_ARCHIVE_BYTES} bytes, its limit")
        return left

    def _info(self, arcname: str, info: os.stat_result, kind: bytes) -> tarfile.TarInfo:
        member = tarfile.TarInfo(arcname)
        member.type, member.mode, member.mtime = kind, info.st_mode & 0o777, int(info.st_mtime)
        return member

    def named(self, parent: int, name: str, label: str) -> None:
        """A name the caller asked for: anything but a file or a directory is refused (a
        symlink too: the caller asked for what it names, which is not ours to follow)."""
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            raise refusal(exc, label) from exc
        if stat.S_ISLNK(info.st_mode) or not self.member(parent, name, label, info, depth=0):
            raise Refused(
                f"{label} is {describe(info.st_mode)}, which is not downloaded"
                + (" (links are not followed)" if stat.S_ISLNK(info.st_mode) else "")
            )

    def member(
        self, parent: int, name: str, arcname: str, info: os.stat_result, depth: int
    ) -> bool:
        """Add ``name`` (as lstat saw it); False when it is of a kind left out."""
        if stat.S_ISREG(info.st_mode):
            self.file(parent, name, arcname)
        elif stat.S_ISDIR(info.st_mode):
            try:
                fd = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
                )
            except OSError:  # replaced meanwhile (by a symlink, a file): not downloaded
                return True
            self.directory(fd, arcname, os.fstat(fd), depth)
        elif stat.S_ISLNK(info.st_mode):
            self.symlink(parent, name, arcname, info)
        else:
            return False
        return True

    def file(self, parent: int, name: str, arcname: str) -> None:
        """Its bytes copied from the fd into the archive in chunks (never held whole besides
        the archive): its size as opened, checked against the room left before a read."""
        fd, info = open_regular(parent, name, label=arcname, owner_uid=self.owner_uid)
        with closing(fd):
            left = self._room(info.st_size)
            if info.st_size > left:  # pragma: no cover - _room refused it already
                raise OverLimit(f"{arcname} does not fit in the download")
            member = self._info(arcname, info, tarfile.REGTYPE)
            member.size = info.st_size
            self.tar.addfile(member, _Fixed(fd, info.st_size))

    def symlink(self, parent: int, name: str, arcname: str, info: os.stat_result) -> None:
        try:
            target = os.readlink(name, dir_fd=parent)
        except OSError:
            return
        inside = posixpath.normpath(posixpath.join(posixpath.dirname(arcname), target))
        if target.startswith("/") or inside == ".." or inside.startswith("../"):
            return  # its target is not the tenant's to hand out
        self._room(0)
        member = self._info(arcname, info, tarfile.SYMTYPE)
        member.linkname = target
        self.tar.addfile(member)

    def _names(self, fd: int, arcname: str) -> list[str]:
        """The directory's names, sorted; each counts against :data:`MAX_ARCHIVE_ENTRIES` as
        soon as it is read, so the names held along the walk's path never pass it, and a
        directory with more than are left is refused before the rest of it is read."""
        names: list[str] = []
        with os.scandir(fd) as listing:
            for entry in listing:
                if self.entries + self.pending + len(names) >= MAX_ARCHIVE_ENTRIES:
                    raise OverLimit(
                        f"the download has more than {MAX_ARCHIVE_ENTRIES} "
                        f"entries ({arcname} alone has more names than are "
                        "left)"
                    )
                names.append(entry.name)
        names.sort()
        self.pending += len(names)
        return names

    def directory(self, fd: int, arcname: str, info: os.stat_result, depth: int) -> None:
        """``fd`` (closed here) and what is in it, by name."""
        with closing(fd):
            if depth > MAX_ARCHIVE_DEPTH:
                raise OverLimit(f"{arcname} is nested deeper than {MAX_ARCHIVE_DEPTH} levels")
            self._room(0)
            self.tar.addfile(self._info(arcname, info, tarfile.DIRTYPE))
            names = self._names(fd, arcname)
            for name in names:
                self.pending -= 1
                try:
                    child = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile
                try:
                    self.member(fd, name, f"{arcname}/{name}", child, depth + 1)
                except OverLimit:
                    raise
                except Refused:
                    continue  # changed under us (a file became a FIFO...): left out


class _Fixed:
    """A file's first ``size`` bytes for :meth:`tarfile.TarFile.addfile`, read from ``fd``
    (the size the member was announced with): a file that grew meanwhile is cut at it, one
    that shrank is padded with zeros, so the archive stays well formed and within its cap."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.left = fd, size

    def read(self, size: int = -1) -> bytes:
        want = self.left if size < 0 else min(size, self.left)
        data = os.read(self.fd, want) if want else b""
        while len(data) < want and (more := os.read(self.fd, want - len(data))):
            data += more
        self.left -= want
        return data + bytes(want - len(data))  # shrank meanwhile: zeros


def list_files(work_dir: os.PathLike[str] | str, name: str = KERNEL_WORK_DIR) -> dict[str, Any]:
    """Upstream's shape: ``files`` is a JSON *string* of entries (the client decodes it).
    Entries are lstat'ed by name in the directory's descriptor: nothing is followed."""
    parts = parts_of(name or KERNEL_WORK_DIR)
    label = _label(parts)
    with closing(open_root(work_dir)) as root, closing(open_dir(root, parts, label=label)) as fd:
        with os.scandir(fd) as listing:
            names = heapq.nsmallest(MAX_LISTED + 1, (entry.name for entry in listing))
        entries = []
        for entry in names[:MAX_LISTED]:
            try:
                info = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            entries.append(
                {
                    "filename": entry,
                    "size": info.st_size,
                    "mode": stat.filemode(info.st_mode),
                    "mtime": info.st_mtime,
                    "atime": info.st_atime,
                    "ctime": info.st_ctime,
                }
            )
    errors = f"only the first {MAX_LISTED} entries are listed" if len(names) > MAX_LISTED else ""
    abspath = KERNEL_WORK_DIR + "".join(f"/{part}" for part in parts)
    return {"files": json.dumps(entries), "errors": errors, "abspath": abspath}
