"""The embedded stack's local Ray head: ``ray start --head --block`` as a child we own.

Everything binds to 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray from
rewriting loopback to the machine's address) on explicit ports. ``--block`` makes the head a
single process to stop: SIGTERM to it stops every Ray process it started, and nothing else
(``ray stop`` would stop every Ray on the machine).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .errors import KernelhubError
from .redis_server import free_loopback_port

__all__ = ["RAY_ENV", "connect", "process_alive", "start_head", "stop_head", "use_env_for"]


def _ray_executable() -> str:
    local = Path(sys.executable).with_name("ray")
    return str(local) if local.exists() else (shutil.which("ray") or "ray")


def start_head(
    log_dir: Path, *, dashboard_port: int = 8265, timeout: float = 60.0
) -> tuple[int, str, str, str]:
    """Start the head; returns (pid, GCS address, dashboard URL, Prometheus metrics URL)
    once a driver can connect."""
    port = free_loopback_port()
    metrics_port = free_loopback_port()
    agent_port = free_loopback_port()  # not Ray's fixed 52365: another Ray may hold it
    if not _port_free(dashboard_port):
        dashboard_port = free_loopback_port()
    ensure_auth_token()
    env = {**os.environ, **RAY_ENV}
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
