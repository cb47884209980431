"""Running code in sessions, end to end without Ray, on the process backend and in Docker
containers: the session's main kernel runs the kernel runner; execute, files and logs go
through the session to the agent that runs it (issues "Code execution", "Real containers")."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from actors.agents.backends.base import Backend
from actors.agents.backends.docker import DockerBackend
from actors.agents.backends.process import ProcessBackend
from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.errors import GenericBadRequest, InvalidAPIParameters
from actors.domain.session import SessionType
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from events import RedisEventStore
from kernelhub.testing import eventually

pytestmark = pytest.mark.redis
G = 2**30


def make_backend(kind: str, root: Path) -> Callable[[str], Backend]:
    if kind == "docker":
        return lambda agent_id: DockerBackend(root / agent_id, owner=agent_id)
    return lambda agent_id: ProcessBackend(root / agent_id)


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
async def cluster(
    request: pytest.FixtureRequest, store: RedisEventStore, tmp_path: Path
) -> AsyncIterator[LocalCluster]:
    if request.param == "docker":
        request.getfixturevalue("docker")
    async with LocalCluster(
        store,
        [("i-exec", {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.5,
        backend=make_backend(request.param, tmp_path),
        stop_grace_s=1.0,
    ) as local:
        yield local


async def session(cluster: LocalCluster, status: str = "RUNNING", **kwargs: Any) -> uuid.UUID:
    sid = await cluster.shard.handle(
        CreateSession(
            name="exec",
            access_key="AK1",
            scaling_group="default",
            image="kernelhub/python:3.11",
            requested=[ResourceSlot(cpu=1, mem=G)],
            **kwargs,
        )
    )

    async def reached() -> bool:
        return (await cluster.shard.get(sid)).status.name == status

    await eventually(reached, timeout=30, message=status)
    return sid


async def run_to_end(
    cluster: LocalCluster,
    sid: uuid.UUID,
    mode: str,
    code: str = "",
    options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Execute and continue until ``finished``: every result on the way."""
    results = [await cluster.execution.execute(sid, None, mode, code, options)]
    while results[-1]["status"] != "finished":
        results.append(await cluster.execution.execute(sid, results[-1]["runId"], "continue"))
    return results


def stdout(results: list[dict[str, Any]]) -> str:
    return "".join(d for r in results for kind, d in r["console"] if kind == "stdout")


async def test_print_six_times_seven_is_42_and_state_persists(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    assert stdout(await run_to_end(cluster, sid, "query", "print(6*7)")) == "42\n"
    await run_to_end(cluster, sid, "query", "answer = 42")
    assert stdout(await run_to_end(cluster, sid, "query", "print(answer + 1)")) == "43\n"


async def test_user_code_sees_the_backendai_environment(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    code = (
        "import os\nfor k in ('BACKENDAI_SESSION_ID', 'BACKENDAI_SESSION_NAME', "
        "'BACKENDAI_CLUSTER_ROLE', 'BACKENDAI_CLUSTER_REPLICAS', 'BACKENDAI_ACCESS_KEY', "
        "'KERNELHUB_AGENT_ID'):\n    print(os.environ[k])\nprint(os.getcwd())"
    )
    lines = stdout(await run_to_end(cluster, sid, "query", code)).splitlines()
    assert lines[:6] == [str(sid), "exec", "main", "main:1", "AK1", "i-exec"]
    assert lines[6].endswith("/work")


async def test_input_round_trip_through_the_session(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    asked = await cluster.execution.execute(sid, None, "query", "print(input('n? ') * 2)")
    assert asked["status"] == "waiting-input"
    done = await cluster.execution.execute(sid, asked["runId"], "input", "ab")
    while done["status"] != "finished":
        done = await cluster.execution.execute(sid, asked["runId"], "continue")
    assert done["console"][-1] == ["stdout", "abab\n"]


async def test_an_interrupted_busy_loop_leaves_the_namespace_alive(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    await run_to_end(cluster, sid, "query", "kept = 7")
    first = await cluster.execution.execute(sid, None, "query", "while True: pass", {}, 0.3)
    assert first["status"] == "continued"
    started = time.monotonic()
    await cluster.execution.call(sid, "interrupt")
    result = await cluster.execution.execute(sid, first["runId"], "continue")
    assert result["status"] == "finished" and time.monotonic() - started < 1.0
    assert stdout(await run_to_end(cluster, sid, "query", "print(kept)")) == "7\n"


async def test_completion_of_import_o(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    assert "os" in await cluster.execution.call(sid, "complete", "import o", {})


async def test_batch_upload_main_py_then_exec(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    await cluster.execution.call(
        sid,
        "upload_files",
        [
            ("main.py", b"import helper\nprint(helper.VALUE)\n"),
            ("pkg%2Fhelper.py", b""),
            ("helper.py", b"VALUE = 'from main'\n"),
        ],
    )
    results = await run_to_end(cluster, sid, "batch", options={"exec": "python3 main.py"})
    assert [r["status"] for r in results][-1] == "finished"
    assert results[-1]["exitCode"] == 0 and stdout(results) == "from main\n"
    listing = await cluster.execution.call(sid, "list_files", "/home/work")
    names = {entry["filename"]: entry for entry in json.loads(listing["files"])}
    assert {"main.py", "helper.py", "pkg"} <= set(names) and listing["abspath"] == "/home/work"
    assert names["pkg"]["mode"].startswith("d") and names["main.py"]["size"] == 34


async def test_a_failing_command_exits_non_zero(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    results = await run_to_end(cluster, sid, "batch", options={"exec": "echo no >&2; exit 9"})
    assert results[-1]["exitCode"] == 9
    assert ["stderr", "no\n"] in [item for r in results for item in r["console"]]


async def test_a_failing_batch_session_records_a_failure(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid = await session(
        cluster,
        "TERMINATED",
        session_type=SessionType.BATCH,
        startup_command="echo batch-said-this; exit 3",
    )
    events = await store.read_stream(f"session-{sid}")
    failure = next(e for e in events if e.type == "session_failure")
    assert failure.data.exit_code == 3  # type: ignore[union-attr]
    assert (await cluster.shard.get(sid)).result == "failure"
    assert "batch-said-this" in await cluster.execution.logs(sid)  # kept after the end


async def test_ten_megabytes_of_binary_round_trip(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    blob = os.urandom(10 * 2**20)
    await cluster.execution.call(sid, "upload_files", [("data/blob.bin", blob)])
    assert await cluster.execution.call(sid, "download_single", "data/blob.bin") == blob
    archive = await cluster.execution.call(sid, "download_files", ["/home/work/data"])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("data/blob.bin")
        assert member is not None and member.read() == blob
    result = await run_to_end(
        cluster, sid, "query", "print(len(open('data/blob.bin','rb').read()))"
    )
    assert stdout(result) == f"{len(blob)}\n"


@pytest.mark.parametrize(
    "name",
    ["../escape.txt", "..%2Fescape.txt", "/etc/passwd", "sub/../../escape.txt", "link/escape.txt"],
)
async def test_paths_that_leave_the_work_dir_are_refused(
    cluster: LocalCluster, tmp_path: Path, name: str
) -> None:
    sid = await session(cluster)
    await run_to_end(cluster, sid, "query", f"import os\nos.symlink({str(tmp_path)!r}, 'link')")
    with pytest.raises(InvalidAPIParameters):
        await cluster.execution.call(sid, "upload_files", [(name, b"x")])
    with pytest.raises(InvalidAPIParameters):
        await cluster.execution.call(sid, "download_single", name)
    assert not (tmp_path / "escape.txt").exists()


async def test_logs_are_readable_after_the_session_ended(cluster: LocalCluster) -> None:
    sid = await session(cluster)
    await run_to_end(cluster, sid, "batch", options={"exec": "echo to-the-log"})
    assert "to-the-log" in await cluster.execution.logs(sid)
    await cluster.shard.handle(DestroySession(session_id=sid))

    async def ended() -> bool:
        return (await cluster.shard.get(sid)).status.name == "TERMINATED"

    await eventually(ended, timeout=20, message="terminated")
    logs = await cluster.execution.logs(sid)
    assert "to-the-log" in logs and "runner stopped" in logs
    with pytest.raises(GenericBadRequest):
        await cluster.execution.execute(sid, None, "query", "print(1)")


async def test_executions_count_as_activity_for_idle_checks(
    cluster: LocalCluster, store: RedisEventStore
) -> None:
    sid = await session(cluster)
    key = store.keys.idle_access(str(sid))
    await store.redis.delete(key)
    await run_to_end(cluster, sid, "query", "1")
    await eventually(lambda: store.redis.exists(key), timeout=5, message="touched")


async def test_a_kernel_asked_for_twice_starts_once(cluster: LocalCluster) -> None:
    """Reconciliation ("stalled") and the log's reaction may both ask an agent to create
    the same kernel when its follower lags; a second runner would steal the first one's
    socket and orphan its process."""
    sid = await session(cluster)
    agent = cluster.agents["i-exec"]
    kernel_id = next(iter(agent.backend.known()))
    before = incarnation(agent.backend, kernel_id)
    agent._spawn_creation(await cluster.shard.get(sid), [kernel_id])
    await agent.drain()
    assert incarnation(agent.backend, kernel_id) == before
    assert stdout(await run_to_end(cluster, sid, "query", "print('one runner')")) == "one runner\n"


def incarnation(backend: Backend, kernel_id: uuid.UUID) -> str:
    """What a second start of the kernel would change: its runner's pid, its container."""
    if isinstance(backend, DockerBackend):
        return backend._kernels[kernel_id].container_id
    assert isinstance(backend, ProcessBackend)
    return str(backend._procs[kernel_id].pid)
