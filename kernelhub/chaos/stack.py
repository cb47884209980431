"""A real ``kh up`` for a chaos or soak run: simulated agents plus one process agent (sim
agents run no code; executions need a real one), in a temporary data dir, with
``appendfsync always`` so "acknowledged" means "durable".

Everything runs through the ``kh`` CLI as an operator would run it; the stack's facts
(Redis URL, Ray address, dashboard, gateway, the superadmin keypair) are read from what
``kh up`` printed and recorded (``embedded.json``, ``config.toml``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.server import server_pid
from kernelhub.errors import KernelhubError
from kernelhub.testing import kill_processes_mentioning

__all__ = ["ChaosStack", "WorkerNode", "redis_pid"]

KH = [sys.executable, "-m", "kernelhub.cli"]
PROCESS_AGENT = "i-proc"


@dataclass
class WorkerNode:
    """A Ray worker node on this machine (``ray start --address --block``, a process group
    we own) with a simulated agent pinned to it: what a node's death takes away."""

    agent_id: str
    process: subprocess.Popen[bytes]
    node_id: str


@dataclass
class ChaosStack:
    root: Path
    environ: dict[str, str]
    exports: dict[str, str]
    nodes: list[WorkerNode] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def state(self) -> dict[str, Any]:
        """What ``kh up`` recorded (``embedded.json``), re-read on each call: a supervised
        Redis restart changes its pid there."""
        raw: dict[str, Any] = json.loads((self.data_dir / "embedded.json").read_text())
        return raw

    @property
    def redis_url(self) -> str:
        return self.exports["KH_REDIS_URL"]

    @property
    def endpoint(self) -> str:
        return self.exports["BACKEND_ENDPOINT"]

    @property
    def access_key(self) -> str:
        return self.exports["BACKEND_ACCESS_KEY"]

    @property
    def secret_key(self) -> str:
        return self.exports["BACKEND_SECRET_KEY"]

    @property
    def ledger(self) -> Path:
        """The file every execution appends its token to (the process agent's kernels run
        as the operator, so they can write here; see :func:`.workload.exec_code`)."""
        return self.root / "exec-ledger.txt"

    def kh(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KH, *args],
            env={**self.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # ---- life -------------------------------------------------------------------------------
    @classmethod
    def up(cls, *, sim_agents: int = 2, shards: int = 2) -> ChaosStack:
        root = Path(tempfile.mkdtemp(prefix="kh-chaos-"))
        environ = {
            **os.environ,
            "KH_DATA_DIR": str(root / "data"),
            "KH_CONFIG_DIR": str(root / "cfg"),
            "KH_GATEWAY_PORT": "0",
            "KH_STOP_GRACE_S": "1",
            # a difference between an agent and the log is acted on in two rounds: 10 s,
            # well inside the checker's deadline for a transitional status
            "KH_RECONCILE_INTERVAL_S": "5",
            "KH_DURABILITY": "always",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }
        for key in [k for k in environ if k.startswith("BACKEND_")] + ["KH_REDIS_URL"]:
            environ.pop(key, None)
        stack = cls(root, environ, {})
        try:
            done = stack.kh(
                "up",
                "--backend",
                "sim",
                "--agents",
                str(sim_agents),
                "--shards",
                str(shards),
                "--durability",
                "always",
            )
            if done.returncode != 0:
                raise KernelhubError(f"kh up failed: {done.stderr.strip()[-2000:]}")
            lines = [x for x in done.stdout.splitlines() if x.startswith("export ")]
            stack.exports = dict(x.removeprefix("export ").split("=", 1) for x in lines)
            stack.exports.setdefault("KH_REDIS_URL", stack.state()["redis_url"])
            if "BACKEND_SECRET_KEY" not in stack.exports:
                stack.exports.update(stack._keypair_from_config())
            stack.start_process_agent()
        except BaseException:
            stack.down()
            raise
        return stack

    def _keypair_from_config(self) -> dict[str, str]:
        config = tomllib.loads((self.root / "cfg" / "config.toml").read_text())
        flat = {**config, **config.get("client", {})}
        return {
            "BACKEND_ACCESS_KEY": str(flat["access_key"]),
            "BACKEND_SECRET_KEY": str(flat["secret_key"]),
        }

    def start_process_agent(self) -> None:
        """``kh agent start`` on the head's node: an agent whose kernels are processes."""
        done = self.kh(
            "agent",
            "start",
            "--address",
            str(self.state()["ray_address"]),
            "--backend",
            "process",
            "--agent-id",
            PROCESS_AGENT,
            "--accelerator",
            "none",
            KH_REDIS_URL=self.redis_url,
        )
        if done.returncode != 0:
            raise KernelhubError(f"kh agent start failed: {done.stderr.strip()[-2000:]}")

    # ---- worker nodes -----------------------------------------------------------------------
    def add_node(self, agent_id: str) -> WorkerNode:
        """A worker node joined to the stack's Ray head, and agent ``agent_id`` on it."""
        from kernelhub import ray_head
        from kernelhub.redis_server import free_loopback_port

        state = self.state()
        known = set(self._node_ids())
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / f"{agent_id}.log", "ab") as log:
            process = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("ray")),
                    "start",
                    f"--address={state['ray_address']}",
                    "--node-ip-address=127.0.0.1",
                    "--num-cpus=2",
                    # not Ray's fixed ports: another Ray on this machine may hold them
                    f"--dashboard-agent-listen-port={free_loopback_port()}",
                    f"--metrics-export-port={free_loopback_port()}",
                    "--block",
                    "--disable-usage-stats",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**self.environ, **ray_head.RAY_ENV},
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        fresh = set(self._node_ids()) - known
        while not fresh:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise KernelhubError(f"the worker node for {agent_id} did not join within 60 s")
            time.sleep(0.5)
            fresh = set(self._node_ids()) - known
        node = WorkerNode(agent_id, process, fresh.pop())
        done = self.kh(
            "agent",
            "start",
            "--address",
            str(state["ray_address"]),
            "--backend",
            "sim",
            "--agent-id",
            agent_id,
            "--node-id",
            node.node_id,
            "--accelerator",
            "none",
            KH_REDIS_URL=self.redis_url,
        )
        if done.returncode != 0:
            raise KernelhubError(f"kh agent start on {node.node_id}: {done.stderr.strip()[-800:]}")
        self.nodes.append(node)
        return node

    def _node_ids(self) -> list[str]:
        from kernelhub import ray_head

        ray_head.use_env_for(str(self.state()["ray_address"]))
        from ray.util.state import list_nodes

        found = list_nodes(address=str(self.state()["dashboard_url"]), limit=1000)
        return [str(n.node_id) for n in found if n.state == "ALIVE"]

    def kill_node(self, node: WorkerNode) -> None:
        """The node's death: its whole process group (raylet, workers, the agent) SIGKILLed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(30)
        self.nodes.remove(node)

    def down(self) -> None:
        """``kh down``, then whatever still mentions the run's directory (process kernels,
        a Redis the driver restarted by hand), then the directory."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.kh("down", timeout=120)
        for node in list(self.nodes):
            with contextlib.suppress(Exception):
                self.kill_node(node)
        kill_processes_mentioning(self.root)
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


def redis_pid(url: str, timeout: float = 2.0) -> int | None:
    """The running server's pid from ``INFO server`` (None when it does not answer)."""
    return server_pid(url, timeout)


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def ray_session_dir(root: Path) -> Path | None:
    """The Ray session directory of the stack under ``root`` (its raylet's command line
    names it; the raylet's environment names the stack's data dir)."""
    needle = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if b"raylet" not in cmdline.split(b"\0", 1)[0]:
                continue
            if needle not in (entry / "environ").read_bytes() + cmdline:
                continue
            for arg in cmdline.decode(errors="replace").split("\0"):
                if arg.startswith("--session_dir="):
                    return Path(arg.removeprefix("--session_dir="))
    return None
