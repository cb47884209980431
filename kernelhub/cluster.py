"""kernelhub on a Ray cluster someone else started (``ray up ray_cluster.yaml``, or
``ray start`` by hand): ``kh up --address`` on the head, ``kh agent start`` on each worker.

Nothing is embedded here: Redis is external (``KH_REDIS_URL``; see ray_cluster.yaml for
running it with AOF on its own host) and Ray is the cluster's. What ``kh up --address``
started is recorded in ``<data dir>/joined.json`` so that ``kh status``, ``kh trace`` and
``kh agent`` on that machine find the cluster.
"""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import ray_head
from .config import Settings
from .embedded import actor_settings
from .errors import KernelhubError

__all__ = ["Joined", "external_redis", "join", "leave", "read_joined", "start_agent"]


@dataclass(frozen=True)
class Joined:
    ray_address: str
    redis_url: str
    actors: list[str]
    endpoint: str | None
    pinned: bool
    """Whether the head actors are on the node offering ``kernelhub_head``."""


def _path(settings: Settings) -> Path:
    return settings.data_dir / "joined.json"


def read_joined(settings: Settings) -> Joined | None:
    try:
        return Joined(**json.loads(_path(settings).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise KernelhubError(
            f"{_path(settings)} is not a kernelhub record ({exc}); remove it"
        ) from None


def external_redis(settings: Settings) -> str:
    if not settings.redis_url:
        raise KernelhubError(
            "joining a Ray cluster needs the external Redis that holds the log: set KH_REDIS_URL "
            "(redis://host:6379/0) on every node; see ray_cluster.yaml"
        )
    return settings.redis_url


def join(settings: Settings, address: str, *, shards: int) -> Joined:
    """The head's actors (all but the agents) on the cluster at ``address``; idempotent."""
    redis_url = external_redis(settings)
    ray_head.connect(address)
    import ray

    from actors.hosts import start_actors
    from actors.hosts.placement import head_offered

    try:
        pinned = head_offered()
        installation = start_actors(
            redis_url,
            detached=True,
            agents=[],
            shards=shards,
            pin_head=pinned,
            gateway_host=settings.gateway_host,
            **actor_settings(settings),
        )
        endpoint = installation.gateway_endpoint()
    finally:
        ray.shutdown()
    joined = Joined(address, redis_url, installation.names, endpoint, pinned)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _path(settings).write_text(json.dumps(asdict(joined), indent=2))
    return joined


def leave(settings: Settings) -> tuple[Joined, list[str]] | None:
    """``kh down`` after ``kh up --address``: every kernelhub actor on the cluster killed
    for good (the agents on the workers too), the record removed. The cluster, Redis and
    the log stay; kernels keep running and are adopted by the next agents. ``None`` if this
    machine joined no cluster."""
    joined = read_joined(settings)
    if joined is None:
        return None
    ray_head.connect(joined.ray_address)  # connects in kernelhub's namespace
    import ray

    killed = []
    try:
        for name in sorted(ray.util.list_named_actors()):
            try:
                ray.kill(ray.get_actor(name), no_restart=True)
            except ValueError:  # gone meanwhile
                continue
            killed.append(name)
    finally:
        ray.shutdown()
    _path(settings).unlink(missing_ok=True)
    return joined, killed


def start_agent(
    settings: Settings,
    address: str,
    *,
    agent_id: str | None,
    node_id: str | None,
    backend: str,
    accelerators: list[dict[str, Any]],
) -> tuple[str, str, str]:
    """This node's agent (or ``node_id``'s): returns (agent id, node id, what was done)."""
    redis_url = external_redis(settings)
    ray_head.connect(address)
    import ray

    from actors.hosts.placement import installed_shard_count, node_capacity, start_node_agent

    try:
        installed_shard_count(redis_url, settings.key_prefix)  # a clear error before anything
        node = node_id or str(ray.get_runtime_context().get_node_id())
        capacity = node_capacity(node)
        if accelerators:
            capacity["accelerators"] = accelerators
        agent = agent_id or f"i-{socket.gethostname()}"
        _, done = start_node_agent(
            redis_url,
            agent,
            capacity,
            node_id=node,
            prefix=settings.key_prefix,
            backend=backend,
            work_root=str(settings.data_dir / "kernels"),
            heartbeat_interval_s=settings.heartbeat_interval_s,
            reconcile_interval_s=settings.reconcile_interval_s,
            stop_grace_s=settings.stop_grace_s,
        )
    except (LookupError, ValueError, TimeoutError) as exc:
        raise KernelhubError(str(exc)) from None
    finally:
        ray.shutdown()
    return agent, node, done
