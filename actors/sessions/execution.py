"""Reaching a session's code: execute, interrupt, complete, services, files and logs go
to the agent that runs the session's main kernel (upstream's ``get_session_with_main_kernel``
followed by an agent RPC).

Where the kernel is comes from the session's own stream (folded here, read-only, and kept
caught up), so no query waits for a projection; which object answers for an agent is the
caller's: the agents themselves in a local cluster, their Ray actors in an installation.
A kernel's log outlives it, so logs of an ended session are read from where its agent
kept them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from actors.agents.execution import kept_logs
from actors.domain.errors import GenericBadRequest, ObjectNotFound
from actors.domain.session_aggregate import SessionAggregate
from actors.domain.statuses import SessionStatus
from actors.sessions.shard import catch_up, load_session
from events import RedisEventStore
from events.correlation import correlation_kwargs

__all__ = ["KERNEL_OPERATIONS", "KernelOperations", "SessionExecution", "main_kernel"]

KERNEL_OPERATIONS = frozenset(
    {
        "execute",
        "interrupt",
        "complete",
        "start_service",
        "shutdown_service",
        "notify_event",
        "upload_files",
        "download_files",
        "download_single",
        "download_chunk",
        "list_files",
        "logs",
        "app_tunnel",
    }
)
"""The agent methods a session's users reach (each takes the kernel id first)."""
_CODE_RUNS_WHEN = frozenset({SessionStatus.RUNNING})


class KernelOperations(Protocol):
    async def call(self, method: str, kernel_id: uuid.UUID, *args: Any) -> Any: ...


def main_kernel(session: SessionAggregate) -> tuple[uuid.UUID, str | None]:
    """The session's main kernel and the agent it was placed on."""
    for kernel in session.kernels.values():
        if kernel.cluster_role == "main":
            return kernel.kernel_id, kernel.agent
    raise ObjectNotFound("main kernel")


class SessionExecution:
    def __init__(self, store: RedisEventStore, agent: Callable[[str], KernelOperations]) -> None:
        self.store = store
        self.agent = agent
        """Who answers for an agent id."""
        self._sessions: dict[uuid.UUID, SessionAggregate] = {}

    async def session(self, session_id: uuid.UUID) -> SessionAggregate:
        cached = self._sessions.get(session_id)
        if cached is None:
            cached = await load_session(self.store, session_id)
        else:
            cached = await catch_up(self.store, cached)
        if cached.version == 0:
            raise ObjectNotFound("session")
        if cached.ended:
            self._sessions.pop(session_id, None)
        else:
            self._sessions[session_id] = cached
        return cached

    async def call(self, session_id: uuid.UUID, method: str, *args: Any) -> Any:
        """``method`` on the agent of the session's main kernel; the session must run."""
        if method not in KERNEL_OPERATIONS:
            raise ValueError(f"not a kernel operation: {method}")
        session = await self.session(session_id)
        if session.status not in _CODE_RUNS_WHEN:
            raise GenericBadRequest(
                f"the session is {session.status.name}; code runs while it is RUNNING"
            )
        kernel_id, agent_id = main_kernel(session)
        if agent_id is None:
            raise GenericBadRequest("the session's main kernel has no agent yet")
        return await self.agent(agent_id).call(method, kernel_id, *args)

    async def execute(
        self,
        session_id: uuid.UUID,
        run_id: str | None,
        mode: str,
        code: str = "",
        options: dict[str, Any] | None = None,
        flush_timeout: float | None = 2.0,
    ) -> dict[str, Any]:
        """One execute call, as ``POST /session/{name}``: a new run id when none is given."""
        if mode not in ("query", "batch", "input", "continue"):
            raise GenericBadRequest(f"unknown execution mode {mode!r}")
        if mode in ("input", "continue") and not run_id:
            raise GenericBadRequest(f"mode {mode!r} continues a run: runId is required")
        run = run_id or uuid.uuid4().hex
        result: dict[str, Any] = await self.call(
            session_id, "execute", run, mode, code, options or {}, flush_timeout
        )
        return result

    async def logs(self, session_id: uuid.UUID) -> str:
        """The main kernel's log, live or (after the session ended) as its agent kept it."""
        session = await self.session(session_id)
        kernel_id, agent_id = main_kernel(session)
        if session.status in _CODE_RUNS_WHEN and agent_id is not None:
            return str(await self.agent(agent_id).call("logs", kernel_id))
        return await kept_logs(self.store, kernel_id)


class LocalAgent:
    """An in-process agent as :class:`KernelOperations` (local clusters and tests)."""

    def __init__(self, agent: Any) -> None:
        self._agent = agent

    async def call(self, method: str, kernel_id: uuid.UUID, *args: Any) -> Any:
        return await getattr(self._agent, method)(kernel_id, *args)


class RayAgent:
    """An agent hosted by an ``agent:<id>`` actor, as :class:`KernelOperations`."""

    def __init__(self, handle: Any, agent_id: str) -> None:
        self._handle = handle
        self._agent_id = agent_id

    async def call(self, method: str, kernel_id: uuid.UUID, *args: Any) -> Any:
        return await self._handle.kernel_call.remote(
            self._agent_id, method, kernel_id, *args, **correlation_kwargs()
        )
