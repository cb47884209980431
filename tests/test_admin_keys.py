"""Keypairs, keypair resource policies and resource presets through the admin GraphQL
schema (issue 29), on one real ``kh up`` (process backend: no containers needed), driven by
the official client (``backend.ai admin keypair ...``, ``admin keypair-resource-policy ...``,
unmodified) and by signed GraphQL as each tenant.

The tenants: the bootstrap superadmin; bob, a user of ``default``; dana, an admin of
``default``; eve, an admin of another domain (``rival``) with a user of her own, rex. Eve
and bob play the attacker: each of their tests says which check it proves, and fails on
code without that check.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.domain.commands.tenancy import AddMember, CreateDomain, CreateUser, IssueKeypair
from actors.domain.tenancy import DECISIONS
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.testing import eventually
from projections.tenancy_queries import TenancyLookups

from .khstack import ROOT, Stack, signed_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str
    email: str = ""


@dataclass
class World:
    stack: Stack
    root: Keys
    bob: Keys
    dana: Keys
    eve: Keys
    rex: Keys


def client() -> Path:
    return Path(os.environ.get("KH_BAI_CLIENT") or ROOT / ".venv-bai" / "bin" / "backend.ai")


@pytest.fixture(scope="module")
def world(process_stack: Stack) -> World:
    if not client().exists():
        pytest.skip(f"the official client is not installed at {client()}")
    return asyncio.run(_populate(process_stack))  # the shared stack, on the process backend


async def _populate(stack: Stack) -> World:
    root = Keys(
        stack.exports["BACKEND_ACCESS_KEY"],
        stack.exports["BACKEND_SECRET_KEY"],
        "admin@kernelhub.local",
    )
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        box = SecretBox.from_file(stack.root / "data" / "master.key")
        tenancy = await TenancyService(store, box).load()
        await tenancy.handle(CreateDomain(name="rival"))
        project = (tenancy.state.project_named("default", "default") or {})["project_id"]
        made = {}
        for name, domain, role in (
            ("bob", "default", "user"),
            ("dana", "default", "admin"),
            ("eve", "rival", "admin"),
            ("rex", "rival", "user"),
        ):
            email = f"{name}@{domain}.lab"
            user = await tenancy.handle(
                CreateUser(username=name, email=email, domain=domain, role=role)
            )
            if domain == "default":
                await tenancy.handle(AddMember(project_id=uuid.UUID(str(project)), user_id=user))
            access_key, secret_key = await tenancy.handle(IssueKeypair(user_id=user))
            made[name] = Keys(access_key, secret_key, email)
        lookups = TenancyLookups(store)
        for keys in made.values():
            await eventually(functools.partial(lookups.keypair, keys.access_key), timeout=20)
    finally:
        await store.close()
    return World(stack, root, made["bob"], made["dana"], made["eve"], made["rex"])


# ---- helpers ---------------------------------------------------------------------------------
def call(world: World, keys: Keys, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    content_type = "application/json" if body is not None else "text/plain"
    data = json.dumps(body).encode() if body is not None else None
    return signed_request(
        world.stack.exports["BACKEND_ENDPOINT"],
        method,
        path,
        keys.access_key,
        keys.secret_key,
        data,
        content_type=content_type,
    )


def gql(world: World, keys: Keys, query: str, **variables: Any) -> tuple[int, Any]:
    return call(world, keys, "POST", "/admin/gql", {"query": query, "variables": variables})


def data(world: World, keys: Keys, query: str, **variables: Any) -> dict[str, Any]:
    status, body = gql(world, keys, query, **variables)
    assert status == 200 and not body.get("errors"), body
    result: dict[str, Any] = body["data"]
    return result


def bai(world: World, keys: Keys, *args: str, input: str | None = None) -> Any:
    """``backend.ai --output json ARGS`` as ``keys``: its exit status and decoded output."""
    done = subprocess.run(
        [str(client()), "--output", "json", *args],
        env=world.stack.env(BACKEND_ACCESS_KEY=keys.access_key, BACKEND_SECRET_KEY=keys.secret_key),
        cwd=world.stack.workdir,
        input=input,
        capture_output=True,
        text=True,
        timeout=180,
    )
    start = done.stdout.find("{")  # after a prompt (``delete`` asks first), if any
    decoded = json.loads(done.stdout[start:]) if start >= 0 else done.stdout
    return done.returncode, decoded, done.stderr


def ok(result: tuple[int, Any, str]) -> Any:
    code, out, err = result
    assert code == 0, (out, err)
    return out


KEYPAIRS = (
    "query($domain_name: String, $email: String, $is_active: Boolean) {"
    " keypairs(domain_name: $domain_name, email: $email, is_active: $is_active) {"
    " user_id user access_key secret_key is_active is_admin resource_policy rate_limit"
    " projects concurrency_used created_at user_info { full_name } } }"
)
MODIFY = (
    "mutation($access_key: String!, $input: ModifyKeyPairInput!) {"
    " modify_keypair(access_key: $access_key, props: $input) { ok msg } }"
)
CREATE_KEYPAIR = (
    "mutation($user_id: String!, $input: KeyPairInput!) {"
    " create_keypair(user_id: $user_id, props: $input) { ok msg keypair { access_key"
    " secret_key user_id resource_policy } } }"
)
POLICY = (
    "query($name: String) { keypair_resource_policy(name: $name) { name"
    " max_concurrent_sessions total_resource_slots exec_timeout_s max_vfolder_size } }"
)


def listed(world: World, keys: Keys, **variables: Any) -> dict[str, dict[str, Any]]:
    return {k["access_key"]: k for k in data(world, keys, KEYPAIRS, **variables)["keypairs"]}


# ---- policies with the official client ------------------------------------------------------
def test_the_official_client_round_trips_a_keypair_resource_policy(world: World) -> None:
    root = world.root
    added = ok(
        bai(
            world,
            root,
            *("admin", "keypair-resource-policy", "add", "kp-trip"),
            *("--max-concurrent-sessions", "3", "--total-resource-slots", '{"cpu": "4"}'),
        )
    )
    assert added["ok"] is True and added["resource_policy"]["name"] == "kp-trip", added
    items = ok(bai(world, root, "admin", "keypair-resource-policy", "list"))["items"]
    mine = next(i for i in items if i["name"] == "kp-trip")
    assert mine["max_concurrent_sessions"] == 3
    assert mine["created_at"]  # when it was first set
    assert json.loads(mine["total_resource_slots"]) == {"cpu": "4"}
    ok(
        bai(
            world,
            root,
            *("admin", "keypair-resource-policy", "update", "kp-trip"),
            *("--max-concurrent-sessions", "5", "--idle-timeout", "99"),
        )
    )
    info = ok(bai(world, root, "admin", "keypair-resource-policy", "info", "kp-trip"))
    (item,) = info["items"]
    assert (item["max_concurrent_sessions"], item["idle_timeout"]) == (5, 99)
    assert json.loads(item["total_resource_slots"]) == {"cpu": "4"}  # kept: set whole, overlaid
    deleted = ok(
        bai(world, root, "admin", "keypair-resource-policy", "delete", "kp-trip", input="y\n")
    )
    assert deleted["ok"] is True
    assert data(world, root, POLICY, name="kp-trip")["keypair_resource_policy"] is None


def test_exec_timeout_is_a_policy_field_and_bad_values_are_refused(world: World) -> None:
    create = (
        "mutation($name: String!, $input: CreateKeyPairResourcePolicyInput!) {"
        " create_keypair_resource_policy(name: $name, props: $input) { ok msg"
        " resource_policy { name exec_timeout_s } } }"
    )
    made = data(world, world.root, create, name="kp-exec", input={"exec_timeout_s": 30})
    assert made["create_keypair_resource_policy"]["resource_policy"]["exec_timeout_s"] == 30.0
    status, body = gql(world, world.root, create, name="kp-exec", input={})
    assert status == 400 and "already exists" in body["msg"], body
    status, body = gql(world, world.root, create, name="bad name!", input={})
    assert status == 400 and "invalid policy name" in body["msg"], body
    # who asked is in the event's envelope (``kh events show`` prints it)
    (made_event,) = [
        e
        for e in asyncio.run(_stream(world, "tenancy-policies"))
        if e.type == "keypair_policy_set" and e.data.name == "kp-exec"
    ]
    assert made_event.initiator.access_key == world.root.access_key
    assert made_event.initiator.email == world.root.email
    for bad, field in (
        ({"total_resource_slots": "{nope"}, "total_resource_slots"),
        ({"max_vfolder_size": "lots"}, "max_vfolder_size"),
        ({"default_for_unspecified": "SOMETIMES"}, "default_for_unspecified"),
        ({"exec_timeout_s": -1}, "exec_timeout_s"),
    ):
        status, body = gql(world, world.root, create, name="kp-bad", input=bad)
        assert status == 400 and field in body["msg"], body
    assert data(world, world.root, POLICY, name="kp-bad")["keypair_resource_policy"] is None


# ---- keypairs with the official client ------------------------------------------------------
def test_the_official_client_round_trips_a_keypair(world: World) -> None:
    """add, list, update, deactivate (then the gateway refuses it: 401), activate, delete."""
    root, bob = world.root, world.bob
    added = ok(bai(world, root, "admin", "keypair", "add", bob.email, "default"))
    new = Keys(added["access_key"], added["secret_key"], bob.email)
    assert added["ok"] is True and new.secret_key
    assert call(world, new, "GET", "/auth/role")[0] in (200, 404)  # it authenticates at once
    page = ok(bai(world, root, "admin", "keypair", "list", "--user-id", bob.email))
    row = next(i for i in page["items"] if i["access_key"] == new.access_key)
    assert row["user_id"] == bob.email and row["projects"] == ["default"]
    assert row["secret_key"] is None  # the superadmin is not its owner
    ok(bai(world, root, "admin", "keypair", "update", new.access_key, "--rate-limit", "777"))
    assert listed(world, root, email=bob.email)[new.access_key]["rate_limit"] == 777

    ok(bai(world, root, "admin", "keypair", "deactivate", new.access_key))
    deadline = time.monotonic() + 5
    while (status := call(world, new, "GET", "/session")[0]) != 401:
        assert time.monotonic() < deadline, f"a deactivated keypair still answered {status}"
        time.sleep(0.2)
    inactive = ok(bai(world, root, "admin", "keypair", "list", "--is-active", "false"))
    assert new.access_key in {i["access_key"] for i in inactive["items"]}
    ok(bai(world, root, "admin", "keypair", "activate", new.access_key))
    deadline = time.monotonic() + 5
    while (status := call(world, new, "GET", "/session")[0]) == 401:
        assert time.monotonic() < deadline, "an activated keypair is still refused"
        time.sleep(0.2)

    ok(bai(world, root, "admin", "keypair", "delete", new.access_key))
    assert new.access_key not in listed(world, root, email=bob.email)
    code, out, _ = bai(world, root, "admin", "keypair", "delete", new.access_key)
    assert code != 0 and "keypair" in json.dumps(out)


def test_the_official_client_lists_keypairs_filtered_and_ordered(world: World) -> None:
    root = world.root
    page = ok(
        bai(
            world,
            root,
            *("admin", "keypair", "list", "--filter", 'email like "%@rival.lab"'),
            "--order=+email",
        )
    )
    assert [i["user_id"] for i in page["items"]] == ["eve@rival.lab", "rex@rival.lab"]
    assert page["total_count"] == 2
    paged = ok(bai(world, root, "admin", "keypair", "list", "--order=-email", "--limit", "1"))
    assert paged["count"] == 1 and paged["total_count"] >= 5
    code, out, _ = bai(world, root, "admin", "keypair", "list", "--filter", "nope == 1")
    assert code != 0 and "nope" in json.dumps(out)


def test_the_official_client_prints_keypairs_and_policies_as_tables(world: World) -> None:
    env = world.stack.env(
        BACKEND_ACCESS_KEY=world.root.access_key, BACKEND_SECRET_KEY=world.root.secret_key
    )
    for args, header, row in (
        (("keypair", "list"), "Access Key", world.bob.access_key),
        (("keypair-resource-policy", "list"), "Max Concurrent Sessions", "default"),
        (("keypair-resource-policy", "info", "default"), "Total Resource Slots", "default"),
    ):
        done = subprocess.run(
            [str(client()), "admin", *args],
            env=env,
            cwd=world.stack.workdir,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        assert header in done.stdout and row in done.stdout, done.stdout


def test_concurrency_limit_is_legacy_and_refused_when_given(world: World) -> None:
    status, body = gql(
        world, world.root, MODIFY, access_key=world.bob.access_key, input={"concurrency_limit": 2}
    )
    assert status == 400 and "concurrency_limit" in body["msg"], body


# ---- a policy set through GraphQL is what the scheduler enforces ----------------------------
def test_a_policy_of_one_session_keeps_the_second_pending(world: World) -> None:
    root, bob = world.root, world.bob
    ok(
        bai(
            world,
            root,
            *("admin", "keypair-resource-policy", "add", "kp-one"),
            *("--max-concurrent-sessions", "1"),
        )
    )
    added = data(
        world, root, CREATE_KEYPAIR, user_id=bob.email, input={"resource_policy": "kp-one"}
    )
    issued = added["create_keypair"]["keypair"]
    assert issued["resource_policy"] == "kp-one" and issued["user_id"] == bob.email
    one = Keys(issued["access_key"], issued["secret_key"], bob.email)
    try:
        for name in ("kp-first", "kp-second"):
            status, body = call(
                world,
                one,
                "POST",
                "/session",
                {"name": name, "image": "python", "enqueueOnly": True},
            )
            assert status == 201, body
        deadline = time.monotonic() + 120
        while (first := call(world, one, "GET", "/session/kp-first")[1])["status"] != "RUNNING":
            assert time.monotonic() < deadline, first
            time.sleep(0.5)
        time.sleep(3)  # a few scheduler passes
        status, second = call(world, one, "GET", "/session/kp-second")
        assert status == 200 and second["status"] == "PENDING", second
        assert "cannot run more than 1 concurrent sessions" in json.dumps(second), second
        # deleting a policy in use is refused with the decision's message (official client)
        code, out, _ = bai(
            world, root, "admin", "keypair-resource-policy", "delete", "kp-one", input="y\n"
        )
        assert code != 0 and "is used by 1 keypair(s)" in json.dumps(out), out
        assert data(world, root, POLICY, name="kp-one")["keypair_resource_policy"] is not None
        # a keypair with live sessions is not deleted from under them
        status, body = gql(
            world,
            root,
            "mutation($a: String!) { delete_keypair(access_key: $a) { ok msg } }",
            a=one.access_key,
        )
        assert status == 400 and "live session" in body["msg"], body
    finally:
        for name in ("kp-second", "kp-first"):
            call(world, one, "DELETE", f"/session/{name}?forced=true")


# ---- the attackers --------------------------------------------------------------------------
MUTATIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("create_keypair", CREATE_KEYPAIR, {"user_id": "bob@default.lab", "input": {}}),
    ("modify_keypair", MODIFY, {"access_key": "<bob>", "input": {"is_active": False}}),
    (
        "delete_keypair",
        "mutation($a: String!) { delete_keypair(access_key: $a) { ok msg } }",
        {"a": "<bob>"},
    ),
    (
        "create_keypair_resource_policy",
        "mutation($n: String!, $i: CreateKeyPairResourcePolicyInput!) {"
        " create_keypair_resource_policy(name: $n, props: $i) { ok msg } }",
        {"n": "kp-evil", "i": {"max_concurrent_sessions": 100}},
    ),
    (
        "modify_keypair_resource_policy",
        "mutation($n: String!, $i: ModifyKeyPairResourcePolicyInput!) {"
        " modify_keypair_resource_policy(name: $n, props: $i) { ok msg } }",
        {"n": "default", "i": {"max_concurrent_sessions": 100}},
    ),
    (
        "delete_keypair_resource_policy",
        "mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok msg } }",
        {"n": "default"},
    ),
    (
        "create_resource_preset",
        "mutation($n: String!, $i: CreateResourcePresetInput!) {"
        " create_resource_preset(name: $n, props: $i) { ok msg } }",
        {"n": "evil", "i": {"resource_slots": '{"cpu": "1"}'}},
    ),
    (
        "modify_resource_preset",
        "mutation($n: String!, $i: ModifyResourcePresetInput!) {"
        " modify_resource_preset(name: $n, props: $i) { ok msg } }",
        {"n": "keys-small", "i": {"resource_slots": '{"cpu": "64"}'}},
    ),
    (
        "delete_resource_preset",
        "mutation($n: String!) { delete_resource_preset(name: $n) { ok msg } }",
        {"n": "keys-small"},
    ),
]


async def _events_after(world: World, position: str) -> list[Any]:
    store = RedisEventStore.from_url(world.stack.exports["KH_REDIS_URL"])
    try:
        return await store.read_log(position, count=10_000)
    finally:
        await store.close()


async def _stream(world: World, stream: str) -> list[Any]:
    store = RedisEventStore.from_url(world.stack.exports["KH_REDIS_URL"])
    try:
        return await store.read_stream(stream)
    finally:
        await store.close()


async def _head(world: World) -> str:
    store = RedisEventStore.from_url(world.stack.exports["KH_REDIS_URL"])
    try:
        return await store.head()
    finally:
        await store.close()


def _ensure_preset(world: World) -> None:
    create = (
        "mutation($n: String!, $i: CreateResourcePresetInput!) {"
        " create_resource_preset(name: $n, props: $i) { ok msg } }"
    )
    gql(world, world.root, create, n="keys-small", i={"resource_slots": '{"cpu": "1"}'})


@pytest.mark.parametrize("attacker", ["eve", "bob"])
def test_every_keys_mutation_is_refused_to_an_outsider_and_nothing_is_logged(
    world: World, attacker: str
) -> None:
    """Eve administers another domain, bob is a plain user of bob's own domain: each of the
    nine mutations answers 403 and appends nothing. Without the role checks (keys_rules'
    ``require_keypair_admin``, ``require_superadmin`` in policies and presets) eve would
    deactivate, delete or re-issue bob's keypair and rewrite the policies every tenant runs
    under, and bob would raise his own limits."""
    _ensure_preset(world)
    keys = world.eve if attacker == "eve" else world.bob
    before = asyncio.run(_head(world))
    for name, query, variables in MUTATIONS:
        filled = {k: world.bob.access_key if v == "<bob>" else v for k, v in variables.items()}
        status, body = gql(world, keys, query, **filled)
        assert status == 403, (name, body)
        assert body["type"].endswith("generic-forbidden"), (name, body)
    events = asyncio.run(_events_after(world, before))
    assert not [e for e in events if e.type in DECISIONS], events
    assert listed(world, world.root, email=world.bob.email)[world.bob.access_key]["is_active"]


def test_a_domain_admin_of_another_domain_sees_only_their_domains_keypairs(world: World) -> None:
    """Without the scope (keys_rules' ``keypair_scope``) eve's listing would hold every
    domain's keypairs, and asking for ``default``'s would answer them."""
    mine = listed(world, world.eve)
    assert world.rex.access_key in mine and world.eve.access_key in mine
    assert world.bob.access_key not in mine and world.root.access_key not in mine
    assert mine[world.rex.access_key]["secret_key"] is None  # not hers to read
    assert gql(world, world.eve, KEYPAIRS, domain_name="default")[0] == 403
    assert listed(world, world.eve, email=world.bob.email) == {}
    page = data(
        world,
        world.eve,
        "query { keypair_list(limit: 100, offset: 0) { items { access_key } total_count } }",
    )["keypair_list"]
    assert {i["access_key"] for i in page["items"]} == set(mine)
    assert page["total_count"] == len(mine)


def test_a_domain_admin_never_touches_a_superadmins_keypair(world: World) -> None:
    """Dana administers ``default``, the superadmin's domain: she lists bob's keypair but not
    the superadmin's, and may neither deactivate it nor flag it admin. Without
    ``hide_superadmins`` and ``may_manage_user``'s superadmin rule she could lock the
    superadmin out."""
    seen = listed(world, world.dana)
    assert world.bob.access_key in seen and world.root.access_key not in seen
    assert seen[world.bob.access_key]["secret_key"] is None
    assert seen[world.dana.access_key]["secret_key"] == world.dana.secret_key  # her own
    for change in ({"is_active": False}, {"is_admin": False}, {"rate_limit": 1}):
        status, body = gql(
            world, world.dana, MODIFY, access_key=world.root.access_key, input=change
        )
        assert status == 403, body
    status, body = gql(
        world, world.dana, MODIFY, access_key=world.bob.access_key, input={"rate_limit": 1234}
    )
    assert status == 200 and body["data"]["modify_keypair"]["ok"], body
    # she issues and deletes her domain's users' keypairs (the new secret is in her answer)
    issued = data(world, world.dana, CREATE_KEYPAIR, user_id=world.bob.email, input={})
    new = issued["create_keypair"]["keypair"]
    assert new["user_id"] == world.bob.email and new["secret_key"]
    delete = "mutation($a: String!) { delete_keypair(access_key: $a) { ok msg } }"
    assert data(world, world.dana, delete, a=new["access_key"])["delete_keypair"]["ok"]
    status, body = gql(world, world.dana, CREATE_KEYPAIR, user_id=world.root.email, input={})
    assert status == 403, body
    assert (
        listed(world, world.root, email=world.bob.email)[world.bob.access_key]["rate_limit"] == 1234
    )


def test_a_user_lists_only_their_own_keypairs_and_reads_no_other_secret(world: World) -> None:
    """Bob with the official client's ``admin keypair list`` sees his own keypairs (with his
    secret) and nobody else's; asking for another user's or domain's is a 403; a policy he
    does not hold reads as null. Without ``keypair_scope``'s user rule the listing would
    show every keypair of the domain; without the owner rule in ``keypair_view`` it would
    show their secrets."""
    bob = world.bob
    page = ok(bai(world, bob, "admin", "keypair", "list"))
    keys = {i["access_key"]: i for i in page["items"]}
    assert bob.access_key in keys
    assert all(i["user_id"] == bob.email for i in page["items"])
    assert keys[bob.access_key]["secret_key"] == bob.secret_key
    (info,) = ok(bai(world, bob, "admin", "keypair", "info"))["items"]
    assert (info["user_id"], info["secret_key"]) == (bob.email, bob.secret_key)
    assert gql(world, bob, KEYPAIRS, email=world.root.email)[0] == 403
    assert gql(world, bob, KEYPAIRS, domain_name="rival")[0] == 403
    assert set(listed(world, bob, domain_name="default")) == set(keys)
    # the root's listing of bob's keypair never carries bob's secret
    assert listed(world, world.root, email=bob.email)[bob.access_key]["secret_key"] is None
    # policies: his own (by no name, or by its name), not one he does not hold
    own = data(world, bob, POLICY)["keypair_resource_policy"]
    assert own["name"] == "default"
    assert data(world, bob, POLICY, name="kp-exec")["keypair_resource_policy"] is None
    names = data(world, bob, "query { keypair_resource_policies { name } }")
    assert {p["name"] for p in names["keypair_resource_policies"]} <= {"default", "kp-one"}


# ---- presets ---------------------------------------------------------------------------------
PRESETS = "query { resource_presets { name resource_slots shared_memory } }"


def test_a_superadmin_sets_resource_presets_everyone_reads_them(world: World) -> None:
    root = world.root
    create = (
        "mutation($n: String!, $i: CreateResourcePresetInput!) {"
        " create_resource_preset(name: $n, props: $i) { ok msg"
        " resource_preset { name resource_slots shared_memory } } }"
    )
    made = data(
        world,
        root,
        create,
        n="keys-gpu",
        i={"resource_slots": '{"cpu": "2", "mem": "4g"}', "shared_memory": "64m"},
    )["create_resource_preset"]["resource_preset"]
    assert json.loads(made["resource_slots"]) == {"cpu": "2", "mem": str(4 * 2**30)}
    assert made["shared_memory"] == 64 * 2**20
    modify = (
        "mutation($n: String!, $i: ModifyResourcePresetInput!) {"
        " modify_resource_preset(name: $n, props: $i) { ok msg } }"
    )
    assert data(world, root, modify, n="keys-gpu", i={"shared_memory": "128m"})
    seen = {p["name"]: p for p in data(world, world.bob, PRESETS)["resource_presets"]}
    assert seen["keys-gpu"]["shared_memory"] == 128 * 2**20
    assert json.loads(seen["keys-gpu"]["resource_slots"])["cpu"] == "2"  # kept
    status, rest = call(world, world.bob, "GET", "/resource/presets")
    assert status == 200 and "keys-gpu" in {p["name"] for p in rest["presets"]}
    status, body = gql(world, root, create, n="keys-bad", i={"resource_slots": '{"cpu": "-2"}'})
    assert status == 400 and "resource_slots" in body["msg"], body
    delete = "mutation($n: String!) { delete_resource_preset(name: $n) { ok msg } }"
    assert data(world, root, delete, n="keys-gpu")["delete_resource_preset"]["ok"]
    one = "query($n: String!) { resource_preset(name: $n) { name } }"
    assert data(world, root, one, n="keys-gpu")["resource_preset"] is None
    status, body = gql(world, root, delete, n="keys-gpu")
    assert status == 404, body


# ---- what a keypair may be given (review findings F16 and F10) ------------------------------
DELETE_KEYPAIR = "mutation($a: String!) { delete_keypair(access_key: $a) { ok msg } }"
CREATE_POLICY = (
    "mutation($name: String!, $input: CreateKeyPairResourcePolicyInput!) {"
    " create_keypair_resource_policy(name: $name, props: $input) { ok msg } }"
)


def test_no_hidden_admin_an_admin_keypair_needs_an_admin_user(world: World) -> None:
    """F16, the attacker dana (admin of ``default``) making bob, a plain user, a hidden admin:
    ``create_keypair``/``modify_keypair`` with ``is_admin: true`` for him answer 400 naming
    ``is_admin`` (to the superadmin too) and append nothing. Before the fix both answered
    ok and bob's keypair administered the domain while his record said ``user``."""
    before = asyncio.run(_head(world))
    for keys in (world.dana, world.root):
        status, body = gql(
            world, keys, CREATE_KEYPAIR, user_id=world.bob.email, input={"is_admin": True}
        )
        assert status == 400 and "is_admin" in body["msg"], body
        status, body = gql(
            world, keys, MODIFY, access_key=world.bob.access_key, input={"is_admin": True}
        )
        assert status == 400 and "is_admin" in body["msg"], body
    events = asyncio.run(_events_after(world, before))
    assert not [e for e in events if e.type in DECISIONS], events
    assert not listed(world, world.root, email=world.bob.email)[world.bob.access_key]["is_admin"]
    # dana's own keypair (her role is admin) keeps its flag settable
    status, body = gql(
        world, world.dana, MODIFY, access_key=world.dana.access_key, input={"is_admin": True}
    )
    assert status == 200 and body["data"]["modify_keypair"]["ok"], body


def test_a_domain_admin_hands_out_only_what_their_domain_was_given(world: World) -> None:
    """F10, the attacker dana: she may not put bob (or herself) on ``kp-vip``, a policy the
    superadmin made and gave to no keypair of ``default``; the refusal is the very answer of
    a policy that does not exist (no oracle for global names); she may not raise her own
    keypair's rate limit nor bob's past the domain's ceiling (10000 here). Once the
    superadmin gives ``kp-vip`` to a keypair of ``default``, she may give it too. Before the
    fix every one of these refusals was an ok."""
    root, dana, bob = world.root, world.dana, world.bob
    made = data(world, root, CREATE_POLICY, name="kp-vip", input={"max_concurrent_sessions": 99})
    assert made["create_keypair_resource_policy"]["ok"]
    before = asyncio.run(_head(world))
    answers = []
    for name in ("kp-vip", "kp-no-such-policy"):
        status, body = gql(
            world, dana, MODIFY, access_key=bob.access_key, input={"resource_policy": name}
        )
        answers.append((status, body["type"], body.get("title"), body["msg"].replace(name, "X")))
        status, body = gql(
            world, dana, CREATE_KEYPAIR, user_id=bob.email, input={"resource_policy": name}
        )
        answers.append((status, body["type"], body.get("title"), body["msg"].replace(name, "X")))
    assert answers[0][0] == 404 and len(set(answers)) == 1, answers
    for change in ({"resource_policy": "kp-vip"}, {"rate_limit": 2**31 - 1}):
        status, body = gql(world, dana, MODIFY, access_key=dana.access_key, input=change)
        assert status == 403 and next(iter(change)) in body["msg"], (change, body)
    status, body = gql(world, dana, MODIFY, access_key=bob.access_key, input={"rate_limit": 10001})
    assert status == 403 and "rate_limit" in body["msg"], body
    events = asyncio.run(_events_after(world, before))
    assert not [e for e in events if e.type in DECISIONS], events
    # the superadmin opens kp-vip to ``default`` by giving it to one of its keypairs
    vip = {"resource_policy": "kp-vip"}
    opened = data(world, root, CREATE_KEYPAIR, user_id=bob.email, input=vip)
    first = opened["create_keypair"]["keypair"]["access_key"]
    second = None
    try:
        given = data(world, dana, CREATE_KEYPAIR, user_id=bob.email, input=vip)
        second = given["create_keypair"]["keypair"]["access_key"]
        assert listed(world, root, email=bob.email)[second]["resource_policy"] == "kp-vip"
    finally:
        for access_key in (first, second):
            if access_key:
                data(world, root, DELETE_KEYPAIR, a=access_key)
        data(
            world,
            root,
            "mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok msg } }",
            n="kp-vip",
        )


@pytest.mark.hostile
def test_a_domain_admin_learns_nothing_of_other_domains_access_keys(world: World) -> None:
    """Review F18: eve (admin of ``rival``) naming bob's access key (of ``default``) as
    ``owner_access_key`` got 403, naming one that does not exist 400 "unknown owner access
    key": which keys exist installation-wide was hers to probe. Now both answers are the
    same; the superadmin still hears that a key is unknown."""
    path = "/session/anything?owner_access_key="
    theirs = call(world, world.eve, "GET", path + world.bob.access_key)
    missing = call(world, world.eve, "GET", path + "AKIANOSUCHKEY0000000")
    assert theirs == missing and theirs[0] == 403, (theirs, missing)
    assert "acts only within the domain" in json.dumps(theirs[1])
    status, body = call(world, world.root, "GET", path + "AKIANOSUCHKEY0000000")
    assert status == 400 and "unknown owner access key" in json.dumps(body)


def test_the_audit_trail_names_who_changed_bobs_keypair_and_from_where(world: World) -> None:
    """``kh events audit``: the superadmin's change through the gateway, with their email,
    access key and the request's peer; eve's refused attempt left nothing to find; and the
    live log's chain verifies from a checkpoint signed after it."""
    root, bob = world.root, world.bob
    data(world, root, MODIFY, access_key=bob.access_key, input={"rate_limit": 4321})
    status, _ = gql(world, world.eve, MODIFY, access_key=bob.access_key, input={"rate_limit": 1})
    assert status in (401, 403)
    audit = world.stack.kh(
        "events", "audit", "--what", "keypair_*", "--about", bob.access_key, "--json"
    )
    assert audit.returncode == 0, audit.stderr
    rows = [json.loads(line) for line in audit.stdout.splitlines()]
    change = [r for r in rows if r["data"].get("rate_limit") == 4321]
    assert len(change) == 1 and change[0]["type"] == "keypair_updated"
    who = change[0]["initiator"]
    assert (who["email"], who["access_key"], who["peer"]) == (
        root.email,
        root.access_key,
        "127.0.0.1",
    )
    assert not [r for r in rows if r["data"].get("rate_limit") == 1]  # refused: not logged
    by_eve = world.stack.kh("events", "audit", "--who", world.eve.email)
    assert by_eve.returncode == 0 and bob.access_key not in by_eve.stdout

    data_dir = str(world.stack.root / "data")
    signed = world.stack.kh("events", "checkpoint", KH_DATA_DIR=data_dir)
    assert signed.returncode == 0, signed.stderr
    verified = world.stack.kh("events", "verify", "--from-checkpoint", KH_DATA_DIR=data_dir)
    assert verified.returncode == 0 and verified.stdout.strip().endswith("ok"), verified.stdout
