"""Where kernelhub's actors run on a multi-node Ray cluster.

Roles are custom resources the nodes offer (``ray_cluster.yaml``): the head offers
``kernelhub_head`` and takes the gateway, schedulers, shards, projector, reaper and tenancy
(each asks for a sliver of it, so all fit and none lands elsewhere); a worker offers
``kernelhub_agent`` and takes one agent, pinned to that node by hard node affinity.

An agent is a node's: it cannot move (docs/cluster.md), and liveness is its heartbeats, never
the actor's fate. When its node leaves, the heartbeats stop and the liveness monitor makes it
LOST; the actor cannot be placed anywhere else (Ray soon declares it dead). A node that
comes back is a new Ray node (a new id): ``kh agent start`` there starts the agent again,
pinned to the new node (replacing the stranded actor if Ray still holds its name); it
rebuilds from the log, re-registers and is ALIVE again (revived), adopting the kernels the
machine kept running.
"""

from __future__ import annotations

import time
from typing import Any

import ray
import structlog
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from events.install import installed_shard_count as recorded_shard_count

from ..domain.liveness import DEFAULT_HEARTBEAT_INTERVAL_S
from .agents import DEFAULT_RECONCILE_INTERVAL_S, AgentsActor

__all__ = [
    "HEAD_RESOURCE",
    "head_offered",
    "head_resources",
    "installed_shard_count",
    "node_capacity",
    "start_node_agent",
]

log = structlog.get_logger(__name__)

HEAD_RESOURCE = "kernelhub_head"
_HEAD_SHARE = 0.001
"""What each head actor asks of ``kernelhub_head`` (1 per head node): a thousand fit."""


def _live_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]


def head_offered() -> bool:
    """Whether a live node of the connected cluster offers the head role."""
    return any(n["Resources"].get(HEAD_RESOURCE) for n in _live_nodes())


def head_resources(pinned: bool) -> dict[str, float]:
    return {HEAD_RESOURCE: _HEAD_SHARE} if pinned else {}


def node_capacity(node_id: str) -> dict[str, Any]:
    """An agent's slots from what its Ray node offers: its CPUs and memory."""
    for node in _live_nodes():
        if node["NodeID"] == node_id:
            offered = node["Resources"]
            return {"cpu": int(offered.get("CPU", 1)), "mem": int(offered.get("memory", 2**30))}
    raise ValueError(f"no live Ray node {node_id}")


def installed_shard_count(redis_url: str, prefix: str) -> int:
    """The session shard count the installation recorded (``kh up`` first)."""
    recorded = recorded_shard_count(redis_url, prefix)
    if recorded is None:
        raise LookupError(
            "no kernelhub installation in this Redis: run `kh up --address` on the head first"
        )
    return recorded


def _node_of(handle: Any) -> str | None:
    """The node an agent actor runs on; ``None`` if it does not answer (its node is gone)."""
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        return str(ray.get(handle.node_id.remote(), timeout=5))
    except (GetTimeoutError, RayActorError):
        return None


def _release(name: str, namespace: str, handle: Any, timeout: float = 30.0) -> None:
    """Kill a stranded agent actor for good and wait until its name is free."""
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the actor {name} did not go away within {timeout:.0f}s")


def start_node_agent(
    redis_url: str,
    agent_id: str,
    capacity: dict[str, Any],
    *,
    node_id: str,
    prefix: str = "kh",
    namespace: str = "kernelhub",
    backend: str = "docker",
    work_root: str = "/tmp/kernelhub-kernels",
    scaling_group: str = "default",
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
    reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S,
    stop_grace_s: float = 10.0,
    sample_interval_s: float = 15.0,
    timeout: float = 120.0,
) -> tuple[Any, str]:
    """``agent:<agent_id>`` running on ``node_id`` (idempotent): returns (handle, what was
    done: ``running`` already, ``started``, or ``replaced`` a stranded actor whose node is
    gone). An agent id is one node's: one answering from another node is refused."""
    name = f"agent:{agent_id}"
    count = installed_shard_count(redis_url, prefix)
    done = "started"
    try:
        existing = ray.get_actor(name, namespace=namespace)
    except ValueError:
        existing = None
    if existing is not None:
        where = _node_of(existing)
        if where == node_id:
            return existing, "running"
        if where is not None:
            raise ValueError(
                f"agent {agent_id} runs on node {where}: an agent id belongs to one node "
                "(stop it there first, or give this node its own --agent-id)"
            )
        log.info("a stranded agent is replaced", agent=agent_id, node=node_id)
        _release(name, namespace, existing)
        done = "replaced"
    handle = AgentsActor.options(  # type: ignore[attr-defined]
        name=name,
        namespace=namespace,
        lifetime="detached",
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(
        name,
        redis_url,
        (count, namespace),
        [(agent_id, capacity)],
        prefix,
        backend,
        work_root,
        scaling_group,
        heartbeat_interval_s,
        reconcile_interval_s,
        stop_grace_s,
        sample_interval_s,
    )
    ray.get(handle.ready.remote(), timeout=timeout)
    return handle, done
