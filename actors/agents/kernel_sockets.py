"""Reaching a kernel's sockets and files in its ``run`` dir without being redirected.

The run dir is shared with the kernel and writable by its user, and user code runs inside
the runner's own process: whatever lies there (``runner.sock``, ``proxy.sock``,
``batch.jsonl``) may have been replaced by the tenant with a symlink (to another kernel's
socket, to ``/dev/zero``), a FIFO, or a server of its own. The agent (root on the host) and
the gateway therefore never resolve a path in it:

- the run dir is opened once with ``O_NOFOLLOW`` (its own path is the agent's, not the
  tenant's), and every name in it is looked at through that dir fd, never followed;
- a socket is connected through ``/proc/self/fd/<dirfd>/<name>`` (also short enough for a
  unix socket address however deep the run dir lies), and *after* connecting its listener
  is identified with ``SO_PEERCRED``: it must live in the kernel's container (the same pid
  namespace as the container's init) or, on the process backend, in the runner's session.
  A swap between the check of the name and the connect lands on a peer that fails that
  test, so the check of the name only gives a clearer error; the peer check is what holds;
- a file is opened with ``O_NOFOLLOW|O_NONBLOCK`` (a FIFO cannot block the open), must be a
  regular file by ``fstat``, and only its tail, capped, is read.

A kernel's own code can always answer on its own sockets (it may run a fake server there):
that is harmless as long as every frame read from it is capped, which the readers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from dataclasses import dataclass
from typing import Any

import structlog

from ..domain.errors import ObjectNotFound
from .safe_fs import Refused, closing, open_regular, open_root

__all__ = [
    "MAX_TAIL_BYTES",
    "KernelPeer",
    "KernelSocket",
    "SocketRefused",
    "connect",
    "peer_pid",
    "read_tail",
    "verify_peer",
]

log = structlog.get_logger(__name__)

MAX_TAIL_BYTES = 64 * 1024
"""The most read of a file the kernel can write (its batch record: one line per phase)."""
_UCRED = struct.Struct("3i")


class SocketRefused(ConnectionRefusedError):
    """A kernel's socket is not what it must be (not a socket, or answered by a process
    outside the kernel): the connection is refused, never used."""


@dataclass(frozen=True)
class KernelPeer:
    """Who may answer on a kernel's sockets: the processes of one pid namespace (a Docker
    kernel's container, named by the ``(st_dev, st_ino)`` of ``/proc/<pid>/ns/pid``), or of
    one session (a process kernel: its runner leads a session of its own)."""

    pid_namespace: tuple[int, int] | None = None
    session: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "pid_namespace": list(self.pid_namespace) if self.pid_namespace else None,
            "session": self.session,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> KernelPeer:
        namespace = data.get("pid_namespace")
        session = data.get("session")
        return cls(
            pid_namespace=(int(namespace[0]), int(namespace[1])) if namespace else None,
            session=int(session) if session is not None else None,
        )

    @classmethod
    def of_namespace(cls, pid: int) -> KernelPeer:
        """The pid namespace ``pid`` lives in (a container's init)."""
        return cls(pid_namespace=_pid_namespace(pid))


@dataclass(frozen=True)
class KernelSocket:
    """One of a kernel's sockets: the run dir it lies in (the agent's own path to it), its
    name there, and who must answer. ``peer`` None checks no identity: only for a runner the
    caller started itself (tests)."""

    run_dir: str
    name: str
    peer: KernelPeer | None

    @classmethod
    def at(cls, path: str, peer: KernelPeer | None = None) -> KernelSocket:
        directory, name = os.path.split(path)
        return cls(directory or ".", name, peer)

    def sibling(self, name: str) -> KernelSocket:
        return KernelSocket(self.run_dir, name, self.peer)

    def __str__(self) -> str:
        return os.path.join(self.run_dir, self.name)

    def to_wire(self) -> dict[str, Any]:
        """Plain data, for a caller in another process (the gateway asks the agent)."""
        return {
            "run_dir": self.run_dir,
            "name": self.name,
            "peer": self.peer.to_wire() if self.peer is not None else None,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> KernelSocket:
        peer = data.get("peer")
        return cls(
            str(data["run_dir"]),
            str(data["name"]),
            KernelPeer.from_wire(peer) if peer is not None else None,
        )


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISREG, "regular file"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


async def connect(
    target: KernelSocket, *, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the kernel's socket, its listener verified (see the module doc).
    Raises :class:`SocketRefused` when the socket or its listener is not the kernel's, and
    ``OSError`` (``FileNotFoundError``, ``ConnectionRefusedError``) when nobody listens."""
    dir_fd = _open_dir(target.run_dir)
    try:
        mode = os.stat(target.name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        if not stat.S_ISSOCK(mode):
            raise _refuse(target, f"it is a {_kind(mode)}, not a socket")
        reader, writer = await asyncio.open_unix_connection(
            f"/proc/self/fd/{dir_fd}/{target.name}", limit=limit
        )
    finally:
        os.close(dir_fd)
    if target.peer is not None:
        try:
            verify_peer(peer_pid(writer.get_extra_info("socket")), target.peer)
        except SocketRefused as exc:
            writer.close()
            raise _refuse(target, str(exc)) from None
    return reader, writer


def _refuse(target: KernelSocket, why: str) -> SocketRefused:
    log.warning("kernel socket refused", socket=str(target), why=why)
    return SocketRefused(f"the kernel's {target.name} is refused: {why}")


def peer_pid(sock: Any) -> int:
    """The pid of the process that listens at the other end (as this pid namespace sees it;
    0 when it cannot see it)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, _uid, _gid = _UCRED.unpack(raw)
    return int(pid)


def verify_peer(pid: int, peer: KernelPeer) -> None:
    """Raise :class:`SocketRefused` unless ``pid`` belongs to the kernel ``peer`` names."""
    if pid <= 0:
        raise SocketRefused("its listener is in a pid namespace this host does not see")
    if peer.pid_namespace is not None:
        try:
            found = _pid_namespace(pid)
        except OSError as exc:
            raise SocketRefused(f"its listener (pid {pid}) cannot be identified: {exc}") from None
        if found != peer.pid_namespace:
            raise SocketRefused(f"its listener (pid {pid}) is not in the kernel's container")
    if peer.session is not None:
        session = _session_of(pid)
        if session != peer.session:
            raise SocketRefused(f"its listener (pid {pid}) is not one of the kernel's processes")
    if peer.pid_namespace is None and peer.session is None:
        raise SocketRefused("the kernel has no known process to answer")


def _pid_namespace(pid: int) -> tuple[int, int]:
    info = os.stat(f"/proc/{pid}/ns/pid")
    return info.st_dev, info.st_ino


def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as proc:
            fields = proc.read().rsplit(b")", 1)[1].split()
        return int(fields[3])
    except (OSError, IndexError, ValueError):
        return None


def read_tail(run_dir: str, name: str, limit: int = MAX_TAIL_BYTES) -> bytes | None:
    """The last ``limit`` bytes of a regular file in the kernel's run dir; None when it is
    missing or not a regular file (a symlink, a FIFO, a device: refused, and logged). It is
    opened as :func:`.safe_fs.open_regular` opens a tenant's file. Blocking (a disk read):
    callers on an event loop run it in a thread."""
    try:
        with closing(open_root(run_dir)) as dir_fd:
            fd, info = open_regular(dir_fd, name, label=name)
    except ObjectNotFound:
        return None
    except Refused as exc:  # a symlink, a FIFO, a device, or swapped while it was opened
        log.warning("kernel file refused", path=os.path.join(run_dir, name), why=str(exc))
        return None
    with closing(fd):
        try:
            os.lseek(fd, max(0, info.st_size - limit), os.SEEK_SET)
            chunks: list[bytes] = []
            left = limit
            while left > 0:
                with contextlib.suppress(BlockingIOError):
                    chunk = os.read(fd, left)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
                    continue
                break
            return b"".join(chunks)
        except OSError:
            return None
