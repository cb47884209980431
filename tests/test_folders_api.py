"""The ``/folders`` API as the official client (``backend.ai-client`` 23.3.12, unmodified)
drives it against one real ``kh up``: create, list (GraphQL ``vfolder_list``), info, rename,
invite and accept, share a project folder, delete to the trash, restore, purge; and what a
tenant must not get: another user's folder lists, reads, renames and deletes as a missing one
(the same 404 whether it exists or not), invitations answer only their invitee and inviter,
a policy's ``max_vfolder_count`` stops creation, and bad names and options are refused by
name (``unmanaged_path`` never silently dropped).

Each attack below fails on code that resolves a folder by name among *all* folders, that
lists by owner without the caller's scope, or that drops an unknown option.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from actors.domain.commands.tenancy import CreateDomain, CreateUser, IssueKeypair
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.testing import eventually
from projections.tenancy_queries import TenancyLookups

from .khstack import ROOT, Stack, second_tenant, signed_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

NOT_FOUND = "No such virtual folder."


def client_binary() -> Path:
    return Path(os.environ.get("KH_BAI_CLIENT") or ROOT / ".venv-bai" / "bin" / "backend.ai")


class Tenant:
    def __init__(self, stack: Stack, access_key: str, secret_key: str, email: str) -> None:
        self.stack = stack
        self.keys = {"BACKEND_ACCESS_KEY": access_key, "BACKEND_SECRET_KEY": secret_key}
        self.email = email

    def bai(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(client_binary()), *args],
            env=self.stack.env(**self.keys),
            cwd=self.stack.workdir,
            input=input,
            capture_output=True,
            text=True,
            timeout=240,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        done = self.bai(*args, input=input)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout + done.stderr

    def refused(self, *args: str) -> str:
        done = self.bai(*args)
        assert done.returncode != 0, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout + done.stderr

    def rest(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        return signed_request(
            self.stack.exports["BACKEND_ENDPOINT"],
            method,
            path,
            self.keys["BACKEND_ACCESS_KEY"],
            self.keys["BACKEND_SECRET_KEY"],
            data,
        )


class Lab:
    def __init__(self, stack: Stack, admin: Tenant, bob: Tenant, carol: Tenant) -> None:
        self.stack, self.admin, self.bob, self.carol = stack, admin, bob, carol

    @property
    def volume(self) -> Path:
        return self.stack.root / "data" / "vfolders"


async def _rival_admin(stack: Stack) -> tuple[str, str]:
    """The admin of another domain (``rival``), with a keypair."""
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        box = SecretBox.from_file(stack.root / "data" / "master.key")
        tenancy = await TenancyService(store, box).load()
        await tenancy.handle(CreateDomain(name="rival"))
        user = await tenancy.handle(
            CreateUser(username="radmin", email="radmin@rival.local", domain="rival", role="admin")
        )
        access_key, secret_key = await tenancy.handle(IssueKeypair(user_id=user))
        lookups = TenancyLookups(store)

        async def projected() -> bool:
            return await lookups.keypair(access_key) is not None

        ready: bool = await eventually(projected, timeout=20, message="projected")
        assert ready
        return access_key, secret_key
    finally:
        await store.close()


@pytest.fixture(scope="module")
def lab(shared_stack: Stack) -> Lab:
    if not client_binary().exists():
        pytest.skip(f"the official client is not installed at {client_binary()}")
    stack = shared_stack  # bob is "fbob" here: kh_vfolder's bob shares the stack
    admin = Tenant(
        stack,
        stack.exports["BACKEND_ACCESS_KEY"],
        stack.exports["BACKEND_SECRET_KEY"],
        "admin@kernelhub.local",
    )
    bob = Tenant(stack, *asyncio.run(second_tenant(stack, "fbob")), "fbob@kernelhub.local")
    carol_keys = asyncio.run(second_tenant(stack, "carol", policy={"max_vfolder_count": 2}))
    carol = Tenant(stack, *carol_keys, "carol@kernelhub.local")
    return Lab(stack, admin, bob, carol)


def _listed(tenant: Tenant) -> list[dict[str, Any]]:
    done = tenant.bai("--output", "json", "vfolder", "list")
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = done.stdout
    items: list[dict[str, Any]] = json.loads(out[out.find("{") :])["items"]
    return items


def _folder_id(tenant: Tenant, name: str) -> str:
    status, info = tenant.rest("GET", f"/folders/{name}")
    assert status == 200, info
    return str(info["id"])


def test_the_owner_creates_lists_inspects_and_renames(lab: Lab) -> None:
    bob = lab.bob
    assert 'Virtual folder "data" is created.' in bob.ok("vfolder", "create", "data")
    assert "data" in [f["name"] for f in _listed(bob)]
    info = bob.ok("vfolder", "info", "data")
    assert 'Virtual folder "data"' in info and "Number of files: 0" in info, info
    assert "Ownership Type: user" in info and "Owner: True" in info
    folder = _folder_id(bob, "data")
    directory = lab.volume / folder
    assert directory.is_dir()  # the folder id is the directory's name
    (directory / "a.txt").write_text("hello")
    # what a session writes shows once the usage measured a moment ago is renewed (2 s)
    asyncio.run(
        eventually(
            lambda: "Number of files: 1" in bob.ok("vfolder", "info", "data"),
            timeout=20,
            interval=0.5,
            message="the new file counted",
        )
    )
    assert "Renamed." in bob.ok("vfolder", "rename", "data", "data2")
    names = [f["name"] for f in _listed(bob)]
    assert "data2" in names and "data" not in names
    assert _folder_id(bob, "data2") == folder
    hosts = bob.ok("vfolder", "list-hosts")
    assert "Default vfolder host: local:default" in hosts and "local:default" in hosts


@pytest.mark.hostile
def test_another_user_gets_the_answer_of_a_missing_folder(lab: Lab) -> None:
    bob, carol = lab.bob, lab.carol
    bob.ok("vfolder", "create", "private")
    folder = _folder_id(bob, "private")
    assert all(f["name"] != "private" for f in _listed(carol))
    status, listed = carol.rest("GET", "/folders", {"all": True})
    assert status == 200 and all(f["id"] != folder for f in listed), listed
    for ref in ("private", folder, str(uuid.UUID(folder))):
        for method, path, body in (
            ("GET", f"/folders/{ref}", None),
            ("POST", f"/folders/{ref}/rename", {"new_name": "mine"}),
            ("DELETE", f"/folders/{ref}", None),
            ("POST", f"/folders/{ref}/update-options", {"permission": "wd"}),
            ("POST", f"/folders/{ref}/invite", {"perm": "rw", "user_ids": [carol.email]}),
            ("POST", f"/folders/{ref}/clone", {"target_name": "stolen"}),
            ("POST", f"/folders/{ref}/purge", None),
        ):
            status, answer = carol.rest(method, path, body)
            assert status == 404 and answer["title"] == NOT_FOUND, (method, path, answer)
        missing_status, missing = carol.rest("GET", f"/folders/{uuid.uuid4().hex}")
        assert (missing_status, missing["title"]) == (404, NOT_FOUND)
    status, answer = carol.rest("DELETE", "/folders", {"id": folder})
    assert status == 404 and answer["title"] == NOT_FOUND
    assert NOT_FOUND in carol.refused("vfolder", "info", "private")
    assert NOT_FOUND in carol.refused("vfolder", "delete", "private")
    assert NOT_FOUND in carol.refused("vfolder", "rename", "private", "mine")
    assert "private" in [f["name"] for f in _listed(bob)]  # nothing happened to it
    assert (lab.volume / folder).is_dir()
    # GraphQL answers as REST: the folder by id is absent for carol, present for bob
    query = {"query": "query($id: String!) { vfolder(id: $id) { name } }", "variables": {}}
    query["variables"] = {"id": folder}
    status, answer = carol.rest("POST", "/admin/gql", query)
    assert status == 200 and answer["data"]["vfolder"] is None, answer
    status, answer = bob.rest("POST", "/admin/gql", query)
    assert answer["data"]["vfolder"] == {"name": "private"}, answer


@pytest.mark.hostile
def test_an_invitation_is_accepted_by_its_invitee_only(lab: Lab) -> None:
    bob, carol, admin = lab.bob, lab.carol, lab.admin
    bob.ok("vfolder", "create", "shared")
    sent = bob.ok("vfolder", "invite", "-p", "ro", "shared", carol.email)
    assert "Invitation sent to:" in sent and carol.email in sent
    status, pending = carol.rest("GET", "/folders/invitations/list")
    (invitation,) = pending["invitations"]
    assert invitation["perm"] == "ro" and invitation["vfolder_name"] == "shared"
    # nobody but the invitee accepts it; to them it does not exist
    status, answer = admin.rest("POST", "/folders/invitations/accept", {"inv_id": invitation["id"]})
    assert status == 404, answer
    status, answer = bob.rest("POST", "/folders/invitations/accept", {"inv_id": invitation["id"]})
    assert status == 404, answer  # the inviter cancels; accepting is not theirs
    accepted = carol.ok("vfolder", "invitations", input="1\na\n")
    assert "You can now access vfolder shared" in accepted, accepted
    assert "Permission: ro" in carol.ok("vfolder", "info", "shared")
    shared = {f["name"]: f for f in _listed(carol)}
    assert shared["shared"]["permission"] == "ro"
    # carol may not manage it: rename and delete are the owner's
    assert carol.rest("POST", "/folders/shared/rename", {"new_name": "x"})[0] == 403
    assert carol.rest("DELETE", "/folders/shared")[0] == 403
    assert 'Left the shared virtual folder "shared".' in carol.ok("vfolder", "leave", "shared")
    assert NOT_FOUND in carol.refused("vfolder", "info", "shared")


def test_a_project_folder_is_an_admins_and_shared_with_a_member(lab: Lab) -> None:
    bob, admin = lab.bob, lab.admin
    out = bob.refused("vfolder", "create", "-g", "default", "team-data")
    assert "project folders" in out, out
    assert "is created" in admin.ok("vfolder", "create", "-g", "default", "team-data")
    listed = {f["name"]: f for f in _listed(bob)}  # a member sees the project's folder
    assert listed["team-data"]["ownership_type"] == "group"
    shared = admin.ok("vfolder", "share", "-p", "ro", "team-data", bob.email)
    assert "Shared with ro permission to:" in shared and bob.email in shared
    assert {f["name"]: f for f in _listed(bob)}["team-data"]["permission"] == "ro"
    unshared = admin.ok("vfolder", "unshare", "team-data", bob.email)
    assert bob.email in unshared
    assert {f["name"]: f for f in _listed(bob)}["team-data"]["permission"] == "rw"


def test_delete_goes_to_the_trash_then_restore_or_purge(lab: Lab) -> None:
    bob = lab.bob
    bob.ok("vfolder", "create", "scratch")
    folder = _folder_id(bob, "scratch")
    (lab.volume / folder / "sub").mkdir()
    os.symlink("/etc", lab.volume / folder / "sub" / "etc")  # purge removes the link only
    assert "Deleted." in bob.ok("vfolder", "delete", "scratch")
    assert {f["name"]: f for f in _listed(bob)}["scratch"]["status"] == "delete-pending"
    assert bob.rest("POST", "/folders/scratch/restore-from-trash")[0] == 204
    assert {f["name"]: f for f in _listed(bob)}["scratch"]["status"] == "ready"
    status, answer = bob.rest("POST", "/folders/scratch/purge")
    assert status == 400 and "trash" in answer["msg"], answer  # delete it first
    status, grant = bob.rest(  # an upload left unfinished: its bytes wait in staging
        "POST", "/folders/scratch/request-upload", {"path": "half.bin", "size": 10}
    )
    assert status == 200, grant
    patch = urllib.request.Request(
        f"{grant['url']}?token={grant['token']}",
        data=b"12345",
        method="PATCH",
        headers={
            "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
        },
    )
    with urllib.request.urlopen(patch, timeout=30) as answer:
        assert answer.status == 204 and answer.headers["Upload-Offset"] == "5"
    staged = lab.volume / ".kh-staging" / folder
    assert staged.is_dir() and os.listdir(staged)
    bob.ok("vfolder", "delete", "scratch")
    assert bob.rest("DELETE", "/folders/scratch/delete-from-trash")[0] == 204
    assert not (lab.volume / folder).exists()
    assert not staged.exists() or not os.listdir(staged)  # review F8: not left for ever
    assert Path("/etc/passwd").exists()
    assert all(f["name"] != "scratch" for f in _listed(bob))


def test_the_policys_folder_count_stops_creation(lab: Lab) -> None:
    carol = lab.carol
    carol.ok("vfolder", "create", "one")
    carol.ok("vfolder", "create", "two")
    out = carol.refused("vfolder", "create", "three")
    assert "at most 2" in out, out
    _status, listed = carol.rest("GET", "/folders")
    owned = [f["name"] for f in listed if f["is_owner"] and f["ownership_type"] == "user"]
    assert sorted(owned) == ["one", "two"]
    for name in ("one", "two"):  # the trash still counts; a purge frees the place
        carol.ok("vfolder", "delete", name)
    assert "at most 2" in carol.refused("vfolder", "create", "three")
    for name in ("one", "two"):
        assert carol.rest("DELETE", f"/folders/{name}/delete-from-trash")[0] == 204
    assert "is created" in carol.ok("vfolder", "create", "three")
    carol.ok("vfolder", "delete", "three")
    assert carol.rest("DELETE", "/folders/three/delete-from-trash")[0] == 204


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ".hidden"}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "ok", "unmanaged_path": "/etc"}, "unmanaged_path"),
        ({"name": "ok", "usage_mode": "bogus"}, "usage_mode"),
        ({"name": "ok", "permission": "all"}, "permission"),
        ({"name": "ok", "quota": "lots"}, "quota"),
        ({"name": "ok", "host": "nfs:elsewhere"}, "host"),
        ({"name": "ok", "mystery": 1}, "mystery"),
        ({"name": uuid.uuid4().hex}, "name"),
        ({"name": str(uuid.uuid4())}, "name"),
    ],
)
def test_bad_names_and_options_are_refused_by_name(
    lab: Lab, body: dict[str, Any], field: str
) -> None:
    status, answer = lab.bob.rest("POST", "/folders", body)
    assert status == 400, answer
    assert field in json.dumps(answer), answer
    assert all(f["name"] != "ok" for f in _listed(lab.bob))


@pytest.mark.hostile
def test_unmanaged_from_the_client_is_refused_not_dropped(lab: Lab) -> None:
    out = lab.bob.refused("vfolder", "create", "--unmanaged", "escape", "/etc")
    assert "unmanaged" in out, out
    assert all(f["name"] != "escape" for f in _listed(lab.bob))


def test_what_kernelhub_cannot_honour_is_refused(lab: Lab) -> None:
    for method, path in (("GET", "/folders/_/fstab"), ("GET", "/folders/_/mounts")):
        status, answer = lab.admin.rest(method, path)
        assert status == 400 and "storage proxy" in answer["msg"], answer
    status, answer = lab.bob.rest("GET", "/folders/_/all_hosts")
    assert status == 403, answer


def test_clone_copies_a_cloneable_folder_for_another_user(lab: Lab) -> None:
    bob, carol = lab.bob, lab.carol
    bob.ok("vfolder", "create", "recipes")
    folder = _folder_id(bob, "recipes")
    (lab.volume / folder / "soup.txt").write_text("water, salt")
    bob.ok("vfolder", "invite", "-p", "ro", "recipes", carol.email)
    carol.ok("vfolder", "invitations", input="1\na\n")
    # shared with carol but not cloneable: the client checks, and so does the API
    assert "Clone is not allowed" in carol.ok(
        "vfolder", "clone", "recipes", "mine", "local:default"
    )
    status, answer = carol.rest("POST", "/folders/recipes/clone", {"target_name": "mine"})
    assert status == 403, answer
    assert "Updated." in bob.ok("vfolder", "update-options", "recipes", "--set-cloneable", "true")
    cloned = carol.ok("vfolder", "clone", "recipes", "mine", "local:default")
    assert "Cloning the vfolder is complete." in cloned, cloned
    copy = _folder_id(carol, "mine")
    assert copy != folder
    assert (lab.volume / copy / "soup.txt").read_text() == "water, salt"
    info = carol.ok("vfolder", "info", "mine")
    assert "Owner: True" in info and "Number of files: 1" in info
    # carol may not change bob's folder's options
    status, _ = carol.rest("POST", "/folders/recipes/update-options", {"cloneable": False})
    assert status == 403
    carol.ok("vfolder", "leave", "recipes")
    carol.ok("vfolder", "delete", "mine")
    assert carol.rest("DELETE", "/folders/mine/delete-from-trash")[0] == 204


@pytest.mark.hostile
def test_invitations_and_shares_belong_to_their_parties(lab: Lab) -> None:
    bob, carol, admin = lab.bob, lab.carol, lab.admin
    bob.ok("vfolder", "create", "notes")
    status, answer = bob.rest(
        "POST", "/folders/notes/invite", {"perm": "rw", "user_ids": [carol.email, "nobody@x.y"]}
    )
    assert status == 201 and answer["invited_ids"] == [carol.email], answer
    assert answer["not_found"] == ["nobody@x.y"]
    (invitation,) = carol.rest("GET", "/folders/invitations/list")[1]["invitations"]
    # a third party cannot reject or cancel it: to them it does not exist
    status, answer = admin.rest(
        "DELETE", "/folders/invitations/delete", {"inv_id": invitation["id"]}
    )
    assert status == 404, answer
    # the inviter cancels it
    status, _ = bob.rest("DELETE", "/folders/invitations/delete", {"inv_id": invitation["id"]})
    assert status == 200
    assert carol.rest("GET", "/folders/invitations/list")[1]["invitations"] == []
    # a user's folder is offered by invitation only: a share without consent would put it
    # into carol's namespace, shadowing her own folder of that name (review F2)
    carol.ok("vfolder", "create", "carols")
    bob.ok("vfolder", "create", "carols")
    status, answer = bob.rest(
        "POST", "/folders/carols/share", {"permission": "rw", "emails": [carol.email]}
    )
    assert status == 400 and "invitation" in answer["msg"], answer
    status, own = carol.rest("GET", "/folders/carols")
    assert status == 200 and own["is_owner"] is True, own  # still hers, and only hers
    carol.ok("vfolder", "delete", "carols")  # (her folder count is the quota test's)
    assert carol.rest("DELETE", "/folders/carols/delete-from-trash")[0] == 204
    status, _ = carol.rest(
        "POST", "/folders/notes/share", {"permission": "rw", "emails": [carol.email]}
    )
    assert status == 404  # carol does not see bob's folder at all
    # shared by invitation, carol still may not raise her own permission
    bob.rest("POST", "/folders/notes/invite", {"perm": "ro", "user_ids": [carol.email]})
    (invitation,) = carol.rest("GET", "/folders/invitations/list")[1]["invitations"]
    assert carol.rest("POST", "/folders/invitations/accept", {"inv_id": invitation["id"]})[0] == 200
    status, answer = carol.rest(
        "POST", "/folders/notes/share", {"permission": "wd", "emails": [carol.email]}
    )
    assert status == 403, answer
    assert {f["name"]: f for f in _listed(carol)}["notes"]["permission"] == "ro"
    status, answer = bob.rest("DELETE", "/folders/notes/unshare", {"emails": [carol.email]})
    assert answer["unshared_emails"] == [carol.email], answer
    assert all(f["name"] != "notes" for f in _listed(carol))


def test_the_admin_listing_filters_and_orders(lab: Lab) -> None:
    admin = lab.admin
    admin.ok("vfolder", "create", "filter-me")
    out = admin.ok(
        "--output", "json", "admin", "vfolder", "list", "--filter", 'name == "filter-me"'
    )
    items = json.loads(out[out.find("{") : out.rfind("}") + 1])["items"]
    assert [i["name"] for i in items] == ["filter-me"], items
    out = admin.ok("--output", "json", "admin", "vfolder", "list", "--order", "-name")
    names = [i["name"] for i in json.loads(out[out.find("{") : out.rfind("}") + 1])["items"]]
    assert names == sorted(names, reverse=True) and "filter-me" in names
    refused = admin.refused("admin", "vfolder", "list", "--filter", 'password == "x"')
    assert "password" in refused, refused
    # a plain user's listing is their own scope, even with filters
    query = (
        "query($filter: String) { vfolder_list(limit: 10, offset: 0, filter: $filter) "
        "{ items { name } total_count } }"
    )
    _status, answer = lab.carol.rest(
        "POST", "/admin/gql", {"query": query, "variables": {"filter": 'name == "filter-me"'}}
    )
    assert answer["data"]["vfolder_list"] == {"items": [], "total_count": 0}, answer


@pytest.mark.hostile
def test_another_domains_admin_sees_and_manages_nothing_here(lab: Lab) -> None:
    rival = Tenant(lab.stack, *asyncio.run(_rival_admin(lab.stack)), "radmin@rival.local")
    lab.bob.ok("vfolder", "create", "bobs")
    bobs = _folder_id(lab.bob, "bobs")
    status, listed = rival.rest("GET", "/folders", {"all": True})
    assert status == 200 and listed == [], listed
    status, listed = rival.rest("GET", "/folders", {"owner_user_email": lab.bob.email})
    assert status == 200 and listed == [], listed  # as for an address that does not exist
    assert _listed(rival) == []
    query = {"query": "query($id: String!) { vfolder(id: $id) { name } }", "variables": {}}
    query["variables"] = {"id": bobs}
    assert rival.rest("POST", "/admin/gql", query)[1]["data"]["vfolder"] is None
    assert "is created" in lab.admin.ok("vfolder", "create", "-g", "default", "rival-target")
    for ref in ("bobs", bobs, "rival-target"):
        for method, path in (("GET", f"/folders/{ref}"), ("DELETE", f"/folders/{ref}")):
            status, answer = rival.rest(method, path)
            assert status == 404 and answer["title"] == NOT_FOUND, (method, path, answer)
    status, answer = rival.rest(
        "POST",
        "/folders/rival-target/share",
        {"permission": "wd", "emails": ["radmin@rival.local"]},
    )
    assert status == 404, answer
    # a project of another domain, by id or by name: the answer of one that does not exist
    status, projects = lab.admin.rest("GET", "/folders")
    team = next(f for f in projects if f["name"] == "rival-target")["group"]
    for group in (team, "default", "no-such-project"):
        status, answer = rival.rest("POST", "/folders", {"name": "planted", "group": group})
        assert status == 400 and answer["msg"] == f"group: no project {group!r} in your domain"
    # a user's invitation cannot reach across domains either
    status, answer = lab.bob.rest(
        "POST", "/folders/bobs/invite", {"perm": "rw", "user_ids": ["radmin@rival.local"]}
    )
    assert answer["invited_ids"] == [] and answer["not_found"] == ["radmin@rival.local"]


@pytest.mark.hostile
def test_a_shared_folder_cannot_be_renamed_onto_an_invitees_own_folder(lab: Lab) -> None:
    """Review F2 (variant): renamed after the invitee accepted, bob's folder would shadow
    carol's own folder of that name, and catch what she uploads to it."""
    bob, carol = lab.bob, lab.carol
    bob.ok("vfolder", "create", "offered")
    carol.ok("vfolder", "create", "carols-results")
    bob.rest("POST", "/folders/offered/invite", {"perm": "rw", "user_ids": [carol.email]})
    invitations = carol.rest("GET", "/folders/invitations/list")[1]["invitations"]
    (invitation,) = [i for i in invitations if i["vfolder_name"] == "offered"]
    assert carol.rest("POST", "/folders/invitations/accept", {"inv_id": invitation["id"]})[0] == 200
    status, answer = bob.rest("POST", "/folders/offered/rename", {"new_name": "carols-results"})
    assert status == 400 and answer["type"].endswith("vfolder-already-exists"), answer
    status, own = carol.rest("GET", "/folders/carols-results")
    assert status == 200 and own["is_owner"] is True, own
    carol.ok("vfolder", "leave", "offered")
    carol.ok("vfolder", "delete", "carols-results")  # (her folder count is the quota test's)
    assert carol.rest("DELETE", "/folders/carols-results/delete-from-trash")[0] == 204
