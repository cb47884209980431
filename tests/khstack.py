"""``kh up`` in a temporary directory for tests that go through the front door (the official
client, kernelhub's SDK and CLI): the real stack, its exports, and a second tenant.

Where Docker is missing the stack runs on the process backend, and since these tests use
second tenants it opts in to running them unisolated, as an operator would have to
(``KH_ALLOW_UNISOLATED=1``); with ``KH_REQUIRE_DOCKER=1`` a missing Docker fails instead."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from actors.domain.commands.tenancy import AddMember, CreateUser, IssueKeypair, SetPolicy
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.sdk._wire import signed_headers
from kernelhub.testing import (
    docker_missing,
    docker_required,
    eventually,
    kill_processes_mentioning,
)
from projections.tenancy_queries import TenancyLookups

from . import leftovers

ROOT = Path(__file__).parents[1]
KH = [sys.executable, "-m", "kernelhub.cli"]


class Stack:
    """A running ``kh up``: ``exports`` are the lines it printed for clients."""

    def __init__(self, root: Path, exports: dict[str, str], backend: str = "docker") -> None:
        self.root = root
        self.exports = exports
        self.backend = backend
        """How its agent runs kernels (``kh up`` says it: docker, or process without Docker)."""
        self.workdir = root / "work"
        self.workdir.mkdir(exist_ok=True)

    def env(self, **overrides: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
        return {**base, "HOME": str(self.root / "home"), **self.exports, **overrides}

    def kh(
        self, *args: str, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """kernelhub's own ``kh``, as a user runs it (stdout and stderr not terminals)."""
        return subprocess.run(
            [*KH, *args],
            env=self.env(**env),
            cwd=self.workdir,
            input=input,
            capture_output=True,
            text=True,
            timeout=180,
        )


@contextmanager
def kh_up(**env: str) -> Iterator[Stack]:
    """``kh up`` in a fresh temporary root, and everything it started stopped on the way
    out: ``kh down`` and then whatever still names the root, even when ``kh up`` failed or
    was cut half-way (by pytest-timeout, say) after starting Redis or Ray."""
    with stack_root("kh-e2e-") as root:
        environ = {
            **os.environ,
            "KH_DATA_DIR": str(root / "data"),
            "KH_CONFIG_DIR": str(root / "cfg"),
            "KH_GATEWAY_PORT": "0",
            "KH_STOP_GRACE_S": "1",
            **env,
        }
        environ.pop("KH_REDIS_URL", None)
        try:
            up = subprocess.run(
                [*KH, "up", *_backend(environ)],
                env=environ,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert up.returncode == 0, up.stderr
            lines = [line for line in up.stdout.splitlines() if line.startswith("export ")]
            exports = dict(line.removeprefix("export ").split("=", 1) for line in lines)
            assert exports["BACKEND_ENDPOINT"].startswith("http://127.0.0.1:")
            actors = next(line for line in up.stdout.splitlines() if line.startswith("  actors"))
            backend = actors.rsplit("(", 1)[1].split()[0]
            yield Stack(root, exports, backend)
        finally:
            stop_stack(root, environ)


@contextmanager
def stack_root(prefix: str) -> Iterator[Path]:
    """A temporary root for a stack, tracked as the run's (the suite's final check names
    what still mentions it) and killed clean before it is removed."""
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        leftovers.track(path)
        try:
            yield Path(path)
        finally:
            kill_what_mentions(Path(path))


def stop_stack(root: Path, environ: dict[str, str]) -> None:
    """``kh down`` for the stack under ``root`` (whatever state it is in), then a kill of
    whatever still names the root: process kernels outlive ``kh down`` by design, and a
    stack whose ``kh up`` failed half-way may be one ``kh down`` does not know."""
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        subprocess.run([*KH, "down"], env=environ, capture_output=True, timeout=120)
    kill_what_mentions(root)


def kill_what_mentions(root: Path) -> None:
    """Kill what still runs from a stack under ``root``: its processes (:func:`kill_processes_
    mentioning`) and its kernel containers (they bind the root's directories, and outlive
    ``kh down`` as process kernels do, to be adopted by the next ``kh up``)."""
    kill_processes_mentioning(root)
    leftovers.kill(leftovers.containers([os.path.join(str(root), "")]))


def hand_over(stack: Stack) -> None:
    """What a module sharing the stack does before the next one gets it: as a stack of its
    own would be, with the agent's slots free (:func:`close_open_sessions`) and no folder of
    the superadmin's (:func:`purge_admin_folders`: they count against one quota)."""
    close_open_sessions(stack)
    purge_admin_folders(stack)


def purge_admin_folders(stack: Stack) -> list[str]:
    """Trash and purge every folder the superadmin owns (the shared keypair's
    ``max_vfolder_count`` would otherwise fill up across modules)."""
    listed = stack.kh("vfolder", "list", "--json")
    if listed.returncode != 0:
        return []
    owned = [
        str(folder["id"])
        for folder in json.loads(listed.stdout).get("items", [])
        if folder.get("is_owner") and folder.get("ownership_type") == "user"
    ]
    for folder_id in owned:
        stack.kh("vfolder", "delete", folder_id)
        stack.kh("vfolder", "purge", folder_id, "--yes")
    return owned


def close_open_sessions(stack: Stack, timeout: float = 60.0) -> list[str]:
    """Destroy (forced, through the gateway as the superadmin, on behalf of each owner)
    every session of the stack's still holding or awaiting resources, and wait until none
    is left (a warning names those that do not end). The operator's ``kh session destroy``
    would need the stack's Ray token, which a test's ``HOME`` does not hold."""
    from actors.domain.statuses import DEAD_SESSION_STATUSES, SessionStatus
    from projections.queries import ReadModels

    wanted = [s.name for s in SessionStatus if s not in DEAD_SESSION_STATUSES]

    async def open_sessions() -> list[tuple[str, str, str]]:
        store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
        try:
            page = await ReadModels(store).sessions(statuses=wanted, limit=1000)
            return [(str(r["id"]), str(r["access_key"]), str(r["status"])) for r in page.items]
        finally:
            await store.close()

    def open_sessions_now() -> list[tuple[str, str, str]]:
        return asyncio.run(open_sessions())

    found = open_sessions_now()
    endpoint = stack.exports["BACKEND_ENDPOINT"]
    admin = (stack.exports["BACKEND_ACCESS_KEY"], stack.exports["BACKEND_SECRET_KEY"])
    answers = {}
    for session_id, owner, _ in found:
        path = f"/session/{session_id}?forced=true&owner_access_key={owner}"
        answers[session_id] = signed_request(endpoint, "DELETE", path, *admin)[0]

    async def all_ended() -> bool:
        return not await open_sessions()

    if found:
        try:
            asyncio.run(eventually(all_ended, timeout=timeout, interval=0.2, message="ended"))
        except AssertionError:  # said, not raised: the module's own tests all ran
            now = open_sessions_now()
            left = [f"{i} {status} (DELETE: {answers.get(i)})" for i, _, status in now]
            warnings.warn(
                f"sessions left open on the shared stack did not end {timeout:.0f} s after a "
                f"forced destroy: {'; '.join(left)}",
                pytest.PytestWarning,
                stacklevel=1,
            )
    return [session_id for session_id, _, _ in found]


def _backend(environ: dict[str, str]) -> list[str]:
    """Docker where it is there; else processes, tenants allowed on them explicitly."""
    missing = docker_missing()
    if missing is None:
        return []
    if docker_required():
        pytest.fail(f"KH_REQUIRE_DOCKER=1 but {missing}")
    environ.setdefault("KH_ALLOW_UNISOLATED", "1")
    return ["--backend", "process"]


async def second_tenant(
    stack: Stack, name: str = "other", policy: dict[str, Any] | None = None, **keypair: Any
) -> tuple[str, str]:
    """A new user in the default project with a keypair (under ``policy``, a new keypair
    resource policy of that name's settings, when given)."""
    url = stack.exports["KH_REDIS_URL"]
    store = RedisEventStore.from_url(url)
    try:
        box = SecretBox.from_file(stack.root / "data" / "master.key")
        tenancy = await TenancyService(store, box).load()
        if policy is not None:
            await tenancy.handle(SetPolicy(name=f"{name}-policy", **policy))
            keypair["resource_policy"] = f"{name}-policy"
        user = await tenancy.handle(
            CreateUser(username=name, email=f"{name}@kernelhub.local", domain="default")
        )
        project = (tenancy.state.project_named("default", "default") or {})["project_id"]
        await tenancy.handle(AddMember(project_id=uuid.UUID(str(project)), user_id=user))
        access_key, secret_key = await tenancy.handle(IssueKeypair(user_id=user, **keypair))
        lookups = TenancyLookups(store)
        await eventually(lambda: lookups.keypair(access_key), timeout=20, message="projected")
        return access_key, secret_key
    finally:
        await store.close()


def exchange(
    url: str,
    method: str,
    headers: dict[str, str],
    data: bytes | None = None,
    timeout: float = 60.0,
) -> tuple[int, Any]:
    """One HTTP request as given (an error status is an answer, not an exception): the status
    and the decoded JSON answer, or its text when it is not JSON."""
    request = urllib.request.Request(url, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def signed_request(
    endpoint: str,
    method: str,
    path: str,
    access_key: str,
    secret_key: str,
    data: bytes | None = None,
    *,
    content_type: str = "application/json",
    timeout: float = 60.0,
) -> tuple[int, Any]:
    """:func:`exchange`, signed for a keypair as the official client signs (``data`` sent
    byte for byte: raw JSON a JSON encoder would never write, too)."""
    headers = signed_headers(
        method, path, endpoint.removeprefix("http://"), content_type, access_key, secret_key
    )
    headers["Content-Type"] = content_type
    return exchange(endpoint + path, method, headers, data, timeout)


def kh_on_log(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``kh ARGS`` against the log at ``url`` alone (no installation's variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KH_", "BACKEND_"))}
    return subprocess.run(
        [*KH, *args],
        env={**env, "KH_REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
