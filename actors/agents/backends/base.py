"""Kernel backends: how an agent turns a scheduled kernel into something running.

One small interface, several implementations: ``sim`` (delays only, for scale and tests),
``process`` (a local subprocess per kernel) and ``docker`` (:mod:`.docker_backend`).

A backend outlives the agent that drives it: kernels keep running while the agent's actor
restarts, and :meth:`Backend.adopt` finds them again (a process group recorded in the
kernel's work dir, a container label), so reconciliation can tell a kernel that is
still running from one that ended while nobody watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import structlog

from kernelhub.in_kernel import kernel_runner
from kernelhub.in_kernel.kernel_runner.batch import last_exec_code_in

from ..domain.isolation import UNISOLATED, isolation_of_backend
from .accelerators import KernelDevices
from .kernel_sockets import KernelPeer, KernelSocket, read_tail

__all__ = [
    "Backend",
    "BackendBase",
    "DirectoryBackend",
    "ImageNotAvailable",
    "KernelDirs",
    "KernelLaunch",
    "KernelObserver",
    "ProcessBackend",
    "SimBackend",
    "remove_tree",
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


class BackendBase:
    """What most backends do about images, events and connections: nothing."""

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


class SimBackend(BackendBase):
    """No processes: configurable delays and a fixed batch exit code. With a ``pull_delay``
    every image is pulled once (PULLING), as an agent without it cached would."""

    isolation = isolation_of_backend("sim")

    def __init__(
        self,
        start_delay: float = 0.02,
        stop_delay: float = 0.01,
        batch_exit_code: int = 0,
        utilization: dict[str, float] | None = None,
        pull_delay: float = 0.0,
    ) -> None:
        self.start_delay = start_delay
        self.stop_delay = stop_delay
        self.batch_exit_code = batch_exit_code
        self.pull_delay = pull_delay
        self.pulled: set[str] = set()
        self.utilization = dict(utilization or {"cpu_util": 0.0, "mem": 0.0})
        """What every simulated kernel reports using, in percent of its allocation."""
        self._running: set[uuid.UUID] = set()

    async def start(self, launch: KernelLaunch) -> dict[str, Any]:
        await asyncio.sleep(self.start_delay)
        self._running.add(launch.kernel_id)
        return {"container_id": launch.kernel_id.hex, "kernel_host": "127.0.0.1"}

    async def wait(self, kernel_id: uuid.UUID) -> int:
        await asyncio.sleep(self.start_delay)
        return self.batch_exit_code

    async def stop(self, kernel_id: uuid.UUID, grace_s: float) -> int | None:
        await asyncio.sleep(self.stop_delay)
        if kernel_id not in self._running:
            return None
        self._running.discard(kernel_id)
        return 0

    def running(self) -> set[uuid.UUID]:
        return set(self._running)

    def known(self) -> set[uuid.UUID]:
        return set(self._running)

    def stats(self, kernel_id: uuid.UUID) -> dict[str, Any] | None:
        if kernel_id not in self._running:
            return None
        return {"cpu_ticks": 0, "rss_bytes": 0, "pct": dict(self.utilization)}

    async def adopt(self) -> set[uuid.UUID]:
        return set()  # simulated kernels die with their host

    def runner_socket(self, kernel_id: uuid.UUID) -> str | None:
        return None

    def kernel_socket(self, kernel_id: uuid.UUID, name: str) -> KernelSocket | None:
        return None

    async def batch_exit(self, kernel_id: uuid.UUID) -> int | None:
        return None

    def work_dir(self, kernel_id: uuid.UUID) -> Path | None:
        return None

    async def logs(self, kernel_id: uuid.UUID) -> bytes:
        return b""

    async def remove(self, kernel_id: uuid.UUID) -> None:
        return None

    async def check_image(self, image: str) -> bool:
        return self.pull_delay > 0 and image not in self.pulled

    async def pull(self, image: str) -> None:
        await asyncio.sleep(self.pull_delay)
        self.pulled.add(image)


_RUNNER_PACKAGE = Path(kernel_runner.__file__).resolve().parent
_BOOT_RUNNER = (
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


class ProcessBackend(DirectoryBackend):
    """Each kernel a local process: the kernel runner (:mod:`kernelhub.in_kernel.kernel_runner`) as
    its main process, in the kernel's own directories and session, with resource limits from its
    slots (address space from ``mem``, a cap on processes). There is no isolation beyond that:
    user code sees this host's filesystem and Python; the Docker backend is the isolated one.
    Destroying a kernel asks the runner to stop (SIGTERM), then kills every process left in the
    kernel's session after the grace period."""

    def __init__(
        self,
        work_root: str | os.PathLike[str],
        *,
        max_processes: int = 256,
        service_defs: str | os.PathLike[str] | None = None,
        runner_options: tuple[str, ...] = (),
    ) -> None:
        self.work_root = Path(work_root)
        self.max_processes = max_processes
        self.service_defs = str(service_defs) if service_defs is not None else None
        self.runner_options = runner_options
        """Extra runner command-line options (tests shorten its intervals)."""
        self._procs: dict[uuid.UUID, asyncio.subprocess.Process] = {}
        self._adopted: dict[uuid.UUID, int] = {}
        """Kernels started by an earlier agent process: kernel -> process group id."""

    def _limits(self, slots: dict[str, Decimal]) -> Any:
        memory = int(slots.get("mem", 0))

        def apply() -> None:
            if (
                memory > 0
            ):  # address space: generous headroom over the slot, as RSS is not limitable
                limit = max(memory * 4, 512 * 2**20)
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            resource.setrlimit(resource.RLIMIT_NPROC, (self.max_processes, self.max_processes))

        return apply

    def _argv(self, dirs: KernelDirs) -> list[str]:
        argv = [
            sys.executable,
            "-c",
            _BOOT_RUNNER,
            str(_RUNNER_PACKAGE.parent),
            _RUNNER_PACKAGE.name,
            "python",
            sys.executable,
            "--socket",
            str(dirs.socket),
            "--work-dir",
            str(dirs.work),
            "--config-dir",
            str(dirs.config),
            "--batch-record",
            str(dirs.batch_record),
            "--proxy-socket",
            str(dirs.proxy_socket),
        ]
        if self.service_defs is not None:
            argv += ["--service-defs", self.service_defs]
        return argv + list(self.runner_options)

    async def start(self, launch: KernelLaunch) -> dict[str, Any]:
        dirs = self.dirs(launch.kernel_id)
        dirs.create()
        await dirs.clear_run()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(dirs.work),
            "BACKENDAI_KERNEL_ID": str(launch.kernel_id),
            "BACKENDAI_SESSION_ID": str(launch.session_id),
            **launch.environ,
            **launch.devices.environ(on_host=True),
            "KERNELHUB_BACKEND": "process",
            "KERNELHUB_WORK_DIR": str(dirs.work),
        }
        write_environ(dirs, {**launch.environ, **launch.devices.environ(on_host=True)})
        log_fd = await asyncio.to_thread(_open_log, dirs.log)
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv(dirs),
                cwd=dirs.work,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                preexec_fn=self._limits(launch.slots),
            )
        finally:
            os.close(log_fd)
        self._procs[launch.kernel_id] = process
        _record_pid(dirs.run / _PID_FILE, process.pid)
        return {
            "container_id": f"pid-{process.pid}",
            "kernel_host": "127.0.0.1",
            "pid": process.pid,
            "work_dir": str(dirs.work),
        }

    async def adopt(self) -> set[uuid.UUID]:
        """Kernel runners recorded in kernel dirs whose process still runs that kernel."""
        found: set[uuid.UUID] = set()
        if not self.work_root.is_dir():
            return found
        for root in self.work_root.iterdir():
            try:
                kernel_id = uuid.UUID(root.name)
                recorded = read_tail(str(self.dirs(kernel_id).run), _PID_FILE, 64)
                pid = int((recorded or b"").strip())
            except (ValueError, OSError):
                continue
            if kernel_id in self._procs or not _runs_kernel(pid, kernel_id):
                continue
            self._adopted[kernel_id] = pid
            found.add(kernel_id)
        return found

    async def stop(self, kernel_id: uuid.UUID, grace_s: float) -> int | None:
        """SIGTERM to the runner, which stops its commands and services; after the grace
        period SIGKILL to whatever is left in the kernel's session. Its exit code."""
        if kernel_id in self._adopted:
            pid = self._adopted.pop(kernel_id)
            if _runs_kernel(pid, kernel_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            if not await _exited(pid, grace_s):
                _signal_session(pid, signal.SIGKILL)
                await _exited(pid)
            _signal_session(pid, signal.SIGKILL)
            return -signal.SIGTERM  # not our child: its status is not ours to read
        process = self._procs.pop(kernel_id, None)
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                _signal_session(process.pid, signal.SIGKILL)
                await process.wait()
        _signal_session(process.pid, signal.SIGKILL)  # stragglers the runner left
        return process.returncode

    async def logs(self, kernel_id: uuid.UUID) -> bytes:
        """The log's last part, read off the loop and only from a regular file: the kernel's
        root dir is writable by a process kernel (the same uid), which may leave a FIFO at
        ``kernel.log`` (a plain open blocked the agent's loop until someone wrote to it)."""
        dirs = self.dirs(kernel_id)
        tail = await asyncio.to_thread(read_tail, str(dirs.root), dirs.log.name, MAX_LOG_BYTES)
        return tail or b""

    async def remove(self, kernel_id: uuid.UUID) -> None:
        if kernel_id not in self._procs and kernel_id not in self._adopted:
            await self.dirs(kernel_id).remove()

    def running(self) -> set[uuid.UUID]:
        alive = {k for k, p in self._procs.items() if p.returncode is None}
        return alive | {k for k, pid in self._adopted.items() if _runs_kernel(pid, k)}

    def known(self) -> set[uuid.UUID]:
        return set(self._procs) | set(self._adopted)

    def _pid(self, kernel_id: uuid.UUID) -> int | None:
        process = self._procs.get(kernel_id)
        if process is not None:
            return process.pid if process.returncode is None else None
        pid = self._adopted.get(kernel_id)
        return pid if pid is not None and _runs_kernel(pid, kernel_id) else None

    def runner_peer(self, kernel_id: uuid.UUID) -> KernelPeer | None:
        """The runner leads a session of its own (``start_new_session``): its sockets are
        answered by a process of that session (the runner itself, or user code in it)."""
        pid = self._pid(kernel_id)
        return None if pid is None else KernelPeer(session=pid)

    def stats(self, kernel_id: uuid.UUID) -> dict[str, int] | None:
        """Live stats from /proc (telemetry, not events): resident memory and CPU ticks."""
        pid = self._pid(kernel_id)
        if pid is None:
            return None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return {
            "cpu_ticks": int(fields[11]) + int(fields[12]),
            "rss_bytes": int(fields[21]) * os.sysconf("SC_PAGE_SIZE"),
        }


_PID_FILE = "pid"


def _record_pid(path: Path, pid: int) -> None:
    """A fresh file, never through whatever a previous incarnation's code left there."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as record:
        record.write(str(pid))


def _open_log(path: Path) -> int:
    """The kernel log for a new runner to append to: a regular file, never what was left at
    its name (a FIFO blocked the agent in ``open``; a symlink sent the runner's output
    elsewhere): anything else there is replaced. Blocking: a thread."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:  # a symlink (ELOOP), a FIFO nobody reads (ENXIO), a directory
        pass
    else:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            return fd
        os.close(fd)
    log.warning("kernel log replaced", path=str(path), why="not a regular file")
    if os.path.isdir(path) and not os.path.islink(path):
        remove_tree(path)
    else:
        path.unlink(missing_ok=True)
    return os.open(path, flags | os.O_EXCL, 0o600)


def _signal_session(session: int, sig: int) -> None:
    """Signal every process of a session (the runner's, which is its own session leader):
    commands and services sit in process groups of their own, but never leave it."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), sig)


async def _exited(pid: int, timeout: float | None = None) -> bool:
    """Wait for a process that is not our child (an adopted kernel) to exit, through a
    pidfd (readable once the process has exited); False if ``timeout`` passed first."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_reader(fd, done.set)
    try:
        await asyncio.wait_for(done.wait(), timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _runs_kernel(pid: int, kernel_id: uuid.UUID) -> bool:
    """The process is alive and was started for this kernel (pids get reused)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and f"BACKENDAI_KERNEL_ID={kernel_id}".encode() in environ
