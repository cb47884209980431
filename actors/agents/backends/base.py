"""What every kernel backend is: the interface an agent drives (:class:`Backend`), what it
launches (:class:`KernelLaunch`), and what the backends that give each kernel its own
directories share (:class:`DirectoryBackend`, :class:`KernelDirs`, how the runner boots).

A backend outlives the agent that drives it: kernels keep running while the agent's actor
restarts, and :meth:`Backend.adopt` finds them again (a process group recorded in the
kernel's work dir, a container label), so reconciliation can tell a kernel that is
still running from one that ended while nobody watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import structlog

from kernelhub.in_kernel import kernel_runner
from kernelhub.in_kernel.kernel_runner.batch import last_exec_code_in

from ...domain.isolation import UNISOLATED
from ..accelerators import KernelDevices
from ..kernel_sockets import KernelPeer, KernelSocket, read_tail

__all__ = [
    "BOOT_RUNNER",
    "MAX_LOG_BYTES",
    "RUNNER_PACKAGE",
    "Backend",
    "BackendBase",
    "DirectoryBackend",
    "ImageNotAvailable",
    "KernelDirs",
    "KernelLaunch",
    "KernelObserver",
    "remove_tree",
    "runner_bootstrap_args",
    "write_bootstrap",
    "write_environ",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class KernelLaunch:
    kernel_id: uuid.UUID
    session_id: uuid.UUID
    slots: dict[str, Decimal]
    session_type: str = "interactive"
    startup_command: str | None = None
    environ: dict[str, str] = field(default_factory=dict)
    main: bool = True
    """The session's main kernel (the one a batch command and user code run on)."""
    image: str = ""
    """The image's canonical name (what the catalogue resolved the request to)."""
    devices: KernelDevices = field(default_factory=lambda: KernelDevices(()))
    """The accelerator devices the agent gave it (none for most kernels)."""
    bootstrap_script: str | None = None
    """The session's bootstrap script: the runner runs it at each start, before it answers
    ``status`` (``kernel_runner.bootstrap``)."""
    bootstrap_timeout_s: float = 300.0
    """How long the script may run before it is killed (and the kernel fails to start)."""
    shmem: int | None = None
    """``resource_opts.shmem`` in bytes: the kernel's ``/dev/shm`` (Docker's ``ShmSize``)."""
    exec_timeout_s: float | None = None
    """The longest one execution may run (the agent's runner client enforces it)."""
    vfolder_mounts: tuple[dict[str, Any], ...] = ()
    """The session's virtual folders as its creation event lists them (``VFolderMountSpec``),
    checked again by the backend before anything is mounted (:mod:`..vfolder_mounts`)."""


class ImageNotAvailable(Exception):
    """The image is in the catalogue but this agent cannot run it: its engine lacks it and
    there is no registry to pull it from, or it is not a kernel image it supports."""

    def __init__(self, image: str, detail: str = "not available on this agent") -> None:
        super().__init__(f"image {image!r}: {detail}")
        self.image = image


class KernelObserver(Protocol):
    """Who hears what happens to kernels on their own (the agent). Called on the backend's
    watch loop: each must return at once (spawn the work)."""

    def kernel_exited(self, kernel_id: uuid.UUID, exit_code: int, oom_killed: bool) -> None: ...

    def kernel_oom(self, kernel_id: uuid.UUID) -> None: ...


class Backend(Protocol):
    async def start(self, launch: KernelLaunch) -> dict[str, Any]:
        """Start the kernel; returns its creation info (container id, host, ...)."""

    async def wait(self, kernel_id: uuid.UUID) -> int:
        """Wait for a batch kernel's command; its exit code."""

    async def stop(self, kernel_id: uuid.UUID, grace_s: float) -> int | None:
        """Stop the kernel; its exit code, or None if it was unknown."""

    def running(self) -> set[uuid.UUID]:
        """Kernels whose process/container is alive."""

    def known(self) -> set[uuid.UUID]:
        """Kernels this backend tracks, alive or exited but not yet stopped."""

    def stats(self, kernel_id: uuid.UUID) -> dict[str, Any] | None:
        """Live stats (telemetry), or None for a kernel not running."""

    async def adopt(self) -> set[uuid.UUID]:
        """Find the kernels left running by a previous agent process; returns their ids."""

    def runner_socket(self, kernel_id: uuid.UUID) -> str | None:
        """The kernel runner's socket on this host; None for a backend that runs no code.
        Its app tunnel (``proxy.sock``) lies beside it."""

    def kernel_socket(self, kernel_id: uuid.UUID, name: str) -> KernelSocket | None:
        """One of the kernel's sockets (``runner.sock``, ``proxy.sock``) and who must answer
        there (see :mod:`.kernel_sockets`); None for a backend that runs no code or a kernel
        not running."""

    async def batch_exit(self, kernel_id: uuid.UUID) -> int | None:
        """A batch command's exit code as the runner recorded it; None while unknown."""

    def work_dir(self, kernel_id: uuid.UUID) -> Path | None:
        """The host directory that is ``/home/work`` in the kernel; None without one."""

    async def logs(self, kernel_id: uuid.UUID) -> bytes:
        """The kernel's log (the runner's output and its commands'), the last part."""

    async def remove(self, kernel_id: uuid.UUID) -> None:
        """Delete what a stopped kernel left (its directories); after :meth:`logs`."""

    async def check_image(self, image: str) -> bool:
        """Whether the image must be pulled before a kernel can start from it; raises
        :class:`ImageNotAvailable` when it cannot be had at all."""

    async def pull(self, image: str) -> None:
        """Pull the image (after :meth:`check_image` said so)."""

    async def watch(self, observer: KernelObserver) -> None:
        """Tell ``observer`` about kernels that end on their own, until cancelled; returns at
        once for a backend that cannot (reconciliation then notices)."""

    async def close(self) -> None:
        """Let go of connections (kernels keep running)."""


def starts_at_once(backend: Backend) -> bool:
    """Whether ``backend`` starts a kernel as soon as asked (its agent then reports the
    kernel creating and started in one call; :attr:`BackendBase.starts_at_once`)."""
    return bool(getattr(backend, "starts_at_once", False))


class BackendBase:
    """What most backends do about images, events and connections: nothing."""

    starts_at_once = False
    """A backend whose start is immediate says so: nobody would see the kernel CREATING,
    so its agent reports creating and started in one call (one hop to the shard, not two)."""

    isolation = UNISOLATED
    """What the backend's kernels are isolated by, as its agent registers it
    (:data:`~actors.domain.isolation.ISOLATION_OF_BACKEND`): a backend that does not say
    isolates nothing, so tenants are refused there (actors.sessions.isolation)."""

    async def check_image(self, image: str) -> bool:
        return False

    async def pull(self, image: str) -> None:
        return None

    async def watch(self, observer: KernelObserver) -> None:
        return None

    async def close(self) -> None:
        return None


RUNNER_PACKAGE = Path(kernel_runner.__file__).resolve().parent
BOOT_RUNNER = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)
"""Start the runner package from where it lies, without putting that folder on the path
user code sees (the runner drops it again once imported)."""
MAX_LOG_BYTES = 1 * 2**20
_RUN_LEFTOVERS = ("runner.sock", "proxy.sock", "batch.jsonl", "pid")
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class KernelDirs:
    """A process kernel's directories: ``work`` is its ``/home/work``, ``config`` its
    ``/home/config`` (``environ.txt``), ``run`` what only the agent and runner share."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def socket(self) -> Path:
        """The runner's socket; through a short link when the real path is too long for a
        unix socket address (108 bytes, and test or XDG dirs get deep)."""
        real = self.run / "runner.sock"
        if len(str(real).encode()) <= _MAX_SOCKET_PATH:
            return real
        return self.short_link / "runner.sock"

    @property
    def proxy_socket(self) -> Path:
        """The runner's app tunnel (see ``kernel_runner.tunnel``), beside its socket."""
        return self.socket.parent / "proxy.sock"

    @property
    def short_link(self) -> Path:
        return Path(tempfile.gettempdir()) / "kh-run" / self.root.name

    @property
    def batch_record(self) -> Path:
        return self.run / "batch.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "kernel.log"

    def create(self) -> None:
        for path in (self.work, self.config, self.run):
            path.mkdir(parents=True, exist_ok=True)
        self.run.chmod(0o700)
        if self.socket.parent == self.short_link:
            self.short_link.parent.mkdir(mode=0o700, exist_ok=True)
            self.short_link.unlink(missing_ok=True)
            self.short_link.symlink_to(self.run)

    async def clear_run(self) -> None:
        """Before a runner starts: what an earlier one (or the tenant's code, which may write
        ``run``) left at the names the new one creates. A directory planted at
        ``runner.sock`` or ``batch.jsonl`` made every restart of the kernel fail."""
        for name in _RUN_LEFTOVERS:
            path = self.run / name
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    await asyncio.to_thread(remove_tree, path)
                else:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("kernel run dir not cleared", path=str(path), error=repr(exc))

    async def remove(self) -> None:
        """Delete the kernel's directories, off the event loop; never raises (a kernel the
        tenant filled with a tree too deep or too large to remove is still stopped: what is
        left is logged)."""
        with contextlib.suppress(OSError):
            self.short_link.unlink(missing_ok=True)
        try:
            await asyncio.to_thread(remove_tree, self.root)
        except Exception as exc:
            log.warning("kernel directory not removed", path=str(self.root), error=repr(exc))


def remove_tree(root: Path) -> None:
    """``rm -rf --one-file-system`` on ``root``: the tree is the tenant's, so it may be
    arbitrarily deep (``shutil.rmtree`` recurses once per level and raises RecursionError
    past ~1000), hold symlinks (never followed) or mount points (not crossed). A blocking
    call: run it in a thread. Logs what could not be removed."""
    if not os.path.lexists(root):
        return
    done = subprocess.run(  # its own error lines could be millions: not kept
        ["rm", "-rf", "--one-file-system", "--", str(root)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    if os.path.lexists(root):
        log.warning("kernel directory left behind", path=str(root), rm_exit=done.returncode)


class DirectoryBackend(BackendBase):
    """A backend whose kernels each have :class:`KernelDirs` under ``work_root``: the
    runner's socket, its batch record and the work dir (the process and Docker backends)."""

    work_root: Path
    volume_root: Path | None = None
    """Where this host's virtual folders are (``<root>/<folder hex>``); None: none here, and
    a session that mounts one fails to start (:mod:`..vfolder_mounts`)."""

    def dirs(self, kernel_id: uuid.UUID) -> KernelDirs:
        return KernelDirs(self.work_root / kernel_id.hex)

    def work_dir(self, kernel_id: uuid.UUID) -> Path | None:
        return self.dirs(kernel_id).work

    def runner_socket(self, kernel_id: uuid.UUID) -> str | None:
        return str(self.dirs(kernel_id).socket)

    def runner_peer(self, kernel_id: uuid.UUID) -> KernelPeer | None:
        """Who answers on the kernel's sockets; None while the kernel does not run."""
        raise NotImplementedError

    def kernel_socket(self, kernel_id: uuid.UUID, name: str) -> KernelSocket | None:
        """Through the real run dir (never the short link: the connection goes through the
        dir fd, whose path is short whatever the run dir's)."""
        peer = self.runner_peer(kernel_id)
        if peer is None:
            return None
        return KernelSocket(str(self.dirs(kernel_id).run), name, peer)

    async def batch_exit(self, kernel_id: uuid.UUID) -> int | None:
        """Read off the event loop, through the run dir's fd, the tail only: the record is
        the tenant's to replace (a FIFO, a symlink to ``/dev/zero``: refused)."""
        dirs = self.dirs(kernel_id)
        tail = await asyncio.to_thread(read_tail, str(dirs.run), dirs.batch_record.name)
        return None if tail is None else last_exec_code_in(tail)

    def running(self) -> set[uuid.UUID]:
        raise NotImplementedError

    async def wait(self, kernel_id: uuid.UUID) -> int:
        """A batch kernel's command: its recorded exit code once the runner has one, or -1
        when the kernel ended before it did."""
        while True:
            code = await self.batch_exit(kernel_id)
            if code is not None:
                return code
            if kernel_id not in self.running():  # one last look: it may have just finished
                code = await self.batch_exit(kernel_id)
                return -1 if code is None else code
            await asyncio.sleep(0.2)


def write_environ(dirs: KernelDirs, environ: dict[str, str]) -> None:
    """``/home/config/environ.txt``: the kernel's variables, for shells started later."""
    (dirs.config / "environ.txt").write_text(
        "".join(f"{k}={v}\n" for k, v in sorted(environ.items()))
    )


BOOTSTRAP_FILE = "bootstrap.sh"


def write_bootstrap(dirs: KernelDirs, script: str | None) -> bool:
    """The session's bootstrap script at ``/home/config/bootstrap.sh`` (read-only in a
    container), written afresh at each start (a restart runs it again, as upstream runs it at
    each container start) or removed when there is none. Whether there is one."""
    path = dirs.config / BOOTSTRAP_FILE
    path.unlink(missing_ok=True)
    if not script:
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as out:
        out.write(script)
    return True


def runner_bootstrap_args(launch: KernelLaunch, config_dir: str) -> list[str]:
    """The runner's options that make it run the bootstrap script (none without one)."""
    if not launch.bootstrap_script:
        return []
    return [
        "--bootstrap",
        f"{config_dir}/{BOOTSTRAP_FILE}",
        "--bootstrap-timeout",
        str(launch.bootstrap_timeout_s),
    ]
