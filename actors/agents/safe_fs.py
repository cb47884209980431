"""File operations beneath a directory a tenant controls, that the tenant cannot redirect.

The agent runs as root on the host and works on a kernel's work dir, which user code can
change at any moment: any name in it may become a symlink to ``/root``, a FIFO, a socket
or a 100 GiB sparse file between two system calls. So nothing here checks a path and then
opens it. Every operation starts from a file descriptor of the work dir and goes down one
name at a time, refusing symlinks as it goes (``openat2`` with ``RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS`` where the kernel has it, else ``O_NOFOLLOW | O_DIRECTORY`` per
component): what is opened is what is checked, with ``fstat`` on the descriptor.

- Reads open only regular files (``O_NOFOLLOW | O_NONBLOCK``, so a FIFO swapped in after
  the check never blocks the open), and read in chunks up to a cap, never whole.
- Writes go to a new file with a random name (``O_CREAT | O_EXCL``: it never opens
  something already there), then ``rename`` it over the target: rename replaces a symlink
  or a hard link, it never writes through one. Parents are made with ``mkdirat``.
- Hard links: a name with ``st_nlink > 1`` is read only when the kernel's user owns the
  file. ``link(2)`` refuses across mounts, so in a container the other names of a file in
  the bind-mounted work dir are in the work dir too; the ownership check also covers the
  process backend and a host whose ``protected_hardlinks`` is off (a link to a file its
  maker could name but not read). Writes never go through a link (see rename above).

Refusals are the domain's errors (400 ``invalid-api-params``, 404 for a missing name), so
the gateway answers them as problems.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ..domain.errors import InvalidAPIParameters, ObjectNotFound

__all__ = [
    "OverLimit",
    "Owner",
    "Refused",
    "closing",
    "describe",
    "open_dir",
    "open_regular",
    "open_root",
    "owner_of",
    "read_capped",
    "refusal",
    "replace_file",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20

# openat2(2): Linux 5.6+. The number is the same in every architecture's table.
_SYS_OPENAT2 = 437
_RESOLVE_NO_XDEV = 0x01
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
OPENAT2: bool | None = None
"""Whether openat2 works here: None until first tried; False after ENOSYS (old kernel, a
seccomp filter) makes every later walk go one component at a time."""


class Refused(InvalidAPIParameters):
    """A name the agent will not follow or open (a symlink, a FIFO, ...)."""


class OverLimit(Refused):
    """More than a cap allows (bytes, entries, depth): the whole operation stops."""


@dataclass(frozen=True)
class Owner:
    """Who a created file or directory belongs to: the work dir's owner (the kernel's user)."""

    uid: int
    gid: int


@contextmanager
def closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISREG, "a regular file"),
)


def describe(mode: int) -> str:
    """What a file is, in words, for refusals."""
    return next((words for test, words in _KINDS if test(mode)), "of an unknown kind")


def refusal(exc: OSError, label: str) -> Exception:
    """The domain error for a failed system call on ``label``."""
    if exc.errno == errno.ENOENT:
        return ObjectNotFound("file", f"no such file: {label}")
    if exc.errno == errno.ELOOP:
        return Refused(f"{label}: a symbolic link is in the way (links are not followed)")
    if exc.errno == errno.ENOTDIR:
        return Refused(f"{label}: a part of the path is not a directory")
    if exc.errno == errno.EXDEV:
        return Refused(f"{label} is outside the work dir")
    return Refused(f"{label}: {exc.strerror or exc}")


def open_root(path: os.PathLike[str] | str) -> int:
    """A descriptor of the work dir itself (its path is the backend's, not the tenant's)."""
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise refusal(exc, "the work dir") from exc


def owner_of(root_fd: int) -> Owner | None:
    """Whom files made in the work dir should belong to; None when the agent cannot give
    files away (not root) or need not (it owns the work dir already)."""
    info = os.fstat(root_fd)
    if os.geteuid() != 0 or (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid()):
        return None
    return Owner(info.st_uid, info.st_gid)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags, 0, resolve)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def _beneath(dir_fd: int, parts: Sequence[str]) -> int | None:
    """``parts`` opened as a directory in one openat2 call; None when openat2 is missing."""
    global OPENAT2
    if OPENAT2 is False:
        return None
    resolve = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_XDEV
    for _ in range(3):
        try:
            fd = _openat2(dir_fd, "/".join(parts), _DIR_FLAGS, resolve)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:  # a rename raced the lookup: try again
                continue
            if exc.errno in (errno.ENOSYS, errno.EPERM) and OPENAT2 is None:
                OPENAT2 = False  # no openat2 here (or a filter forbids it)
                return None
            raise
        OPENAT2 = True
        return fd
    return None


def _check_parts(parts: Sequence[str]) -> None:
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\0" in part:
            raise Refused(f"invalid path component {part!r}")


def open_dir(
    root_fd: int,
    parts: Sequence[str],
    *,
    label: str,
    create: bool = False,
    owner: Owner | None = None,
) -> int:
    """A descriptor of the directory ``parts`` below ``root_fd``, no symlink followed; with
    ``create``, missing directories are made (given to ``owner``). The caller closes it."""
    _check_parts(parts)
    if not parts:
        return os.dup(root_fd)
    if not create:
        try:
            fd = _beneath(root_fd, parts)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise refusal(exc, label) from exc
            fd = None  # refused: the walk below says which part is in the way, and why
        if fd is not None:
            return fd
    fd = os.dup(root_fd)
    try:
        for part in parts:
            fd = _step(fd, part, label, create, owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _step(fd: int, part: str, label: str, create: bool, owner: Owner | None) -> int:
    """The directory ``part`` in ``fd`` (closing ``fd``); made when missing and ``create``."""
    try:
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            made = True
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:  # made meanwhile: the open below checks what it is
                made = False
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            if made and owner is not None:
                os.fchown(child, owner.uid, owner.gid)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR and _is_link(fd, part):  # O_DIRECTORY says ENOTDIR
            exc = OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        raise refusal(exc, label) from exc
    os.close(fd)
    return child


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_regular(
    dir_fd: int, name: str, *, label: str, owner_uid: int | None = None
) -> tuple[int, os.stat_result]:
    """``name`` in ``dir_fd`` opened for reading, only if it is a regular file.

    The name is looked at first (``lstat``, which opens nothing, so a device's driver is
    never asked to open); the open refuses a symlink, does not wait for a FIFO's writer,
    and ``fstat`` on what was opened must be the regular file that was looked at."""
    _check_parts([name])
    try:
        seen = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise refusal(exc, label) from exc
    if not stat.S_ISREG(seen.st_mode):
        raise Refused(f"{label} is {describe(seen.st_mode)}, not a regular file")
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise refusal(exc, label) from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)
        raise Refused(f"{label} changed while it was opened")
    if info.st_nlink > 1 and owner_uid is not None and info.st_uid != owner_uid:
        os.close(fd)
        raise Refused(f"{label} is a hard link to a file the kernel's user does not own")
    return fd, info


def read_capped(fd: int, cap: int, *, label: str) -> bytes:
    """The file's bytes, read in chunks; past ``cap`` bytes a refusal that names the cap
    (the size is checked first, so a huge sparse file is refused without a read)."""
    if os.fstat(fd).st_size > cap:
        raise OverLimit(f"{label} is larger than {cap} bytes, the limit for a download")
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(_CHUNK, cap + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:
            raise OverLimit(f"{label} is larger than {cap} bytes, the limit for a download")
    return b"".join(chunks)


def replace_file(
    dir_fd: int, name: str, data: bytes, *, label: str, owner: Owner | None = None
) -> None:
    """``name`` in ``dir_fd`` becomes a new regular file holding ``data``: written under a
    random new name, then renamed over whatever ``name`` was (a symlink is replaced, not
    followed). A directory at ``name`` is refused."""
    _check_parts([name])
    temp = _new_temp(dir_fd, label)
    try:
        with closing(temp[1]) as fd:
            if owner is not None:
                os.fchown(fd, owner.uid, owner.gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        os.replace(temp[0], name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException as exc:
        try:
            os.unlink(temp[0], dir_fd=dir_fd)
        except OSError:
            pass
        if isinstance(exc, IsADirectoryError):
            raise Refused(f"{label} is a directory") from exc
        if isinstance(exc, OSError):
            raise refusal(exc, label) from exc
        raise


def _new_temp(dir_fd: int, label: str) -> tuple[str, int]:
    """A new, empty file under a random name the tenant cannot guess ahead (and which,
    with ``O_EXCL``, is never something already there)."""
    for _ in range(8):
        name = f".kh-upload-{secrets.token_hex(12)}"
        try:
            return name, os.open(name, _CREATE_FLAGS, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            continue
        except OSError as exc:
            raise refusal(exc, label) from exc
    raise Refused(f"{label}: no free temporary name")
