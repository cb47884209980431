"""The simulated backend: no processes, only delays (for scale and tests).

It runs no code, so of a session's options it can honour none that act inside a kernel, and
it does not pretend to: a kernel launched with any of them has a log (what ``kh logs`` shows)
naming each one not applied: ``environ`` (there is no environment; the variables are in the
log's session spec all the same), ``bootstrap_script`` (not run: the kernel starts as if it
succeeded), ``resource_opts.shmem`` (there is no ``/dev/shm``), the exec timeout (no
execution happens; a simulated batch ends with its configured exit code) and virtual folder
mounts (there is no filesystem). Simulated agents
are never offered to tenants' code (``actors.sessions.isolation``), only to scale tests and
benchmarks."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from ...domain.isolation import isolation_of_backend
from ...domain.session import is_reserved_env_name
from ..kernel_sockets import KernelSocket
from .base import BackendBase, KernelLaunch

__all__ = ["AT_ONCE_S", "SimBackend"]

AT_ONCE_S = 0.1
"""A simulated start no longer than this counts as immediate (``starts_at_once``)."""


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
        self._notes: dict[uuid.UUID, bytes] = {}
        """Each kernel's log: the options it was launched with and could not apply."""

    @property
    def starts_at_once(self) -> bool:  # type: ignore[override]
        """Its default start (20 ms) is immediate; a slowed-down one is reported creating first."""
        return self.start_delay <= AT_ONCE_S

    async def start(self, launch: KernelLaunch) -> dict[str, Any]:
        await asyncio.sleep(self.start_delay)
        self._running.add(launch.kernel_id)
        notes = _unapplied(launch)
        if notes:
            self._notes[launch.kernel_id] = notes
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
        return self._notes.get(kernel_id, b"")

    async def remove(self, kernel_id: uuid.UUID) -> None:
        if kernel_id not in self._running:
            self._notes.pop(kernel_id, None)

    async def check_image(self, image: str) -> bool:
        return self.pull_delay > 0 and image not in self.pulled

    async def pull(self, image: str) -> None:
        await asyncio.sleep(self.pull_delay)
        self.pulled.add(image)


def _unapplied(launch: KernelLaunch) -> bytes:
    """The kernel log of a simulated kernel: one line per option it cannot apply."""
    lines = []
    users = sorted(k for k in launch.environ if not is_reserved_env_name(k))
    if users:
        lines.append(f"environ not applied (no process runs): {', '.join(users)}")
    if launch.bootstrap_script:
        lines.append("bootstrap script not run (no process runs)")
    if launch.shmem:
        lines.append(f"resource_opts.shmem={launch.shmem} not applied (no /dev/shm)")
    if launch.exec_timeout_s:
        lines.append(f"exec timeout {launch.exec_timeout_s:g} s not applied (no execution)")
    for mount in launch.vfolder_mounts:
        lines.append(f"folder {str(mount.get('name'))[:64]} not mounted (no filesystem)")
    return "".join(f"kernelhub-sim: {line}\n" for line in lines).encode()
