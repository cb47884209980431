"""``kh admin ...`` (issue 29): the argument parsing and the confirmation rule without a stack
(typer's runner), then a real ``kh up`` where a superadmin runs a lab with ``kh`` alone and a
plain user is refused.

Without a stack, a command that got past its checks tries to reach an endpoint nothing
listens on and says so (exit 5): that is how these tests know it went ahead."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kernelhub.cli import app
from kernelhub.client_cli import admin_common
from kernelhub.client_cli.admin_common import parse_duration, parse_size, parse_slots
from kernelhub.sdk import AsyncClient, ClientConfig
from kernelhub.sdk.admin import AdminPage, AsyncAdmin, decode_record

from .khstack import Stack

# ---- without a stack ------------------------------------------------------------------------
GROUPS = {
    "domain": ["list", "info", "add", "update", "delete", "purge"],
    "project": [
        "list",
        "info",
        "add",
        "update",
        "delete",
        "purge",
        "add-member",
        "remove-member",
    ],
    "user": ["list", "info", "add", "update", "delete", "purge"],
    "keypair": ["list", "info", "add", "update", "activate", "deactivate", "delete"],
    "policy": ["list", "info", "add", "update", "delete"],
    "preset": ["list", "add", "update", "delete"],
    "sgroup": ["list", "info", "add", "update", "delete", "associate", "dissociate"],
    "image": ["list", "alias", "dealias"],
    "agent": ["list", "info"],
}
DESTRUCTIVE = [
    ["domain", "delete", "lab"],
    ["domain", "purge", "lab"],
    ["project", "delete", "physics"],
    ["project", "purge", "physics"],
    ["user", "delete", "a@lab"],
    ["user", "purge", "a@lab", "--force"],
    ["keypair", "deactivate", "AKTEST"],
    ["keypair", "delete", "AKTEST"],
    ["policy", "delete", "p"],
    ["preset", "delete", "p"],
    ["sgroup", "delete", "gpu"],
    ["sgroup", "dissociate", "gpu", "--domain", "lab"],
    ["image", "dealias", "py"],
]


def listed_commands(output: str) -> list[str]:
    return [line.split()[0] for line in output.split("Commands:")[1].splitlines() if line.strip()]


@pytest.fixture
def nowhere() -> dict[str, str]:
    """A configuration whose endpoint nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return {
        "BACKEND_ENDPOINT": f"http://127.0.0.1:{port}",
        "BACKEND_ACCESS_KEY": "AKIANOWHERE",
        "BACKEND_SECRET_KEY": "not-a-secret",
    }


def kh(args: list[str], env: dict[str, str], input: str | None = None) -> Any:
    return CliRunner().invoke(app, ["admin", *args], env=env, input=input)


def went_ahead(result: Any) -> bool:
    return bool(result.exit_code == 5 and "cannot reach" in result.stderr)


@pytest.mark.unit
def test_admin_lists_its_groups_and_each_group_its_verbs() -> None:
    shown = CliRunner().invoke(app, ["admin", "--help"])
    assert shown.exit_code == 0, shown.output
    assert listed_commands(shown.stdout) == list(GROUPS)
    for group, verbs in GROUPS.items():
        shown = CliRunner().invoke(app, ["admin", group, "--help"])
        assert shown.exit_code == 0, shown.output
        assert listed_commands(shown.stdout) == verbs, group


@pytest.mark.unit
@pytest.mark.parametrize("args", DESTRUCTIVE, ids=lambda a: " ".join(a[:2]))
def test_destructive_commands_are_refused_without_yes_when_nobody_can_answer(
    args: list[str], nowhere: dict[str, str]
) -> None:
    refused = kh(args, nowhere)
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.count("\n") == 1 and "pass --yes" in refused.stderr
    assert "Traceback" not in refused.output
    assert went_ahead(kh([*args, "--yes"], nowhere))


@pytest.mark.unit
def test_a_person_at_a_terminal_is_asked(
    nowhere: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_common, "stdin_is_terminal", lambda: True)
    declined = kh(["domain", "purge", "lab"], nowhere, input="n\n")
    assert declined.exit_code == 1 and "purge domain lab" in declined.stderr
    assert "nothing done" in declined.stderr
    assert went_ahead(kh(["domain", "purge", "lab"], nowhere, input="y\n"))


@pytest.mark.unit
def test_a_password_is_asked_twice_without_echo_or_read_from_stdin(
    nowhere: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add = ["user", "add", "a@lab", "--domain", "lab"]
    unasked = kh(add, nowhere)
    assert unasked.exit_code == 2 and "--password-stdin" in unasked.stderr
    assert went_ahead(kh([*add, "--password-stdin"], nowhere, input="pipe-secret\n"))
    assert kh([*add, "--password-stdin"], nowhere, input="\n").exit_code == 2  # empty
    assert kh([*add, "--password", "x", "--password-stdin"], nowhere).exit_code == 2
    monkeypatch.setattr(admin_common, "stdin_is_terminal", lambda: True)
    typed = kh(add, nowhere, input="typed-secret\ntyped-secret\n")
    assert went_ahead(typed)
    assert "Password" in typed.stderr and "Repeat" in typed.stderr
    assert "typed-secret" not in typed.output


@pytest.mark.unit
@pytest.mark.parametrize(
    "args",
    [
        ["user", "add", "a@lab", "--password", "x", "--role", "root"],
        ["user", "list", "--status", "gone"],
        ["policy", "add", "p", "--total-resource-slots", "cpu"],
        ["policy", "add", "p", "--total-resource-slots", "mem=lots"],
        ["policy", "add", "p", "--idle-timeout", "soon"],
        ["policy", "add", "p", "--exec-timeout", "0"],
        ["policy", "add", "p", "--default-for-unspecified", "MAYBE"],
        ["preset", "add", "p", "--slots", "cpu=1,cpu=2"],
        ["sgroup", "add", "gpu", "--scheduler", "random"],
        ["sgroup", "add", "gpu", "--driver-opts", "[1]"],
        ["sgroup", "associate", "gpu"],
        ["sgroup", "associate", "gpu", "--keypair", "AKTEST", "--in-domain", "lab"],
        ["domain", "add", "lab", "--total-resource-slots", "cpu=-1"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_arguments_are_usage_errors_before_any_request(
    args: list[str], nowhere: dict[str, str]
) -> None:
    refused = kh(args, nowhere)
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.startswith("kh: error: ") and refused.stderr.count("\n") == 1


@pytest.mark.unit
def test_slots_sizes_and_durations_parse_as_the_schema_takes_them() -> None:
    assert parse_slots("cpu=4,mem=8g,cuda.device=1", "-s") == {
        "cpu": "4",
        "mem": str(8 * 2**30),
        "cuda.device": "1",
    }
    assert parse_slots('{"cpu": 0.5, "cuda.mem": "1.5g"}', "-s") == {
        "cpu": "0.5",
        "cuda.mem": str(3 * 2**29),
    }
    assert parse_slots("", "-s") == {}
    assert parse_size("512m", "-x") == 512 * 2**20 and parse_size("1024", "-x") == 1024
    assert parse_duration("90", "-t") == 90 and parse_duration("30m", "-t") == 1800
    assert parse_duration("1d", "-t") == 86400
    for bad in ("1.5", "lots"):
        with pytest.raises(typer.Exit):
            parse_size(bad, "-x")


@pytest.mark.unit
def test_json_string_fields_are_decoded_once() -> None:
    record = {
        "name": "lab",
        "total_resource_slots": '{"cpu": "4"}',
        "description": '{"not": "decoded"}',
        "items": [{"occupied_slots": "{}"}],
    }
    assert decode_record(record) == {
        "name": "lab",
        "total_resource_slots": {"cpu": "4"},
        "description": '{"not": "decoded"}',
        "items": [{"occupied_slots": {}}],
    }


# ---- on a real stack -------------------------------------------------------------------------
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def stack(shared_stack: Stack) -> Stack:
    return shared_stack


@pytest.fixture(scope="module")
def lab(stack: Stack) -> dict[str, Any]:
    """As the superadmin: a domain, a project, a user (password via --password) in it, a
    policy, the user's keypair under it, and the default scaling group opened to all three."""
    run = stack.kh
    assert_ok(run("admin", "domain", "add", "lab", "--total-resource-slots", "cpu=8,mem=16g"))
    assert_ok(run("admin", "project", "add", "physics", "--domain", "lab", "-d", "particles"))
    made = assert_ok(
        run(
            "admin", "user", "add", "alice@lab.test", "--domain", "lab",
            "--password", PASSWORD, "--username", "alice", "--project", "physics",
        )
    )  # fmt: skip
    assert PASSWORD not in made.stdout + made.stderr
    assert_ok(
        run(
            "admin", "policy", "add", "one-at-a-time", "--max-concurrent-sessions", "1",
            "--total-resource-slots", "cpu=2,mem=2g", "--idle-timeout", "10m",
        )
    )  # fmt: skip
    issued = assert_ok(
        run("admin", "keypair", "add", "alice@lab.test", "--policy", "one-at-a-time", "--json")
    )
    keys = json.loads(issued.stdout)
    assert_ok(
        run(
            "admin", "sgroup", "associate", "default", "--domain", "lab",
            "--project", "physics", "--in-domain", "lab", "--keypair", keys["access_key"],
        )
    )  # fmt: skip
    return {
        "access_key": keys["access_key"],
        "secret_key": keys["secret_key"],
        "as_alice": {
            "BACKEND_ACCESS_KEY": keys["access_key"],
            "BACKEND_SECRET_KEY": keys["secret_key"],
            "BACKEND_DOMAIN": "lab",
            "BACKEND_GROUP": "physics",
        },
    }


def assert_ok(done: Any) -> Any:
    assert done.returncode == 0, (done.args, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done


def items(stack: Stack, *args: str, **env: str) -> list[dict[str, Any]]:
    done = assert_ok(stack.kh(*args, "--json", **env))
    listed: list[dict[str, Any]] = json.loads(done.stdout)["items"]
    return listed


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_superadmin_runs_a_lab_with_kh_alone(stack: Stack, lab: dict[str, Any]) -> None:
    table = assert_ok(stack.kh("admin", "domain", "list")).stdout
    assert "NAME" in table and "lab" in table and "cpu=8 mem=16g" in table
    domains = {d["name"]: d for d in items(stack, "admin", "domain", "list")}
    assert domains["lab"]["total_resource_slots"] == {"cpu": "8", "mem": str(16 * 2**30)}

    projects = items(stack, "admin", "project", "list", "--domain", "lab")
    assert [(p["name"], p["description"]) for p in projects] == [("physics", "particles")]
    by_id = info_json(stack, "project", "info", projects[0]["id"], "--domain", "lab")
    assert by_id["name"] == "physics"
    assert "physics" in assert_ok(stack.kh("admin", "project", "list", "--domain", "lab")).stdout

    users = json.loads(assert_ok(stack.kh("admin", "user", "list", "--json")).stdout)
    alice = next(u for u in users["items"] if u["email"] == "alice@lab.test")
    assert (alice["domain_name"], alice["username"], alice["role"]) == ("lab", "alice", "user")
    assert [g["name"] for g in alice["groups"]] == ["physics"]
    assert "alice@lab.test" in assert_ok(stack.kh("admin", "user", "list")).stdout
    filtered = items(stack, "admin", "user", "list", "--filter", 'email ilike "%@lab.test"')
    assert {u["email"] for u in filtered} == {"alice@lab.test"}
    in_lab = items(stack, "admin", "user", "list", "--domain", "lab")
    assert {u["email"] for u in in_lab} == {"alice@lab.test"}

    policy = json.loads(
        assert_ok(stack.kh("admin", "policy", "info", "one-at-a-time", "--json")).stdout
    )
    assert (policy["max_concurrent_sessions"], policy["idle_timeout"]) == (1, 600)
    assert policy["total_resource_slots"] == {"cpu": "2", "mem": str(2 * 2**30)}
    assert "one-at-a-time" in assert_ok(stack.kh("admin", "policy", "list")).stdout

    keypairs = assert_ok(stack.kh("admin", "keypair", "list", "--user", "alice@lab.test"))
    assert lab["access_key"] in keypairs.stdout and lab["secret_key"] not in keypairs.stdout
    listed = {
        k["access_key"]: k
        for k in items(stack, "admin", "keypair", "list", "--user", "alice@lab.test")
    }  # the one issued with her user (as 23.03 does) and ours
    assert listed[lab["access_key"]]["resource_policy"] == "one-at-a-time"
    assert len(listed) == 2 and not any("secret_key" in k for k in listed.values())

    agents = assert_ok(stack.kh("admin", "agent", "list")).stdout
    assert "ALIVE" in agents and "cpu=" in agents
    images = items(stack, "admin", "image", "list")
    assert any("python" in (i.get("aliases") or []) for i in images), images


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_new_user_works_as_themselves_and_is_refused_the_admin_surface(
    stack: Stack, lab: dict[str, Any]
) -> None:
    alice = lab["as_alice"]
    ran = assert_ok(stack.kh("run", "python", "-c", "print(6*7)", "--rm", **alice))
    assert ran.stdout == "42\n"
    refused = stack.kh("admin", "user", "list", **alice)
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "(403 " in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_destructive_commands_need_yes_off_a_terminal(stack: Stack, lab: dict[str, Any]) -> None:
    refused = stack.kh("admin", "keypair", "deactivate", lab["access_key"])
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    shown = assert_ok(stack.kh("admin", "keypair", "info", lab["access_key"], "--json"))
    assert json.loads(shown.stdout)["is_active"] is True

    assert_ok(stack.kh("admin", "keypair", "deactivate", lab["access_key"], "--yes"))
    shown = assert_ok(stack.kh("admin", "keypair", "info", lab["access_key"], "--json"))
    assert json.loads(shown.stdout)["is_active"] is False
    assert_ok(stack.kh("admin", "keypair", "activate", lab["access_key"]))
    shown = assert_ok(stack.kh("admin", "keypair", "info", lab["access_key"], "--json"))
    assert json.loads(shown.stdout)["is_active"] is True


def info_json(stack: Stack, *args: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(assert_ok(stack.kh("admin", *args, "--json")).stdout)
    return shown


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_every_noun_changes_and_shows_what_changed(stack: Stack, lab: dict[str, Any]) -> None:
    kh = stack.kh
    assert_ok(kh("admin", "domain", "update", "lab", "-d", "the lab"))
    assert info_json(stack, "domain", "info", "lab")["description"] == "the lab"
    assert "total resource slots" in assert_ok(kh("admin", "domain", "info", "lab")).stdout

    assert_ok(kh("admin", "project", "update", "physics", "--domain", "lab", "-d", "waves"))
    assert info_json(stack, "project", "info", "physics", "--domain", "lab")["description"] == (
        "waves"
    )
    assert_ok(kh("admin", "user", "update", "alice@lab.test", "--full-name", "Alice A"))
    assert info_json(stack, "user", "info", "alice@lab.test")["full_name"] == "Alice A"

    assert_ok(kh("admin", "policy", "update", "one-at-a-time", "--exec-timeout", "5m"))
    policy = info_json(stack, "policy", "info", "one-at-a-time")
    assert (policy["exec_timeout_s"], policy["max_concurrent_sessions"]) == (300.0, 1)
    assert_ok(kh("admin", "keypair", "update", lab["access_key"], "--rate-limit", "1234"))
    assert info_json(stack, "keypair", "info", lab["access_key"])["rate_limit"] == 1234

    assert_ok(kh("admin", "preset", "add", "small", "--slots", "cpu=1,mem=1g"))
    assert "cpu=1 mem=1g" in assert_ok(kh("admin", "preset", "list")).stdout
    assert_ok(kh("admin", "preset", "update", "small", "--slots", "cpu=2,mem=1g"))
    presets = {p["name"]: p for p in items(stack, "admin", "preset", "list")}
    assert presets["small"]["resource_slots"] == {"cpu": "2", "mem": str(2**30)}
    assert_ok(kh("admin", "preset", "delete", "small", "--yes"))
    assert "small" not in {p["name"] for p in items(stack, "admin", "preset", "list")}

    assert_ok(kh("admin", "sgroup", "add", "gpu", "-d", "GPUs", "--private"))
    assert info_json(stack, "sgroup", "info", "gpu")["is_public"] is False
    assert_ok(kh("admin", "sgroup", "update", "gpu", "--public"))
    assert info_json(stack, "sgroup", "info", "gpu")["is_public"] is True
    assert_ok(kh("admin", "sgroup", "associate", "gpu", "--domain", "lab"))
    assert_ok(kh("admin", "sgroup", "dissociate", "gpu", "--domain", "lab", "--yes"))
    assert_ok(kh("admin", "sgroup", "delete", "gpu", "--yes"))
    assert "gpu" not in {g["name"] for g in items(stack, "admin", "sgroup", "list")}

    assert_ok(kh("admin", "image", "alias", "py311", "kernelhub/python:3.11"))
    aliases = {a for i in items(stack, "admin", "image", "list") for a in i.get("aliases") or []}
    assert "py311" in aliases
    assert_ok(kh("admin", "image", "dealias", "py311", "--yes"))
    aliases = {a for i in items(stack, "admin", "image", "list") for a in i.get("aliases") or []}
    assert "py311" not in aliases and "python" in aliases

    first = items(stack, "admin", "agent", "list")[0]
    agent = info_json(stack, "agent", "info", first["id"])
    assert agent["status"] == "ALIVE" and "cpu" in agent["available_slots"]


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_user_joins_leaves_and_is_purged(stack: Stack, lab: dict[str, Any]) -> None:
    kh = stack.kh
    add = ("admin", "user", "add", "bob@lab.test", "--domain", "lab", "--password-stdin")
    made = assert_ok(kh(*add, input="bob's secret\n"))
    assert "bob's secret" not in made.stdout + made.stderr
    assert_ok(kh("admin", "project", "add-member", "physics", "bob@lab.test", "--domain", "lab"))
    members = items(stack, "admin", "user", "list", "--project", "physics", "--domain", "lab")
    assert "bob@lab.test" in {u["email"] for u in members}
    assert_ok(kh("admin", "project", "remove-member", "physics", "bob@lab.test", "--domain", "lab"))
    members = items(stack, "admin", "user", "list", "--project", "physics", "--domain", "lab")
    assert "bob@lab.test" not in {u["email"] for u in members}

    assert_ok(kh("admin", "user", "delete", "bob@lab.test", "--yes"))
    assert info_json(stack, "user", "info", "bob@lab.test")["status"] != "active"
    assert_ok(kh("admin", "user", "purge", "bob@lab.test", "--yes"))
    gone = kh("admin", "user", "info", "bob@lab.test")
    assert gone.returncode == 3 and gone.stderr.count("\n") == 1, gone.stderr
    missing = kh("admin", "domain", "info", "no-such-domain")
    assert missing.returncode == 3 and "(404 " in missing.stderr, missing.stderr


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_domain_admin_runs_their_domain_and_nothing_else(
    stack: Stack, lab: dict[str, Any]
) -> None:
    """The attacker is the lab's own admin: their domain's users are theirs, the rest of the
    installation (domains, scaling groups, another domain's users, the superadmin's keypair)
    is refused with one 403 line and stays as it was."""
    kh = stack.kh
    assert_ok(
        kh("admin", "user", "add", "carol@lab.test", "--domain", "lab", "--role", "admin",
           "--password", "carol's secret")
    )  # fmt: skip
    issued = assert_ok(kh("admin", "keypair", "add", "carol@lab.test", "--admin", "--json"))
    keys = json.loads(issued.stdout)
    carol = {
        "BACKEND_ACCESS_KEY": keys["access_key"],
        "BACKEND_SECRET_KEY": keys["secret_key"],
        "BACKEND_DOMAIN": "lab",
    }
    seen = {u["email"] for u in items(stack, "admin", "user", "list", "--limit", "100", **carol)}
    assert {"alice@lab.test", "carol@lab.test"} <= seen
    assert "admin@kernelhub.local" not in seen

    superadmin_key = stack.exports["BACKEND_ACCESS_KEY"]
    for attempt in (
        ("domain", "add", "evil"),
        ("domain", "purge", "default", "--yes"),
        ("user", "add", "mallory@default.test", "--domain", "default", "--password", "x"),
        ("keypair", "deactivate", superadmin_key, "--yes"),
        ("sgroup", "associate", "default", "--domain", "lab"),
        ("image", "dealias", "python", "--yes"),
    ):
        refused = kh("admin", *attempt, **carol)
        assert refused.returncode != 0 and refused.stdout == "", attempt
        assert refused.stderr.count("\n") == 1 and "(403 " in refused.stderr, (attempt, refused)
    assert "evil" not in {d["name"] for d in items(stack, "admin", "domain", "list")}
    assert info_json(stack, "keypair", "info", superadmin_key)["is_active"] is True
    aliases = {a for i in items(stack, "admin", "image", "list") for a in i.get("aliases") or []}
    assert "python" in aliases


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_user_with_a_live_session_is_deleted_only_with_force(
    stack: Stack, lab: dict[str, Any]
) -> None:
    kh = stack.kh
    assert_ok(
        kh("admin", "user", "add", "dave@lab.test", "--domain", "lab", "--project", "physics",
           "--password-stdin", input="dave's secret\n")
    )  # fmt: skip
    keys = json.loads(assert_ok(kh("admin", "keypair", "add", "dave@lab.test", "--json")).stdout)
    dave = {
        "BACKEND_ACCESS_KEY": keys["access_key"],
        "BACKEND_SECRET_KEY": keys["secret_key"],
        "BACKEND_DOMAIN": "lab",
        "BACKEND_GROUP": "physics",
    }
    assert_ok(kh("run", "python", "-c", "print(1)", "-n", "dave-live", **dave))

    refused = kh("admin", "user", "delete", "dave@lab.test", "--yes")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "live session" in refused.stderr and "(400 " in refused.stderr
    assert info_json(stack, "user", "info", "dave@lab.test")["status"] == "active"

    assert_ok(kh("admin", "user", "delete", "dave@lab.test", "--yes", "--force"))
    assert info_json(stack, "user", "info", "dave@lab.test")["status"] != "active"
    assert kh("ps", **dave).returncode != 0  # deactivated with the user: refused at the door


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_async_sdk_speaks_the_same_admin(stack: Stack, lab: dict[str, Any]) -> None:
    config = ClientConfig(
        endpoint=stack.exports["BACKEND_ENDPOINT"],
        access_key=stack.exports["BACKEND_ACCESS_KEY"],
        secret_key=stack.exports["BACKEND_SECRET_KEY"],
    )

    async def read() -> tuple[list[dict[str, Any]], AdminPage]:
        async with AsyncClient(config) as client:
            admin = AsyncAdmin(client)
            return await admin.domains(), await admin.keypairs(email="alice@lab.test")

    domains, keypairs = asyncio.run(read())
    assert "lab" in {d["name"] for d in domains}
    assert lab["access_key"] in {k["access_key"] for k in keypairs.items}
    assert keypairs.total == len(keypairs.items) and keypairs.limit == 20


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_what_was_made_is_removed_for_good(stack: Stack, lab: dict[str, Any]) -> None:
    kh = stack.kh
    assert_ok(kh("admin", "domain", "add", "scratch"))
    assert_ok(kh("admin", "project", "add", "tmp", "--domain", "scratch"))
    assert_ok(kh("admin", "project", "delete", "tmp", "--domain", "scratch", "--yes"))
    assert info_json(stack, "project", "info", "tmp", "--domain", "scratch")["is_active"] is False
    assert_ok(kh("admin", "project", "purge", "tmp", "--domain", "scratch", "--yes"))
    assert kh("admin", "project", "info", "tmp", "--domain", "scratch").returncode == 3
    assert_ok(kh("admin", "domain", "delete", "scratch", "--yes"))
    assert info_json(stack, "domain", "info", "scratch")["is_active"] is False
    assert_ok(kh("admin", "domain", "purge", "scratch", "--yes"))
    assert "scratch" not in {d["name"] for d in items(stack, "admin", "domain", "list")}

    assert_ok(kh("admin", "policy", "add", "scratch-policy"))
    assert_ok(kh("admin", "policy", "delete", "scratch-policy", "--yes"))
    assert "scratch-policy" not in {p["name"] for p in items(stack, "admin", "policy", "list")}

    issued = json.loads(assert_ok(kh("admin", "keypair", "add", "alice@lab.test", "--json")).stdout)
    assert_ok(kh("admin", "keypair", "delete", issued["access_key"], "--yes"))
    gone = kh("admin", "keypair", "info", issued["access_key"])
    assert gone.returncode == 3 and gone.stderr.count("\n") == 1, gone.stderr
