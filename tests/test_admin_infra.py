"""Scaling groups, images and agents with the official client's ``backend.ai admin ...``
(23.3.12, unmodified) against one ``kh up``, and the REST pieces web UIs call
(``/scaling-groups``, ``wsproxy-version``, ``/config/resource-slots``, ``/auth/role``).

Each attacker test names the check it plays against: without that check the test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from actors.domain.commands.tenancy import (
    AddMember,
    Associate,
    CreateDomain,
    CreateProject,
    CreateUser,
    IssueKeypair,
    SetScalingGroup,
)
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.testing import eventually
from projections.tenancy_queries import TenancyLookups

from .khstack import ROOT, Stack, signed_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DEFAULT_PROJECT = str(uuid.uuid5(uuid.UUID("6d1f3c52-8b0e-4f55-9a47-0c2e7b1d9f30"), "project"))
"""``kh up``'s default project (kernelhub/bootstrap.py's fixed id)."""


def client_binary() -> Path:
    return Path(os.environ.get("KH_BAI_CLIENT") or ROOT / ".venv-bai" / "bin" / "backend.ai")


class Lab(Stack):
    keys: dict[str, tuple[str, str]]
    """Tenant name -> (access key, secret key)."""
    secret_project: str

    def bai(self, *args: str, who: str = "super") -> subprocess.CompletedProcess[str]:
        env: dict[str, str] = {}
        if who != "super":
            access_key, secret_key = self.keys[who]
            env = {"BACKEND_ACCESS_KEY": access_key, "BACKEND_SECRET_KEY": secret_key}
        return subprocess.run(
            [str(client_binary()), *args],
            env=self.env(**env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def creds(self, who: str) -> tuple[str, str]:
        if who == "super":
            return self.exports["BACKEND_ACCESS_KEY"], self.exports["BACKEND_SECRET_KEY"]
        return self.keys[who]

    def rest(self, who: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        access_key, secret_key = self.creds(who)
        data = None if body is None else json.dumps(body).encode()
        return signed_request(
            self.exports["BACKEND_ENDPOINT"], method, path, access_key, secret_key, data
        )

    def gql(self, who: str, query: str, **variables: Any) -> tuple[int, Any]:
        return self.rest(who, "POST", "/admin/gql", {"query": query, "variables": variables})


async def _tenants(stack: Stack) -> tuple[dict[str, tuple[str, str]], str]:
    """A plain member of the default project, an admin of the default domain, an admin of
    another domain, and a project of the default domain none of them belongs to (with a
    scaling group of its own)."""
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        box = SecretBox.from_file(stack.root / "data" / "master.key")
        tenancy = await TenancyService(store, box).load()
        await tenancy.handle(CreateDomain(name="lab2"))
        keys: dict[str, tuple[str, str]] = {}
        for name, domain, role in (
            ("member", "default", "user"),
            ("dadmin", "default", "admin"),
            ("otheradmin", "lab2", "admin"),
        ):
            user = await tenancy.handle(
                CreateUser(username=name, email=f"{name}@infra.test", domain=domain, role=role)
            )
            if domain == "default":
                await tenancy.handle(AddMember(project_id=uuid.UUID(DEFAULT_PROJECT), user_id=user))
            keys[name] = await tenancy.handle(IssueKeypair(user_id=user))
        secret = await tenancy.handle(CreateProject(name="secret-proj", domain="default"))
        await tenancy.handle(SetScalingGroup(name="secret-gpu"))
        await tenancy.handle(
            Associate(name="secret-gpu", target_kind="project", target=str(secret))
        )
        lookups = TenancyLookups(store)
        for access_key, _ in keys.values():
            await eventually(lambda ak=access_key: lookups.keypair(ak), timeout=20, message="kp")
        return keys, str(secret)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def lab(shared_stack: Stack) -> Lab:
    if not client_binary().exists():
        reason = f"the official client is not installed at {client_binary()}"
        if os.environ.get("KH_REQUIRE_CLIENT") == "1":
            pytest.fail(f"KH_REQUIRE_CLIENT=1 but {reason}")
        pytest.skip(reason)
    running = shared_stack  # its scaling group is "infra-gpu" here: kh_admin's is "gpu"
    stack = Lab(running.root, running.exports, running.backend)
    stack.keys, stack.secret_project = asyncio.run(_tenants(stack))
    return stack


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout)


def _names(items: list[dict[str, Any]]) -> list[str]:
    return [str(item["name"]) for item in items]


# ---- scaling groups -----------------------------------------------------------------------
def test_a_scaling_group_from_add_to_delete_with_the_official_client(lab: Lab) -> None:
    added = lab.bai("admin", "scaling", "add", "infra-gpu", "-d", "GPU nodes", "-p")
    assert added.returncode == 0, (added.stdout, added.stderr)
    listed = lab.bai("admin", "scaling", "list")
    assert listed.returncode == 0 and "infra-gpu" in listed.stdout and "GPU nodes" in listed.stdout
    info = _json(lab.bai("--output", "json", "admin", "scaling", "info", "infra-gpu"))
    item = info["items"][0]
    assert item["is_public"] is False and item["driver"] == "static"
    assert item["wsproxy_addr"] is None and item["scheduler"] == "fifo"
    assert item["scheduler_opts"]["allowed_session_types"] == ["interactive", "batch"]

    updated = lab.bai(
        "admin", "scaling", "update", "infra-gpu", "-d", "GPU", "-p", "--scheduler", "drf",
        "--scheduler-opts", '{"pending_timeout": "10m", "config": {"drf_share": "sum"}}',
    )  # fmt: skip
    assert updated.returncode == 0, (updated.stdout, updated.stderr)
    info = _json(lab.bai("--output", "json", "admin", "scaling", "info", "infra-gpu"))
    item = info["items"][0]
    assert item["description"] == "GPU" and item["scheduler"] == "drf"
    assert item["scheduler_opts"]["pending_timeout"] == 600.0
    assert item["scheduler_opts"]["config"] == {"drf_share": "sum"}

    associated = lab.bai("admin", "scaling", "associate-scaling", "infra-gpu", "lab2")
    assert associated.returncode == 0, (associated.stdout, associated.stderr)
    _, data = lab.gql("super", '{ scaling_groups_for_domain(domain: "lab2") { name } }')
    assert _names(data["data"]["scaling_groups_for_domain"]) == ["infra-gpu"]
    dissociated = lab.bai("admin", "scaling", "dissociate-scaling", "infra-gpu", "lab2")
    # the 23.3.12 CLI asks for `ok msg` and then prints `scaling_group` it never asked for:
    # it raises KeyError after the dissociation succeeded (against 23.03 too)
    assert dissociated.returncode == 0 or "KeyError: 'scaling_group'" in dissociated.stderr
    _, data = lab.gql("super", '{ scaling_groups_for_domain(domain: "lab2") { name } }')
    assert data["data"]["scaling_groups_for_domain"] == []

    deleted = lab.bai("admin", "scaling", "delete", "infra-gpu")
    assert deleted.returncode == 0, (deleted.stdout, deleted.stderr)
    listed = _json(lab.bai("--output", "json", "admin", "scaling", "list"))
    assert "infra-gpu" not in _names(listed["items"])
    again = lab.bai("admin", "scaling", "delete", "infra-gpu")
    assert again.returncode != 0 and "No such scaling group" in again.stdout + again.stderr


def test_a_group_with_agents_or_waiting_sessions_is_not_deleted(lab: Lab) -> None:
    refused = lab.bai("admin", "scaling", "delete", "default")
    assert refused.returncode != 0 and "agent" in refused.stdout + refused.stderr
    assert lab.bai("admin", "scaling", "add", "empty").returncode == 0
    assert lab.bai("admin", "scaling", "associate-scaling", "empty", "default").returncode == 0
    waiting = lab.bai(
        "session", "create", "--name", "stuck", "--scaling-group", "empty", "--enqueue-only",
        "python",
    )  # fmt: skip
    assert waiting.returncode == 0, (waiting.stdout, waiting.stderr)
    try:
        refused = lab.bai("admin", "scaling", "delete", "empty")
        assert refused.returncode != 0
        assert "1 session(s) not yet ended" in refused.stdout + refused.stderr, refused
    finally:
        lab.bai("session", "rm", "stuck")
    deleted = lab.bai("admin", "scaling", "delete", "empty")
    assert deleted.returncode == 0, (deleted.stdout, deleted.stderr)


def test_what_kernelhub_cannot_run_is_refused_by_name(lab: Lab) -> None:
    for option, named in (
        (["--driver", "aws"], "driver"),
        (["--use-host-network"], "use_host_network"),
        (["--wsproxy-addr", "http://proxy:5050"], "wsproxy_addr"),
        (["--scheduler", "magic"], "scheduler"),
        (["--scheduler-opts", '{"config": {"nope": 1}}'], "nope"),
    ):
        refused = lab.bai("admin", "scaling", "add", "never", *option)
        assert refused.returncode != 0, option
        assert named in refused.stdout + refused.stderr, (option, refused.stdout, refused.stderr)
    _, data = lab.gql("super", '{ scaling_group(name: "never") { name } }')
    assert data["data"]["scaling_group"] is None


def test_the_sdk_associates_a_group_with_a_project_and_a_keypair(lab: Lab) -> None:
    """The official SDK's ``associate_group``/``dissociate_group`` (the latter declares its
    variable ``String!``) and the keypair association kernelhub's scheduler honours."""
    code = f"""
from ai.backend.client.session import Session
with Session() as s:
    print(s.ScalingGroup.create("proj-gpu", is_public=False))
    print(s.ScalingGroup.associate_group("proj-gpu", "{DEFAULT_PROJECT}"))
"""
    done = subprocess.run(
        [str(client_binary().parent / "python"), "-c", code],
        env=lab.env(), cwd=lab.workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "('ok', True)" in done.stdout, (done.stdout, done.stderr)
    member_ak = lab.keys["member"][0]
    _, data = lab.gql(
        "super",
        "mutation($sg: String!, $ak: String!) { associate_scaling_group_with_keypair("
        "scaling_group: $sg, access_key: $ak) { ok msg } }",
        sg="proj-gpu",
        ak=member_ak,
    )
    assert data["data"]["associate_scaling_group_with_keypair"]["ok"] is True
    query = "query($ak: String!) { scaling_groups_for_keypair(access_key: $ak) { name } }"
    _, admin_view = lab.gql("super", query, ak=member_ak)
    assert _names(admin_view["data"]["scaling_groups_for_keypair"]) == ["proj-gpu"]
    # the member sees their own keypair's groups, but not a non-public one
    _, own_view = lab.gql("member", query, ak=member_ak)
    assert own_view["data"]["scaling_groups_for_keypair"] == []

    undone = subprocess.run(
        [str(client_binary().parent / "python"), "-c",
         "from ai.backend.client.session import Session\n"
         f"with Session() as s: print(s.ScalingGroup.dissociate_group('proj-gpu', "
         f"'{DEFAULT_PROJECT}'))"],
        env=lab.env(), cwd=lab.workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert undone.returncode == 0 and "('ok', True)" in undone.stdout, (
        undone.stdout,
        undone.stderr,
    )
    _, data = lab.gql(
        "super",
        "query($g: String!) { scaling_groups_for_user_group(user_group: $g) { name } }",
        g=DEFAULT_PROJECT,
    )
    assert "proj-gpu" not in _names(data["data"]["scaling_groups_for_user_group"])


def test_a_non_public_group_is_hidden_from_a_plain_member_and_shown_to_an_admin(lab: Lab) -> None:
    """23.03.5's ``list_available_sgroups``: without its ``is_public`` filter the member
    would be offered the private group."""
    _, data = lab.gql(
        "super",
        "mutation($sg: String!, $g: UUID!) { create: create_scaling_group(name: $sg, props: "
        '{is_public: false, driver: "static", scheduler: "fifo"}) { ok } '
        "assoc: associate_scaling_group_with_user_group(scaling_group: $sg, user_group: $g) "
        "{ ok } }",
        sg="staff-only",
        g=DEFAULT_PROJECT,
    )
    assert data["data"]["create"]["ok"] and data["data"]["assoc"]["ok"], data
    status, shown = lab.rest("dadmin", "GET", "/scaling-groups?group=default")
    assert status == 200 and "staff-only" in _names(shown["scaling_groups"])
    status, hidden = lab.rest("member", "GET", f"/scaling-groups?group={DEFAULT_PROJECT}")
    assert status == 200 and "default" in _names(hidden["scaling_groups"])
    assert "staff-only" not in _names(hidden["scaling_groups"])
    status, _ = lab.rest(
        "member", "GET", "/scaling-groups/staff-only/wsproxy-version?group=default"
    )
    assert status == 404
    status, version = lab.rest(
        "dadmin", "GET", "/scaling-groups/staff-only/wsproxy-version?group=default"
    )
    assert (status, version) == (200, {"wsproxy_version": "v1"})
    printed = lab.bai("admin", "scaling", "get-available", "default", who="member")
    assert printed.returncode == 0 and "staff-only" not in printed.stdout


def test_another_projects_groups_are_not_told_to_a_stranger(lab: Lab) -> None:
    """Membership check of ``GET /scaling-groups``: 23.03 answered for any project name of
    the caller's domain, so without the check the member would learn ``secret-gpu``."""
    for group in ("secret-proj", lab.secret_project, "no-such-project"):
        status, body = lab.rest("member", "GET", f"/scaling-groups?group={group}")
        assert status == 400, body
        assert "secret-gpu" not in json.dumps(body)
    status, body = lab.rest("otheradmin", "GET", f"/scaling-groups?group={lab.secret_project}")
    assert status == 400 and "secret-gpu" not in json.dumps(body)
    status, body = lab.rest("super", "GET", f"/scaling-groups?group={lab.secret_project}")
    assert status == 200 and "secret-gpu" in _names(body["scaling_groups"])
    status, body = lab.rest("member", "GET", "/scaling-groups?group=default&extra=1")
    assert status == 400 and "extra" in body["msg"]


def test_another_domains_project_reads_exactly_as_an_unknown_one(lab: Lab) -> None:
    """F8, the attacker ``otheradmin`` (admin of ``lab2``) probing ``default``'s project id:
    ``GET /scaling-groups?group=`` and ``GET /auth/role?group=`` answer it with the very
    status and text of an id that exists nowhere. Before the fix ``/scaling-groups`` said
    "You can only set the domain to the owner's domain." for the real id only."""
    unknown = str(uuid.uuid4())
    for who in ("otheradmin", "member"):
        for path in ("/scaling-groups?group={}", "/auth/role?group={}"):
            answers = []
            for group in (lab.secret_project, unknown):
                status, body = lab.rest(who, "GET", path.format(group))
                answers.append((status, body.get("type"), body.get("title"), body.get("msg")))
            assert answers[0] == answers[1] and answers[0][0] in (400, 404), (who, answers)


def test_a_scaling_group_a_preset_names_is_not_deleted(lab: Lab) -> None:
    """F9: a resource preset's ``scaling_group_name`` keeps its group: deleting the group is
    a 400 naming the preset, and goes through once the preset is gone. Before the fix the
    group was deleted and the preset pointed at nothing."""
    assert lab.bai("admin", "scaling", "add", "preset-home").returncode == 0
    create = (
        "mutation($n: String!, $i: CreateResourcePresetInput!) {"
        " create_resource_preset(name: $n, props: $i) { ok msg } }"
    )
    status, made = lab.gql(
        "super",
        create,
        n="infra-pinned",
        i={"resource_slots": '{"cpu": "1"}', "scaling_group_name": "preset-home"},
    )
    assert status == 200 and made["data"]["create_resource_preset"]["ok"], made
    delete = "mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }"
    status, body = lab.gql("super", delete, n="preset-home")
    assert status == 400 and "infra-pinned" in body["msg"], body
    _, still = lab.gql("super", '{ scaling_group(name: "preset-home") { name } }')
    assert still["data"]["scaling_group"] == {"name": "preset-home"}
    drop = "mutation($n: String!) { delete_resource_preset(name: $n) { ok msg } }"
    assert lab.gql("super", drop, n="infra-pinned")[0] == 200
    status, body = lab.gql("super", delete, n="preset-home")
    assert status == 200 and body["data"]["delete_scaling_group"]["ok"], body


# ---- images -------------------------------------------------------------------------------
def test_images_listed_aliased_and_dealiased_with_the_official_client(lab: Lab) -> None:
    listed = lab.bai("admin", "image", "list")
    assert listed.returncode == 0 and "kernelhub/python" in listed.stdout, listed.stderr
    aliased = lab.bai("admin", "image", "alias", "py311", "kernelhub/python:3.11")
    assert aliased.returncode == 0 and "An alias has created" in aliased.stderr, aliased.stdout
    items = _json(lab.bai("--output", "json", "admin", "image", "list"))["items"]
    base = next(i for i in items if i["name"] == "kernelhub/python")
    assert base["tag"] == "3.11" and sorted(base["aliases"]) == ["py311", "python"]
    # everyone may list the catalogue
    member_items = _json(lab.bai("--output", "json", "admin", "image", "list", who="member"))
    assert "kernelhub/python" in _names(member_items["items"])
    dealiased = lab.bai("admin", "image", "dealias", "py311")
    assert dealiased.returncode == 0 and "has been removed" in dealiased.stderr
    gone = lab.bai("admin", "image", "dealias", "py311")
    assert gone.returncode != 0 and "no alias" in gone.stdout + gone.stderr
    unknown = lab.bai("admin", "image", "alias", "x", "no/such:image")
    assert unknown.returncode != 0


def test_rescan_is_refused_and_says_how_images_are_registered(lab: Lab) -> None:
    rescan = lab.bai("admin", "image", "rescan")
    assert rescan.returncode != 0
    assert "no image registry" in rescan.stdout + rescan.stderr
    assert "register_image" in rescan.stdout + rescan.stderr
    _, data = lab.gql(
        "super",
        'mutation($l: JSONString) { register_image(reference: "lab/tool:1", labels: $l) '
        "{ ok msg } }",
        l=json.dumps({"ai.backend.kernelspec": "1", "ai.backend.features": "operation"}),
    )
    assert data["data"]["register_image"]["ok"] is True
    operation = _json(lab.bai("--output", "json", "admin", "image", "list", "--operation"))
    assert _names(operation["items"]) == ["lab/tool"]
    status, body = lab.gql("super", "{ images(is_installed: true) { name } }")
    assert status == 400 and "is_installed" in body["msg"]


# ---- agents and sessions ------------------------------------------------------------------
def test_agents_listed_and_shown_with_the_official_client(lab: Lab) -> None:
    listed = lab.bai("admin", "agent", "list")
    assert listed.returncode == 0, (listed.stdout, listed.stderr)
    items = _json(lab.bai("--output", "json", "admin", "agent", "list"))["items"]
    assert items and all(i["status"] == "ALIVE" for i in items)
    agent = items[0]
    assert agent["scaling_group"] == "default" and "cpu" in agent["available_slots"]
    assert agent["id"] in listed.stdout
    info = lab.bai("admin", "agent", "info", agent["id"])
    assert info.returncode == 0 and agent["id"] in info.stdout, (info.stdout, info.stderr)
    listing = (
        "query($f: String, $o: String) { agent_list(limit: 10, offset: 0, filter: $f, "
        "order: $o) { items { id } total_count } }"
    )
    status, body = lab.gql(
        "super", listing, f='status == "ALIVE" & scaling_group == "default"', o="-id"
    )
    assert status == 200 and body["data"]["agent_list"]["total_count"] == len(items), body
    status, body = lab.gql("super", listing, f='id == "nobody"')
    assert body["data"]["agent_list"] == {"items": [], "total_count": 0}, body
    status, body = lab.gql("super", listing, f='name == "x"')
    assert status == 400 and "name" in body["msg"]
    status, body = lab.gql("super", listing, o="+cpu_cur_pct")
    assert status == 400 and "cpu_cur_pct" in body["msg"]
    status, body = lab.gql("super", '{ agents(status: "NAPPING") { id } }')
    assert status == 400 and "NAPPING" in body["msg"]


def test_an_agent_shows_what_a_running_session_holds_and_uses(lab: Lab) -> None:
    """Live slots from the ledger and live figures from telemetry, as the client asks."""
    created = lab.bai("session", "create", "--name", "busy", "-r", "cpu=1", "python")
    assert created.returncode == 0 and "is created" in created.stderr, created
    try:
        query = (
            "{ agent_list(limit: 10, offset: 0) { items { id occupied_slots live_stat "
            "cpu_cur_pct mem_cur_bytes } } }"
        )

        def measured() -> dict[str, Any] | None:
            _, body = lab.gql("super", query)
            for agent in body["data"]["agent_list"]["items"]:
                if json.loads(agent["occupied_slots"]).get("cpu") and agent["mem_cur_bytes"]:
                    return dict(agent)
            return None

        agent = asyncio.run(eventually(measured, timeout=60, interval=0.5, message="live stats"))
        live = json.loads(agent["live_stat"])
        assert set(live["node"]) == {"cpu_util", "mem"} and agent["mem_cur_bytes"] > 0
        info = lab.bai("admin", "agent", "info", agent["id"])
        assert info.returncode == 0 and "cpu_util" in info.stdout, (info.stdout, info.stderr)
    finally:
        lab.bai("session", "rm", "busy")


def test_admin_session_list_for_a_superadmin_and_a_domain_admin(lab: Lab) -> None:
    ran = lab.bai("run", "--rm", "python", "-c", "print(6*7)", who="member")
    assert "42" in ran.stdout, (ran.stdout, ran.stderr)
    for who in ("super", "dadmin"):
        listed = _json(lab.bai("--output", "json", "admin", "session", "list", "--dead", who=who))
        assert listed["items"], who
        session_id = listed["items"][0]["session_id"]
    info = lab.bai("admin", "session", "info", session_id, who="dadmin")
    assert info.returncode == 0 and session_id in info.stdout, (info.stdout, info.stderr)
    other = _json(
        lab.bai("--output", "json", "admin", "session", "list", "--dead", who="otheradmin")
    )
    assert other["items"] == []


# ---- the REST pieces ----------------------------------------------------------------------
def test_resource_slots_and_roles(lab: Lab) -> None:
    status, slots = lab.rest("member", "GET", "/config/resource-slots")
    assert status == 200 and slots["cpu"] == "count" and slots["mem"] == "bytes"
    assert lab.rest("super", "GET", "/auth/role") == (
        200,
        {"global_role": "superadmin", "domain_role": "admin", "group_role": None},
    )
    status, role = lab.rest("member", "GET", f"/auth/role?group={DEFAULT_PROJECT}")
    assert (status, role) == (
        200,
        {"global_role": "user", "domain_role": "user", "group_role": "user"},
    )
    status, role = lab.rest("dadmin", "GET", "/auth/role")
    assert role["domain_role"] == "admin" and role["global_role"] == "user"
    status, body = lab.rest("member", "GET", f"/auth/role?group={lab.secret_project}")
    assert status == 404, body
    status, body = lab.rest("member", "GET", "/auth/role?group=default")
    assert status == 400 and "UUID" in body["msg"]


# ---- attackers ----------------------------------------------------------------------------
WRITES = [
    (
        'mutation { create_scaling_group(name: "mine", props: {driver: "static", '
        'scheduler: "fifo"}) { ok } }'
    ),
    'mutation { modify_scaling_group(name: "default", props: {is_public: false}) { ok } }',
    'mutation { delete_scaling_group(name: "default") { ok } }',
    (
        'mutation { associate_scaling_group_with_domain(scaling_group: "secret-gpu", '
        'domain: "default") { ok } }'
    ),
    'mutation { disassociate_all_scaling_groups_with_domain(domain: "default") { ok } }',
    (
        f'mutation {{ associate_scaling_group_with_user_group(scaling_group: "secret-gpu", '
        f'user_group: "{DEFAULT_PROJECT}") {{ ok }} }}'
    ),
    'mutation { alias_image(alias: "evil", target: "kernelhub/python:3.11") { ok } }',
    'mutation { dealias_image(alias: "python") { ok } }',
    'mutation { register_image(reference: "evil/img:1") { ok } }',
    "mutation { rescan_images { ok } }",
    "{ scaling_groups { name } }",
    '{ scaling_group(name: "default") { name } }',
    "{ agent_list(limit: 10, offset: 0) { total_count } }",
    "{ agents { id } }",
]


@pytest.mark.parametrize("who", ["dadmin", "member", "otheradmin"])
def test_tenants_get_403_for_infrastructure_and_nothing_reaches_the_log(lab: Lab, who: str) -> None:
    """The superadmin checks (``require_superadmin`` in sgroups/images, the agents'
    ``insufficient-privilege``, the per-domain check of ``scaling_groups_for_domain``):
    without any one of them the query answers 200, or a write appends its event."""
    head = asyncio.run(_head(lab))
    for query in WRITES:
        status, body = lab.gql(who, query)
        assert status == 403, (who, query, body)
        assert body["type"].rsplit("/", 1)[-1] in ("generic-forbidden", "insufficient-privilege")
    for path, method in (("/resource/watcher", "GET"), ("/resource/watcher/agent/stop", "POST")):
        status, body = lab.rest(who, method, path, {"agent_id": "x"})
        assert status == 403, body
    elsewhere = "lab2" if who != "otheradmin" else "default"
    status, body = lab.gql(
        who, f'{{ scaling_groups_for_domain(domain: "{elsewhere}") {{ name }} }}'
    )
    assert status == 403, body
    official = lab.bai("admin", "agent", "list", who=who)
    assert official.returncode != 0 and "403" in official.stdout + official.stderr
    added = lab.bai("admin", "scaling", "add", "sneaky", who=who)
    assert added.returncode != 0
    appended = asyncio.run(_appended_since(lab, head))
    assert not [t for t in appended if t.startswith(("scaling_group", "image"))], appended


async def _head(stack: Stack) -> str:
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        return str(await store.head())
    finally:
        await store.close()


async def _appended_since(stack: Stack, head: str) -> list[str]:
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        return [e.type for e in await store.read_log(head, 10_000)]
    finally:
        await store.close()
