"""Session mounts through the front door of a real ``kh up`` (signed HTTP, as any client):
a folder made by the folder writer, mounted where ``mount_map`` says, read and written by
the session's code, shown in the session's info and GraphQL, and not trashed while the
session lives; another tenant naming the folder (by name or by id) gets 404, exactly as
for a folder that does not exist, and nothing reaches the log.

The official client's ``run -m`` is played in tests/test_vfolders_e2e.py; here the API's
own answers are checked. Docker where it runs, else process kernels (relative paths from
the work dir read the same on both)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from events import RedisEventStore
from kernelhub.testing import eventually

from .khstack import Stack, kh_up, second_tenant, signed_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
T = TypeVar("T")


@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class Lab:
    stack: Stack
    admin: Keys
    mallory: Keys

    def call(self, keys: Keys, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        return signed_request(
            self.stack.exports["BACKEND_ENDPOINT"],
            method,
            path,
            keys.access_key,
            keys.secret_key,
            data,
        )

    @property
    def volume(self) -> Path:
        return self.stack.root / "data" / "vfolders"

    def run(self, keys: Keys, session: str, code: str) -> str:
        """Code run in the session to its end; its stdout."""
        body: dict[str, Any] = {"mode": "query", "code": code, "runId": uuid.uuid4().hex[:8]}
        out = ""
        for _ in range(100):
            status, reply = self.call(keys, "POST", f"/session/{session}", body)
            assert status == 200, reply
            result = reply["result"]
            out += "".join(d for k, d in result.get("console") or [] if k == "stdout")
            if result["status"] == "finished":
                return out
            body = {"mode": "continue", "runId": result["runId"]}
        raise AssertionError(f"no end to the run: {out!r}")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with kh_up() as stack:
        admin = Keys(stack.exports["BACKEND_ACCESS_KEY"], stack.exports["BACKEND_SECRET_KEY"])
        mallory = Keys(*asyncio.run(second_tenant(stack, "mallory")))
        yield Lab(stack, admin, mallory)


def _session(name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "image": "python", "config": config, "maxWaitSeconds": 120}


def _log(lab: Lab, query: Callable[[RedisEventStore], Awaitable[T]]) -> T:
    async def go() -> T:
        store = RedisEventStore.from_url(lab.stack.exports["KH_REDIS_URL"])
        try:
            return await query(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _enqueued_since(lab: Lab, position: str) -> list[str]:
    """Sessions enqueued after ``position`` of the log."""

    async def read(store: RedisEventStore) -> list[str]:
        events = await store.read_log(position, count=10_000)
        return [e.stream for e in events if e.type == "session_enqueued"]

    return _log(lab, read)


def test_a_mounted_folder_is_read_written_shown_and_kept_from_the_trash(lab: Lab) -> None:
    status, made = lab.call(lab.admin, "POST", "/folders", {"name": "ds"})
    assert status == 201, made
    folder_hex = uuid.UUID(str(made["id"])).hex
    (lab.volume / folder_hex / "in.txt").write_text("rows")
    status, created = lab.call(
        lab.admin,
        "POST",
        "/session",
        _session("mnt-rw", {"mounts": ["ds"], "mount_map": {"ds": "/home/work/input"}}),
    )
    assert status == 201 and created["status"] == "RUNNING", created
    code = (
        "import os; print(open('input/in.txt').read()); "
        "open('input/out.txt', 'w').write('from the session'); "
        "print(os.environ['KERNELHUB_VFOLDER_MOUNTS'])"
    )
    assert lab.run(lab.admin, "mnt-rw", code) == "rows\n/home/work/input\n"
    assert (lab.volume / folder_hex / "out.txt").read_text() == "from the session"

    status, info = lab.call(lab.admin, "GET", "/session/mnt-rw")
    assert status == 200 and info["mounts"] == [
        {
            "name": "ds",
            "vfid": folder_hex,
            "kernel_path": "/home/work/input",
            "mount_perm": "rw",
            "usage_mode": "general",
        }
    ], info
    query = "query($id: UUID!) { compute_session(id: $id) { mounts vfolder_mounts } }"
    status, graph = lab.call(
        lab.admin, "POST", "/admin/gql", {"query": query, "variables": {"id": created["sessionId"]}}
    )
    assert status == 200 and graph["data"]["compute_session"] == {
        "mounts": ["ds"],
        "vfolder_mounts": [folder_hex],
    }, graph

    status, refused = lab.call(lab.admin, "DELETE", "/folders/ds")
    assert status >= 400 and "mounted by a live session" in json.dumps(refused), refused
    status, _ = lab.call(lab.admin, "DELETE", "/session/mnt-rw")
    assert status in (200, 204)

    async def trashed() -> bool:  # once the sessions model has folded the session's end
        status, _ = await asyncio.to_thread(lab.call, lab.admin, "DELETE", "/folders/ds")
        return status < 400

    done: bool = asyncio.run(
        eventually(trashed, timeout=60, message="trashed once the session ended")
    )
    assert done


@pytest.mark.hostile
def test_another_tenant_naming_the_folder_gets_404_and_appends_nothing(lab: Lab) -> None:
    status, made = lab.call(lab.admin, "POST", "/folders", {"name": "secret"})
    assert status == 201, made
    folder_id = str(made["id"])
    before = _log(lab, lambda store: store.head())
    configs: list[dict[str, Any]] = [
        {"mounts": ["secret"]},
        {"mounts": [folder_id]},
        {"mounts": [uuid.UUID(folder_id).hex], "mount_map": {uuid.UUID(folder_id).hex: "x"}},
        {"mounts": ["no-such-folder"]},
    ]
    for i, config in enumerate(configs):
        status, problem = lab.call(lab.mallory, "POST", "/session", _session(f"steal-{i}", config))
        assert status == 404, problem
        assert problem["type"].endswith("object-not-found"), problem
        assert problem["title"] == "No such virtual folder.", problem
    assert _enqueued_since(lab, before) == []


@pytest.mark.hostile
def test_paths_are_refused_before_any_folder_is_looked_up(lab: Lab) -> None:
    """A hostile mapping is a 400 naming the field whether or not the folder exists (so
    the answer tells nothing about other tenants' folders either)."""
    for config, named in (
        ({"mounts": ["x"], "mount_map": {"x": "/etc"}}, "config.mount_map.x"),
        ({"mounts": ["x"], "mount_map": {"x": "/home/work"}}, "config.mount_map.x"),
        ({"mounts": ["x"], "mount_map": {"x": "../../root"}}, "config.mount_map.x"),
        ({"mounts": ["x/../../etc"]}, "config.mounts[0]"),
        ({"mounts": [f"f{i}" for i in range(17)]}, "config.mounts"),
        ({"mounts": ["a", "b"], "mount_map": {"a": "d", "b": "d/e"}}, "config.mount_map"),
    ):
        status, problem = lab.call(lab.mallory, "POST", "/session", _session("paths", config))
        assert status == 400 and named in json.dumps(problem), (config, problem)


@pytest.mark.hostile
def test_a_session_made_for_another_keypair_mounts_that_owner_s_folders(lab: Lab) -> None:
    """An admin creating a session on a user's behalf (``owner_access_key``) mounts the
    user's folders, resolved as the user (23.03 uses the owner's scope): the admin's own
    folder is as unknown there as anyone else's, so it never lands in the user's session."""
    status, made = lab.call(lab.mallory, "POST", "/folders", {"name": "mine"})
    assert status == 201, made
    status, theirs = lab.call(lab.admin, "POST", "/folders", {"name": "admins-only"})
    assert status == 201, theirs
    body = {
        **_session("for-mallory", {"mounts": ["mine"]}),
        "owner_access_key": lab.mallory.access_key,
        "enqueueOnly": True,
    }
    status, created = lab.call(lab.admin, "POST", "/session", body)
    assert status == 201, created
    status, info = lab.call(lab.mallory, "GET", "/session/for-mallory")
    assert status == 200 and [m["vfid"] for m in info["mounts"]] == [
        uuid.UUID(str(made["id"])).hex
    ], info
    smuggled = {**body, "name": "smuggled", "config": {"mounts": ["admins-only"]}}
    status, problem = lab.call(lab.admin, "POST", "/session", smuggled)
    assert status == 404 and problem["title"] == "No such virtual folder.", problem
    status, gone = lab.call(lab.mallory, "DELETE", "/session/for-mallory?forced=true")
    assert status in (200, 204), gone


@pytest.mark.hostile
def test_a_restart_after_the_share_is_withdrawn_mounts_nothing(lab: Lab) -> None:
    """Review F10: mallory, invited rw to the admin's folder, runs a session on it; the
    admin withdraws the share. Her running session keeps what it mounted (as 23.03), but a
    restart binds the folders again and used to bind this one too, with the old permission.
    Now the restart is judged as a new mount: 404, as for a folder she never had."""
    status, made = lab.call(lab.admin, "POST", "/folders", {"name": "lent"})
    assert status == 201, made
    status, sent = lab.call(
        lab.admin,
        "POST",
        "/folders/lent/invite",
        {"perm": "rw", "user_ids": ["mallory@kernelhub.local"]},
    )
    assert status in (200, 201), sent
    status, listed = lab.call(lab.mallory, "GET", "/folders/invitations/list")
    assert status == 200, listed
    (invitation,) = listed["invitations"]
    status, _ = lab.call(
        lab.mallory, "POST", "/folders/invitations/accept", {"inv_id": invitation["id"]}
    )
    assert status in (200, 201)
    status, created = lab.call(
        lab.mallory, "POST", "/session", _session("mal-lent", {"mounts": ["lent"]})
    )
    assert status == 201 and created["status"] == "RUNNING", created
    status, answer = lab.call(
        lab.admin, "DELETE", "/folders/lent/unshare", {"emails": ["mallory@kernelhub.local"]}
    )
    assert status == 200, answer
    status, refused = lab.call(lab.mallory, "PATCH", "/session/mal-lent")
    assert status == 404 and "No such virtual folder" in json.dumps(refused), refused
    lab.call(lab.mallory, "DELETE", "/session/mal-lent")
