"""The embedded default: everything kernelhub needs on one machine, on 127.0.0.1.

The embedded Redis holding the log, a local Ray head, and the actors (projector, tenancy,
session shards, scheduler with the liveness monitor, reaper, agents, gateway; see
docs/architecture.md, The actors).
``up`` is idempotent and leaves the services running after the CLI exits (like
``ray start``); ``down`` stops them. What is running is recorded in
``<data dir>/embedded.json``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from events.server import ServerError, server_probe

from . import ray_head
from .config import Settings
from .errors import KernelhubError
from .redis_server import EmbeddedRedis

__all__ = ["EmbeddedState", "actor_settings", "down", "read_state", "up"]


@dataclass(frozen=True)
class EmbeddedState:
    redis_url: str
    redis_pid: int
    redis_binary: str
    durability: str
    data_dir: str
    ray_pid: int | None = None
    ray_address: str | None = None
    dashboard_url: str | None = None
    metrics_url: str | None = None
    """The head's Prometheus endpoint (kernelhub's metrics with Ray's own)."""
    backend: str | None = None
    actors: list[str] | None = None
    endpoint: str | None = None
    """The gateway, where Backend.AI's client connects (``BACKEND_ENDPOINT``)."""


def _state_path(data_dir: Path) -> Path:
    return data_dir / "embedded.json"


def _alive(pid: int) -> bool:
    return ray_head.process_alive(pid)


def _answers(url: str) -> bool:
    try:
        return server_probe(url, timeout=1, connect_timeout=1) is None
    except ServerError:
        return False


def read_state(settings: Settings) -> EmbeddedState | None:
    """What ``up`` started, if it is still running (a stale record is removed)."""
    path = _state_path(settings.data_dir)
    try:
        state = EmbeddedState(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise KernelhubError(f"{path} is not a kernelhub state file ({exc}); remove it") from None
    if _alive(state.redis_pid) and _answers(state.redis_url):
        return state
    path.unlink(missing_ok=True)
    return None


def up(settings: Settings) -> tuple[EmbeddedState, bool]:
    """Start the embedded services unless they run already; returns (state, started_now)."""
    running = read_state(settings)
    if running is not None:
        return running, False
    server = EmbeddedRedis(
        settings.data_dir / "redis",
        port=settings.redis_port,
        durability=settings.durability,
    ).start(detach=True)
    assert server.pid is not None
    state = EmbeddedState(
        redis_url=server.url,
        redis_pid=server.pid,
        redis_binary=str(server.binary),
        durability=settings.durability.value,
        data_dir=str(settings.data_dir),
    )
    _save(settings, state)
    return state, True


def _save(settings: Settings, state: EmbeddedState) -> None:
    _state_path(settings.data_dir).write_text(json.dumps(asdict(state), indent=2))


def start_ray(
    settings: Settings,
    state: EmbeddedState,
    *,
    backend: str,
    agents: int,
    shards: int = 2,
    accelerators: list[dict[str, Any]] | None = None,
) -> EmbeddedState:
    """The Ray head and the actors (idempotent: a live head is reused, the named actors are
    found rather than created twice)."""
    os.environ.update(ray_head.RAY_ENV)  # before Ray is imported: it reads them at import
    import ray

    from actors.hosts import start_actors

    if state.ray_pid is None or not _alive(state.ray_pid):
        pid, address, dashboard, metrics = ray_head.start_head(settings.data_dir / "logs")
        state = replace(
            state,
            ray_pid=pid,
            ray_address=address,
            dashboard_url=dashboard,
            metrics_url=metrics,
            backend=backend,
        )
        _save(settings, state)
    assert state.ray_address is not None
    ray_head.connect(state.ray_address)
    try:
        installation = start_actors(
            state.redis_url,
            detached=True,
            backend=backend,
            agents=_agent_specs(backend, agents, accelerators or []),
            work_root=str(settings.data_dir / "kernels"),
            shards=shards,
            **actor_settings(settings),
        )
        endpoint = installation.gateway_endpoint()
    finally:
        ray.shutdown()
    state = replace(state, actors=installation.names, backend=backend, endpoint=endpoint)
    _save(settings, state)
    return state


def actor_settings(settings: Settings) -> dict[str, Any]:
    """What the actors take from the installation's settings (embedded or joined); session
    callbacks' policy from ``KH_CALLBACK_*`` in the environment (docs/callbacks.md)."""
    from actors.domain.callbacks import CallbackPolicy

    try:
        callback_policy = CallbackPolicy.from_env(os.environ)
    except ValueError as exc:
        raise KernelhubError(str(exc)) from None
    return {
        "callback_policy": callback_policy,
        "prefix": settings.key_prefix,
        "master_key_path": str(settings.master_key_path),
        "idle": settings.idle,
        "stop_grace_s": settings.stop_grace_s,
        "gateway_port": settings.gateway_port,
        "heartbeat_interval_s": settings.heartbeat_interval_s,
        "lost_timeout_s": settings.lost_timeout_s,
    }


def _agent_specs(
    backend: str, count: int, accelerators: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    devices = {"accelerators": accelerators} if accelerators else {}
    if backend in ("process", "docker"):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return [("i-local", {"cpu": os.cpu_count() or 1, "mem": memory, **devices})]
    return [(f"i-sim{n:03d}", {"cpu": 16, "mem": 64 * 2**30, **devices}) for n in range(count)]


def down(settings: Settings, timeout: float = 15.0) -> EmbeddedState | None:
    """Stop what ``up`` started (Redis fsyncs its AOF on SIGTERM). ``None`` if nothing ran."""
    state = read_state(settings)
    if state is None:
        return None
    if state.ray_pid and _alive(state.ray_pid):
        ray_head.stop_head(state.ray_pid)  # its actors go with it; the log keeps their state
    os.kill(state.redis_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(state.redis_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(state.redis_pid):
        os.kill(state.redis_pid, signal.SIGKILL)
    _state_path(settings.data_dir).unlink(missing_ok=True)
    return state
