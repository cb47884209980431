"""The embedded default: everything kernelhub needs on one machine, on 127.0.0.1.

For now that is the embedded Redis holding the log and the projector keeping the read
models current; Ray, the actors, an agent and the gateway join it as their issues land.
``up`` is idempotent and leaves the services running after the CLI exits (like
``ray start``); ``down`` stops them. What is running is recorded in
``<data dir>/embedded.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import redis

from events import Durability

from .config import Settings
from .errors import KernelhubError
from .redis_server import EmbeddedRedis

__all__ = ["EmbeddedState", "down", "read_state", "up"]


@dataclass(frozen=True)
class EmbeddedState:
    redis_url: str
    redis_pid: int
    redis_binary: str
    durability: str
    data_dir: str
    projector_pid: int | None = None


def _state_path(data_dir: Path) -> Path:
    return data_dir / "embedded.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()


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
    state = replace(state, projector_pid=_start_projector(settings, server.url))
    _state_path(settings.data_dir).write_text(json.dumps(asdict(state), indent=2))
    return state, True


def _start_projector(settings: Settings, redis_url: str) -> int:
    """The read models' projector, as its own process (a Ray actor once Ray joins the
    stack). Killing it at any moment is safe: every batch commits atomically."""
    log_path = settings.data_dir / "projector.log"
    env = {**os.environ, "KH_REDIS_URL": redis_url, "KH_KEY_PREFIX": settings.key_prefix}
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "kernelhub.cli", "--log-level", "INFO", "projections", "run"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env,
            start_new_session=True,
        )  # fmt: skip
    return process.pid


def down(settings: Settings, timeout: float = 15.0) -> EmbeddedState | None:
    """Stop what ``up`` started (Redis fsyncs its AOF on SIGTERM). ``None`` if nothing ran."""
    state = read_state(settings)
    if state is None:
        return None
    if state.projector_pid and _alive(state.projector_pid):
        os.kill(state.projector_pid, signal.SIGTERM)
        _reap(state.projector_pid)
    os.kill(state.redis_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(state.redis_pid) and time.monotonic() < deadline:
        _reap(state.redis_pid)
        time.sleep(0.05)
    if _alive(state.redis_pid):
        os.kill(state.redis_pid, signal.SIGKILL)
    _state_path(settings.data_dir).unlink(missing_ok=True)
    return state


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (``up`` in this process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def durability_of(state: EmbeddedState) -> Durability:
    return Durability(state.durability)
