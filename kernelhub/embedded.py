"""The embedded default: everything kernelhub needs on one machine, on 127.0.0.1.

The embedded Redis holding the log (kept running by :mod:`.redis_supervisor`), a local Ray
head, and the actors (projector, tenancy, session shards, scheduler with the liveness
monitor, reaper, agents, gateway; see docs/architecture.md, The actors). ``up`` is
idempotent and leaves the services running after the CLI exits (like ``ray start``);
``down`` stops them. What is running is recorded in ``<data dir>/embedded.json``.

A stack can be half alive: Redis dead while Ray and its actors run, or the reverse. The
record therefore stays while anything it names still runs (dropping it made ``kh up`` start
a second Ray head beside the first, and ``kh down`` forget the first), :func:`inspect` says
exactly which part is down, ``up`` repairs that part only, and ``down`` stops whatever of
the stack it can find, from the record and from ``/proc`` (:mod:`.procs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from events.server import ServerError, server_probe

from . import procs, ray_head
from .config import Settings
from .errors import KernelhubError, RedisStartError
from .redis_server import EmbeddedRedis, find_redis_server
from .redis_supervisor import MODULE as SUPERVISOR_MODULE
from .redis_supervisor import SupervisorState, launch, read_supervisor, want_durability

__all__ = [
    "EmbeddedState",
    "RayHealth",
    "RedisHealth",
    "StackHealth",
    "actor_settings",
    "down",
    "inspect",
    "locked",
    "read_state",
    "up",
]

Verdict = Literal["running", "degraded", "stopped"]


@dataclass(frozen=True)
class EmbeddedState:
    redis_url: str
    redis_pid: int
    """The ``redis-server`` when ``kh up`` last looked (the supervisor's restarts change it:
    :func:`inspect` has the current one)."""
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
    supervisor_pid: int | None = None
    """The process that restarts ``redis-server`` when it dies (SIGTERM it: Redis stops)."""


# ---- what runs: the record, /proc, and whether the services answer -------------------------
@dataclass(frozen=True)
class RedisHealth:
    answers: bool
    why: str | None = None
    """Why it does not answer (the probe's error)."""
    pid: int | None = None
    """The live ``redis-server`` of this data dir."""
    stopped: bool = False
    """That process is stopped (SIGSTOP): alive, holding the AOF, answering nothing."""
    supervisor_pid: int | None = None
    """The live supervisor."""
    supervisor_stopped: bool = False
    """The supervisor is stopped (SIGSTOP): it restarts nothing until continued."""
    supervisor: SupervisorState | None = None
    """The supervisor's last word (also after it exited: ``failed`` says why)."""

    @property
    def restarts(self) -> int:
        return self.supervisor.restarts if self.supervisor else 0


@dataclass(frozen=True)
class RayHealth:
    expected: bool
    """``kh up`` recorded a head."""
    answers: bool
    """Its GCS accepts connections."""
    head_pid: int | None = None
    """The live ``ray start --head`` process."""
    address: str | None = None
    sessions: frozenset[int] = field(default_factory=frozenset)
    """The head sessions found (recorded or by :func:`ray_head.find_heads`)."""
    processes: int = 0
    """Live processes in those sessions (GCS, raylet, workers: orphans count)."""


@dataclass(frozen=True)
class StackHealth:
    """What ``kh status`` says and what ``kh up`` repairs. Pure once gathered, so each
    combination is unit-tested without starting anything."""

    data_dir: str
    state: EmbeddedState | None
    log_server: RedisHealth
    """The Redis that holds the log, with its supervisor."""
    ray: RayHealth

    @property
    def verdict(self) -> Verdict:
        redis, ray = self.log_server, self.ray
        if not (redis.answers or redis.pid or redis.supervisor_pid or ray.answers):
            if not ray.processes:
                return "stopped"
        if redis.answers and redis.supervisor_pid and ray.answers:
            return "running"
        return "degraded"

    @property
    def problems(self) -> list[str]:
        """What is down, one phrase each (empty when running, or when nothing runs)."""
        out: list[str] = []
        if self.verdict == "stopped":
            return out
        redis, ray = self.log_server, self.ray
        said = redis.supervisor.why if redis.supervisor else None
        if redis.answers and not redis.supervisor_pid:
            out.append("Redis answers but nothing restarts it if it dies (no supervisor)")
        elif not redis.answers:
            if redis.pid and redis.stopped:
                out.append(f"Redis is not answering: redis-server pid {redis.pid} is stopped")
            elif redis.supervisor_pid and redis.supervisor_stopped:
                out.append(
                    f"Redis is not running and its supervisor pid {redis.supervisor_pid} is stopped"
                )
            elif (
                redis.supervisor_pid
                and redis.supervisor
                and redis.supervisor.state
                in (
                    "restarting",
                    "starting",
                )
            ):
                out.append(f"Redis is not answering (restarting: {said or 'starting'})")
            elif redis.pid:
                out.append(f"Redis is not answering ({redis.why}; redis-server pid {redis.pid})")
            elif redis.supervisor and redis.supervisor.state == "failed":
                out.append(f"Redis is not running: it cannot start ({said})")
            elif redis.supervisor_pid:
                out.append("Redis is not answering (its supervisor is starting it)")
            else:
                out.append("Redis is not running")
        if not ray.answers:
            if ray.processes:
                where = f" at {ray.address}" if ray.address else ""
                out.append(
                    f"the Ray head is not answering{where} "
                    f"({ray.processes} of its processes still run)"
                )
            elif ray.expected:
                out.append("the Ray head is not running")
            else:
                out.append("the Ray head was never started")
        return out

    @property
    def working(self) -> list[str]:
        """What is up, one phrase each (beside the problems when degraded)."""
        out: list[str] = []
        if self.log_server.answers:
            out.append(
                f"Redis up (pid {self.log_server.pid})" if self.log_server.pid else "Redis up"
            )
        if self.ray.answers:
            head = f"pid {self.ray.head_pid} " if self.ray.head_pid else ""
            out.append(f"Ray head {head}up")
        return out

    def summary(self) -> str:
        """The one line ``kh status`` starts with when the stack is not simply running."""
        if self.verdict == "stopped":
            return f"kernelhub is not running (data dir {self.data_dir}); start it: kh up"
        parts = ", ".join(self.problems + self.working)
        return f"kernelhub is degraded (data dir {self.data_dir}): {parts}"

    def to_json(self) -> dict[str, Any]:
        supervisor = self.log_server.supervisor
        return {
            "verdict": self.verdict,
            "problems": self.problems,
            "redis": {
                "answers": self.log_server.answers,
                "why": self.log_server.why,
                "pid": self.log_server.pid,
                "stopped": self.log_server.stopped,
                "supervisor_pid": self.log_server.supervisor_pid,
                "supervisor_state": supervisor.state if supervisor else None,
                "restarts": self.log_server.restarts,
                "last_restart_why": supervisor.why if supervisor else None,
            },
            "ray": {
                "answers": self.ray.answers,
                "address": self.ray.address,
                "head_pid": self.ray.head_pid,
                "processes": self.ray.processes,
            },
        }


def _state_path(data_dir: Path) -> Path:
    return data_dir / "embedded.json"


def _redis_dir(settings: Settings) -> Path:
    return settings.data_dir / "redis"


def _load(settings: Settings) -> EmbeddedState | None:
    path = _state_path(settings.data_dir)
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(EmbeddedState)}
        return EmbeddedState(**{k: v for k, v in raw.items() if k in known})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, AttributeError) as exc:
        raise KernelhubError(f"{path} is not a kernelhub state file ({exc}); remove it") from None


def _save(settings: Settings, state: EmbeddedState) -> None:
    path = _state_path(settings.data_dir)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, path)


def _supervisor_pid(settings: Settings, candidates: list[int | None]) -> int | None:
    """The live supervisor of this data dir among the recorded pids, else found in /proc."""
    where = str(_redis_dir(settings).resolve())

    def ours(p: procs.Proc | None) -> bool:
        return p is not None and SUPERVISOR_MODULE in p.cmdline and where in p.cmdline

    for pid in candidates:
        if pid and ours(procs.proc(pid)):
            return pid
    return next((p.pid for p in procs.scan() if ours(p)), None)


def _redis_proc(
    settings: Settings, candidates: list[int | None], url: str | None
) -> procs.Proc | None:
    """The live ``redis-server`` of this data dir: the supervisor's child, the pidfile's,
    or the recorded one, if it is a redis-server listening where this stack's does (its
    title names the socket or the port; a reused pid is another's)."""
    try:
        candidates = [*candidates, int((_redis_dir(settings) / "redis.pid").read_text())]
    except (OSError, ValueError):
        pass
    parts = urlsplit(url or "")
    where = parts.path if parts.scheme == "unix" else f":{parts.port}" if parts.port else ""
    for pid in candidates:
        found = procs.proc(pid) if pid else None
        if found is not None and found.comm == "redis-server" and where in found.cmdline:
            return found
    return None


def _answers(url: str | None) -> str | None:
    """None when the Redis at ``url`` answers, else why not."""
    if not url:
        return "no address recorded"
    try:
        return server_probe(url, timeout=1, connect_timeout=1)
    except ServerError as exc:
        return str(exc)


def inspect(settings: Settings, *, probe: bool = True) -> StackHealth:
    """The stack of this data dir as it is now: the record, the processes, the answers
    (``probe=False``: processes only, nothing answers; enough to tell "stopped")."""
    state = _load(settings)
    supervisor = read_supervisor(_redis_dir(settings))
    supervisor_pid = _supervisor_pid(
        settings,
        [supervisor.pid if supervisor else None, state.supervisor_pid if state else None],
    )
    url = state.redis_url if state else (supervisor.url if supervisor else None)
    redis = _redis_proc(
        settings,
        [supervisor.redis_pid if supervisor else None, state.redis_pid if state else None],
        url,
    )
    if not probe:
        why: str | None = "not probed"
    else:
        why = _answers(url) if (redis is not None or state is not None) else "not running"
    sessions = ray_head.find_heads(settings.data_dir)
    if state is not None and state.ray_pid:
        sessions.add(state.ray_pid)
    members = ray_head.ray_processes(sessions)
    address = state.ray_address if state else None
    head = state.ray_pid if state and state.ray_pid in members else None
    return StackHealth(
        data_dir=str(settings.data_dir),
        state=state,
        log_server=RedisHealth(
            answers=why is None,
            why=why,
            pid=redis.pid if redis else None,
            stopped=bool(redis and redis.stopped),
            supervisor_pid=supervisor_pid,
            supervisor_stopped=bool(
                supervisor_pid and (found := procs.proc(supervisor_pid)) and found.stopped
            ),
            supervisor=supervisor,
        ),
        ray=RayHealth(
            expected=bool(address),
            answers=probe and bool(address) and ray_head.gcs_answers(address or ""),
            head_pid=head,
            address=address,
            sessions=frozenset(sessions),
            processes=len(members),
        ),
    )


def read_state(settings: Settings) -> EmbeddedState | None:
    """What ``up`` started, while any of it still runs (a record naming nothing alive is
    removed; one naming a half-alive stack stays, for ``kh up`` to repair it)."""
    state = _load(settings)
    if state is None:
        return None
    if inspect(settings, probe=False).verdict != "stopped":
        return state
    _state_path(settings.data_dir).unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def locked(settings: Settings) -> Iterator[None]:
    """One ``kh up`` or ``kh down`` at a time per data dir: two repairing the same stack
    at once would start two heads."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.data_dir / "embedded.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, ray_head.STACK_ENV: str(settings.data_dir.resolve())}


def _port_of(url: str) -> int | None:
    parts = urlsplit(url)
    return None if parts.scheme == "unix" else parts.port


def _start_redis(settings: Settings, port: int | None, binary: str | None) -> SupervisorState:
    server = EmbeddedRedis(
        _redis_dir(settings), port=port, durability=settings.durability, binary=binary
    )
    return launch(
        server.data_dir,
        port=server.port,
        durability=settings.durability,
        binary=str(server.binary),
        env=_env(settings),
    )


def _await_restart(settings: Settings, url: str, timeout: float = 120.0) -> None:
    """The supervisor is restarting the server: wait for it, or say why it cannot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(url) is None:
            return
        said = read_supervisor(_redis_dir(settings))
        if said is not None and said.state == "failed":
            raise RedisStartError(f"Redis cannot start: {said.why}")
        if _supervisor_pid(settings, [said.pid if said else None]) is None:
            return  # the supervisor is gone too: the caller starts one
        time.sleep(0.1)
    raise RedisStartError(f"Redis did not answer in {timeout:.0f}s while its supervisor ran")


def up(settings: Settings) -> tuple[EmbeddedState, list[str]]:
    """Start the embedded Redis unless it runs, or repair it; returns the state and what was
    done: ``["started"]`` for a fresh stack, ``[]`` when it already ran, else the repairs.
    The caller holds :func:`locked` (and calls :func:`start_ray` next)."""
    health = inspect(settings)
    state = health.state
    redis_dir = _redis_dir(settings)
    if health.verdict == "stopped":
        state = None  # a stale record: start afresh, on the address asked now
    if state is None and health.log_server.supervisor is not None and health.verdict != "stopped":
        url = health.log_server.supervisor.url or ""  # the record was lost: rebuild it
        state = EmbeddedState(
            redis_url=url,
            redis_pid=health.log_server.pid or 0,
            redis_binary=str(find_redis_server()),
            durability=settings.durability.value,
            data_dir=str(settings.data_dir),
        )
    done: list[str] = []
    want_durability(redis_dir, settings.durability)
    if state is not None and health.log_server.supervisor_pid:
        if not health.log_server.answers:
            _await_restart(settings, state.redis_url)
    if state is None or _supervisor_pid(settings, [health.log_server.supervisor_pid]) is None:
        if health.log_server.pid:  # a server nothing restarts: stop it, then run it supervised
            procs.terminate([health.log_server.pid], timeout=15)
            done.append("unsupervised Redis stopped")
        port = settings.redis_port if state is None else _port_of(state.redis_url)
        binary = state.redis_binary if state is not None else None
        supervised = _start_redis(settings, port, binary)
        url = supervised.url or ""
        if state is None:
            state = EmbeddedState(
                redis_url=url,
                redis_pid=supervised.redis_pid or 0,
                redis_binary=str(find_redis_server(binary)),
                durability=settings.durability.value,
                data_dir=str(settings.data_dir),
            )
            done.append("started" if health.verdict == "stopped" else "Redis started again")
        else:
            done.append("Redis started again")
    said = read_supervisor(redis_dir)
    state = replace(
        state,
        supervisor_pid=said.pid if said else state.supervisor_pid,
        redis_pid=(said.redis_pid if said and said.redis_pid else state.redis_pid),
        durability=settings.durability.value,
    )
    _save(settings, state)
    return state, done


def start_ray(
    settings: Settings,
    state: EmbeddedState,
    *,
    backend: str,
    agents: int,
    shards: int = 2,
    accelerators: list[dict[str, Any]] | None = None,
) -> tuple[EmbeddedState, list[str]]:
    """The Ray head and the actors (idempotent: a head whose GCS answers is reused and the
    named actors are found rather than created twice; a dead or half-dead head's leftovers
    are stopped first, so no orphaned gateway keeps the port). Returns what it repaired."""
    os.environ.update(ray_head.RAY_ENV)  # before Ray is imported: it reads them at import
    import ray

    from actors.hosts import start_actors

    done: list[str] = []
    if not (state.ray_address and ray_head.gcs_answers(state.ray_address)):
        leftovers = ray_head.find_heads(settings.data_dir)
        if state.ray_pid:
            leftovers.add(state.ray_pid)
        if ray_head.ray_processes(leftovers):
            ray_head.stop_sessions(leftovers)
            done.append("a dead Ray head's leftovers stopped")
        ray_head.forget_dead_heads(settings.data_dir)
        if state.ray_address:
            done.append("Ray head started again")
        pid, address, dashboard, metrics = ray_head.start_head(
            settings.data_dir / "logs", stack=settings.data_dir
        )
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
    return state, done


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
        "reconcile_interval_s": settings.reconcile_interval_s,
    }


def _agent_specs(
    backend: str, count: int, accelerators: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    devices = {"accelerators": accelerators} if accelerators else {}
    if backend in ("process", "docker"):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return [("i-local", {"cpu": os.cpu_count() or 1, "mem": memory, **devices})]
    return [(f"i-sim{n:03d}", {"cpu": 16, "mem": 64 * 2**30, **devices}) for n in range(count)]


def down(settings: Settings, timeout: float = 15.0) -> StackHealth | None:
    """Stop everything ``up`` started for this data dir, recorded or found: the Ray head
    and every process of its session, then the supervisor (Redis fsyncs its AOF on its
    SIGTERM), then any ``redis-server`` left. The record goes only when nothing is left.
    ``None`` if nothing ran."""
    with locked(settings):
        health = inspect(settings)
        if health.verdict == "stopped":
            _state_path(settings.data_dir).unlink(missing_ok=True)
            return None
        if health.ray.sessions:
            ray_head.stop_sessions(set(health.ray.sessions))  # the log keeps the actors' state
        if health.log_server.supervisor_pid:
            procs.terminate([health.log_server.supervisor_pid], timeout=timeout + 5)
        if health.log_server.pid:
            procs.terminate([health.log_server.pid], timeout=timeout)
        left = inspect(settings)
        ray_head.forget_dead_heads(settings.data_dir)
        if left.verdict != "stopped":
            raise KernelhubError(f"kh down left some of it running: {left.summary()}")
        _state_path(settings.data_dir).unlink(missing_ok=True)
        return health
