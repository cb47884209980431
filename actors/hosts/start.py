"""Creating (or finding) the named actors of one installation, in namespace ``kernelhub``.

Names are stable, for the dashboard and for ``ray.get_actor``: ``projector``, ``tenancy``,
``serving`` (endpoints and their replicas), ``sessions:<k>``, ``scheduler:<group>``,
``reaper``, ``callbacks``, ``agent:<id>`` (a real node's agent) and ``agents-sim:<k>`` (hosts
of simulated agents). The number of session shards is fixed at
install (``<p>:install`` ``shards``): sessions are routed by ``uuid.int % N``, so changing N
later would hand streams to a second writer; a different request is ignored, loudly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
import structlog

from actors.sessions.routing import ShardRouter
from events import RedisEventStore
from events.install import install_shard_count as recorded_shard_count

from ..domain.callbacks import CallbackPolicy
from ..domain.idle import IdleConfig
from ..domain.liveness import DEFAULT_HEARTBEAT_INTERVAL_S, DEFAULT_LOST_TIMEOUT_S
from .agents import DEFAULT_RECONCILE_INTERVAL_S, AgentsActor
from .callbacks import CallbacksActor
from .gateway import GatewayActor
from .placement import head_resources
from .projector import ProjectorActor
from .reaper import ReaperActor
from .scheduler import SchedulerActor
from .serving import ServingActor
from .sessions import SessionsActor
from .tenancy import TenancyActor

__all__ = ["NAMESPACE", "Installation", "install_shard_count", "start_actors"]

NAMESPACE = "kernelhub"
_SIM_AGENTS_PER_HOST = 500

log = structlog.get_logger(__name__)


@dataclass
class Installation:
    """Handles to the actors of one installation."""

    projector: Any
    shards: list[Any]
    scheduler: Any
    agent_hosts: dict[str, Any]
    """Actor name -> handle."""
    host_of: dict[str, str]
    """Agent id -> the name of the actor hosting it."""
    tenancy: Any | None = None
    reaper: Any | None = None
    names: list[str] = field(default_factory=list)
    gateway: Any | None = None
    callbacks: Any | None = None
    serving: Any | None = None

    def router(self, store: RedisEventStore) -> ShardRouter:
        router = ShardRouter(store, self.shards)
        router.agent_actors = {
            agent: self.agent_hosts[host] for agent, host in self.host_of.items()
        }
        return router

    def agent_host(self, agent_id: str) -> Any:
        return self.agent_hosts[self.host_of[agent_id]]

    def handles(self) -> Iterator[Any]:
        yield self.projector
        yield from self.shards
        yield self.scheduler
        yield from self.agent_hosts.values()
        if self.tenancy is not None:
            yield self.tenancy
        if self.reaper is not None:
            yield self.reaper
        if self.gateway is not None:
            yield self.gateway
        if self.callbacks is not None:
            yield self.callbacks
        if self.serving is not None:
            yield self.serving

    def kill(self) -> None:
        """Kill every actor for good (no restart): a test's or a benchmark's stack is done."""
        for handle in self.handles():
            ray.kill(handle, no_restart=True)

    def gateway_endpoint(self) -> str | None:
        """``http://127.0.0.1:<port>``: where Backend.AI's client reaches this installation."""
        if self.gateway is None:
            return None
        from ray.exceptions import ActorUnavailableError

        for attempt in range(50):  # a restarting actor answers again within seconds
            try:
                host, port = ray.get(self.gateway.address.remote())
                return f"http://{host}:{port}"
            except ActorUnavailableError:
                if attempt == 49:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")


def install_shard_count(redis_url: str, prefix: str, wanted: int) -> int:
    """The shard count recorded at install, recording ``wanted`` on a fresh one."""
    if wanted < 1:
        raise ValueError("at least one session shard")
    count = recorded_shard_count(redis_url, prefix, wanted)
    if count != wanted:
        log.warning("the session shard count is fixed at install", installed=count, asked=wanted)
    return count


def _agent_hosts(
    backend: str, agents: list[tuple[str, dict[str, Any]]], sim_hosts: int | None
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    if backend != "sim":
        return {f"agent:{agent_id}": [(agent_id, capacity)] for agent_id, capacity in agents}
    hosts = sim_hosts or max(1, math.ceil(len(agents) / _SIM_AGENTS_PER_HOST))
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for n, agent in enumerate(agents):
        groups.setdefault(f"agents-sim:{n % hosts}", []).append(agent)
    return groups


def start_actors(
    redis_url: str,
    *,
    prefix: str = "kh",
    namespace: str = NAMESPACE,
    detached: bool = False,
    agents: list[tuple[str, dict[str, Any]]] | None = None,
    backend: str = "sim",
    work_root: str = "/tmp/kernelhub-kernels",
    scaling_group: str = "default",
    shards: int = 1,
    sim_hosts: int | None = None,
    master_key_path: str | None = None,
    safety_tick_s: float = 2.0,
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
    lost_timeout_s: float = DEFAULT_LOST_TIMEOUT_S,
    terminate_lost_after_s: float | None = None,
    reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S,
    stop_grace_s: float = 1.0,
    idle: dict[str, Any] | None = None,
    gateway_port: int | None = None,
    gateway_host: str = "127.0.0.1",
    pin_head: bool = False,
    callback_policy: CallbackPolicy | None = None,
    serving_tick_s: float = 1.0,
) -> Installation:
    """Create (or find) the named actors and wait until each has rebuilt from the log.

    ``agents=[]`` starts none (a cluster whose agents join with ``kh agent start``);
    ``pin_head`` places every actor but the agents on the node offering ``kernelhub_head``;
    ``callback_policy`` is how session callbacks are checked and delivered (the gateway
    checks each ``callback_url`` with it, the ``callbacks`` actor delivers with it);
    ``serving_tick_s`` is how often the ``serving`` actor's reconciler looks at endpoints
    when nothing wakes it (probes fall due on it).
    """
    lifetime = "detached" if detached else None
    if agents is None:
        agents = [("i-local", {"cpu": 4, "mem": 8 * 2**30})]
    names: list[str] = []
    resources = head_resources(pin_head)

    def named(cls: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        names.append(name)
        on_head = not name.startswith(("agent:", "agents-sim:"))
        return cls.options(
            name=name,
            namespace=namespace,
            lifetime=lifetime,
            get_if_exists=True,
            num_cpus=0,
            resources=resources if on_head else {},
        ).remote(*args, **kwargs)

    count = install_shard_count(redis_url, prefix, shards)
    sample_interval_s = IdleConfig.parse(idle or {}).utilization.interval
    projector = named(ProjectorActor, "projector", redis_url, prefix)
    shard_handles = [
        named(SessionsActor, f"sessions:{k}", redis_url, prefix, k, count) for k in range(count)
    ]
    scheduler = named(
        SchedulerActor,
        f"scheduler:{scaling_group}",
        redis_url,
        (count, namespace),
        prefix,
        scaling_group,
        safety_tick_s,
        lost_timeout_s,
        heartbeat_interval_s,
        terminate_lost_after_s,
    )
    hosts, host_of = {}, {}
    for name, hosted in _agent_hosts(backend, agents, sim_hosts).items():
        hosts[name] = named(
            AgentsActor,
            name,
            name,
            redis_url,
            (count, namespace),
            hosted,
            prefix,
            backend,
            work_root,
            scaling_group,
            heartbeat_interval_s,
            reconcile_interval_s,
            stop_grace_s,
            sample_interval_s,
        )
        host_of.update({agent_id: name for agent_id, _ in hosted})
    tenancy = (
        named(TenancyActor, "tenancy", redis_url, master_key_path, prefix)
        if master_key_path
        else None
    )
    serving = (
        named(
            ServingActor,
            "serving",
            redis_url,
            (count, namespace),
            master_key_path,
            prefix,
            serving_tick_s,
        )
        if master_key_path
        else None
    )
    reaper = named(ReaperActor, "reaper", redis_url, (count, namespace), prefix, idle)
    callbacks = named(CallbacksActor, "callbacks", redis_url, prefix, callback_policy)
    gateway = (
        named(
            GatewayActor,
            "gateway",
            redis_url,
            (count, namespace),
            master_key_path,
            prefix,
            gateway_host,
            gateway_port,
            idle,
            callback_policy,
        )
        if gateway_port is not None and master_key_path
        else None
    )
    installation = Installation(
        projector,
        shard_handles,
        scheduler,
        hosts,
        host_of,
        tenancy,
        reaper,
        names,
        gateway,
        callbacks,
        serving,
    )
    try:
        ray.get([h.ready.remote() for h in installation.handles()])
    except BaseException:
        if not detached:  # a test's or a benchmark's stack: leave nothing following the log
            installation.kill()
        raise  # a detached install's actors may predate this call: an operator's to judge
    return installation
