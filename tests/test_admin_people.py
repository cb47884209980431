"""Domains, groups and users administered through ``POST /admin/gql`` (issue 29): with the
official client (``backend.ai admin domain/group/user ...``, unmodified) as a superadmin, and
over signed GraphQL as the attackers: a domain admin of another domain, and a plain user.

One ``kh up`` for the module. The superadmin is the stack's own keypair; the attackers are
made in-process by the tenancy writer (as ``khstack.second_tenant`` does), so nothing about
them depends on the code under test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.domain.commands.tenancy import CreateDomain, CreateUser, IssueKeypair
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.testing import eventually
from projections.tenancy_queries import TenancyLookups

from .khstack import ROOT, Stack, kh_up, second_tenant, signed_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PASSWORD = "violet-Otter-42-lantern"
"""bob's password: it must be nowhere but in his hash."""

STREAMS = ("tenancy-domains", "tenancy-projects", "tenancy-users", "tenancy-keypairs")


def client_binary() -> Path:
    return Path(os.environ.get("KH_BAI_CLIENT") or ROOT / ".venv-bai" / "bin" / "backend.ai")


@dataclass
class Keys:
    access_key: str
    secret_key: str


@dataclass
class Lab:
    stack: Stack
    root: Keys
    rival: Keys
    """An admin of the domain ``rival`` (role ``admin``): a stranger to ``default``."""
    pat: Keys
    """A plain user of ``default/default``."""

    def bai(self, *args: str, keys: Keys | None = None) -> subprocess.CompletedProcess[str]:
        env = {}
        if keys is not None:
            env = {"BACKEND_ACCESS_KEY": keys.access_key, "BACKEND_SECRET_KEY": keys.secret_key}
        return subprocess.run(
            [str(client_binary()), *args],
            env=self.stack.env(**env),
            cwd=self.stack.workdir,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def bai_json(self, *args: str) -> Any:
        done = self.bai("--output", "json", *args)
        assert done.returncode == 0, (done.stdout, done.stderr)
        return json.loads(done.stdout)

    def gql(
        self, keys: Keys, query: str, variables: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        return signed_request(
            self.stack.exports["BACKEND_ENDPOINT"],
            "POST",
            "/admin/gql",
            keys.access_key,
            keys.secret_key,
            body,
        )

    def ok(self, keys: Keys, query: str, variables: dict[str, Any] | None = None) -> Any:
        status, body = self.gql(keys, query, variables)
        assert status == 200 and not body.get("errors"), (status, body)
        return body["data"]

    def store(self) -> RedisEventStore:
        return RedisEventStore.from_url(self.stack.exports["KH_REDIS_URL"])

    def lengths(self) -> dict[str, int]:
        async def read() -> dict[str, int]:
            store = self.store()
            try:
                return {s: len(await store.read_stream(s)) for s in STREAMS}
            finally:
                await store.close()

        return asyncio.run(read())


async def _rival_admin(stack: Stack) -> Keys:
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        box = SecretBox.from_file(stack.root / "data" / "master.key")
        tenancy = await TenancyService(store, box).load()
        await tenancy.handle(CreateDomain(name="rival"))
        user = await tenancy.handle(
            CreateUser(username="rex", email="rex@rival.org", domain="rival", role="admin")
        )
        access_key, secret_key = await tenancy.handle(IssueKeypair(user_id=user, is_admin=True))
        lookups = TenancyLookups(store)
        await eventually(lambda: lookups.keypair(access_key), timeout=20, message="projected")
        return Keys(access_key, secret_key)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if not client_binary().exists():
        reason = f"the official client is not installed at {client_binary()}"
        if os.environ.get("KH_REQUIRE_CLIENT") == "1":
            pytest.fail(f"KH_REQUIRE_CLIENT=1 but {reason}")
        pytest.skip(reason)
    with kh_up() as stack:
        root = Keys(stack.exports["BACKEND_ACCESS_KEY"], stack.exports["BACKEND_SECRET_KEY"])
        rival = asyncio.run(_rival_admin(stack))
        pat = Keys(*asyncio.run(second_tenant(stack, "pat")))
        yield Lab(stack, root, rival, pat)


def _problem(reply: tuple[int, Any]) -> tuple[int, str]:
    status, body = reply
    return status, str(body.get("type", "")).rsplit("/", 1)[-1] if isinstance(body, dict) else ""


USER_FIELDS = "uuid email username role status domain_name groups { id name }"


# ---- the superadmin, with the official client ----------------------------------------------
def test_a_superadmin_builds_a_lab_with_the_official_client(lab: Lab) -> None:
    """domain add/info/list, group add/list/info/add-users, user add/list/info/update: each
    prints what was asked, and the user's creation is recorded as the superadmin's."""
    added = lab.bai_json(
        "admin", "domain", "add", "lab1", "-d", "Lab one",
        "--total-resource-slots", '{"cpu": 8, "mem": "16g"}',
    )  # fmt: skip
    assert added["ok"] is True and added["domain"]["name"] == "lab1", added
    (info,) = lab.bai_json("admin", "domain", "info", "lab1")["items"]
    assert info["description"] == "Lab one" and info["is_active"] is True
    assert info["total_resource_slots"] == {"cpu": "8", "mem": "17179869184"}
    listed = lab.bai_json("admin", "domain", "list")["items"]
    assert {"default", "lab1", "rival"} <= {d["name"] for d in listed}
    table = lab.bai("admin", "domain", "list")
    assert table.returncode == 0 and "lab1" in table.stdout and "Lab one" in table.stdout

    group = lab.bai_json("admin", "group", "add", "lab1", "proj1", "-d", "first project")
    assert group["ok"] is True, group
    gid = group["group"]["id"]
    assert group["group"]["domain_name"] == "lab1" and str(uuid.UUID(gid)) == gid
    groups = lab.bai_json("admin", "group", "list", "-d", "lab1")["items"]
    assert [(g["id"], g["name"]) for g in groups] == [(gid, "proj1")]
    (by_id,) = lab.bai_json("admin", "group", "info", gid)["items"]
    (by_name,) = lab.bai_json("admin", "group", "info", "proj1")["items"]
    assert by_id == by_name and by_id["description"] == "first project"

    user = lab.bai_json(
        "admin", "user", "add", "lab1", "bob@lab1.org", PASSWORD, "-u", "bob", "-n", "Bob",
    )  # fmt: skip
    assert user["ok"] is True and user["user"]["email"] == "bob@lab1.org", user
    bob = user["user"]["uuid"]
    plain = lab.bai_json("admin", "user", "add", "lab1", "dora@lab1.org", PASSWORD + "-dora")
    assert plain["user"]["username"] == "dora@lab1.org", plain  # 23.03: the e-mail by default
    joined = lab.bai_json("admin", "group", "add-users", gid, bob)
    assert joined["ok"] is True, joined
    (shown,) = lab.bai_json("admin", "user", "info", "-e", "bob@lab1.org")["items"]
    assert shown["username"] == "bob" and shown["role"] == "user" and shown["status"] == "active"
    assert shown["groups"] == [{"id": gid, "name": "proj1"}] and shown["full_name"] == "Bob"
    assert PASSWORD not in json.dumps(shown) and "scrypt" not in json.dumps(shown)
    everyone = lab.bai_json("admin", "user", "list")["items"]
    assert "bob@lab1.org" in {u["email"] for u in everyone}
    assert lab.bai("admin", "user", "list").returncode == 0
    found = lab.bai_json("admin", "user", "list", "--filter", 'email ilike "BOB@%"')
    assert [u["email"] for u in found["items"]] == ["bob@lab1.org"]
    assert found["total_count"] == 1
    updated = lab.bai_json("admin", "user", "update", "bob@lab1.org", "-n", "Robert")
    assert updated["ok"] is True, updated
    (after,) = lab.bai_json("admin", "user", "info", "-e", "bob@lab1.org")["items"]
    assert after["full_name"] == "Robert"

    gone = lab.bai_json("admin", "user", "delete", "dora@lab1.org")
    assert gone["ok"] is True, gone
    (dora,) = lab.bai_json("admin", "user", "info", "-e", "dora@lab1.org")["items"]
    assert dora["status"] == "deleted"
    keypairs = lab.ok(lab.root, 'query { user(email: "dora@lab1.org") { uuid } }')

    async def dora_keypairs() -> list[bool]:
        lookups = TenancyLookups(store := lab.store())
        try:
            uid = keypairs["user"]["uuid"]
            return [bool(k.get("is_active")) for k in await lookups.keypairs_of(uid)]
        finally:
            await store.close()

    assert asyncio.run(dora_keypairs()) == [False]  # 23.03: deleting deactivates them

    async def recorded() -> None:
        store = lab.store()
        try:
            events = await store.read_stream("tenancy-users")
        finally:
            await store.close()
        (created,) = [e for e in events if e.type == "user_created" and str(e.data.user_id) == bob]  # type: ignore[union-attr]
        assert created.initiator is not None
        assert created.initiator.access_key == lab.root.access_key
        assert created.initiator.role == "superadmin"

    asyncio.run(recorded())


def test_bobs_password_is_only_ever_a_hash(lab: Lab) -> None:
    """After bob's creation (above, or here if run alone): his password is in no answer,
    not even a refusal of a bad input, in no Redis value (log, read model, anything) and in
    no file of the stack (its logs included)."""
    if lab.ok(lab.root, 'query { user(email: "bob@lab1.org") { uuid } }')["user"] is None:
        test_a_superadmin_builds_a_lab_with_the_official_client(lab)
    lab.ok(
        lab.root,
        'mutation($p: String) { modify_user(email: "bob@lab1.org", props: {password: $p})'
        " { ok msg } }",
        {"p": PASSWORD + "-new"},
    )

    # an input the schema refuses is answered without quoting it (graphql-core would)
    for props in (
        {"password": PASSWORD, "domain_name": "lab1", "foo": 1},
        {"password": [PASSWORD], "domain_name": "lab1"},
    ):
        status, body = lab.gql(
            lab.root,
            "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok } }",
            {"e": "eve@lab1.org", "p": props},
        )
        assert body.get("errors") and PASSWORD not in json.dumps(body), (status, body)

    async def dumped() -> bytes:
        store = lab.store()
        raw = b""
        try:
            async for key in store.redis.scan_iter(match="*"):
                kind = await store.redis.type(key)
                if kind == b"hash":
                    raw += b"".join(k + v for k, v in (await store.redis.hgetall(key)).items())
                elif kind == b"stream":
                    for _, fields in await store.redis.xrange(key):
                        raw += b"".join(k + v for k, v in fields.items())
                elif kind == b"string":
                    raw += await store.redis.get(key) or b""
                elif kind == b"zset":
                    raw += b"".join(await store.redis.zrange(key, 0, -1))
                elif kind == b"set":
                    raw += b"".join(await store.redis.smembers(key))
                elif kind == b"list":
                    raw += b"".join(await store.redis.lrange(key, 0, -1))
        finally:
            await store.close()
        return raw

    raw = asyncio.run(dumped())
    assert b"scrypt$" in raw  # the hash is there (in the event) ...
    assert PASSWORD.encode() not in raw  # ... the password is not, old or new
    for path in lab.stack.root.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert PASSWORD.encode() not in path.read_bytes(), path


# ---- a domain admin of another domain --------------------------------------------------------
def test_a_domain_admin_of_another_domain_is_refused_every_mutation(lab: Lab) -> None:
    """rex administers ``rival``; every mutation on ``default`` (its domain, its group, its
    users) or on domains at all is a 403 and appends nothing. Without the role checks each
    of these would succeed (the writer checks existence and names, not who asks), so each
    line fails on code without its check."""
    default_gid = lab.ok(lab.root, 'query { groups_by_name(name: "default") { id } }')[
        "groups_by_name"
    ][0]["id"]
    pat_uuid = lab.ok(lab.pat, "query { user { uuid } }")["user"]["uuid"]
    before = lab.lengths()
    attempts = [
        ('mutation { create_domain(name: "mine", props: {}) { ok } }', {}),
        ('mutation { modify_domain(name: "default", props: {description: "x"}) { ok } }', {}),
        ('mutation { delete_domain(name: "default") { ok } }', {}),
        ('mutation { purge_domain(name: "default") { ok } }', {}),
        ('mutation { create_group(name: "g", props: {domain_name: "default"}) { ok } }', {}),
        ('mutation($g: UUID!) { modify_group(gid: $g, props: {name: "x"}) { ok } }', {}),
        (
            "mutation($g: UUID!, $u: [String]) { modify_group(gid: $g, props: "
            '{user_update_mode: "add", user_uuids: $u}) { ok } }',
            {"u": [pat_uuid]},
        ),
        ("mutation($g: UUID!) { delete_group(gid: $g) { ok } }", {}),
        ("mutation($g: UUID!) { purge_group(gid: $g) { ok } }", {}),
        (
            'mutation { create_user(email: "mole@rival.org", props: {password: "long enough pw",'
            ' domain_name: "default", username: "mole"}) { ok } }',
            {},
        ),
        (
            'mutation { modify_user(email: "pat@kernelhub.local", props: {role: "admin"}) { ok } }',
            {},
        ),
        ('mutation { delete_user(email: "pat@kernelhub.local") { ok } }', {}),
        ('mutation { purge_user(email: "pat@kernelhub.local", props: {}) { ok } }', {}),
        # and in their own domain: no superadmin may be made
        (
            'mutation { create_user(email: "boss@rival.org", props: {password: "long enough pw",'
            ' domain_name: "rival", username: "boss", role: "superadmin"}) { ok } }',
            {},
        ),
        (
            'mutation { modify_user(email: "rex@rival.org", props: {role: "superadmin"}) { ok } }',
            {},
        ),
    ]
    for query, variables in attempts:
        if "$g" in query:
            variables = {**variables, "g": default_gid}
        assert _problem(lab.gql(lab.rival, query, variables)) == (403, "generic-forbidden"), query
    # a nonexistent target reads the same as another domain's
    assert _problem(
        lab.gql(lab.rival, 'mutation { delete_user(email: "nobody@nowhere.org") { ok } }')
    ) == (403, "generic-forbidden")
    assert lab.lengths() == before
    # what rex may read: his own domain, not another's, and no other domain's users
    assert _problem(lab.gql(lab.rival, 'query { domain(name: "default") { name } }'))[0] == 404
    assert lab.ok(lab.rival, "query { domain { name } }")["domain"] == {"name": "rival"}
    assert _problem(lab.gql(lab.rival, 'query { users(domain_name: "default") { email } }')) == (
        403,
        "generic-forbidden",
    )
    assert lab.ok(lab.rival, 'query { user(email: "pat@kernelhub.local") { email } }') == {
        "user": None
    }
    listed = lab.ok(lab.rival, "query { users { email domain_name role } }")["users"]
    assert {u["domain_name"] for u in listed} == {"rival"}
    assert lab.ok(lab.rival, "query { groups { domain_name } }")["groups"] == []
    assert lab.ok(lab.rival, 'query { groups_by_name(name: "default") { id } }') == {
        "groups_by_name": []
    }
    group = lab.ok(lab.rival, "query($g: UUID!) { group(id: $g) { id } }", {"g": default_gid})
    assert group == {"group": None}


def test_a_domain_admin_never_sees_a_superadmin(lab: Lab) -> None:
    """A superadmin in rex's own domain stays out of his listings and look-ups (without
    the check a domain admin would list, then try to manage, the lab's superadmin)."""
    lab.ok(
        lab.root,
        'mutation { create_user(email: "root2@rival.org", props: {password: "long enough pw",'
        ' domain_name: "rival", username: "root2", role: "superadmin"}) { ok } }',
    )
    emails = {u["email"] for u in lab.ok(lab.rival, "query { users { email } }")["users"]}
    assert "rex@rival.org" in emails and "root2@rival.org" not in emails
    assert lab.ok(lab.rival, 'query { user(email: "root2@rival.org") { email } }') == {"user": None}
    before = lab.lengths()
    refused = lab.gql(
        lab.rival,
        'mutation { modify_user(email: "root2@rival.org", props: {status: "inactive"}) { ok } }',
    )
    assert _problem(refused) == (403, "generic-forbidden") and lab.lengths() == before


# ---- a plain user ------------------------------------------------------------------------------
def test_a_plain_user_sees_only_themselves(lab: Lab) -> None:
    """pat reads their own record (``admin user info`` with no e-mail) and the groups they
    belong to; every listing of users and domains is a 403, and so is another user's
    record (without the checks they would list the lab's people)."""
    info = lab.bai("--output", "json", "admin", "user", "info", keys=lab.pat)
    assert info.returncode == 0, info.stderr
    (me,) = json.loads(info.stdout)["items"]
    assert me["email"] == "pat@kernelhub.local" and me["role"] == "user"
    assert [g["name"] for g in me["groups"]] == ["default"]
    listed = lab.bai("admin", "user", "list", keys=lab.pat)
    assert listed.returncode != 0 and "403" in listed.stdout + listed.stderr
    for query in (
        "query { users { email } }",
        "query { user_list(limit: 10, offset: 0) { total_count } }",
        "query { domains { name } }",
        'query { user(email: "rex@rival.org") { email } }',
        'mutation { create_group(name: "mine", props: {domain_name: "default"}) { ok } }',
        'mutation { modify_user(email: "pat@kernelhub.local", props: {role: "admin"}) { ok } }',
    ):
        assert _problem(lab.gql(lab.pat, query)) == (403, "generic-forbidden"), query
    groups = lab.ok(lab.pat, "query { groups { name domain_name } }")["groups"]
    assert groups == [{"name": "default", "domain_name": "default"}]
    rex = lab.ok(lab.rival, "query { user { uuid } }")["user"]["uuid"]
    by_uuid = "query($u: ID) { user_from_uuid(user_id: $u) { email } }"
    assert _problem(lab.gql(lab.pat, by_uuid, {"u": rex})) == (403, "generic-forbidden")
    assert lab.ok(lab.pat, by_uuid, {"u": me["uuid"]}) == {
        "user_from_uuid": {"email": "pat@kernelhub.local"}
    }


# ---- deleting people who still run something ---------------------------------------------------
def test_deleting_a_user_with_a_live_session_is_refused_unless_forced(lab: Lab) -> None:
    """carol runs a session: deleting or purging her is a 400 naming the count (on code
    without the check she would be deleted under her running session), and so is purging
    her group; forced, she is deleted and her keypairs deactivated."""
    carol = Keys(*asyncio.run(second_tenant(lab.stack, "carol")))
    created = lab.bai("session", "create", "-t", "carol-live", "python", keys=carol)
    assert created.returncode == 0, created.stderr
    before = lab.lengths()
    for query in (
        'mutation { delete_user(email: "carol@kernelhub.local") { ok msg } }',
        'mutation { purge_user(email: "carol@kernelhub.local", props: {}) { ok msg } }',
    ):
        status, body = lab.gql(lab.root, query)
        assert status == 400 and "1 live session" in body["title"] + body.get("msg", ""), body
    deleted = lab.bai("admin", "user", "delete", "carol@kernelhub.local")
    assert deleted.returncode != 0 and "live session" in deleted.stdout + deleted.stderr
    gid = lab.ok(lab.root, 'query { groups_by_name(name: "default") { id } }')["groups_by_name"][0][
        "id"
    ]
    status, body = lab.gql(
        lab.root, "mutation($g: UUID!) { purge_group(gid: $g) { ok } }", {"g": gid}
    )
    assert status == 400 and "live session" in json.dumps(body), body
    assert lab.lengths() == before
    forced = lab.ok(
        lab.root, 'mutation { delete_user(email: "carol@kernelhub.local", force: true) { ok msg } }'
    )["delete_user"]
    assert forced["ok"] is True and "1 live session(s) left running" in forced["msg"]
    user = lab.ok(lab.root, 'query { user(email: "carol@kernelhub.local") { status } }')
    assert user == {"user": {"status": "deleted"}}

    async def keypair_active() -> bool:
        lookups = TenancyLookups(store := lab.store())
        try:
            return bool((await lookups.keypair(carol.access_key) or {}).get("is_active"))
        finally:
            await store.close()

    assert asyncio.run(keypair_active()) is False


# ---- what cannot be honoured -------------------------------------------------------------------
def test_what_cannot_be_done_honestly_is_refused_by_name(lab: Lab) -> None:
    root = lab.ok(lab.root, "query { user { email } }")["user"]["email"]
    before = lab.lengths()
    for query, named in (
        ('mutation { modify_domain(name: "default", props: {name: "dflt"}) { ok } }', "name"),
        (
            'mutation { create_domain(name: "x1", props: {integration_id: "ext-1"}) { ok } }',
            "integration_id",
        ),
        (
            'mutation { create_user(email: "t@x.org", props: {password: "long enough pw",'
            ' domain_name: "default", totp_activated: true}) { ok } }',
            "totp_activated",
        ),
        (
            'mutation { create_domain(name: "x2", props: {total_resource_slots: "{nope"}) { ok } }',
            "total_resource_slots",
        ),
        (
            'mutation { modify_user(email: "pat@kernelhub.local", props: {domain_name: "rival"})'
            " { ok } }",
            "domain_name",
        ),
        (
            'mutation { create_user(email: "u@x.org", props: {password: "short",'
            ' domain_name: "default", username: "ux"}) { ok } }',
            "password",
        ),
        (f'mutation {{ modify_user(email: "{root}", props: {{role: "user"}}) {{ ok }} }}', "role"),
        (
            f'mutation {{ modify_user(email: "{root}", props: {{is_active: false}}) {{ ok }} }}',
            "status",
        ),
        (f'mutation {{ delete_user(email: "{root}") {{ ok }} }}', "your own account"),
    ):
        status, body = lab.gql(lab.root, query)
        assert status == 400 and named in json.dumps(body), (query, body)
    assert lab.lengths() == before


def test_groups_members_and_purges(lab: Lab) -> None:
    """A group renamed, members added and removed (a user of another domain refused by
    name), deleted (inactive) and purged; a domain purged only once empty."""
    made = lab.ok(
        lab.root,
        'mutation { create_domain(name: "temp", props: {}) { ok domain { name } } }',
    )["create_domain"]
    assert made == {"ok": True, "domain": {"name": "temp"}}
    group = lab.ok(
        lab.root,
        'mutation { create_group(name: "tg", props: {domain_name: "temp"}) { ok group { id } } }',
    )["create_group"]["group"]
    gid = group["id"]
    user = lab.ok(
        lab.root,
        'mutation($g: [String]) { create_user(email: "tu@temp.org", props: {password: '
        '"long enough pw", domain_name: "temp", username: "tu", group_ids: $g})'
        f" {{ ok user {{ {USER_FIELDS} }} }} }}",
        {"g": [gid]},
    )["create_user"]["user"]
    assert user["groups"] == [{"id": gid, "name": "tg"}] and user["domain_name"] == "temp"
    promoted = lab.ok(
        lab.root,
        'mutation { modify_user(email: "tu@temp.org", props: {role: "admin"})'
        " { ok user { role } } }",
    )["modify_user"]
    assert promoted == {"ok": True, "user": {"role": "admin"}}

    async def admin_flags() -> list[bool]:
        lookups = TenancyLookups(store := lab.store())
        try:
            return [bool(k.get("is_admin")) for k in await lookups.keypairs_of(user["uuid"])]
        finally:
            await store.close()

    assert asyncio.run(admin_flags()) == [True]  # the first keypair create_user issued
    pat_uuid = lab.ok(lab.pat, "query { user { uuid } }")["user"]["uuid"]
    status, body = lab.gql(
        lab.root,
        "mutation($g: UUID!, $u: [String]) { modify_group(gid: $g, props: "
        '{user_update_mode: "add", user_uuids: $u}) { ok } }',
        {"g": gid, "u": [pat_uuid]},
    )
    assert status == 400 and pat_uuid in json.dumps(body)
    renamed = lab.ok(
        lab.root,
        'mutation($g: UUID!, $u: [String]) { modify_group(gid: $g, props: {name: "tg2",'
        ' user_update_mode: "remove", user_uuids: $u}) { ok group { name } } }',
        {"g": gid, "u": [user["uuid"]]},
    )["modify_group"]
    assert renamed == {"ok": True, "group": {"name": "tg2"}}
    assert lab.ok(lab.root, 'query { user(email: "tu@temp.org") { groups { id } } }') == {
        "user": {"groups": []}
    }
    assert lab.bai("admin", "group", "delete", gid).returncode == 0
    (shown,) = lab.bai_json("admin", "group", "info", gid)["items"]
    assert shown["is_active"] is False
    status, body = lab.gql(lab.root, 'mutation { purge_domain(name: "temp") { ok } }')
    assert status == 400 and "1 user(s) and 1 project(s)" in json.dumps(body), body
    lab.ok(lab.root, "mutation($g: UUID!) { purge_group(gid: $g) { ok } }", {"g": gid})
    lab.ok(lab.root, 'mutation { purge_user(email: "tu@temp.org", props: {}) { ok } }')
    lab.ok(lab.root, 'mutation { purge_domain(name: "temp") { ok } }')
    assert lab.ok(lab.root, 'query { domain(name: "temp") { name } }') == {"domain": None}


# ---- the hostile review's findings (F4, F5, F7, F12, F13, F16) ---------------------------------
async def _made(stack: Stack, domain: str, email: str, role: str, is_admin: bool) -> Keys:
    """A user of ``domain`` (made if missing) with a keypair flagged ``is_admin``, written by
    the tenancy writer in-process (nothing about them depends on the code under test)."""
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        box = SecretBox.from_file(stack.root / "data" / "master.key")
        tenancy = await TenancyService(store, box).load()
        if domain not in tenancy.state.domains:
            await tenancy.handle(CreateDomain(name=domain))
        user = await tenancy.handle(
            CreateUser(username=email.split("@")[0], email=email, domain=domain, role=role)
        )
        access_key, secret_key = await tenancy.handle(IssueKeypair(user_id=user, is_admin=is_admin))
        lookups = TenancyLookups(store)
        await eventually(lambda: lookups.keypair(access_key), timeout=20, message="projected")
        return Keys(access_key, secret_key)
    finally:
        await store.close()


def _is_admin(lab: Lab, keys: Keys) -> bool:
    async def read() -> bool:
        lookups = TenancyLookups(store := lab.store())
        try:
            return bool((await lookups.keypair(keys.access_key) or {}).get("is_admin"))
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_document_sets_at_most_two_passwords(lab: Lab) -> None:
    """F4: three aliased ``modify_user`` password changes in one request are one 400 naming
    the bound, and none of them runs (before the fix: 200, three scrypts, three events; eight
    aliases were eight). Two still pass."""
    before = lab.lengths()
    aliased = "mutation($p: String) { " + " ".join(
        f'm{i}: modify_user(email: "pat@kernelhub.local", props: {{password: $p}}) {{ ok }}'
        for i in range(3)
    ) + " }"  # fmt: skip
    status, body = lab.gql(lab.root, aliased, {"p": "pat's new password 1"})
    assert status == 400 and "at most 2 password-setting mutations" in json.dumps(body), body
    assert lab.lengths() == before
    pair = "mutation($p: String) { " + " ".join(
        f'm{i}: modify_user(email: "pat@kernelhub.local", props: {{password: $p}}) {{ ok }}'
        for i in range(2)
    ) + " }"  # fmt: skip
    assert lab.ok(lab.root, pair, {"p": "pat's new password 2"}) == {
        "m0": {"ok": True},
        "m1": {"ok": True},
    }


def test_json_strings_are_bounded_and_a_deep_one_is_a_400(lab: Lab) -> None:
    """F5, played by rex in his own domain: a 30 KB, a 5,000-deep and a 900-deep
    ``allowed_vfolder_hosts`` are each a 400 problem naming the field that echoes nothing
    of the text, and nothing is appended (before the fix: a long text was decoded, and
    stored were it an object; a 200 with a RecursionError in ``errors``; a 200 echoing a
    900-level path)."""
    before = lab.lengths()
    query = (
        "mutation($h: JSONString) { create_group(name: \"hosts\", props: "
        '{domain_name: "rival", allowed_vfolder_hosts: $h}) { ok } }'
    )  # fmt: skip
    for hosts in (
        "[" + "1," * 15_000 + "1]",  # 30 KB (quote-free, so the body stays under 64 KiB)
        "[" * 5000 + "]" * 5000,
        '{"a": ' * 900 + "1" + "}" * 900,
    ):
        status, body = lab.gql(lab.rival, query, {"h": hosts})
        text = json.dumps(body)
        assert status == 400 and "allowed_vfolder_hosts" in text, (status, text[:500])
        assert len(text) < 1000 and "recursion" not in text.lower()
    assert lab.lengths() == before
    made = lab.ok(
        lab.rival,
        query.replace('"hosts"', '"hosts-ok"'),
        {"h": '{"local:vol1": ["mount-in-session"]}'},
    )
    assert made == {"create_group": {"ok": True}}


def test_an_inactive_domain_is_off_for_its_admins_and_for_changes(lab: Lab) -> None:
    """F7: once ``dead`` is deleted (inactive), its admin dex administers nothing and no
    user or group is created in it, even by a superadmin (before the fix dex's create_user
    in ``dead`` answered ``ok: true``, and so did the superadmin's)."""
    dex = asyncio.run(_made(lab.stack, "dead", "dex@dead.org", "admin", True))
    lab.ok(lab.root, 'mutation { delete_domain(name: "dead") { ok } }')
    before = lab.lengths()
    for query in (
        'mutation { create_user(email: "new@dead.org", props: {password: "long enough pw",'
        ' domain_name: "dead"}) { ok } }',
        'mutation { create_group(name: "g", props: {domain_name: "dead"}) { ok } }',
        "query { users { email } }",
    ):
        # 403 here; 401 if the gateway refuses an inactive domain's keypairs outright
        assert lab.gql(dex, query)[0] in (401, 403), query
    for query in (
        'mutation { create_user(email: "new@dead.org", props: {password: "long enough pw",'
        ' domain_name: "dead"}) { ok } }',
        'mutation { create_group(name: "g", props: {domain_name: "dead"}) { ok } }',
        'mutation { modify_user(email: "dex@dead.org", props: {full_name: "x"}) { ok } }',
    ):
        status, body = lab.gql(lab.root, query)
        assert status == 400 and "'dead' is inactive" in json.dumps(body), (query, body)
    assert lab.lengths() == before


def test_membership_lists_are_bounded_and_refusals_short(lab: Lab) -> None:
    """F12: 101 ``user_uuids`` are a 400 naming the bound; 50 ids outside the domain are a
    400 quoting three of them (before the fix: 101 commands each waiting for the read model,
    and a refusal listing all 50)."""
    gid = lab.ok(lab.root, 'query { groups_by_name(name: "default") { id } }')["groups_by_name"][0][
        "id"
    ]
    query = (
        "mutation($g: UUID!, $u: [String]) { modify_group(gid: $g, props: "
        '{user_update_mode: "add", user_uuids: $u}) { ok } }'
    )
    before = lab.lengths()
    many = [str(uuid.uuid4()) for _ in range(101)]
    status, body = lab.gql(lab.root, query, {"g": gid, "u": many})
    assert status == 400 and "at most 100 ids" in json.dumps(body), body
    status, body = lab.gql(lab.root, query, {"g": gid, "u": many[:50]})
    text = json.dumps(body)
    assert status == 400 and sum(i in text for i in many) == 3 and "47 more" in text, body
    assert lab.lengths() == before


def test_restating_a_role_undoes_a_keypair_flagged_admin_behind_it(lab: Lab) -> None:
    """F16: hid's record says ``user`` while his keypair is flagged admin (a hidden domain
    admin). rex restating ``role: user`` clears the flag (before the fix the sync ran only
    on a role *change*, so the flag stayed)."""
    hid = asyncio.run(_made(lab.stack, "rival", "hid@rival.org", "user", True))
    assert _is_admin(lab, hid) is True
    done = lab.ok(
        lab.rival, 'mutation { modify_user(email: "hid@rival.org", props: {role: "user"}) { ok } }'
    )
    assert done == {"modify_user": {"ok": True}}
    assert _is_admin(lab, hid) is False


def test_a_domain_admin_cannot_tell_whether_an_address_exists_elsewhere(lab: Lab) -> None:
    """F13: rex creating a user whose e-mail (or username) is pat's, of ``default``, gets one
    neutral 400 that neither names the address nor says it exists (before the fix: "e-mail
    'pat@kernelhub.local' is taken")."""
    before = lab.lengths()
    for email, username in (("pat@kernelhub.local", "pat-two"), ("pat2@rival.org", "pat")):
        status, body = lab.gql(
            lab.rival,
            "mutation($e: String!, $u: String) { create_user(email: $e, props: {password: "
            '"long enough pw", domain_name: "rival", username: $u}) { ok } }',
            {"e": email, "u": username},
        )
        text = json.dumps(body)
        assert status == 400 and "the e-mail or username is not available" in text, body
        assert "taken" not in text and "pat@kernelhub.local" not in text
    assert lab.lengths()["tenancy-users"] == before["tenancy-users"]
