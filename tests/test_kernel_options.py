"""The session options the gateway records in ``session_enqueued`` honoured inside the kernel
(issue 28): ``environ`` beside the ``BACKENDAI_*`` variables (which no spec can override, even
one that never went through the gateway), the bootstrap script (run before the kernel is
RUNNING, its output in the kernel log, a failure ending the session with its reason),
``resource_opts.shmem`` (a container's ``/dev/shm``; named as not enforced on the process
backend), and the exec timeout (``exec-timeout`` for a run, ``task-timeout`` for a batch).

Real processes on the process backend through a local cluster; one Docker session (all three
container-side options at once) for what only a container shows."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from actors.agents.agent import BootstrapFailed, bootstrap_failure
from actors.agents.backends.base import KernelLaunch
from actors.agents.backends.docker import DockerBackend
from actors.agents.backends.process import ProcessBackend
from actors.agents.backends.sim import SimBackend
from actors.agents.kernel_env import kernel_environ, user_environ
from actors.domain.commands.sessions import CreateSession, DestroySession, RestartSession
from actors.domain.limits import EXEC_TIMEOUT_LABEL, execution_timeout_s
from actors.domain.session import SessionType
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from events import RedisEventStore
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.testing import BASE_IMAGE, eventually

G = 2**30
M = 2**20
PROC = "i-proc"
DOCKER = "i-docker"
DOCKER_GROUP = "kernel-options-docker"
BOOTSTRAP_LIMIT_S = 3.0
"""The process cluster's bootstrap time limit (short, so the time-out case is quick)."""
HOSTILE_ENVIRON = {
    "FOO": "bar",
    "BACKENDAI_KERNEL_ID": "evil",
    "BACKENDAI_ACCESS_KEY": "evil",
    "backendai_session_id": "evil",
    "KERNELHUB_BACKEND": "evil",
    "SMUGGLER": "x\nBACKENDAI_SESSION_ID=evil",
    "NOT A NAME": "evil",
}
"""What a spec that never went through the gateway may hold: only ``FOO`` may arrive."""
redis = pytest.mark.redis


# ---- pure parts ----------------------------------------------------------------------------
@pytest.mark.hostile
def test_user_environ_keeps_only_what_a_user_may_set() -> None:
    kept, dropped = user_environ({"environ": HOSTILE_ENVIRON})
    assert kept == {"FOO": "bar"}
    assert sorted(dropped) == sorted(set(HOSTILE_ENVIRON) - {"FOO"})
    assert user_environ({}) == ({}, [])
    assert user_environ({"environ": ["FOO=bar"]}) == ({}, ["environ"])


def test_our_variables_win_over_the_users() -> None:
    kernel_id, session_id = uuid.uuid4(), uuid.uuid4()
    spec = {
        "environ": {**HOSTILE_ENVIRON, "BACKENDAI_CLUSTER_ROLE": "sub"},
        "access_key": "AK1",
        "kernels": [{"kernel_id": str(kernel_id), "cluster_role": "main"}],
    }
    environ = kernel_environ(session_id, spec, kernel_id, "i-a")
    assert environ["FOO"] == "bar"
    assert environ["BACKENDAI_KERNEL_ID"] == str(kernel_id)
    assert environ["BACKENDAI_SESSION_ID"] == str(session_id)
    assert environ["BACKENDAI_ACCESS_KEY"] == "AK1"
    assert environ["BACKENDAI_CLUSTER_ROLE"] == "main"
    assert "evil" not in environ.values() and "SMUGGLER" not in environ


def test_the_exec_timeout_is_the_tighter_of_policy_and_image() -> None:
    image = {"labels": {EXEC_TIMEOUT_LABEL: "30"}}
    assert execution_timeout_s(None, None) is None
    assert execution_timeout_s({"exec_timeout_s": 0}, {"labels": {}}) is None
    assert execution_timeout_s({"exec_timeout_s": 10}, image) == 10
    assert execution_timeout_s({"exec_timeout_s": 60}, image) == 30
    assert execution_timeout_s({}, image) == 30
    assert (
        execution_timeout_s({"exec_timeout_s": None}, {"labels": {EXEC_TIMEOUT_LABEL: "x"}}) is None
    )
    assert execution_timeout_s({"exec_timeout_s": float("inf")}, None) is None


def test_a_runners_status_tells_of_a_failed_bootstrap() -> None:
    assert bootstrap_failure({"started_at": 1.0}, 5) is None
    assert bootstrap_failure({"bootstrap": {"exit_code": 0, "timed_out": False}}, 5) is None
    failed = bootstrap_failure({"bootstrap": {"exit_code": 3, "tail": "oops\n"}}, 5)
    assert isinstance(failed, BootstrapFailed)
    assert str(failed) == "bootstrap script exited with 3" and failed.tail == "oops\n"
    timed_out = bootstrap_failure({"bootstrap": {"exit_code": -9, "timed_out": True}}, 5)
    assert timed_out is not None and "time limit (5 s)" in str(timed_out)
    assert bootstrap_failure({"bootstrap": "lies"}, 5) is not None  # unreadable: not a success


async def test_the_simulated_backend_names_each_option_it_cannot_apply() -> None:
    backend = SimBackend(start_delay=0)
    kernel_id = uuid.uuid4()
    launch = KernelLaunch(
        kernel_id,
        uuid.uuid4(),
        {"cpu": Decimal(1), "mem": Decimal(G)},
        environ={"FOO": "bar", "BACKENDAI_KERNEL_ID": str(kernel_id)},
        bootstrap_script="echo hi",
        shmem=64 * M,
        exec_timeout_s=5,
    )
    await backend.start(launch)
    await backend.stop(kernel_id, 0)
    log = (await backend.logs(kernel_id)).decode()
    assert "environ not applied (no process runs): FOO\n" in log
    assert "bootstrap script not run" in log
    assert f"shmem={64 * M} not applied" in log and "exec timeout 5 s not applied" in log
    await backend.remove(kernel_id)
    assert await backend.logs(kernel_id) == b""
    plain = KernelLaunch(uuid.uuid4(), uuid.uuid4(), {"cpu": Decimal(1)})
    await backend.start(plain)
    assert await backend.logs(plain.kernel_id) == b""


# ---- the process backend -------------------------------------------------------------------
@pytest.fixture(scope="module")
async def proc_store(redis_server: EmbeddedRedis) -> AsyncIterator[RedisEventStore]:
    store = RedisEventStore.from_url(redis_server.url)
    await store.redis.flushall()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(scope="module")
async def proc(
    proc_store: RedisEventStore, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LocalCluster]:
    root = tmp_path_factory.mktemp("kernel-options")
    async with LocalCluster(
        proc_store,
        [(PROC, {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.5,
        backend=lambda agent_id: ProcessBackend(root / agent_id),
        stop_grace_s=1.0,
        bootstrap_timeout_s=BOOTSTRAP_LIMIT_S,
    ) as local:
        yield local


async def create(cluster: LocalCluster, **kwargs: Any) -> uuid.UUID:
    kwargs.setdefault("image", BASE_IMAGE)
    kwargs.setdefault("scaling_group", "default")
    return await cluster.shard.handle(
        CreateSession(
            name=f"opt-{uuid.uuid4().hex[:8]}",
            access_key="AK1",
            requested=[ResourceSlot(cpu=1, mem=G)],
            **kwargs,
        )
    )


async def reach(cluster: LocalCluster, sid: uuid.UUID, *statuses: str) -> str:
    """The session reaches one of the statuses in the log and the read model; which."""
    agent = next(iter(cluster.agents.values()))

    async def there() -> str | None:
        status = (await cluster.shard.get(sid)).status.name
        record = await agent.models.session(str(sid))
        if status in statuses and record is not None and record["status"] == status:
            return status
        return None

    found = await eventually(there, timeout=60, message="/".join(statuses))
    return str(found)


async def run(cluster: LocalCluster, sid: uuid.UUID, code: str) -> dict[str, Any]:
    """A query to its end (``finished`` or ``exec-timeout``), its console joined as ``out``."""
    result = await cluster.execution.execute(sid, None, "query", code)
    console = list(result["console"])
    while result["status"] == "continued":
        result = await cluster.execution.execute(sid, result["runId"], "continue")
        console += result["console"]
    out = "".join(data for kind, data in console if kind in ("stdout", "stderr"))
    return {**result, "out": out}


async def session_record(cluster: LocalCluster, sid: uuid.UUID) -> dict[str, Any]:
    record = await next(iter(cluster.agents.values())).models.session(str(sid))
    assert record is not None
    return record


async def events_of(store: RedisEventStore, sid: uuid.UUID) -> list[Any]:
    return list(await store.read_stream(f"session-{sid}"))


async def destroy(cluster: LocalCluster, sid: uuid.UUID) -> None:
    await cluster.shard.handle(DestroySession(session_id=sid))
    await reach(cluster, sid, "TERMINATED", "CANCELLED")


_SHOW_ENV = (
    "import os; print(sorted((k, v) for k, v in os.environ.items() if 'evil' in v "
    "or k in ('FOO', 'BACKENDAI_KERNEL_ID', 'BACKENDAI_SESSION_ID', 'KERNELHUB_BACKEND')))"
)


@redis
@pytest.mark.hostile
async def test_environ_reaches_code_and_never_overrides_ours(
    proc: LocalCluster, proc_store: RedisEventStore
) -> None:
    # a spec that never went through the gateway (which refuses these names): the agent
    # still keeps the user's hands off our variables, and off environ.txt's lines
    sid = await create(proc, environ=HOSTILE_ENVIRON)
    await reach(proc, sid, "RUNNING")
    (kernel_id,) = (await proc.shard.get(sid)).kernels
    out = (await run(proc, sid, _SHOW_ENV))["out"]
    assert out.strip() == str(
        sorted(
            [
                ("BACKENDAI_KERNEL_ID", str(kernel_id)),
                ("BACKENDAI_SESSION_ID", str(sid)),
                ("FOO", "bar"),
                ("KERNELHUB_BACKEND", "process"),
            ]
        )
    )
    # environ.txt (what the runner merges in at each start): nothing planted there either
    backend = proc.agents[PROC].backend
    assert isinstance(backend, ProcessBackend)
    lines = (backend.dirs(kernel_id).config / "environ.txt").read_text().splitlines()
    assert "FOO=bar" in lines and not [line for line in lines if "evil" in line]
    await destroy(proc, sid)


@redis
async def test_environ_reaches_a_batch_command(
    proc: LocalCluster, proc_store: RedisEventStore
) -> None:
    sid = await create(
        proc,
        environ={"FOO": "bar"},
        session_type=SessionType.BATCH,
        startup_command='test "$FOO" = bar',
    )
    await reach(proc, sid, "TERMINATED")
    outcome = next(
        e
        for e in await events_of(proc_store, sid)
        if e.type in ("session_success", "session_failure")
    )
    assert outcome.type == "session_success"


@redis
async def test_the_bootstrap_runs_before_running_logs_and_runs_again_on_restart(
    proc: LocalCluster, proc_store: RedisEventStore
) -> None:
    script = 'echo "bootstrap says $FOO"\nsleep 1\necho ran >> boot.txt\n'
    sid = await create(proc, environ={"FOO": "hello"}, bootstrap_script=script)
    await reach(proc, sid, "RUNNING")
    # the first exec finds what the script wrote a second after it started: RUNNING waited
    assert (await run(proc, sid, "print(open('boot.txt').read())"))["out"].strip() == "ran"
    logs = await proc.execution.logs(sid)
    assert "bootstrap says hello" in logs and "bootstrap script exited with 0" in logs
    # a restart starts the runner again, and the script with it (upstream: each start)
    await proc.shard.handle(RestartSession(session_id=sid))
    await reach(proc, sid, "RESTARTING", "RUNNING")
    await reach(proc, sid, "RUNNING")

    async def twice() -> bool:
        out: str = (await run(proc, sid, "print(open('boot.txt').read())"))["out"]
        return out.split() == ["ran", "ran"]

    await eventually(twice, timeout=30, message="bootstrap ran again")
    await destroy(proc, sid)


@redis
@pytest.mark.parametrize(
    ("script", "reason", "tail"),
    [
        ("echo oops >&2\nexit 3\n", "bootstrap script exited with 3", "oops"),
        ("echo slow\nsleep 60\n", f"ran past its time limit ({BOOTSTRAP_LIMIT_S:g} s)", "slow"),
    ],
)
async def test_a_failing_bootstrap_ends_the_session_with_its_reason(
    proc: LocalCluster, proc_store: RedisEventStore, script: str, reason: str, tail: str
) -> None:
    sid = await create(proc, bootstrap_script=script)
    assert await reach(proc, sid, "CANCELLED", "RUNNING") == "CANCELLED"
    record = await session_record(proc, sid)
    assert record["status_info"] == "failed-to-start"
    error = record["status_data"]["error"]
    assert error["name"] == "BootstrapFailed" and reason in error["repr"]
    assert tail in error["output"]
    types = [e.type for e in await events_of(proc_store, sid)]
    assert "kernel_started" not in types  # never reported started
    assert tail in await proc.execution.logs(sid)  # and the log kept its output


@redis
async def test_a_bootstrap_failing_at_a_restart_puts_the_session_in_error_with_its_reason(
    proc: LocalCluster,
) -> None:
    script = "if [ -f once ]; then echo second time >&2; exit 4; fi\ntouch once\n"
    sid = await create(proc, bootstrap_script=script)
    await reach(proc, sid, "RUNNING")
    await proc.shard.handle(RestartSession(session_id=sid))
    await reach(proc, sid, "ERROR")
    record = await session_record(proc, sid)
    assert record["status_info"] == "restart-failed"
    message = record["status_data"]["error"]["repr"]
    assert message.startswith("bootstrap script exited with 4") and "second time" in message
    await proc.shard.handle(DestroySession(session_id=sid, forced=True))
    await reach(proc, sid, "TERMINATED")


@redis
async def test_shmem_on_the_process_backend_is_named_not_enforced(
    proc: LocalCluster,
) -> None:
    sid = await create(proc, resource_opts={"shmem": 64 * M})
    await reach(proc, sid, "RUNNING")
    logs = await proc.execution.logs(sid)
    assert f"resource_opts.shmem={64 * M} is not enforced on the process backend" in logs
    await destroy(proc, sid)


@redis
async def test_python_answers_in_a_process_kernel_as_the_runners_interpreter(
    proc: LocalCluster,
) -> None:
    # issue 28, point 7: `--exec 'python main.py'` must not depend on the host's `python`
    sid = await create(proc)
    await reach(proc, sid, "RUNNING")
    code = (
        "import subprocess\nfor name in ('python', 'python3'):\n"
        "    print(subprocess.run([name, '-c', 'import sys; print(sys.executable)'],"
        " capture_output=True, text=True).stdout.strip())"
    )
    assert (await run(proc, sid, code))["out"].split() == [sys.executable] * 2
    await destroy(proc, sid)


@redis
async def test_a_run_past_the_exec_timeout_ends_exec_timeout(
    proc: LocalCluster, proc_store: RedisEventStore
) -> None:
    sid = await create(proc, exec_timeout_s=1.0)
    await reach(proc, sid, "RUNNING")
    assert (await run(proc, sid, "print('quick')"))["out"].strip() == "quick"
    result = await run(proc, sid, "import time\nprint('going', flush=True)\ntime.sleep(30)")
    assert result["status"] == "exec-timeout" and result["exitCode"] is None
    # as upstream: the kernel is destroyed with that reason (its code would still run)
    await reach(proc, sid, "TERMINATED", "ERROR")
    terminated = next(e for e in await events_of(proc_store, sid) if e.type == "kernel_terminated")
    assert terminated.data.reason == "exec-timeout"


@redis
async def test_a_batch_past_the_exec_timeout_ends_task_timeout(
    proc: LocalCluster, proc_store: RedisEventStore
) -> None:
    sid = await create(
        proc, exec_timeout_s=1.0, session_type=SessionType.BATCH, startup_command="sleep 30"
    )
    await reach(proc, sid, "TERMINATED", "ERROR")
    outcome = next(
        e
        for e in await events_of(proc_store, sid)
        if e.type in ("session_success", "session_failure")
    )
    assert outcome.type == "session_failure"
    assert outcome.data.reason == "task-timeout" and outcome.data.exit_code == -2
    assert (await proc.shard.get(sid)).result == "failure"


# ---- Docker: one container with all three options ------------------------------------------
@pytest.fixture(scope="module")
async def docker_session(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory, docker: None
) -> AsyncIterator[tuple[LocalCluster, uuid.UUID]]:
    store = RedisEventStore.from_url(redis_server.url)
    root = tmp_path_factory.mktemp("kernel-options-docker")
    try:
        async with LocalCluster(
            store,
            [(DOCKER, {"cpu": 2, "mem": 4 * G})],
            scaling_group=DOCKER_GROUP,  # the process cluster of this module shares the store
            safety_tick_s=0.5,
            backend=lambda agent_id: DockerBackend(root / agent_id, owner=agent_id),
            stop_grace_s=1.0,
        ) as local:
            sid = await create(
                local,
                environ=HOSTILE_ENVIRON,
                bootstrap_script=(
                    'echo "bootstrap as $(id -un) with FOO=$FOO"\nsleep 1\n'
                    "echo ran > /home/work/boot.txt\n"
                ),
                resource_opts={"shmem": 96 * M},
                scaling_group=DOCKER_GROUP,
            )
            if await reach(local, sid, "RUNNING", "CANCELLED") != "RUNNING":
                pytest.fail(f"not started: {(await session_record(local, sid))['status_data']}")
            yield local, sid
            await destroy(local, sid)
    finally:
        await store.close()


@redis
@pytest.mark.docker
async def test_docker_environ_is_in_the_container_beside_ours(
    docker_session: tuple[LocalCluster, uuid.UUID],
) -> None:
    cluster, sid = docker_session
    (kernel_id,) = (await cluster.shard.get(sid)).kernels
    out = (await run(cluster, sid, _SHOW_ENV))["out"]
    assert out.strip() == str(
        sorted(
            [
                ("BACKENDAI_KERNEL_ID", str(kernel_id)),
                ("BACKENDAI_SESSION_ID", str(sid)),
                ("FOO", "bar"),
                ("KERNELHUB_BACKEND", "docker"),
            ]
        )
    )


@redis
@pytest.mark.docker
async def test_docker_bootstrap_runs_in_the_container_before_running(
    docker_session: tuple[LocalCluster, uuid.UUID],
) -> None:
    cluster, sid = docker_session
    assert (await cluster.shard.get(sid)).status.name == "RUNNING"
    assert (await run(cluster, sid, "print(open('/home/work/boot.txt').read())"))[
        "out"
    ].strip() == "ran"
    logs = await cluster.execution.logs(sid)  # the container's output
    assert "bootstrap as work with FOO=bar" in logs  # the kernel's user, never root
    assert "bootstrap script exited with 0" in logs


@redis
@pytest.mark.docker
async def test_docker_shmem_is_the_containers_dev_shm(
    docker_session: tuple[LocalCluster, uuid.UUID],
) -> None:
    cluster, sid = docker_session
    code = "import os; s = os.statvfs('/dev/shm'); print(s.f_blocks * s.f_frsize)"
    assert int((await run(cluster, sid, code))["out"].strip()) == 96 * M
    backend = cluster.agents[DOCKER].backend
    assert isinstance(backend, DockerBackend)
    (record,) = backend._kernels.values()
    host = (await backend.docker.containers.container(record.container_id).show())["HostConfig"]
    inspected = [host["ShmSize"], host["Memory"]]
    assert inspected == [96 * M, G - 96 * M]  # carved out of the memory, as upstream
