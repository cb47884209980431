"""The simulated backend: no processes, only delays (for scale and tests)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from ...domain.isolation import isolation_of_backend
from ..kernel_sockets import KernelSocket
from .base import BackendBase, KernelLaunch

__all__ = ["SimBackend"]


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
