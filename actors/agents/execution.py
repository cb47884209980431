"""What a session's users reach on an agent (the API's execute/complete/upload/...): each
call forwarded to the kernel's runner over its unix socket, or run on the kernel's work dir
in the file pool, and the kernel's log.

The agent's :class:`ExecutionProxy` holds the connections to the runners of the kernels
running there (the agent opens one when a kernel starts, and closes it when it stops; an
adopted kernel's on first use). Its methods are the agent's
:data:`~actors.sessions.execution.KERNEL_OPERATIONS`, each taking the kernel id first.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from actors.runtime.background import Background
from events import RedisEventStore

from ..domain.errors import GenericBadRequest
from . import workdir
from .backends.base import Backend
from .file_pool import FilePool
from .runner_client import RunnerClient

__all__ = [
    "LOGS_TTL_S",
    "PROXY_SOCKET",
    "RUNNER_SOCKET",
    "ExecutionProxy",
    "keep_logs",
    "kept_logs",
]

LOGS_TTL_S = 7 * 86400
"""How long a terminated kernel's log stays readable (``<p>:logs:<kernel>``)."""
RUNNER_SOCKET = "runner.sock"
PROXY_SOCKET = "proxy.sock"
_TOUCH_EVERY_S = 1.0


class ExecutionProxy:
    def __init__(
        self,
        store: RedisEventStore,
        agent_id: str,
        backend: Backend,
        background: Background,
        session_of: Mapping[uuid.UUID, uuid.UUID],
    ) -> None:
        self.store = store
        self.agent_id = agent_id
        self.backend = backend
        self.background = background
        self.session_of = session_of
        """The session of each kernel the agent started or resumed (activity is its)."""
        self.exec_timeout_s: float | None = None
        """The exec timeout of a kernel the agent set none for."""
        self.exec_timeouts: dict[uuid.UUID, float | None] = {}
        """Each kernel's exec timeout (its session's ``exec_timeout_s``), set by the agent
        before it connects to the kernel's runner."""
        self.on_exec_timeout: Callable[[uuid.UUID], None] | None = None
        """Told (at once: it spawns its work) of a query run that ended ``exec-timeout``."""
        self.runners: dict[uuid.UUID, RunnerClient] = {}
        """Connections to the kernel runners of kernels running here."""
        self._touched: dict[uuid.UUID, float] = {}

    # ---- the runners' connections ----------------------------------------------------------
    def connect(self, kernel_id: uuid.UUID) -> RunnerClient | None:
        """A new connection to a kernel's runner (None: the backend runs no code)."""
        socket = self.backend.kernel_socket(kernel_id, RUNNER_SOCKET)
        if socket is None:
            return None
        timeout = self.exec_timeouts.get(kernel_id, self.exec_timeout_s)
        client = self.runners[kernel_id] = RunnerClient(socket, exec_timeout_s=timeout)
        return client

    def runner(self, kernel_id: uuid.UUID) -> RunnerClient | None:
        """The open connection to a kernel's runner, if any."""
        return self.runners.get(kernel_id)

    async def close_runner(self, kernel_id: uuid.UUID) -> None:
        client = self.runners.pop(kernel_id, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        for kernel_id in list(self.runners):
            await self.close_runner(kernel_id)

    def forget_session(self, session_id: uuid.UUID) -> None:
        """A kernel of the session stopped here: its activity is no longer touched."""
        self._touched.pop(session_id, None)

    def _runner(self, kernel_id: uuid.UUID) -> RunnerClient:
        if kernel_id not in self.backend.running():
            raise GenericBadRequest(f"kernel {kernel_id} is not running on {self.agent_id}")
        client = self.runners.get(kernel_id)
        if client is None:
            client = self.connect(kernel_id)  # an adopted kernel: first use after a restart
            if client is None:
                raise GenericBadRequest(f"the {type(self.backend).__name__} runs no code")
        return client

    def _touch(self, kernel_id: uuid.UUID) -> None:
        """Activity for the idle checks, off the latency path and at most once a second per
        session (idle thresholds are minutes; an exec loop must not become a Redis loop)."""
        session_id = self.session_of.get(kernel_id)
        if session_id is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self._touched.get(session_id, -_TOUCH_EVERY_S) >= _TOUCH_EVERY_S:
            self._touched[session_id] = now
            self.background.spawn(self.store.idle.touch(str(session_id)))

    # ---- code execution (the runner's protocol) -------------------------------------------
    async def execute(
        self,
        kernel_id: uuid.UUID,
        run_id: str,
        mode: str,
        code: str = "",
        options: dict[str, Any] | None = None,
        flush_timeout: float | None = 2.0,
    ) -> dict[str, Any]:
        client = self._runner(kernel_id)
        self._touch(kernel_id)
        result = await client.execute(run_id, mode, code, options, flush_timeout)
        if result["status"] != "continued":
            self._touch(kernel_id)
        if result["status"] == "exec-timeout" and self.on_exec_timeout is not None:
            self.on_exec_timeout(kernel_id)
        return result

    async def interrupt(self, kernel_id: uuid.UUID) -> None:
        await self._runner(kernel_id).interrupt()

    async def complete(
        self, kernel_id: uuid.UUID, code: str, options: dict[str, Any] | None = None
    ) -> list[str]:
        return await self._runner(kernel_id).complete(code, options)

    async def start_service(
        self, kernel_id: uuid.UUID, name: str, port: int, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        options = dict(options or {})
        protocol = str(options.pop("protocol", "http"))
        info = {"name": name, "port": port, "protocol": protocol, "options": options}
        return await self._runner(kernel_id).start_service(info)

    async def shutdown_service(self, kernel_id: uuid.UUID, name: str) -> None:
        await self._runner(kernel_id).shutdown_service(name)

    async def notify_event(self, kernel_id: uuid.UUID, kind: str, data: dict[str, Any]) -> None:
        """An event for the runner (``oom`` makes it log what the kernel lost)."""
        await self._runner(kernel_id).feed_event(kind, data)

    async def app_tunnel(self, kernel_id: uuid.UUID) -> dict[str, Any]:
        """Where the kernel's app tunnel listens on this host (the runner's ``proxy.sock``)
        and who must answer there, as plain data: a client on this node connects with
        :func:`.kernel_sockets.connect` (never to the bare path, which the tenant controls)
        and asks for a port in the kernel."""
        self._runner(kernel_id)  # running, and a backend that runs code
        socket = self.backend.kernel_socket(kernel_id, PROXY_SOCKET)
        if socket is None:
            raise GenericBadRequest(f"kernel {kernel_id} is not running on {self.agent_id}")
        return socket.to_wire()

    # ---- files -----------------------------------------------------------------------------
    def _work_dir(self, kernel_id: uuid.UUID) -> Path:
        path = self.backend.work_dir(kernel_id)
        if path is None or kernel_id not in self.backend.running():
            raise GenericBadRequest(f"kernel {kernel_id} has no work dir on {self.agent_id}")
        return path

    # The tenant owns the files these touch (a slow disk, a huge directory): they run in the
    # file pool's threads, never on the loop every kernel shares nor in its default executor
    # (batch results use that), a few per kernel at a time (workdir never blocks on a FIFO).
    @functools.cached_property
    def file_pool(self) -> FilePool:
        """The threads tenants' file operations run in (:mod:`.file_pool`)."""
        return FilePool()

    async def upload_files(self, kernel_id: uuid.UUID, files: list[tuple[str, bytes]]) -> list[str]:
        self._touch(kernel_id)
        return await self.file_pool.run(kernel_id, workdir.upload, self._work_dir(kernel_id), files)

    async def download_files(self, kernel_id: uuid.UUID, names: list[str]) -> bytes:
        return await self.file_pool.run(
            kernel_id, workdir.download, self._work_dir(kernel_id), names
        )

    async def download_single(self, kernel_id: uuid.UUID, name: str) -> bytes:
        return await self.file_pool.run(
            kernel_id, workdir.download_single, self._work_dir(kernel_id), name
        )

    async def download_chunk(
        self, kernel_id: uuid.UUID, name: str, offset: int, length: int
    ) -> tuple[bytes, int]:
        """A piece of one file and its size (the gateway streams ``download_single``)."""
        return await self.file_pool.run(
            kernel_id, workdir.read_chunk, self._work_dir(kernel_id), name, offset, length
        )

    async def list_files(self, kernel_id: uuid.UUID, path: str) -> dict[str, Any]:
        return await self.file_pool.run(
            kernel_id, workdir.list_files, self._work_dir(kernel_id), path
        )

    # ---- logs ------------------------------------------------------------------------------
    async def logs(self, kernel_id: uuid.UUID) -> str:
        """The kernel's log: live while it runs, else what was kept when it ended."""
        if kernel_id in self.backend.known():
            return (await self.backend.logs(kernel_id)).decode("utf-8", "replace")
        return await kept_logs(self.store, kernel_id)


async def keep_logs(store: RedisEventStore, kernel_id: uuid.UUID, log: bytes) -> None:
    """Keep a stopped kernel's log (capped by its backend) for :data:`LOGS_TTL_S`."""
    await store.telemetry.keep_kernel_log(str(kernel_id), log, LOGS_TTL_S)


async def kept_logs(store: RedisEventStore, kernel_id: uuid.UUID) -> str:
    """What an agent kept of a terminated kernel's log ("" when nothing, or expired)."""
    return await store.telemetry.kernel_log(str(kernel_id))
