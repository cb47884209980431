"""Kernel backends: how an agent turns a scheduled kernel into something running.

One small interface, several implementations: ``sim`` (delays only, for scale and tests),
``process`` (a local subprocess per kernel) and, in its own issue, ``docker``.

A backend outlives the agent that drives it: kernels keep running while the agent's actor
restarts, and :meth:`Backend.adopt` finds them again (a process group recorded in the
kernel's work dir, later a container label), so reconciliation can tell a kernel that is
still running from one that ended while nobody watched.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import sys
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Backend", "KernelLaunch", "ProcessBackend", "SimBackend"]


@dataclass(frozen=True)
class KernelLaunch:
    kernel_id: uuid.UUID
    session_id: uuid.UUID
    slots: dict[str, Decimal]
    session_type: str = "interactive"
    startup_command: str | None = None
    environ: dict[str, str] = field(default_factory=dict)


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


class SimBackend:
    """No processes: configurable delays and a fixed batch exit code."""

    def __init__(
        self,
        start_delay: float = 0.02,
        stop_delay: float = 0.01,
        batch_exit_code: int = 0,
        utilization: dict[str, float] | None = None,
    ) -> None:
        self.start_delay = start_delay
        self.stop_delay = stop_delay
        self.batch_exit_code = batch_exit_code
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


_IDLE_KERNEL = "import signal; signal.pause()"


class ProcessBackend:
    """Each kernel a local process in its own work dir and process group, with resource
    limits from its slots (address space from ``mem``, CPU time unlimited, a cap on
    processes). A batch kernel runs its startup command with ``/bin/sh -c``; an interactive
    one idles until the kernel runner (its own issue) takes over. Destroying a kernel kills
    its whole process group: SIGTERM, then SIGKILL after the grace period."""

    def __init__(self, work_root: str | os.PathLike[str], *, max_processes: int = 256) -> None:
        self.work_root = Path(work_root)
        self.max_processes = max_processes
        self._procs: dict[uuid.UUID, asyncio.subprocess.Process] = {}
        self._adopted: dict[uuid.UUID, int] = {}
        """Kernels started by an earlier agent process: kernel -> process group id."""

    def work_dir(self, kernel_id: uuid.UUID) -> Path:
        return self.work_root / kernel_id.hex

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

    async def start(self, launch: KernelLaunch) -> dict[str, Any]:
        work_dir = self.work_dir(launch.kernel_id)
        work_dir.mkdir(parents=True, exist_ok=True)
        if launch.session_type == "batch" and launch.startup_command:
            # the exit code is also written down, for an agent that restarts meanwhile
            argv = ["/bin/sh", "-c", _RECORD_EXIT, "kh-batch", launch.startup_command]
        else:
            argv = [sys.executable, "-c", _IDLE_KERNEL]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work_dir),
               "BACKENDAI_KERNEL_ID": str(launch.kernel_id),
               "BACKENDAI_SESSION_ID": str(launch.session_id), **launch.environ}  # fmt: skip
        if launch.session_type == "batch":
            env["_BACKEND_BATCH_MODE"] = "1"
        log_fd = os.open(work_dir / "kernel.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, cwd=work_dir, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd, stderr=log_fd, start_new_session=True,
                preexec_fn=self._limits(launch.slots),
            )  # fmt: skip
        finally:
            os.close(log_fd)
        self._procs[launch.kernel_id] = process
        (work_dir / _PID_FILE).write_text(str(process.pid))
        return {"container_id": f"pid-{process.pid}", "kernel_host": "127.0.0.1",
                "pid": process.pid, "work_dir": str(work_dir)}  # fmt: skip

    async def wait(self, kernel_id: uuid.UUID) -> int:
        if kernel_id in self._adopted:
            await _exited(self._adopted[kernel_id])
            return self._recorded_exit(kernel_id)
        return await self._procs[kernel_id].wait()

    def _recorded_exit(self, kernel_id: uuid.UUID) -> int:
        try:
            return int((self.work_dir(kernel_id) / _EXIT_FILE).read_text().strip())
        except (OSError, ValueError):
            return -1  # killed before it could say

    async def adopt(self) -> set[uuid.UUID]:
        """Process groups recorded in work dirs whose leader still runs this kernel."""
        found: set[uuid.UUID] = set()
        if not self.work_root.is_dir():
            return found
        for pid_file in self.work_root.glob(f"*/{_PID_FILE}"):
            try:
                kernel_id = uuid.UUID(pid_file.parent.name)
                pid = int(pid_file.read_text().strip())
            except (ValueError, OSError):
                continue
            if kernel_id in self._procs or not _runs_kernel(pid, kernel_id):
                continue
            self._adopted[kernel_id] = pid
            found.add(kernel_id)
        return found

    async def _stop_adopted(self, kernel_id: uuid.UUID, grace_s: float) -> int:
        pgid = self._adopted.pop(kernel_id)
        _signal_group(pgid, signal.SIGTERM)
        if not await _exited(pgid, grace_s):
            _signal_group(pgid, signal.SIGKILL)
            await _exited(pgid)
        code = self._recorded_exit(kernel_id)
        shutil.rmtree(self.work_dir(kernel_id), ignore_errors=True)
        return code

    async def stop(self, kernel_id: uuid.UUID, grace_s: float) -> int | None:
        if kernel_id in self._adopted:
            return await self._stop_adopted(kernel_id, grace_s)
        process = self._procs.pop(kernel_id, None)
        if process is None:
            return None
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        shutil.rmtree(self.work_dir(kernel_id), ignore_errors=True)
        return process.returncode

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


_PID_FILE = ".kh-pid"
_EXIT_FILE = ".kh-exit"
_RECORD_EXIT = '/bin/sh -c "$1"; code=$?; echo $code > .kh-exit; exit $code'


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


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
