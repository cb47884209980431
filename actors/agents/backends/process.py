"""The process backend: each kernel a local process, unisolated.

The session's options reach it as they reach a container: ``environ`` in the runner's
environment and ``environ.txt``; the bootstrap script run by the runner before it is ready;
the exec timeout enforced by the agent's runner client. ``resource_opts.shmem`` cannot be: a
process kernel has no ``/dev/shm`` of its own (it shares the host's, like everything else
here), so the agent says so in the kernel's log rather than pretend (tenants never run here:
``actors.sessions.isolation``). Virtual folders are symlinks in the work dir at their
kernel paths' places (``work/data -> <volume root>/<hex>``): a process kernel sees the
host's filesystem anyway, so a ``ro`` folder is writable here, and its log says so
(:mod:`..vfolder_mounts`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shlex
import signal
import stat
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from ..kernel_sockets import KernelPeer, read_tail
from ..vfolder_mounts import link_into_work_dir, parse_mounts
from .base import (
    BOOT_RUNNER,
    MAX_LOG_BYTES,
    RUNNER_PACKAGE,
    DirectoryBackend,
    KernelDirs,
    KernelLaunch,
    remove_tree,
    runner_bootstrap_args,
    write_bootstrap,
    write_environ,
)

__all__ = ["ProcessBackend"]

log = structlog.get_logger(__name__)


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
        volume_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.work_root = Path(work_root)
        self.volume_root = Path(volume_root) if volume_root is not None else None
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

    def _argv(self, dirs: KernelDirs, launch: KernelLaunch) -> list[str]:
        argv = [
            sys.executable,
            "-c",
            BOOT_RUNNER,
            str(RUNNER_PACKAGE.parent),
            RUNNER_PACKAGE.name,
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
        argv += runner_bootstrap_args(launch, str(dirs.config))
        return argv + list(self.runner_options)

    async def start(self, launch: KernelLaunch) -> dict[str, Any]:
        mounts = parse_mounts(launch.vfolder_mounts)
        dirs = self.dirs(launch.kernel_id)
        dirs.create()
        await dirs.clear_run()
        notes = await asyncio.to_thread(link_into_work_dir, self.volume_root, mounts, dirs.work)
        commands = await asyncio.to_thread(_python_commands, dirs.root / "bin")
        env = {
            "PATH": f"{commands}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(dirs.work),
            "BACKENDAI_KERNEL_ID": str(launch.kernel_id),
            "BACKENDAI_SESSION_ID": str(launch.session_id),
            **launch.environ,
            **launch.devices.environ(on_host=True),
            "KERNELHUB_BACKEND": "process",
            "KERNELHUB_WORK_DIR": str(dirs.work),
        }
        write_environ(dirs, {**launch.environ, **launch.devices.environ(on_host=True)})
        write_bootstrap(dirs, launch.bootstrap_script)
        log_fd = await asyncio.to_thread(_open_log, dirs.log)
        if launch.shmem:
            os.write(log_fd, _SHMEM_NOTE.format(launch.shmem).encode())
        for note in notes:
            os.write(log_fd, note.encode())
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv(dirs, launch),
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
_SHMEM_NOTE = (
    "kernelhub-agent: resource_opts.shmem={} is not enforced on the process backend: "
    "a process kernel shares the host's /dev/shm\n"
)


def _record_pid(path: Path, pid: int) -> None:
    """A fresh file, never through whatever a previous incarnation's code left there."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as record:
        record.write(str(pid))


def _python_commands(bin_dir: Path) -> Path:
    """``python`` and ``python3`` for the kernel's commands (``--exec 'python main.py'``, a
    terminal), first on its ``PATH``: the interpreter the runner and query mode use, whatever
    the host calls ``python`` (or lacks). Small scripts that ``exec`` it, so a virtual
    environment's interpreter stays one. Written afresh at each start, never through what is
    at their names (the kernel may write here: it runs as the agent's own uid)."""
    if bin_dir.is_symlink() or (bin_dir.exists() and not bin_dir.is_dir()):
        bin_dir.unlink()
    bin_dir.mkdir(exist_ok=True)
    script = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n'
    for name in ("python", "python3"):
        path = bin_dir / name
        if path.is_dir() and not path.is_symlink():
            remove_tree(path)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
        with os.fdopen(fd, "w") as out:
            out.write(script)
    return bin_dir


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
