"""An agent with fault hooks, for the tests that break one on purpose (never in production:
a local cluster runs it when a test passes ``agent_class=HookedAgent``)."""

from __future__ import annotations

import uuid
from typing import Any

from actors.agents.agent import Agent
from actors.agents.backends.base import KernelLaunch
from actors.domain.commands.sessions import StartFailed
from actors.hosts.local import LocalCluster

__all__ = ["HookedAgent", "hooked"]


class HookedAgent(Agent):
    fail_next_start = False
    """The next kernel creation fails as an agent error would."""
    heartbeating = True
    """False: the agent stops heartbeating, as a hung node would (a "frozen" agent)."""

    deaf_to_endings = False
    """True: ``session_terminating`` is not acted on, as when the agent was killed after its
    follower recorded the event and before it stopped the kernels."""

    async def on_event(self, event: Any, session: Any = None) -> None:
        if self.deaf_to_endings and event.type == "session_terminating":
            return
        await super().on_event(event, session)

    async def heartbeat(self) -> None:
        if self.heartbeating:
            await super().heartbeat()

    async def _create_kernels(self, session_id: uuid.UUID, kernels: list[KernelLaunch]) -> None:
        if self.fail_next_start:
            self.fail_next_start = False
            await self.shard.handle(StartFailed(session_id=session_id))
            return
        await super()._create_kernels(session_id, kernels)


def hooked(cluster: LocalCluster, agent_id: str) -> HookedAgent:
    """One of a local cluster's agents, made with ``agent_class=HookedAgent``."""
    agent = cluster.agents[agent_id]
    assert isinstance(agent, HookedAgent), "the cluster was not made with HookedAgent"
    return agent
