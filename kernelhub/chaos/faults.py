"""Faults from a seed: which kind, which target, how long, and the pause before the next.

The schedule is drawn from ``random.Random(seed)`` alone, so the same seed gives the same
sequence of faults (kinds, targets by their place in the sorted actor names, durations,
gaps). When each fault happens also depends on how long the one before took to recover
from (the next fault waits for that), so wall times differ between replays; the order and
choices do not.

The injector finds its targets as an operator would: actors' worker pids from Ray's state
API on the stack's dashboard (token auth, like ``kh status``), Redis's pid from ``INFO
server``. After SIGKILL of Redis the stack's supervisor is expected to start it again
(``kernelhub.redis_supervisor``); where the stack has none (or it gave up), the injector
restarts Redis itself and says so, since that is a finding, not a recovery.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernelhub import procs

from .stack import ChaosStack, redis_pid, wait_for

__all__ = ["FAULT_KINDS", "Fault", "FaultInjector", "Injected", "schedule"]

FAULT_KINDS = ("kill_actor", "kill_redis", "stop_redis", "kill_node")
WEIGHTS = (0.6, 0.15, 0.15, 0.1)
"""Actors are many and each is a different recovery path; Redis is one, but the worst. A
node's death needs a multi-node stack; without one it is an actor's kill instead (drawn
all the same, so a seed's schedule is the same either way)."""


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str
    pick: float
    """Which target, as a fraction of the sorted candidates (stable across replays)."""
    pause_s: float
    """For ``stop_redis``: how long Redis stays stopped."""
    gap_s: float
    """The quiet time after the previous fault recovered, before this one."""


def schedule(seed: int, mean_gap_s: float) -> Iterator[Fault]:
    rng = random.Random(seed)
    index = 0
    while True:
        kind = rng.choices(FAULT_KINDS, WEIGHTS)[0]
        yield Fault(
            index=index,
            kind=kind,
            pick=rng.random(),
            pause_s=round(rng.uniform(1.0, 5.0), 2),
            gap_s=round(rng.expovariate(1.0 / mean_gap_s), 2),
        )
        index += 1


@dataclass
class Injected:
    fault: Fault
    target: str
    started: float
    """``time.time()`` when the fault began; recovery is measured from its end."""
    ended: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """What was done: a ``kill_node`` drawn without worker nodes was an actor's kill."""
        if self.fault.kind == "kill_node" and not self.target.startswith("node:"):
            return "kill_actor"
        return self.fault.kind


class FaultInjector:
    def __init__(self, stack: ChaosStack) -> None:
        self.stack = stack
        self.driver_restarts = 0
        """Times the injector had to start Redis itself (no supervisor did)."""

    # ---- targets ----------------------------------------------------------------------------
    def actors(self) -> dict[str, int]:
        """Each live kernelhub actor's name and worker pid, from Ray's state API."""
        state = self.stack.state()
        from kernelhub import ray_head

        ray_head.use_env_for(str(state["ray_address"]))
        from ray.util.state import list_actors

        found = list_actors(
            address=str(state["dashboard_url"]),
            limit=10_000,
            detail=True,
            raise_on_missing_output=False,
        )
        return {
            str(a.name): int(a.pid)
            for a in found
            if a.name and a.state == "ALIVE" and a.pid is not None
        }

    # ---- faults -----------------------------------------------------------------------------
    def inject(self, fault: Fault) -> Injected:
        if fault.kind == "kill_actor":
            return self._kill_actor(fault)
        if fault.kind == "kill_redis":
            return self._kill_redis(fault)
        if fault.kind == "kill_node":
            if not self.stack.nodes:
                return self._kill_actor(fault)
            return self._kill_node(fault)
        return self._stop_redis(fault)

    def _kill_node(self, fault: Fault) -> Injected:
        """A worker node dies with its agent; a node takes its place and the same agent id
        is started there (as an operator replaces a machine)."""
        nodes = self.stack.nodes
        node = nodes[min(int(fault.pick * len(nodes)), len(nodes) - 1)]
        started = time.time()
        self.stack.kill_node(node)
        ended = time.time()
        self.stack.add_node(node.agent_id)
        return Injected(
            fault,
            f"node:{node.agent_id}",
            started,
            ended,
            {"node": node.node_id, "replaced_after_s": round(time.time() - started, 3)},
        )

    def _kill_actor(self, fault: Fault) -> Injected:
        actors = self.actors()
        names = sorted(actors)
        if not names:
            raise RuntimeError("no live kernelhub actor to kill (Ray's state API found none)")
        name = names[min(int(fault.pick * len(names)), len(names) - 1)]
        started = time.time()
        _signal(actors[name], signal.SIGKILL)
        return Injected(fault, name, started, time.time(), {"pid": actors[name]})

    def _kill_redis(self, fault: Fault) -> Injected:
        url = self.stack.redis_url
        pid = redis_pid(url)
        if pid is None:
            raise RuntimeError("Redis does not answer before its fault")
        started = time.time()
        _signal(pid, signal.SIGKILL)
        wait_for(lambda: not procs.alive(pid), 5)
        supervised = self._supervised()
        back = wait_for(lambda: redis_pid(url) not in (None, pid), 30 if supervised else 10)
        detail: dict[str, Any] = {"pid": pid, "supervised": supervised}
        if not back:
            self._restart_redis()
            self.driver_restarts += 1
            detail["restarted_by"] = "driver"
        else:
            detail["restarted_by"] = "stack"
        detail["back_after_s"] = round(time.time() - started, 3)
        return Injected(fault, "redis-server", started, time.time(), detail)

    def _stop_redis(self, fault: Fault) -> Injected:
        pid = redis_pid(self.stack.redis_url)
        if pid is None:
            raise RuntimeError("Redis does not answer before its fault")
        started = time.time()
        _signal(pid, signal.SIGSTOP)
        try:
            time.sleep(fault.pause_s)
        finally:
            _signal(pid, signal.SIGCONT)
        return Injected(fault, "redis-server", started, time.time(), {"pid": pid})

    def _supervised(self) -> bool:
        return (self.stack.data_dir / "redis" / "supervisor.json").exists()

    def _restart_redis(self) -> None:
        """The fallback while the stack has no supervisor: the same server (data dir,
        socket, ``appendfsync always``) started again, replaying its AOF; its new pid
        written where ``kh down`` looks."""
        from events import Durability
        from kernelhub.redis_server import EmbeddedRedis

        server = EmbeddedRedis(
            self.stack.data_dir / "redis", port=None, durability=Durability.ALWAYS
        ).start(detach=True)
        path: Path = self.stack.data_dir / "embedded.json"
        state = self.stack.state()
        state["redis_pid"] = server.pid
        path.write_text(json.dumps(state, indent=2))


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
