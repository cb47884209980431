"""kernelhub on a three-worker Ray cluster (``ray.cluster_utils.Cluster``, on loopback),
joined the way an operator does: ``kh up --address`` for the head's actors, ``kh agent
start`` per worker node (issue "Observability and multi-node").

Sessions spread over the three agents under the dispersed selector; the head's actors sit on
the ``kernelhub_head`` node and each agent on its own node; removing a node makes its agent
LOST (heartbeats stop: nothing asks Ray whether the actor died); adding the node back and
starting its agent there revives it; one API call is traced through actors on different
nodes. The test process drives the CLI only; it reads the outcome from Redis and from Ray's
state API, never from the actors' insides.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from actors.domain.commands.tenancy import SetScalingGroup
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub import Client
from kernelhub.redis_server import free_loopback_port
from kernelhub.sdk import ClientConfig
from kernelhub.testing import temporary_redis
from projections.queries import ReadModels

from .khstack import KH, kill_what_mentions

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(600)]

T = TypeVar("T")


def until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s"
        time.sleep(0.25)


@dataclass
class Nodes:
    cluster: Any
    workers: list[Any]
    env: dict[str, str]
    redis_url: str
    root: Path
    dashboard: str

    def kh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KH, *args], env=self.env, capture_output=True, text=True, timeout=240, cwd=self.root
        )

    def add_worker(self) -> Any:
        node = self.cluster.add_node(
            num_cpus=4, resources={"kernelhub_agent": 1}, node_ip_address="127.0.0.1"
        )
        self.cluster.wait_for_nodes()
        return node

    def start_agent(self, index: int, node: Any) -> str:
        started = self.kh(
            "agent",
            "start",
            "--address",
            self.cluster.address,
            "--backend",
            "sim",
            "--agent-id",
            f"i-node{index}",
            "--node-id",
            node.node_id,
        )
        assert started.returncode == 0, started.stderr
        return started.stdout

    def read(self, query: Callable[[ReadModels, RedisEventStore], Any]) -> Any:
        """What the read models (or the log) say now."""

        async def go() -> Any:
            store = RedisEventStore.from_url(self.redis_url)
            try:
                return await query(ReadModels(store), store)
            finally:
                await store.close()

        return asyncio.run(go())

    def agent_status(self, agent_id: str) -> str | None:
        record = self.read(lambda models, _: models.agent(agent_id))
        return record["status"] if record else None

    def actors(self) -> dict[str, str]:
        """Live named actors -> their node id, from Ray's state API."""
        from ray.util.state import list_actors

        found = list_actors(
            address=self.dashboard,
            filters=[("state", "=", "ALIVE")],
            limit=1000,
            detail=True,
            raise_on_missing_output=False,
        )
        return {a.name: a.node_id for a in found if a.name}


async def _dispersed(redis_url: str, master_key: Path) -> None:
    store = RedisEventStore.from_url(redis_url)
    try:
        tenancy = await TenancyService(store, SecretBox.from_file(master_key)).load()
        await tenancy.handle(SetScalingGroup(name="default", agent_selector="dispersed"))
    finally:
        await store.close()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("multinode")
    dashboard_port = free_loopback_port()
    with temporary_redis() as redis:
        cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={
                "num_cpus": 1,
                "resources": {"kernelhub_head": 1},
                "node_ip_address": "127.0.0.1",
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": dashboard_port,
                "dashboard_agent_listen_port": free_loopback_port(),  # not another Ray's 52365
            },
        )
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("KH_", "BACKEND_"))}
            env.update(
                KH_DATA_DIR=str(root / "data"),
                KH_CONFIG_DIR=str(root / "cfg"),
                KH_REDIS_URL=redis.url,
                KH_GATEWAY_PORT="0",
                KH_STOP_GRACE_S="1",
                KH_HEARTBEAT_INTERVAL_S="1",
                KH_LOST_TIMEOUT_S="3",
            )
            running = Nodes(cluster, [], env, redis.url, root, f"http://127.0.0.1:{dashboard_port}")
            running.workers = [running.add_worker() for _ in range(3)]
            up = running.kh("up", "--address", cluster.address, "--shards", "2")
            assert up.returncode == 0, up.stderr
            assert "(on the kernelhub_head node)" in up.stdout, up.stdout
            for index, node in enumerate(running.workers):
                assert "started on node" in running.start_agent(index, node)
            asyncio.run(_dispersed(redis.url, root / "data" / "master.key"))
            yield running
        finally:
            cluster.shutdown()
            kill_what_mentions(root)  # kernels the agents started outlive the cluster


def test_head_actors_on_the_head_node_and_one_agent_per_worker(nodes: Nodes) -> None:
    head = nodes.cluster.head_node.node_id
    actors = until(lambda: (a := nodes.actors()) and len(a) >= 10 and a, 60, "actors listed")
    on_head = {name for name, node in actors.items() if node == head}
    assert {
        "gateway",
        "projector",
        "tenancy",
        "reaper",
        "scheduler:default",
        "sessions:0",
        "sessions:1",
    } <= on_head, actors
    assert [actors[f"agent:i-node{i}"] for i in range(3)] == [w.node_id for w in nodes.workers]
    for index in range(3):
        assert until(lambda i=index: nodes.agent_status(f"i-node{i}") == "ALIVE", 30, "alive")
    again = nodes.start_agent(0, nodes.workers[0])  # idempotent: the same actor, untouched
    assert "running on node" in again
    status = nodes.kh("status", "--json")  # on the machine that ran `kh up --address`
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["ray_address"] == nodes.cluster.address
    listed = {a["name"]: a["state"] for a in report["actors"]}
    assert listed["agent:i-node2"] == listed["gateway"] == "ALIVE", report["actors"]


def test_sessions_spread_over_the_three_agents(nodes: Nodes) -> None:
    config = ClientConfig.load(environ=nodes.env)
    with Client(config) as client:
        sessions = [
            client.create_session("python", resources={"cpu": 1, "mem": "512m"}, timeout=60)
            for _ in range(3)
        ]
        try:
            placed = []
            for session in sessions:
                record = nodes.read(lambda models, _, s=session: models.session(str(s.id)))
                placed += [k["agent"] for k in record["kernels"].values()]
            assert sorted(placed) == ["i-node0", "i-node1", "i-node2"], placed
        finally:
            for session in sessions:
                session.destroy()


def test_a_call_is_traced_across_nodes(nodes: Nodes) -> None:
    with Client(ClientConfig.load(environ=nodes.env)) as client:
        with client.session("python", resources={"cpu": 1, "mem": "512m"}) as session:
            correlation_id = str(session.correlation_id)
    env_address = {**nodes.env, "KH_RAY_ADDRESS": nodes.cluster.address}

    def traced() -> set[str] | None:
        shown = subprocess.run(
            [*KH, "trace", correlation_id, "--json"],
            env=env_address,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shown.returncode in (0, 1), shown.stderr
        found = {json.loads(line)["where"] for line in shown.stdout.splitlines()}
        return (
            found
            if {"gateway", "scheduler:default"} <= found
            and any(w.startswith("agent:i-node") for w in found)
            else None
        )

    assert until(traced, 60, "the call in the head's and a worker's logs")


def test_a_node_that_leaves_makes_its_agent_lost_and_coming_back_revives_it(
    nodes: Nodes,
) -> None:
    gone = nodes.workers[0]
    nodes.cluster.remove_node(gone)
    until(lambda: nodes.agent_status("i-node0") == "LOST", 30, "i-node0 LOST")
    assert nodes.agent_status("i-node1") == "ALIVE"
    events = nodes.read(lambda _, store: store.read_stream("agent-i-node0"))
    assert events[-1].data.reason == "agent-lost"

    returned = nodes.add_worker()
    nodes.workers[0] = returned
    started = nodes.start_agent(0, returned)  # replaced, if Ray still held the stranded one
    assert re.fullmatch(rf"agent i-node0 (started|replaced) on node {returned.node_id}\n", started)
    until(lambda: nodes.agent_status("i-node0") == "ALIVE", 30, "i-node0 revived")
    assert until(lambda: nodes.actors().get("agent:i-node0"), 30, "listed") == returned.node_id
    assert nodes.read(lambda _, store: store.read_stream("agent-i-node0"))[-1].type == (
        "agent_started"
    )

    claimed = nodes.kh(
        "agent",
        "start",
        "--address",
        nodes.cluster.address,
        "--backend",
        "sim",
        "--agent-id",
        "i-node1",
        "--node-id",
        returned.node_id,
    )
    assert claimed.returncode == 1 and claimed.stdout == ""
    assert claimed.stderr.startswith("kh: error: agent i-node1 runs on node "), claimed.stderr
    with Client(ClientConfig.load(environ=nodes.env)) as client:
        with client.session("python", name=f"after-{uuid.uuid4().hex[:6]}") as session:
            assert session.info is not None and session.info.status == "RUNNING"


def test_kh_down_stops_kernelhub_on_the_cluster_and_keeps_the_log(nodes: Nodes) -> None:
    """Last in the module: after ``kh up --address``, ``kh down`` kills every kernelhub
    actor, the workers' agents too; the cluster and the log stay."""
    down = nodes.kh("down")
    assert down.returncode == 0, down.stderr
    assert "actors stopped on the Ray cluster at" in down.stdout, down.stdout
    until(lambda: not nodes.actors(), 30, "no kernelhub actor alive")
    assert not (nodes.root / "data" / "joined.json").exists()
    assert nodes.read(lambda _, store: store.stream_version("agent-i-node1")) > 0
    again = nodes.kh("down")
    assert again.returncode == 0 and again.stdout.startswith("nothing was running")
