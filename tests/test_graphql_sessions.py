"""GraphQL that answers what is asked (issue 28, point 5): ``compute_session_list``'s
``filter``, ``order``, ``status`` and ``group_id``; ``group_name``, ``dependencies`` and the
containers' ``live_stat``; session references resolved as 23.03 resolves them.

The mini-languages and the stats' shape are pure and tested alone. The rest runs against one
``kh up`` (the process backend, so no containers), by two users of ``default/default`` (one
of them playing the attacker) and the superadmin, over signed HTTP and with the official
client's ``backend.ai ps --filter/--order``. Each test was run against the code before the
change and failed there (filters and orders were ignored, ``group_name`` was a placeholder,
``dependencies`` empty, ``live_stat`` null, a reused name resolved to whichever session the
name index saw last), but for the attacker's filters: they passed there too (a filter was
ignored, so it could not reach further than the scope) and guard the filter from ever reaching
past it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.domain.commands.tenancy import AddMember, CreateProject
from actors.gateway.gql_filter import (
    FilterLimits,
    QueryLanguageError,
    like,
    parse_filter,
    parse_order,
    select,
    session_row,
)
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.testing import eventually
from kernelhub.workload import Workload, append_steps
from projections.live_stats import metric_values
from projections.models import default_projections
from projections.queries import ReadModels, TooManyToScan
from projections.runtime import Projector
from projections.tenancy_queries import TenancyLookups

from .khstack import ROOT, Stack, second_tenant, signed_request

unit = pytest.mark.unit


# ---- the filter language, alone ------------------------------------------------------------
def _record(name: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": extra.pop("id", str(uuid.uuid4())),
        "name": name,
        "status": status,
        "type": extra.pop("type", "interactive"),
        "image": "python",
        "access_key": "AKALICE",
        "domain": "default",
        "cluster_mode": "single-node",
        "cluster_size": extra.pop("cluster_size", 1),
        "result": "undefined",
        "created_at": extra.pop("created_at", "2026-01-02T03:04:05.000Z"),
        "kernels": {"k1": {"image": "python", "agent": extra.pop("agent", "i-one")}},
        **extra,
    }


ROWS = [
    _record("train-a", "RUNNING", created_at="2026-01-01T00:00:00.000Z", agent="i-one"),
    _record("train-b", "PENDING", cluster_size=2, created_at="2026-01-03T00:00:00.000Z"),
    _record("eval-c", "TERMINATED", type="batch", created_at="2026-01-02T00:00:00.000Z"),
    _record("scratch", "RUNNING", status_info=None, agent="i-two"),
]


def names(text: str, order: str = "") -> list[str]:
    keep = parse_filter(text) if text else None
    sort = parse_order(order) if order else None
    rows = [(session_row(r, "default"), r["name"]) for r in ROWS]
    return select(rows, keep, sort)


@unit
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name == "train-a"', ["train-a"]),
        ('name != "train-a"', ["train-b", "eval-c", "scratch"]),
        ('name like "train-%"', ["train-a", "train-b"]),
        ('name like "TRAIN-%"', []),  # like is case-sensitive
        ('name ilike "TRAIN-%"', ["train-a", "train-b"]),
        ('name like "train-_"', ["train-a", "train-b"]),
        ('name contains "ai"', ["train-a", "train-b"]),
        ('status == "running"', ["train-a", "scratch"]),  # enum names in either case
        ('status in ["PENDING", "terminated"]', ["train-b", "eval-c"]),
        ('type == "BATCH"', ["eval-c"]),
        ("cluster_size > 1", ["train-b"]),
        ("cluster_size <= 1", ["train-a", "eval-c", "scratch"]),
        ('created_at >= "2026-01-02T00:00:00+00:00"', ["train-b", "eval-c", "scratch"]),
        ('created_at < "2026-01-02"', ["train-a"]),  # a naive time is UTC
        ('agent_ids == "i-two"', ["scratch"]),  # a list field: any item
        ('group_name == "default"', ["train-a", "train-b", "eval-c", "scratch"]),
        ("status_info == null", ["train-a", "train-b", "eval-c", "scratch"]),
        ("status_info is null", ["train-a", "train-b", "eval-c", "scratch"]),
        ("status_info != null", []),
        ('name == "train-a" | name == "eval-c"', ["train-a", "eval-c"]),
        ('(name like "train%") & status == "pending"', ["train-b"]),
        ('!status == "RUNNING"', ["train-b", "eval-c"]),
        # 23.03's parser: & and | bind equally, to the right; ! covers the rest
        ('name == "x" & name == "y" | name == "train-a"', []),
        ('(name == "x" & name == "y") | name == "train-a"', ["train-a"]),
        ('!status == "PENDING" & name == "train-b"', ["train-a", "eval-c", "scratch"]),
    ],
)
def test_a_filter_keeps_what_it_says(text: str, expected: list[str]) -> None:
    assert names(text) == expected


@unit
def test_an_order_sorts_by_its_keys_then_keeps_the_given_order() -> None:
    assert names("", "+name") == ["eval-c", "scratch", "train-a", "train-b"]
    assert names("", "-name") == ["train-b", "train-a", "scratch", "eval-c"]
    assert names("", "-cluster_size, +name") == ["train-b", "eval-c", "scratch", "train-a"]
    assert names("", "created_at") == ["train-a", "eval-c", "scratch", "train-b"]
    # enums sort in their declared order (PENDING < RUNNING < TERMINATED), ties as given
    assert names("", "+status") == ["train-b", "train-a", "scratch", "eval-c"]
    assert names('status == "running"', "-name") == ["train-a", "scratch"]


@unit
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("secret_key == 1", "unknown field 'secret_key'"),
        ('password like "%"', "unknown field 'password'"),
        ('status < "RUNNING"', "does not order status"),
        ('status == "SLEEPING"', "expected one of"),
        ('created_at > "yesterday"', "ISO 8601"),
        ('cluster_size == "two"', "integer"),
        ('name in "x"', "takes a [list]"),
        ("name is 3", "null, true or false"),
        ('name == "a" &', "ends where"),
        ('name = "a"', "unexpected"),
        ("name == ", "ends where"),
        ('(name == "a"', "ends where"),
        ('name == "a")', "unexpected ')'"),
        ('name == "a"; drop', "unexpected ';'"),
        ("__import__('os') == 1", "unexpected"),
    ],
)
def test_a_filter_that_cannot_be_honoured_is_refused_naming_why(text: str, says: str) -> None:
    with pytest.raises(QueryLanguageError) as refused:
        parse_filter(text)
    assert refused.value.error_type == "invalid-api-params"
    assert says in refused.value.msg and "filter" in refused.value.data


@unit
def test_an_order_on_an_unknown_field_is_refused() -> None:
    for text, says in (
        ("+secret_key", "unknown field 'secret_key'"),
        ("name;", "is not [+|-]field"),
        ("name,,status", "an empty key"),
    ):
        with pytest.raises(QueryLanguageError) as refused:
            parse_order(text)
        assert says in refused.value.msg and "order" in refused.value.data


@unit
def test_a_filter_is_bounded_in_size_terms_depth_and_lists() -> None:
    limits = FilterLimits()
    for text, says in (
        ('name == "a" | ' * 40 + 'name == "b"', "more than 32 comparisons"),
        ("(" * 20 + 'name == "a"' + ")" * 20, "nested deeper than 16"),
        ("!" * 20 + 'name == "a"', "nested deeper than 16"),
        ("name in [" + ",".join(['"x"'] * 101) + "]", "more than 100 values"),
        ('name like "' + "%" * 300 + '"', "longer than 256"),
        ("x" * 3000, "longer than 2048"),
    ):
        with pytest.raises(QueryLanguageError) as refused:
            parse_filter(text, limits)
        assert says in refused.value.msg, refused.value.msg


@unit
def test_like_never_backtracks_without_bound() -> None:
    started = time.monotonic()
    assert not like("a" * 4000, "%a" * 120 + "b")
    assert time.monotonic() - started < 2.0
    assert like("50%", r"50\%") and not like("500", r"50\%")
    assert like("a_b", r"a\_b") and not like("axb", r"a\_b")
    assert like("", "%") and not like("", "_")


# ---- live stats, alone ---------------------------------------------------------------------
@unit
def test_live_stats_have_23_03s_metric_shape() -> None:
    stats = {"cpu_ticks": 250, "rss_bytes": 64 * 2**20, "at": 1, "agent": "i-one"}
    series = {"cpu_util": [10.0, 30.0, 20.0], "cuda_util": [50.0]}
    values = metric_values((stats, series), {"cpu": "2", "mem": str(256 * 2**20)})
    assert values is not None
    assert values["mem"] == {
        "current": str(64 * 2**20),
        "capacity": str(256 * 2**20),
        "pct": "25",
        "unit_hint": "bytes",
    }
    cpu = values["cpu_util"]
    assert (cpu["current"], cpu["capacity"], cpu["pct"], cpu["unit_hint"]) == (
        "40",
        "200",
        "20",
        "percent",
    )
    assert (cpu["stats.min"], cpu["stats.max"], cpu["stats.avg"]) == ("20", "60", "40")
    ticks = os.sysconf("SC_CLK_TCK")
    assert values["cpu_used"]["unit_hint"] == "msec"
    assert float(values["cpu_used"]["current"] or 0) == pytest.approx(250 * 1000 / ticks, 0.01)
    assert values["cuda_util"]["pct"] == "50"
    assert metric_values((None, None), {"cpu": "1"}) is None


# ---- the read model's side, against a real Redis ------------------------------------------
@pytest.mark.redis
async def test_references_and_candidates_come_from_indexes_within_bounds(
    store: RedisEventStore,
) -> None:
    await append_steps(store, Workload(sessions=40, agents=2, seed=5).steps())
    await Projector(store, default_projections()).catch_up()
    models = ReadModels(store)
    everything = (await models.sessions(limit=1000)).items
    some = everything[0]
    owner = str(some["access_key"])
    theirs = [r for r in everything if r["access_key"] == owner]
    await store.redis.config_resetstat()
    # a name finds every session of the keypair bearing it, and only the keypair's
    assert [r["id"] for r in await models.sessions_named(owner, some["name"])] == [some["id"]]
    assert await models.sessions_named("AK-NOBODY", some["name"]) == []
    # a prefix of an id, or of a name, newest first, at most the limit
    by_id = await models.sessions_prefixed(owner, str(some["id"])[:8])
    assert [r["id"] for r in by_id] == [some["id"]]
    by_name = await models.sessions_prefixed(owner, "", limit=3)
    assert [r["id"] for r in by_name] == [r["id"] for r in theirs[:3]]
    # a filtered listing reads the narrowest index, and refuses past its bound
    candidates = await models.session_candidates(owner=owner, bound=1000)
    assert [r["id"] for r in candidates] == [r["id"] for r in theirs]
    with pytest.raises(TooManyToScan) as over:
        await models.session_candidates(bound=len(everything) - 1)
    assert (over.value.count, over.value.bound) == (len(everything), len(everything) - 1)
    stats = await store.redis.info("commandstats")
    used = {name.removeprefix("cmdstat_") for name in stats}
    assert "zrangebylex" in used and not used & {"scan", "keys", "hscan", "zscan"}, used


# ---- on a real stack -----------------------------------------------------------------------
@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str


@dataclass
class World:
    stack: Stack
    superadmin: Keys
    alice: Keys
    mallory: Keys
    ids: dict[str, str]


def on_stack(test: Any) -> Any:
    return pytest.mark.timeout(600)(pytest.mark.e2e(test))


@pytest.fixture(scope="module")
def world(process_stack: Stack) -> World:
    return asyncio.run(_populate(process_stack))  # the shared stack, on the process backend


async def _populate(stack: Stack) -> World:
    superadmin = Keys(stack.exports["BACKEND_ACCESS_KEY"], stack.exports["BACKEND_SECRET_KEY"])
    alice = Keys(*await second_tenant(stack, "alice"))
    mallory = Keys(*await second_tenant(stack, "mallory"))
    await _second_project(stack, alice.access_key)
    world = World(stack, superadmin, alice, mallory, {})
    for keys, name, extra in (
        (alice, "gql-alpha", {"enqueueOnly": True, "tag": "nightly"}),
        (alice, "gql-beta", {"enqueueOnly": True, "group": "ml-team"}),
        (mallory, "gql-mallorys", {"enqueueOnly": True}),
    ):
        status, body = call(world, keys, "POST", "/session", _create(name, **extra))
        assert status == 201, body
        world.ids[name] = body["sessionId"]
    status, body = call(
        world,
        alice,
        "POST",
        "/session",
        _create(
            "gql-after",
            type="batch",
            startupCommand="true",
            dependencies=["gql-alpha"],
            enqueueOnly=True,
        ),
    )
    assert status == 201, body
    world.ids["gql-after"] = body["sessionId"]
    deadline = time.monotonic() + 240  # gql-after stays PENDING (it waits for gql-alpha to end)
    while (info := call(world, alice, "GET", "/session/gql-alpha")[1]).get("status") != "RUNNING":
        assert time.monotonic() < deadline, f"gql-alpha never ran: {info}"
        await asyncio.sleep(0.5)
    return world


async def _second_project(stack: Stack, access_key: str) -> None:
    """``ml-team``, a project of the default domain that alice belongs to as well (so a
    session's ``group_name`` is not the default's name by chance)."""
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        box = SecretBox.from_file(stack.root / "data" / "master.key")
        tenancy = await TenancyService(store, box).load()
        project = await tenancy.handle(CreateProject(name="ml-team", domain="default"))
        lookups = TenancyLookups(store)
        keypair = await lookups.keypair(access_key) or {}
        user = uuid.UUID(str(keypair["user_id"]))
        await tenancy.handle(AddMember(project_id=project, user_id=user))

        async def member() -> bool:
            found = await lookups.project(str(project)) or {}
            return str(user) in {str(m) for m in found.get("members") or ()}

        await eventually(member, timeout=20, message="alice in ml-team")
    finally:
        await store.close()


def _create(name: str, **extra: Any) -> dict[str, Any]:
    """A session of the image's least size (the test machine's agent may have two cores for
    all of them: only gql-alpha needs to run)."""
    return {"name": name, "image": "python", **extra}


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


ALL = "PENDING,SCHEDULED,PREPARING,RUNNING,RUNNING_DEGRADED,TERMINATING,ERROR,CANCELLED,TERMINATED"
LIST = (
    "query($limit: Int!, $offset: Int!, $status: String, $filter: String, $order: String,"
    " $group_id: String, $access_key: String) {"
    " compute_session_list(limit: $limit, offset: $offset, status: $status, filter: $filter,"
    " order: $order, group_id: $group_id, access_key: $access_key) {"
    " items { id name status group_name group_id access_key } total_count } }"
)


def listing(world: World, keys: Keys, **variables: Any) -> tuple[int, Any]:
    variables = {"limit": 100, "offset": 0, "status": ALL, **variables}
    return call(world, keys, "POST", "/admin/gql", {"query": LIST, "variables": variables})


def listed(world: World, keys: Keys, **variables: Any) -> list[str]:
    status, body = listing(world, keys, **variables)
    assert status == 200 and "errors" not in body, body
    items = body["data"]["compute_session_list"]["items"]
    assert body["data"]["compute_session_list"]["total_count"] == len(items)
    return [item["name"] for item in items]


@on_stack
def test_filters_and_orders_choose_and_sort_the_sessions(world: World) -> None:
    alice = world.alice
    assert listed(world, alice, filter='name like "gql-%"', order="+name") == [
        "gql-after",
        "gql-alpha",
        "gql-beta",
    ]
    assert listed(world, alice, filter='name like "gql-%"', order="-name") == [
        "gql-beta",
        "gql-alpha",
        "gql-after",
    ]
    assert listed(world, alice, filter='name ilike "GQL-A%"', order="-created_at") == [
        "gql-after",
        "gql-alpha",
    ]
    assert listed(
        world, alice, filter='(name == "gql-alpha" | name == "gql-after") & type == "batch"'
    ) == ["gql-after"]
    assert listed(world, alice, filter='name like "gql-a%"', status="PENDING") == [
        "gql-after"  # waits for gql-alpha to end
    ]
    assert listed(world, alice, filter='name like "gql-a%"', status="RUNNING") == ["gql-alpha"]
    paged = listing(world, alice, filter='name like "gql-%"', order="+name", limit=1, offset=1)
    page = paged[1]["data"]["compute_session_list"]
    assert ([i["name"] for i in page["items"]], page["total_count"]) == (["gql-alpha"], 3)


@on_stack
def test_group_id_lists_a_projects_sessions_and_group_name_is_the_project(world: World) -> None:
    _, body = listing(world, world.alice, filter='name like "gql-%"', order="+name")
    items = body["data"]["compute_session_list"]["items"]
    projects = {item["name"]: (item["group_name"], item["group_id"]) for item in items}
    assert projects["gql-beta"][0] == "ml-team"  # the project's real name
    assert projects["gql-alpha"][0] == projects["gql-after"][0] == "default"
    ml_team, default = projects["gql-beta"][1], projects["gql-alpha"][1]
    assert listed(world, world.alice, group_id=ml_team) == ["gql-beta"]
    assert listed(
        world, world.alice, group_id=default, filter='name like "gql-%"', order="+name"
    ) == [
        "gql-after",
        "gql-alpha",
    ]
    assert listed(world, world.alice, group_id=str(uuid.uuid4())) == []
    assert listed(world, world.alice, filter='group_name == "ml-team"') == ["gql-beta"]
    assert listed(world, world.alice, order="-group_name, +name", filter='name like "gql-%"') == [
        "gql-beta",
        "gql-after",
        "gql-alpha",
    ]


@on_stack
def test_what_cannot_be_honoured_is_a_400_naming_it(world: World) -> None:
    for variables, field, says in (
        ({"filter": "secret_key == 1"}, "filter", "unknown field 'secret_key'"),
        ({"order": "-password"}, "order", "unknown field 'password'"),
        ({"status": "RUNNING,SLEEPING"}, "status", "unknown status SLEEPING"),
        ({"filter": 'name like "%" &'}, "filter", "ends where"),
    ):
        status, body = listing(world, world.alice, **variables)
        assert status == 400, body
        assert body["type"].endswith("/invalid-api-params"), body
        assert says in body["msg"] and field in body["data"], body


@on_stack
def test_a_filter_cannot_reach_another_tenants_sessions(world: World) -> None:
    mallory, alice = world.mallory, world.alice
    for text in (
        'name == "gql-alpha"',
        f'access_key == "{alice.access_key}"',
        f'id == "{world.ids["gql-alpha"]}"',
        'name like "%" | access_key != "nobody"',
        "!(name == null)",
    ):
        names = listed(world, mallory, filter=text)
        assert not {"gql-alpha", "gql-beta", "gql-after"} & set(names), (text, names)
    _, body = listing(world, mallory, access_key=alice.access_key, filter='name like "%"')
    assert body["data"] is None or body["data"]["compute_session_list"] is None, body
    # the control: the superadmin's same filter finds it
    assert "gql-alpha" in listed(world, world.superadmin, filter='name == "gql-alpha"')


DETAIL = (
    "query($id: UUID!) { compute_session(id: $id) { name tag group_name dependencies { name id }"
    " containers { id status live_stat last_stat } } }"
)


def detail(world: World, keys: Keys, session_id: str) -> Any:
    status, body = call(
        world, keys, "POST", "/admin/gql", {"query": DETAIL, "variables": {"id": session_id}}
    )
    assert status == 200 and "errors" not in body, body
    return body["data"]["compute_session"]


@on_stack
def test_dependencies_and_the_tag_are_listed(world: World) -> None:
    after = detail(world, world.alice, world.ids["gql-after"])
    assert after["dependencies"] == [{"name": "gql-alpha", "id": world.ids["gql-alpha"]}]
    alpha = detail(world, world.alice, world.ids["gql-alpha"])
    assert (alpha["dependencies"], alpha["tag"]) == ([], "nightly")
    assert (after["tag"], after["group_name"]) == (None, "default")


@on_stack
def test_a_running_session_has_live_stats(world: World) -> None:
    deadline = time.monotonic() + 90  # the next heartbeat, then the next sample
    while True:
        (container,) = detail(world, world.alice, world.ids["gql-alpha"])["containers"]
        if container["live_stat"] is not None or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert container["status"] == "RUNNING"
    assert isinstance(container["live_stat"], str), container  # a JSON string, as 23.03's
    stats = json.loads(container["live_stat"])
    assert stats["mem"]["unit_hint"] == "bytes" and int(stats["mem"]["current"]) > 0, stats
    assert stats["mem"]["capacity"] is not None and stats["cpu_used"]["unit_hint"] == "msec"
    assert container["last_stat"] is not None  # the latest measurement
    assert detail(world, world.mallory, world.ids["gql-alpha"]) is None  # not hers to see


@on_stack
def test_a_reused_name_is_ambiguous_where_ended_sessions_count(world: World) -> None:
    alice = world.alice
    status, first = call(world, alice, "POST", "/session", _create("gql-dup", enqueueOnly=True))
    assert status == 201, first
    assert call(world, alice, "DELETE", "/session/gql-dup?forced=true")[0] == 200
    deadline = time.monotonic() + 60
    while call(world, alice, "GET", "/session/gql-dup")[0] != 404:
        assert time.monotonic() < deadline, "the first gql-dup never ended"
        time.sleep(0.5)
    status, second = call(world, alice, "POST", "/session", _create("gql-dup", enqueueOnly=True))
    assert status == 201, second
    assert second["sessionId"] != first["sessionId"]
    # live sessions only: the name is the second's alone
    status, info = call(world, alice, "GET", "/session/gql-dup")
    assert status == 200 and info["sessionId"] == second["sessionId"], info
    # the logs count ended sessions too: two bear the name, as 23.03 says
    status, body = call(world, alice, "GET", "/session/gql-dup/logs")
    assert status == 404, body
    assert body["type"].endswith("/too-many-sessions-matched"), body
    matched = body["data"]["matches"]
    assert [m["id"] for m in matched] == [second["sessionId"], first["sessionId"]]  # newest first
    assert {m["name"] for m in matched} == {"gql-dup"} and all(m["status"] for m in matched)
    # by id, no ambiguity
    status, body = call(world, alice, "GET", f"/session/{first['sessionId']}/logs")
    assert not str((body or {}).get("type", "")).endswith("/too-many-sessions-matched"), body
    # a prefix finds both, among her sessions only
    status, body = call(world, alice, "GET", "/session/_/match?id=gql-du")
    assert status == 200 and {m["id"] for m in body["matches"]} == {
        first["sessionId"],
        second["sessionId"],
    }, body
    status, body = call(world, alice, "GET", f"/session/_/match?id={first['sessionId'][:13]}")
    assert status == 200 and [m["id"] for m in body["matches"]] == [first["sessionId"]], body
    status, body = call(world, world.mallory, "GET", "/session/_/match?id=gql-")
    assert status == 200 and {m["name"] for m in body["matches"]} == {"gql-mallorys"}, body
    path = f"/session/_/match?id=gql-du&owner_access_key={alice.access_key}"
    assert call(world, world.mallory, "GET", path)[0] == 403  # owner_access_key: admins only
    status, body = call(world, world.superadmin, "GET", path)
    assert status == 200 and len(body["matches"]) == 2, body
    assert call(world, alice, "DELETE", "/session/gql-dup?forced=true")[0] == 200


# ---- the official client ---------------------------------------------------------------------
def _client() -> Path:
    return Path(os.environ.get("KH_BAI_CLIENT") or ROOT / ".venv-bai" / "bin" / "backend.ai")


@on_stack
def test_the_official_client_ps_filters_and_orders(world: World) -> None:
    if not _client().exists():
        pytest.skip(f"the official client is not installed at {_client()}")
    env = world.stack.env(
        BACKEND_ACCESS_KEY=world.alice.access_key, BACKEND_SECRET_KEY=world.alice.secret_key
    )

    def ps(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(_client()), "--output", "json", "ps", "--all", *args],
            env=env,
            cwd=world.stack.workdir,
            capture_output=True,
            text=True,
            timeout=180,
        )

    listed_ = ps("--filter", 'name like "gql-a%"', "--order=-name")
    assert listed_.returncode == 0, listed_.stderr
    items = json.loads(listed_.stdout)["items"]
    assert [i["name"] for i in items] == ["gql-alpha", "gql-after"]
    assert {i["group_name"] for i in items} == {"default"}  # both in the default project
    refused = ps("--filter", "nope == 1")
    assert refused.returncode != 0
    assert "nope" in refused.stdout + refused.stderr
