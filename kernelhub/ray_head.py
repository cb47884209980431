"""The embedded stack's local Ray head: ``ray start --head --block`` as a child we own.

Everything binds to 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray from
rewriting loopback to the machine's address) on explicit ports. ``--block`` makes the head a
single process to stop: SIGTERM to it stops every Ray process it started, and nothing else
(``ray stop`` would stop every Ray on the machine).

The head leads a Unix session of its own (``start_new_session``): the GCS, the raylet, the
dashboard and every actor's worker are in it, and stay in it when the head process itself
is killed. So :func:`stop_sessions` stops all of them, orphans included, and nothing else
(a process kernel leads a session of its own and is adopted by the next ``kh up``).
:func:`find_heads` finds such a session again without the pid recorded in ``embedded.json``:
the head writes to ``<data dir>/logs/ray-head.log``, and its processes (GCS, raylet,
agents, workers) carry ``KH_EMBEDDED_STACK=<data dir>`` in their environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import procs
from .errors import KernelhubError
from .redis_server import free_loopback_port

__all__ = [
    "RAY_ENV",
    "STACK_ENV",
    "connect",
    "find_heads",
    "gcs_answers",
    "process_alive",
    "ray_processes",
    "start_head",
    "stop_head",
    "stop_sessions",
    "use_env_for",
]

STACK_ENV = "KH_EMBEDDED_STACK"
"""Set to the data dir in the environment of what ``kh up`` starts (the Ray head and
everything it starts, the Redis supervisor): how ``kh down`` recognises them."""
_RAY_DAEMONS = ("gcs_server", "raylet")


def _ray_executable() -> str:
    local = Path(sys.executable).with_name("ray")
    return str(local) if local.exists() else (shutil.which("ray") or "ray")


def start_head(
    log_dir: Path,
    *,
    dashboard_port: int = 8265,
    timeout: float = 60.0,
    stack: Path | None = None,
) -> tuple[int, str, str, str]:
    """Start the head; returns (pid, GCS address, dashboard URL, Prometheus metrics URL)
    once a driver can connect. ``stack``: the data dir it belongs to (:data:`STACK_ENV`)."""
    port = free_loopback_port()
    metrics_port = free_loopback_port()
    agent_port = free_loopback_port()  # not Ray's fixed 52365: another Ray may hold it
    if not _port_free(dashboard_port):
        dashboard_port = free_loopback_port()
    ensure_auth_token()
    env = {**os.environ, **RAY_ENV}
    if stack is not None:
        env[STACK_ENV] = str(stack.resolve())
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "ray-head.log", "ab") as log:
        process = subprocess.Popen(
            [
                _ray_executable(),
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard_port}",
                f"--metrics-export-port={metrics_port}",
                f"--dashboard-agent-listen-port={agent_port}",
                "--disable-usage-stats",
                f"--num-cpus={os.cpu_count() or 2}",
                "--object-store-memory=268435456",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    if stack is not None:
        remember_head(stack, process.pid)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise KernelhubError(
                f"ray start failed (exit {process.returncode}); see {log_dir / 'ray-head.log'}"
            )
        if not _port_free(port):
            metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            return process.pid, address, f"http://127.0.0.1:{dashboard_port}", metrics
        time.sleep(0.2)
    process.kill()
    raise KernelhubError(
        f"the Ray head did not come up in {timeout:.0f}s; see {log_dir / 'ray-head.log'}"
    )


_LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
RAY_ENV = {
    _LOOPBACK_VAR: "0",
    "RAY_AUTH_MODE": "token",
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
}
"""Loopback stays loopback; the head and every driver use token authentication; ``kh down``
tears down at once (no 30 s drain: the actors' state is in the log, not in them)."""


def ensure_auth_token() -> None:
    """Ray's token (``~/.ray/auth_token``), generated once; drivers read the same file."""
    subprocess.run(
        [_ray_executable(), "get-auth-token", "--generate"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **RAY_ENV},
    )


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0] if ":" in address else address
    return host.startswith("127.") or host == "localhost"


def use_env_for(address: str) -> bool:
    """Ray's environment for talking to the cluster at ``address`` (a driver or the state
    API), set before Ray is imported (it reads it at import): token auth always, loopback
    pinning only for a loopback address. Returns whether it is one."""
    loopback = is_loopback(address)
    os.environ.update(
        RAY_ENV if loopback else {k: v for k, v in RAY_ENV.items() if k != _LOOPBACK_VAR}
    )
    return loopback


def connect(address: str, namespace: str = "kernelhub", attempts: int = 5) -> None:
    """Attach this process to the head as a driver (retrying while the head finishes booting).

    A loopback address is the embedded stack (or a test cluster): this driver stays on
    127.0.0.1 too. Any other is a real cluster, where Ray must use the machine's address."""
    loopback = use_env_for(address)
    import ray

    pinned = {"_node_ip_address": "127.0.0.1"} if loopback else {}
    last: Exception | None = None
    for _ in range(attempts):
        try:
            ray.init(
                address=address,
                namespace=namespace,
                log_to_driver=False,
                logging_level=logging.WARNING,
                **pinned,  # type: ignore[arg-type]
            )
            return
        except Exception as exc:  # the GCS may accept connections before it serves them
            last = exc
            time.sleep(0.5)
    raise KernelhubError(f"cannot connect to Ray at {address}: {last}")


def stop_head(pid: int, timeout: float = 30.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def gcs_answers(address: str, timeout: float = 1.0) -> bool:
    """Whether the GCS at ``host:port`` accepts a connection (the head serves)."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def find_heads(data_dir: Path) -> set[int]:
    """The Unix sessions of the Ray heads ``kh up`` started for ``data_dir`` that still have
    a process, found without ``embedded.json`` (it may be stale or lost): the sessions noted
    by :func:`remember_head`, and from ``/proc``, a head writing to ``logs/ray-head.log``
    (also one started before heads were noted) or a Ray process with this stack's mark."""
    root = data_dir.resolve()
    log = str(root / "logs" / "ray-head.log")
    mark = f"{STACK_ENV}={root}"
    found = {p.sid for p in _ray_members(remembered_heads(data_dir))}
    for p in procs.scan():
        if p.pid == p.sid and p.fd_target(1) == log:
            found.add(p.sid)
        elif _ray_like(p) and p.environ_has(mark):
            found.add(p.sid)
    return found


def _heads_file(data_dir: Path) -> Path:
    return data_dir / "ray-heads"


def remember_head(data_dir: Path, pid: int) -> None:
    """Note a head's session beside the data, apart from ``embedded.json``: Ray's workers
    and agents rewrite their command line and environment (setproctitle), so once their
    head is gone nothing in ``/proc`` ties them to this data dir but their session id."""
    with open(_heads_file(data_dir), "a") as out:
        out.write(f"{pid}\n")


def remembered_heads(data_dir: Path) -> set[int]:
    try:
        text = _heads_file(data_dir).read_text()
    except OSError:
        return set()
    return {int(line) for line in text.split() if line.isdigit()}


def forget_dead_heads(data_dir: Path) -> None:
    """Keep only the heads with a process left (the file goes with the last)."""
    live = {p.sid for p in _ray_members(remembered_heads(data_dir))}
    if live:
        _heads_file(data_dir).write_text("".join(f"{sid}\n" for sid in sorted(live)))
    else:
        _heads_file(data_dir).unlink(missing_ok=True)


def ray_processes(sids: set[int]) -> list[int]:
    """The live processes of these head sessions; a session with no Ray daemon or worker in
    it is not a head's (its pid was reused) and counts for nothing."""
    return [p.pid for p in _ray_members(sids)]


def _ray_members(sids: set[int]) -> list[procs.Proc]:
    members = procs.session_members(sids)
    ray_like = {p.sid for p in members if _ray_like(p)}
    return [p for p in members if p.sid in ray_like]


def _ray_like(p: procs.Proc) -> bool:
    """A Ray daemon, worker (``ray::Name``), agent or the head itself: what may carry this
    stack's mark once its head is gone (the GCS and raylet die with the head; the agents
    and workers may not)."""
    return p.comm in _RAY_DAEMONS or p.comm.startswith("ray") or " start --head " in p.cmdline


def stop_sessions(sids: set[int], timeout: float = 30.0) -> list[int]:
    """Stop these heads and everything in their sessions: SIGTERM to each head still there
    (it stops what it started) and to each orphan whose head is gone, then SIGKILL what is
    left after ``timeout``. Returns what needed SIGKILL."""
    members = _ray_members(sids)
    heads = {p.pid for p in members if p.pid == p.sid}
    for p in members:
        if p.pid in heads or p.sid not in heads:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while ray_processes(sids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return procs.terminate(ray_processes(sids), timeout=5.0)


def process_alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that may never reap it (``kh up``
    exits and leaves its children to whatever init the machine has)."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
