"""Issue 26, attack 9: a machine without Docker.

``kh up`` where no Docker socket exists crashed (aiodocker's ``AssertionError``); where it
fell back to the process backend it silently ran every tenant's code as the operator's uid,
on the host, next to ``master.key``. Now it falls back with one line saying kernels are not
isolated, the operator's own sessions run, and another user's are refused (403
``unisolated-backend``, at the gateway and again at the agent) unless the operator opted in.

The stack without Docker runs in a mount namespace with a tmpfs over ``/run`` (testing.md):
the socket is not there at all, as on a fresh machine.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest

from actors.agents.backends.docker import docker_answers
from actors.agents.backends.process import ProcessBackend
from actors.domain.commands.sessions import CreateSession, RestartSession
from actors.domain.commands.tenancy import CreateUser, IssueKeypair
from actors.domain.isolation import UnisolatedBackend, isolation_of_backend, refusal
from actors.domain.slots import ResourceSlot
from actors.gateway.problems import status_of
from actors.hosts.local import LocalCluster
from actors.sessions.isolation import set_opt_in
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub import Client
from kernelhub.bootstrap import bootstrap
from kernelhub.errors import KernelhubError
from kernelhub.sdk import ClientConfig, InputRequired, PermissionDenied
from kernelhub.testing import docker_required, eventually
from kernelhub.unisolated import opt_in_asked, warning
from projections.queries import ReadModels
from projections.tenancy_queries import TenancyLookups

from .khstack import KH, ROOT, Stack, second_tenant, stack_root, stop_stack

pytestmark = pytest.mark.hostile
G = 2**30

HIDE_DOCKER = (
    "mount -t tmpfs tmpfs /run || exit 97; "
    "[ -L /var/run ] || mount -t tmpfs tmpfs /var/run || exit 97; "
    'exec "$@"'
)
"""A tmpfs over ``/run`` (``/var/run`` too where it is not a link to it): no socket at all."""


def namespaced(
    args: list[str], env: Mapping[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``args`` in a new mount namespace where no Docker socket exists."""
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", HIDE_DOCKER, "sh", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def namespaces() -> None:
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", HIDE_DOCKER, "sh", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        reason = f"cannot hide the Docker socket (unshare -m: {probe.stderr.strip()})"
        if docker_required():
            pytest.fail(f"KH_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)


def _no_docker_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DOCKER_HOST", "DOCKER_CONTEXT", "KH_REDIS_URL", "KH_ALLOW_UNISOLATED")
        and not k.startswith("BACKEND_")
    }
    return {**env, **extra}


# ---- the rule, pure -------------------------------------------------------------------------
@pytest.mark.unit
def test_only_a_superadmin_runs_on_an_unisolated_agent_unless_the_operator_opted_in() -> None:
    def refused(role: str | None, isolations: list[str | None], opted_in: bool = False) -> bool:
        found = refusal(owner_role=role, isolations=isolations, opted_in=opted_in, where="x")
        return found is not None

    assert not refused("superadmin", ["none"])
    for tenant in ("user", "admin", "monitor", "", None):  # a domain admin is a tenant too
        assert refused(tenant, ["none"])
        assert refused(tenant, ["container", "none"])  # a mixed group may place it there
        assert not refused(tenant, ["none"], opted_in=True)
        assert not refused(tenant, ["container", "simulated", None])
    error = refusal(owner_role="user", isolations=["none"], opted_in=False, where="group 'g'")
    assert isinstance(error, UnisolatedBackend) and status_of(error) == 403
    assert error.error_type == "unisolated-backend"
    assert "group 'g'" in error.msg and "operator's uid" in error.msg
    assert "kh up --allow-unisolated" in error.msg
    assert [isolation_of_backend(k) for k in ("docker", "process", "sim", "new")] == [
        "container",
        "none",
        "simulated",
        "none",
    ]


@pytest.mark.unit
def test_the_opt_in_and_the_warning_line() -> None:
    assert opt_in_asked(None, {}) is None
    assert opt_in_asked(None, {"KH_ALLOW_UNISOLATED": "1"}) is True
    assert opt_in_asked(None, {"KH_ALLOW_UNISOLATED": "0"}) is False
    assert opt_in_asked(False, {"KH_ALLOW_UNISOLATED": "1"}) is False  # the flag wins
    with pytest.raises(KernelhubError, match="KH_ALLOW_UNISOLATED='maybe'"):
        opt_in_asked(None, {"KH_ALLOW_UNISOLATED": "maybe"})
    assert warning("docker", False) is None and warning("sim", False) is None
    refusing, allowing = warning("process", False), warning("process", True)
    assert refusing is not None and allowing is not None
    assert "\n" not in refusing and f"uid {os.getuid()}" in refusing
    assert "NOT isolated" in refusing and "kh up --allow-unisolated" in refusing
    assert "every user's sessions run so" in allowing


# ---- is Docker there? -----------------------------------------------------------------------
@pytest.mark.unit
def test_no_docker_socket_at_all_is_a_no_not_a_crash(namespaces: None) -> None:
    probe = (
        "from actors.agents.backends import resolve_backend_kind; "
        "print(resolve_backend_kind('auto'))"
    )
    found = namespaced(
        [sys.executable, "-c", probe], _no_docker_env(HOME="/nonexistent"), timeout=60
    )
    assert (found.returncode, found.stdout) == (0, "process\n"), found.stderr


@pytest.mark.unit
async def test_a_socket_that_does_not_answer_is_a_no() -> None:
    with tempfile.TemporaryDirectory(prefix="kh-dk-") as path:
        refused = Path(path) / "refused.sock"  # bound, never listening: connection refused
        silent = Path(path) / "silent.sock"  # accepts, never replies
        with socket.socket(socket.AF_UNIX) as dead, socket.socket(socket.AF_UNIX) as mute:
            dead.bind(str(refused))
            mute.bind(str(silent))
            mute.listen()
            assert not await docker_answers(f"unix://{refused}", timeout=2)
            assert not await docker_answers(f"unix://{silent}", timeout=0.5)
            assert not await docker_answers(f"unix://{path}/absent.sock", timeout=2)


# ---- the agent: the last check before a kernel starts ---------------------------------------
@pytest.fixture
async def process_cluster(store: RedisEventStore, tmp_path: Path) -> AsyncIterator[LocalCluster]:
    local = LocalCluster(
        store,
        [("i-proc", {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.3,
        backend=lambda agent_id: ProcessBackend(tmp_path / agent_id),
        stop_grace_s=0.5,
    )
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


async def _keypair(tenancy: TenancyService, name: str, role: str) -> str:
    user = await tenancy.handle(
        CreateUser(username=name, email=f"{name}@kernelhub.local", domain="default", role=role)
    )
    access_key, _ = await tenancy.handle(IssueKeypair(user_id=user))
    return access_key


@pytest.mark.redis
async def test_the_agent_refuses_a_tenants_kernel_whatever_path_it_came_by(
    store: RedisEventStore, process_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Sessions created straight through the shard, past the gateway's check (a session
    queued before the opt-in was withdrawn comes this way): a user's and a domain admin's
    are cancelled naming the reason, and none of their code runs; the superadmin's runs;
    after the opt-in a user's runs."""
    box = SecretBox.from_file(tmp_path / "master.key", create=True)
    operator = (await bootstrap(store, box)).access_key
    tenancy = await TenancyService(store, box).load()
    user, domain_admin = await _keypair(tenancy, "u", "user"), await _keypair(tenancy, "a", "admin")
    lookups = TenancyLookups(store)
    await eventually(lambda: lookups.keypair(domain_admin), timeout=20, message="projected")

    async def create(access_key: str) -> uuid.UUID:
        return await process_cluster.shard.handle(
            CreateSession(
                name=f"s-{uuid.uuid4().hex[:6]}",
                access_key=access_key,
                scaling_group="default",
                image="kernelhub/python:3.11",
                requested=[ResourceSlot(cpu=1, mem=G)],
            )
        )

    async def ended(sid: uuid.UUID, status: str) -> object:
        async def reached() -> object:
            session = await process_cluster.shard.get(sid)
            return session if session.status.name == status else None

        return await eventually(reached, timeout=30, message=status)

    for tenant in (user, domain_admin):
        session: object = await ended(await create(tenant), "CANCELLED")
        events = await store.read_stream(f"session-{session.session_id}")  # type: ignore[attr-defined]
        cancelled = next(e for e in events if e.type == "session_cancelled")
        error = cancelled.data.error  # type: ignore[union-attr]
        assert error["name"] == "UnisolatedBackend" and error["agent_id"] == "i-proc"
        assert "kh up --allow-unisolated" in error["repr"]
        assert not any(e.type == "kernel_started" for e in events)
    await ended(await create(operator), "RUNNING")
    await set_opt_in(store, True)
    admitted = await create(user)
    await ended(admitted, "RUNNING")

    backend, kernel = process_cluster.agents["i-proc"].backend, uuid.uuid5(admitted, "kernel-0")
    assert kernel in backend.running()
    await set_opt_in(store, False)  # withdrawn: a restart stops the kernel, starts none
    await process_cluster.shard.handle(RestartSession(session_id=admitted))
    await ended(admitted, "ERROR")
    changed = [
        e.data
        for e in await store.read_stream(f"session-{admitted}")
        if e.type == "session_status_changed"
    ]
    assert changed[-1].status_info == "restart-failed"  # type: ignore[union-attr]
    assert "kh up --allow-unisolated" in str(changed[-1].status_data)  # type: ignore[union-attr]
    assert kernel not in backend.running()
    registered = await ReadModels(store).agent("i-proc")
    assert registered is not None and registered["isolation"] == "none"


# ---- kh up with no Docker socket, end to end ------------------------------------------------
class NoDockerStack(Stack):
    def __init__(
        self,
        root: Path,
        exports: dict[str, str],
        up: subprocess.CompletedProcess[str],
        environ: dict[str, str],
    ) -> None:
        super().__init__(root, exports)
        self.up = up
        self.environ = environ

    def kh_up(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``kh up`` again on the same machine without Docker (the operator's next call)."""
        return namespaced([*KH, "up", *args], {**self.environ, **env})

    def tenant_env(self, access_key: str, secret_key: str) -> dict[str, str]:
        return {"BACKEND_ACCESS_KEY": access_key, "BACKEND_SECRET_KEY": secret_key}


@pytest.fixture(scope="module")
def nodocker(namespaces: None) -> Iterator[NoDockerStack]:
    with stack_root("kh-nd-") as root:
        environ = _no_docker_env(
            KH_DATA_DIR=str(root / "data"),
            KH_CONFIG_DIR=str(root / "cfg"),
            KH_GATEWAY_PORT="0",
            KH_STOP_GRACE_S="1",
            HOME=str(root / "home"),
        )
        try:
            up = namespaced([*KH, "up"], environ)
            assert up.returncode == 0, up.stderr
            lines = [line for line in up.stdout.splitlines() if line.startswith("export ")]
            exports = dict(line.removeprefix("export ").split("=", 1) for line in lines)
            yield NoDockerStack(root, exports, up, environ)
        finally:
            stop_stack(root, environ)


@pytest.mark.timeout(900)
def test_kh_up_without_docker_falls_back_says_so_and_refuses_tenants(
    nodocker: NoDockerStack,
) -> None:
    up = nodocker.up
    assert "Traceback" not in up.stderr and "AssertionError" not in up.stderr
    (warned,) = up.stderr.strip().splitlines()  # one line, and only that
    assert warned.startswith("kh: warning: process backend: kernels are NOT isolated")
    assert f"uid {os.getuid()}" in warned and "kh up --allow-unisolated" in warned
    actors = next(line for line in up.stdout.splitlines() if line.startswith("  actors"))
    assert actors.endswith("(process backend)")

    ran = nodocker.kh("run", "--rm", "python", "-c", "print(6*7)")  # the operator
    assert (ran.returncode, ran.stdout) == (0, "42\n"), ran.stderr
    operator = ClientConfig(
        endpoint=nodocker.exports["BACKEND_ENDPOINT"],
        access_key=nodocker.exports["BACKEND_ACCESS_KEY"],
        secret_key=nodocker.exports["BACKEND_SECRET_KEY"],
    )
    with Client(operator) as client, client.session("python", name="interrupted") as session:
        with pytest.raises(InputRequired):  # interrupted: a process kernel gets the SIGINT
            session.execute("input()")
        assert session.execute("print(6*7)").stdout == "42\n"

    access_key, secret_key = asyncio.run(second_tenant(nodocker, "tenant"))
    tenant = nodocker.tenant_env(access_key, secret_key)
    marker = nodocker.root / "tenant-ran"
    code = f"open({str(marker)!r}, 'w').write('x'); print(6*7)"
    refused = nodocker.kh("run", "--rm", "python", "-c", code, **tenant)
    assert refused.returncode == 1 and "42" not in refused.stdout
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("kh: error:") and "process backend" in line
    assert "kh up --allow-unisolated" in line
    config = ClientConfig(
        endpoint=nodocker.exports["BACKEND_ENDPOINT"], access_key=access_key, secret_key=secret_key
    )
    with Client(config) as client, pytest.raises(PermissionDenied) as denied:
        client.create_session("python", name="sdk-tenant")
    assert denied.value.status == 403 and denied.value.slug == "unisolated-backend"
    bai = ROOT / ".venv-bai" / "bin" / "backend.ai"
    if bai.exists():  # Backend.AI's own client gets the same refusal
        official = subprocess.run(
            [str(bai), "run", "--rm", "python", "-c", code],
            env=nodocker.env(**tenant),
            cwd=nodocker.workdir,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert "42" not in official.stdout
        assert "unisolated" in official.stdout + official.stderr
    assert not marker.exists()
    assert _sessions_of(nodocker, access_key) == []  # a refused create never reaches the log

    opted = nodocker.kh_up("--allow-unisolated")
    assert opted.returncode == 0, opted.stderr
    assert "every user's sessions run so" in opted.stderr
    allowed = nodocker.kh("run", "--rm", "python", "-c", code, **tenant)
    assert (allowed.returncode, allowed.stdout) == (0, "42\n"), allowed.stderr
    assert marker.exists()

    withdrawn = nodocker.kh_up("--no-allow-unisolated")  # recorded: holds until changed
    assert withdrawn.returncode == 0 and "are refused" in withdrawn.stderr
    again = nodocker.kh("run", "--rm", "python", "-c", "print(6*7)", **tenant)
    assert again.returncode == 1 and "process backend" in again.stderr


def _sessions_of(stack: Stack, access_key: str) -> list[str]:
    async def scan() -> list[str]:
        store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
        try:
            return [
                e.stream
                async for e in store.iter_log()
                if e.stream.startswith("session-")
                and getattr(e.data, "access_key", None) == access_key
            ]
        finally:
            await store.close()

    return asyncio.run(scan())


def test_the_embedded_agent_registers_that_it_isolates_nothing(nodocker: NoDockerStack) -> None:
    async def registered() -> object:
        store = RedisEventStore.from_url(nodocker.exports["KH_REDIS_URL"])
        try:
            return await ReadModels(store).agent("i-local")
        finally:
            await store.close()

    agent = asyncio.run(registered())
    assert isinstance(agent, dict) and agent["isolation"] == "none"
