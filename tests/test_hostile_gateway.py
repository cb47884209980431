"""A tenant against the gateway (issue 26, attacks 2 and 8): creating in another tenant's
project, depending on another tenant's session, a domain admin's GraphQL reaching past the
domain, GraphQL documents built to be expensive, streams opened until the gateway stalls,
unauthenticated floods, made-up access keys, and a signature that is not ASCII.

The pure parts (the scope rules, the GraphQL cost walk, the bounded cache, the per-peer
limiter, the stream caps) are tested alone; the attacks are replayed over HTTP against one
``kh up`` (the process backend, the operator having opted in, so no containers are needed)
by a plain user of ``default/default`` and a domain admin of another domain. Each attack test
was run against the code before the fix and failed there.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from graphql import parse

from actors.domain.commands.tenancy import (
    Associate,
    CreateDomain,
    CreateProject,
    CreateUser,
    IssueKeypair,
)
from actors.gateway.auth import Authenticator
from actors.gateway.gql_limits import QueryLimits, QueryTooComplex, measure, parse_bounded
from actors.gateway.log_tail import LogTail
from actors.gateway.problems import AuthorizationFailed
from actors.gateway.ratelimit import PeerLimiter
from actors.gateway.scope import creation_refusal, visible
from actors.gateway.stream_limits import StreamLimits, TooManyStreams, is_stream
from actors.tenancy.cache import RefreshingCache
from actors.tenancy.writer import TenancyService
from events import NewEvent, RedisEventStore
from events.catalogue import SessionEnqueued
from events.secrets import SecretBox
from kernelhub.sdk._wire import signed_headers
from kernelhub.signing import sign
from kernelhub.testing import eventually
from projections.tenancy_queries import TenancyLookups

from .khstack import Stack, exchange, kh_up, second_tenant, signed_request

pytestmark = pytest.mark.hostile

unit = pytest.mark.unit
T = TypeVar("T")


def on_stack(test: T) -> T:
    """A test against the module's ``kh up`` (the e2e layer: one stack, started once)."""
    return pytest.mark.timeout(600)(pytest.mark.e2e(test))  # type: ignore[no-any-return]


# ---- the pure rules ------------------------------------------------------------------------
@dataclass(frozen=True)
class Who:
    access_key: str
    domain: str
    role: str = "user"
    is_admin: bool = False

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"

    @property
    def may_act_for_others(self) -> bool:
        return self.is_superadmin or self.role == "admin" or self.is_admin


USER = Who("AKUSER", "default")
DOMAIN_ADMIN = Who("AKADMIN", "research", role="admin")
SUPER = Who("AKSUPER", "default", role="superadmin")
GPU_TEAM = {"project_id": "p1", "domain": "research", "members": ["u-admin"], "is_active": True}
DEFAULT = {"project_id": "p0", "domain": "default", "members": ["u-user"], "is_active": True}


@unit
def test_a_user_creates_only_in_projects_of_their_domain_they_belong_to() -> None:
    assert creation_refusal(USER, "u-user", "default", "default", DEFAULT) is None
    assert creation_refusal(USER, "u-user", "default", "research", GPU_TEAM) is not None
    not_member = {**DEFAULT, "members": ["someone"]}
    assert creation_refusal(USER, "u-user", "default", "default", not_member) is not None
    assert creation_refusal(USER, "u-user", "default", "default", None) is not None
    inactive = {**DEFAULT, "is_active": False}
    assert creation_refusal(USER, "u-user", "default", "default", inactive) is not None


@unit
def test_a_domain_admin_creates_in_any_project_of_their_domain_only() -> None:
    assert creation_refusal(DOMAIN_ADMIN, "u-x", "research", "research", GPU_TEAM) is None
    assert creation_refusal(DOMAIN_ADMIN, "u-x", "research", "default", DEFAULT) is not None
    keypair_admin = Who("AKKP", "research", is_admin=True)
    assert creation_refusal(keypair_admin, "u-x", "research", "research", GPU_TEAM) is None
    assert creation_refusal(keypair_admin, "u-x", "research", "default", DEFAULT) is not None


@unit
def test_a_superadmin_creates_anywhere_and_sees_everything() -> None:
    assert creation_refusal(SUPER, "u-y", "default", "research", GPU_TEAM) is None
    assert visible(SUPER, {"access_key": "AKOTHER", "domain": "research"})


@unit
def test_who_sees_a_session() -> None:
    theirs = {"access_key": "AKOTHER", "domain": "default"}
    assert visible(USER, {"access_key": "AKUSER", "domain": "default"})
    assert not visible(USER, theirs)
    assert not visible(DOMAIN_ADMIN, theirs)
    assert visible(DOMAIN_ADMIN, {**theirs, "domain": "research"})


# ---- GraphQL cost ----------------------------------------------------------------------------
LIMITS = QueryLimits()
CLIENT_LIST = """
query($limit: Int!, $offset: Int!, $status: String) {
  compute_session_list(limit: $limit, offset: $offset, status: $status) {
    items { id name type image status status_info status_data created_at terminated_at
      occupying_slots access_key group_name domain_name scaling_group idle_checks
      containers { id agent status occupied_slots live_stat last_stat } }
    total_count
  }
}"""


def cost(query: str, **variables: Any) -> int:
    document = parse_bounded(query, LIMITS)
    assert not isinstance(document, Exception), document
    return measure(document, variables, LIMITS).cost


@unit
def test_the_clients_own_queries_are_within_the_limits() -> None:
    assert cost(CLIENT_LIST, limit=100, offset=0) < LIMITS.max_cost
    assert cost("{ keypair { access_key secret_key user_info { email } } }") == 5


@unit
def test_aliases_of_a_full_page_are_refused() -> None:
    one = "compute_session_list(limit: 100, offset: 0) { items { id name status } }"
    query = "{ " + " ".join(f"a{i}: {one}" for i in range(12)) + " }"
    with pytest.raises(QueryTooComplex, match=r"aliases|cost|top-level"):
        cost(query)


@unit
def test_a_page_size_in_a_variable_is_counted() -> None:
    small = cost(CLIENT_LIST, limit=1, offset=0)
    assert cost(CLIENT_LIST, limit=100, offset=0) > 50 * small
    assert cost(CLIENT_LIST, offset=0) == cost(CLIENT_LIST, limit=100, offset=0)  # unknown: max


@unit
def test_deep_nesting_is_refused() -> None:
    inner = "id"
    for _ in range(10):
        inner = f"dependencies {{ {inner} }}"
    query = f'{{ compute_session(id: "{uuid.uuid4()}") {{ {inner} }} }}'
    with pytest.raises(QueryTooComplex, match="cost"):  # lists of lists: the cost first
        cost(query)
    document = parse(query)
    with pytest.raises(QueryTooComplex, match="depth"):  # and the depth, whatever the cost
        measure(document, {}, QueryLimits(max_cost=10**12))


@unit
def test_fragments_that_explode_are_refused_after_a_bounded_walk() -> None:
    fragments = ["fragment f0 on ComputeSession { id name }"]
    for i in range(1, 30):  # 2**30 fields once expanded
        fragments.append(f"fragment f{i} on ComputeSession {{ ...f{i - 1} ...f{i - 1} }}")
    query = '{ compute_session(id: "x") { ...f29 } } ' + " ".join(fragments)
    started = time.perf_counter()
    with pytest.raises(QueryTooComplex, match="fields"):
        cost(query)
    assert time.perf_counter() - started < 5  # refused after a few hundred steps, not 2**30


@unit
def test_a_huge_document_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(QueryTooComplex, match="bytes"):
        parse_bounded("{ keypair { access_key } }" + " " * LIMITS.max_bytes, LIMITS)
    with pytest.raises(QueryTooComplex, match="tokens"):
        parse_bounded("{ " + "id " * (LIMITS.max_tokens + 1) + "}", LIMITS)


@unit
def test_a_cyclic_fragment_does_not_loop_the_walk() -> None:
    document = parse(
        '{ compute_session(id: "x") { ...a } } fragment a on ComputeSession { id ...a }'
    )
    assert measure(document, {}, LIMITS).fields == 2


# ---- the bounded cache, the per-peer limiter, the stream caps ------------------------------
@unit
async def test_unknown_keys_never_grow_the_cache_past_its_bound() -> None:
    loads: list[str] = []

    async def load(key: str) -> str | None:
        loads.append(key)
        return f"secret-of-{key}" if key.startswith("AK") else None

    cache: RefreshingCache[str, str | None] = RefreshingCache(
        load, ttl_s=60, absent_ttl_s=60, max_absent=100, max_entries=1_000
    )
    assert await cache.get("AKREAL") == "secret-of-AKREAL"
    for i in range(5_000):
        assert await cache.get(f"made-up-{i}") is None
    assert len(cache) <= 101
    assert cache.cached("AKREAL")  # a flood of made-up keys does not evict the real ones
    before = len(loads)
    assert await cache.get("made-up-4999") is None  # remembered (within its TTL): no load
    assert len(loads) == before


@unit
async def test_an_unknown_key_is_forgotten_after_its_ttl() -> None:
    answer: dict[str, str | None] = {"k": None}

    async def load(key: str) -> str | None:
        return answer[key]

    cache: RefreshingCache[str, str | None] = RefreshingCache(load, ttl_s=60, absent_ttl_s=0.05)
    assert await cache.get("k") is None
    answer["k"] = "issued since"
    await eventually(lambda: cache.get("k"), timeout=5, message="the new key")
    assert len(cache) == 1


@unit
def test_the_peer_limiter_refuses_past_the_allowance_and_refills() -> None:
    now = [0.0]
    peers = PeerLimiter(limit=3, window_s=30, max_peers=10, clock=lambda: now[0])
    assert [peers.fail("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert peers.over("10.0.0.1") and not peers.over("10.0.0.2")
    now[0] += 10  # a third of the window: one failure's worth back
    assert not peers.over("10.0.0.1")
    assert peers.fail("10.0.0.1") and not peers.fail("10.0.0.1")
    now[0] += 30
    assert peers.remaining("10.0.0.1") == 3


@unit
def test_the_peer_table_is_bounded() -> None:
    peers = PeerLimiter(limit=1, window_s=900, max_peers=50)
    for i in range(10_000):
        peers.fail(f"peer-{i}")
    assert len(peers) == 50


@unit
def test_streams_are_capped_per_keypair_and_in_all() -> None:
    limits = StreamLimits(per_keypair=2, total=3)
    with limits.hold("a"), limits.hold("a"):
        with pytest.raises(TooManyStreams), limits.hold("a"):
            pass
        with limits.hold("b"):
            with pytest.raises(TooManyStreams, match="gateway"), limits.hold("c"):
                pass
        assert limits.open_streams("a") == 2 and limits.open_streams() == 2
    with pytest.raises(RuntimeError), limits.hold("a"):
        raise RuntimeError("the stream failed")
    assert limits.open_streams() == 0  # every slot back, a failed stream's too


@unit
def test_only_long_lived_requests_count_as_streams() -> None:
    assert is_stream("/events/session", "GET", None)
    assert is_stream("/stream/session/{ref}/pty", "GET", "websocket")
    assert not is_stream("/stream/session/{ref}/apps", "GET", None)
    assert not is_stream("/session/{ref}", "GET", "websocket")


@unit
def test_a_signature_over_odd_header_bytes_is_computed_not_raised() -> None:
    assert len(sign("secret", datetime.now(UTC), "h\udcffost", "text\udce9")) == 64


# ---- the authenticator against real Redis -----------------------------------------------------
def _request(access_key: str, signature: str = "0" * 64) -> Any:
    now = datetime.now(UTC).isoformat()
    return make_mocked_request(
        "GET",
        "/session/x",
        headers={
            "Date": now,
            "X-BackendAI-Version": "v7.20230615",
            "Host": "localhost",
            "Authorization": (
                f"BackendAI signMethod=HMAC-SHA256, credential={access_key}:{signature}"
            ),
        },
    )


@pytest.mark.redis
async def test_made_up_access_keys_are_refused_and_remembered_within_a_bound(
    store: RedisEventStore, tmp_path: Any
) -> None:
    auth = Authenticator(
        TenancyLookups(store), SecretBox.from_file(tmp_path / "k", create=True), max_absent=64
    )
    for i in range(500):
        with pytest.raises(AuthorizationFailed):
            await auth.authenticate(_request(f"AKIAMADEUP{i:010d}"))
    assert len(auth.cache) <= 64
    for key in ("é" * 10, "A" * 500, "AK IA"):  # never ours: refused before any lookup
        with pytest.raises(AuthorizationFailed):
            await auth.authenticate(_request(key))
    assert len(auth.cache) <= 64


def _enqueued(tag: str) -> NewEvent:
    return NewEvent(data=SessionEnqueued(session_id=uuid.uuid4(), creation_id=tag))


@pytest.mark.redis
async def test_every_stream_reads_one_tail_and_a_stalled_one_is_dropped(
    store: RedisEventStore,
) -> None:
    tail = LogTail(
        store,
        types=frozenset({"session_enqueued"}),
        streams=lambda s: s.startswith("session-"),
        queue_size=3,
    )
    async with tail.listen() as reader, tail.listen() as stalled:
        for i in range(5):
            await store.append(f"session-{i}", [_enqueued(f"e{i}")], None)
            event = await asyncio.wait_for(reader.get(), 20)
            assert event is not None and event.data.creation_id == f"e{i}"  # type: ignore[union-attr]
        assert tail.listeners == 2
        assert await asyncio.wait_for(stalled.get(), 5) is None  # fell 3 behind: its stream ends
    assert tail.listeners == 0  # and with the last listener, the tail stops
    async with tail.listen() as later:  # a new one starts it again, from now on
        await store.append("session-late", [_enqueued("late")], None)
        event = await asyncio.wait_for(later.get(), 20)
        assert event is not None and event.data.creation_id == "late"  # type: ignore[union-attr]


# ---- on a real stack -----------------------------------------------------------------------
@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str


@dataclass
class World:
    stack: Stack
    superadmin: Keys
    mallory: Keys
    """A plain user of default/default: the attacker."""
    victim: Keys
    """Another user of default/default."""
    research_admin: Keys
    """The domain admin of ``research`` (no project membership needed)."""
    victim_session: str
    research_session: str


OPEN_CAP = 5
"""The stack's cap on one keypair's open sessions (``KH_MAX_OPEN_SESSIONS``), small so a
test reaches it; no other test here opens that many sessions for one keypair."""


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    env = {
        "KH_ALLOW_UNISOLATED": "1",
        "DOCKER_HOST": "tcp://127.0.0.1:9",  # process backend
        "KH_MAX_OPEN_SESSIONS": str(OPEN_CAP),
    }
    with kh_up(**env) as stack:
        yield asyncio.run(_populate(stack))


async def _populate(stack: Stack) -> World:
    superadmin = Keys(stack.exports["BACKEND_ACCESS_KEY"], stack.exports["BACKEND_SECRET_KEY"])
    mallory = Keys(*await second_tenant(stack, "mallory"))
    victim = Keys(*await second_tenant(stack, "victim"))
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        tenancy = await TenancyService(
            store, SecretBox.from_file(stack.root / "data" / "master.key")
        ).load()
        await tenancy.handle(CreateDomain(name="research"))
        await tenancy.handle(CreateProject(name="gpu-team", domain="research"))
        await tenancy.handle(CreateProject(name="other-team", domain="default"))
        await tenancy.handle(
            Associate(name="default", target_kind="domain", target="research")
        )  # its agents serve research
        admin = await tenancy.handle(
            CreateUser(
                username="radmin", email="radmin@research.local", domain="research", role="admin"
            )
        )
        research_admin = Keys(*await tenancy.handle(IssueKeypair(user_id=admin)))
        lookups = TenancyLookups(store)
        await eventually(
            lambda: lookups.keypair(research_admin.access_key), timeout=20, message="projected"
        )
        await eventually(
            lambda: lookups.project_by_name("default", "other-team"),
            timeout=20,
            message="projected",
        )
    finally:
        await store.close()
    world = World(stack, superadmin, mallory, victim, research_admin, "", "")
    status, body = call(world, victim, "POST", "/session", _create("victims-job"))
    assert status == 201, body
    world.victim_session = body["sessionId"]
    status, body = call(
        world,
        superadmin,
        "POST",
        "/session",
        _create("research-job", domain="research", group="gpu-team"),
    )
    assert status == 201, body
    world.research_session = body["sessionId"]
    return world


def _create(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "python", "enqueueOnly": True, **extra}


def call(world: World, keys: Keys, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request signed by ``keys``; the decoded JSON answer."""
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


def send(url: str, method: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
    return exchange(url, method, headers, json.dumps(body).encode() if body is not None else None)


async def _enqueued_since(world: World, head: str) -> list[str]:
    """Names of the sessions enqueued in the log after ``head``."""
    store = RedisEventStore.from_url(world.stack.exports["KH_REDIS_URL"])
    try:
        enqueued = [e for e in await store.read_log(head, 10_000) if e.type == "session_enqueued"]
        return [str(getattr(getattr(e.data, "spec", None), "name", "")) for e in enqueued]
    finally:
        await store.close()


async def _head(world: World) -> str:
    store = RedisEventStore.from_url(world.stack.exports["KH_REDIS_URL"])
    try:
        return await store.head()
    finally:
        await store.close()


def _problem(status: int, body: Any, want: int) -> str:
    assert status == want, (status, body)
    assert isinstance(body, dict) and body["type"].startswith("https://api.backend.ai/probs/")
    return str(body["type"]).rsplit("/", 1)[-1]


@on_stack
@pytest.mark.parametrize(
    ("where", "name"),
    [
        ({"domain": "research", "group": "gpu-team"}, "stolen-gpu"),
        ({"domainName": "research", "groupName": "gpu-team"}, "stolen-by-alias"),  # the SDK's keys
        ({"group": "other-team"}, "not-my-team"),  # own domain, a project she is not in
    ],
)
def test_a_user_cannot_create_in_a_project_she_does_not_belong_to(
    world: World, where: dict[str, str], name: str
) -> None:
    head = asyncio.run(_head(world))
    status, body = call(world, world.mallory, "POST", "/session", _create(name, **where))
    assert _problem(status, body, 400) == "invalid-api-params"
    assert name not in asyncio.run(_enqueued_since(world, head))
    status, body = call(world, world.mallory, "GET", f"/session/{name}")
    assert status == 404, body


@on_stack
def test_members_and_admins_still_create_where_they_may(world: World) -> None:
    status, body = call(world, world.mallory, "POST", "/session", _create("mallorys-own"))
    assert status == 201, body  # her own project: the refusals above are not blanket
    status, body = call(
        world,
        world.research_admin,
        "POST",
        "/session",
        _create("admins-job", domain="research", group="gpu-team"),
    )
    assert status == 201, body  # a domain admin: any project of the domain, no membership
    status, body = call(
        world, world.research_admin, "POST", "/session", _create("admin-abroad", domain="default")
    )
    assert _problem(status, body, 400) == "invalid-api-params"


@on_stack
def test_a_dependency_on_another_tenants_session_is_refused(world: World) -> None:
    head = asyncio.run(_head(world))
    for name, dependency in (("leech", world.victim_session), ("leech-2", str(uuid.uuid4()))):
        status, body = call(
            world, world.mallory, "POST", "/session", _create(name, dependencies=[dependency])
        )
        assert _problem(status, body, 400) == "invalid-api-params"
        assert body["msg"] == f"Unknown session ID or name in dependencies: {dependency}"
    assert not {"leech", "leech-2"} & set(asyncio.run(_enqueued_since(world, head)))
    status, body = call(
        world,
        world.victim,
        "POST",
        "/session",
        _create("follower", dependencies=[world.victim_session]),
    )
    assert status == 201, body  # on one's own session, a dependency is fine


def _gql(world: World, keys: Keys, query: str, **variables: Any) -> tuple[int, Any]:
    return call(world, keys, "POST", "/admin/gql", {"query": query, "variables": variables})


LIST = (
    "query($limit: Int!, $offset: Int!) { compute_session_list(limit: $limit, "
    "offset: $offset) { items { id name domain_name } total_count } }"
)
ONE = "query($id: UUID!) { compute_session(id: $id) { id name } }"


@on_stack
def test_graphql_shows_a_domain_admin_only_their_domain(world: World) -> None:
    status, body = _gql(world, world.research_admin, LIST, limit=100, offset=0)
    assert status == 200, body
    listing = body["data"]["compute_session_list"]
    names = {item["name"] for item in listing["items"]}
    assert "research-job" in names and "victims-job" not in names, names
    assert {item["domain_name"] for item in listing["items"]} == {"research"}
    assert listing["total_count"] == len(listing["items"])
    status, body = _gql(world, world.research_admin, ONE, id=world.victim_session)
    assert status == 200 and body["data"]["compute_session"] is None, body
    status, body = _gql(
        world,
        world.research_admin,
        "query($ak: String) { keypair(access_key: $ak) { access_key } }",
        ak=world.victim.access_key,
    )
    assert body["data"]["keypair"] is None and body["errors"], body
    # a plain user: her own only, by listing or by id
    status, body = _gql(world, world.mallory, ONE, id=world.research_session)
    assert body["data"]["compute_session"] is None, body
    status, body = _gql(world, world.superadmin, LIST, limit=100, offset=0)  # the control
    names = {item["name"] for item in body["data"]["compute_session_list"]["items"]}
    assert {"research-job", "victims-job"} <= names, names


@on_stack
def test_a_costly_graphql_document_is_refused_with_a_400(world: World) -> None:
    one = "compute_session_list(limit: 100, offset: 0) { items { id name status } }"
    aliased = "{ " + " ".join(f"a{i}: {one}" for i in range(20)) + " }"
    deep = "id"
    for _ in range(12):
        deep = f"dependencies {{ {deep} }}"
    deep = f'{{ compute_session(id: "{world.victim_session}") {{ {deep} }} }}'
    padded = "{ keypair { access_key } }" + " " * 40_000
    for query in (aliased, deep, padded):
        status, body = _gql(world, world.mallory, query)
        assert _problem(status, body, 400) == "invalid-api-params"
        assert "GraphQL" in body["title"] and body["msg"], body
    padding = {"query": LIST, "variables": {"limit": 1, "offset": 0, "pad": "x" * 100_000}}
    status, body = call(world, world.mallory, "POST", "/admin/gql", padding)
    assert _problem(status, body, 400) == "invalid-api-params"
    status, body = _gql(world, world.mallory, LIST, limit=10, offset=0)
    assert status == 200 and "errors" not in body, body


async def _redis_blocked_readers(world: World) -> int:
    """Clients of the stack's Redis sitting in a blocking XREAD now."""
    store = RedisEventStore.from_url(world.stack.exports["KH_REDIS_URL"])
    try:
        clients = await store.redis.client_list()
        return sum(1 for c in clients if str(c.get("cmd", "")).lower() == "xread")
    finally:
        await store.close()


def host_of(world: World) -> str:
    return world.stack.exports["BACKEND_ENDPOINT"].removeprefix("http://")


async def _open_streams(world: World, keys: Keys, count: int) -> tuple[Any, list[Any], Any]:
    endpoint = world.stack.exports["BACKEND_ENDPOINT"]
    host = endpoint.removeprefix("http://")
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        connector=aiohttp.TCPConnector(limit=0),
    )

    def headers() -> dict[str, str]:
        return signed_headers("GET", "/events/session", host, "", keys.access_key, keys.secret_key)

    streams = [
        await session.get(endpoint + "/events/session", headers=headers()) for _ in range(count)
    ]
    extra = await session.get(endpoint + "/events/session", headers=headers())
    return session, streams, extra


@on_stack
def test_a_keypair_cannot_hold_more_streams_than_its_cap(world: World) -> None:
    from actors.gateway.stream_limits import MAX_STREAMS_PER_KEYPAIR as CAP

    async def attack() -> None:
        before = await _redis_blocked_readers(world)
        session, streams, extra = await _open_streams(world, world.mallory, CAP)
        try:
            assert [s.status for s in streams] == [200] * CAP
            assert extra.status == 429, extra.status
            problem = await extra.json(content_type=None)
            assert problem["type"].endswith("/rate-limit-exceeded"), problem
            assert "streams" in problem["msg"], problem
            # a websocket counts against the same cap (refused before the session is looked up)
            path = "/stream/session/any-session/pty"
            headers = signed_headers(
                "GET", path, host_of(world), "", world.mallory.access_key, world.mallory.secret_key
            )
            endpoint = world.stack.exports["BACKEND_ENDPOINT"]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(endpoint + path, headers=headers)
            assert refused.value.status == 429
            # someone else is served meanwhile, Redis and all
            status, body = await asyncio.to_thread(
                call, world, world.victim, "GET", f"/session/{world.victim_session}"
            )
            assert status == 200, body
            # the streams share one tail of the log: no Redis connection each
            assert await _redis_blocked_readers(world) <= before + 2
        finally:
            for stream in [*streams, extra]:
                stream.close()
            await session.close()

        async def slot_back() -> bool:
            again_session, _, extra_again = await _open_streams(world, world.mallory, 0)
            try:
                return extra_again.status == 200
            finally:
                extra_again.close()
                await again_session.close()

        await eventually(slot_back, timeout=30, interval=0.2, message="the slots back")

    asyncio.run(attack())


@on_stack
def test_a_non_ascii_signature_is_a_401_problem(world: World) -> None:
    endpoint = world.stack.exports["BACKEND_ENDPOINT"]
    path = f"/session/{world.victim_session}"
    for signature in ("é" * 64, "Ã©" * 32, "\uff10" * 64):  # latin-1 é, UTF-8 é, fullwidth 0
        headers = signed_headers(
            "GET",
            path,
            endpoint.removeprefix("http://"),
            "text/plain",
            world.mallory.access_key,
            world.mallory.secret_key,
        )
        head, _, _ = headers["Authorization"].rpartition(":")
        headers["Authorization"] = f"{head}:{signature}"
        headers["Content-Type"] = "text/plain"
        try:
            status, body = send(endpoint + path, "GET", headers)
        except UnicodeEncodeError:  # http.client sends latin-1 only: send the UTF-8 bytes
            headers["Authorization"] = headers["Authorization"].encode().decode("latin-1")
            status, body = send(endpoint + path, "GET", headers)
        assert _problem(status, body, 401) == "auth-failed"


@on_stack
def test_a_keypair_cannot_hold_more_open_sessions_than_its_cap(world: World) -> None:
    """Sessions that never start (too big, or a far ``startsAt``) would otherwise pile up in
    the log without bound: past the cap a create is a 429 and nothing is appended."""
    hoarder = Keys(*asyncio.run(second_tenant(world.stack, "hoarder")))
    names = [f"hoard-{i}" for i in range(OPEN_CAP)]
    try:
        for name in names:
            status, body = call(world, hoarder, "POST", "/session", _create(name))
            assert status == 201, body
        head = asyncio.run(_head(world))
        status, body = call(world, hoarder, "POST", "/session", _create("one-too-many"))
        assert _problem(status, body, 429) == "rate-limit-exceeded"
        assert f"cap of {OPEN_CAP}" in body["msg"], body
        assert "one-too-many" not in asyncio.run(_enqueued_since(world, head))
        # another keypair is not held back by the hoarder's cap
        status, body = call(world, world.victim, "POST", "/session", _create("victims-second"))
        assert status == 201, body
        # an ended session gives its place back
        status, body = call(world, hoarder, "DELETE", f"/session/{names[0]}")
        assert status == 200, body

        def created_again() -> bool:
            status, body = call(world, hoarder, "POST", "/session", _create("one-more"))
            assert status in (201, 429), (status, body)
            return status == 201

        asyncio.run(eventually(created_again, timeout=60, interval=0.5, message="a place back"))
        names.append("one-more")
    finally:
        for name in names:
            call(world, hoarder, "DELETE", f"/session/{name}")
        call(world, world.victim, "DELETE", "/session/victims-second")


@on_stack
def test_an_app_tunnel_without_a_websocket_upgrade_does_no_work(world: World) -> None:
    """A plain GET of ``tcpproxy`` is not counted as a stream, so it must be refused before
    it looks up the app, starts a service or opens a tunnel into the kernel."""
    status, body = call(
        world,
        world.mallory,
        "POST",
        "/session",
        _create("mallorys-app", config={"preopen_ports": [8080]}),
    )
    assert status == 201, body
    try:
        for app in ("8080", "nope"):  # "nope" is no app at all: once a 404 after a look-up
            path = f"/stream/session/mallorys-app/tcpproxy?app={app}"
            status, body = call(world, world.mallory, "GET", path)
            assert _problem(status, body, 400) == "generic-bad-request", (app, body)
            assert "websocket" in body["msg"], body
    finally:
        call(world, world.mallory, "DELETE", "/session/mallorys-app")


@on_stack
def test_an_unauthenticated_flood_from_one_peer_is_refused_past_the_limit(world: World) -> None:
    """Last on the stack: it leaves 127.0.0.1 over its allowance (for uncached keys)."""
    from actors.gateway.ratelimit import UNAUTHENTICATED_LIMIT as LIMIT

    endpoint = world.stack.exports["BACKEND_ENDPOINT"]
    host = endpoint.removeprefix("http://")

    async def flood() -> list[int]:
        statuses: list[int] = []
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> None:
                headers = signed_headers(
                    "GET", "/session/x", host, "", f"AKIAFLOOD{i:011d}", "not-a-secret"
                )
                async with session.get(endpoint + "/session/x", headers=headers) as reply:
                    statuses.append(reply.status)

            for start in range(0, LIMIT + 100, 20):
                await asyncio.gather(*(one(i) for i in range(start, start + 20)))
        return statuses

    started = time.monotonic()
    statuses = asyncio.run(flood())
    refill = (time.monotonic() - started) * LIMIT / 900 + 2
    assert set(statuses) == {401, 429}, set(statuses)
    assert statuses.count(401) <= LIMIT + refill
    assert statuses[-20:] == [429] * 20
    # a keypair the gateway knows is still served from the same address
    status, body = call(world, world.victim, "GET", f"/session/{world.victim_session}")
    assert status == 200, body


# -- bodies and parameters a tenant shapes to raise, or to be held whole (review 1, 2, 7) --


def call_raw(world: World, keys: Keys, method: str, path: str, data: bytes) -> tuple[int, Any]:
    """As :func:`call`, with a body sent byte for byte (not always JSON Python can write)."""
    return signed_request(
        world.stack.exports["BACKEND_ENDPOINT"],
        method,
        path,
        keys.access_key,
        keys.secret_key,
        data,
    )


@unit
def test_an_infinite_page_size_is_over_the_limit_not_an_overflow() -> None:
    query = "query($l:Int!){compute_session_list(limit:$l,offset:0){items{id}}}"
    for infinite in (float("inf"), float("-inf")):
        with pytest.raises(QueryTooComplex):
            cost(query, l=infinite)


@unit
def test_json_bodies_refuse_nan_and_infinity() -> None:
    from actors.domain.errors import InvalidAPIParameters
    from actors.gateway.params import loads

    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(InvalidAPIParameters, match="Malformed body"):
            loads('{"l": ' + constant + "}")
    assert loads('{"l": 1.5}') == {"l": 1.5}


@unit
def test_starts_at_is_read_as_the_domain_reads_it() -> None:
    """A naive time gets UTC (the scheduler compares it with an aware ``now``); 23.03's
    relative "30m" is a time from now; neither is refused nor left naive."""
    from actors.domain.errors import InvalidAPIParameters
    from actors.gateway.sessions import _starts_at

    naive = _starts_at("2020-01-01T00:00:00")
    assert naive == datetime(2020, 1, 1, tzinfo=UTC)
    naive_object = _starts_at(datetime(2020, 1, 1))  # the attack itself: naive
    assert naive_object is not None and naive_object.tzinfo is not None
    before = datetime.now(UTC)
    relative = _starts_at("30m")
    assert relative is not None and relative.tzinfo is not None
    assert 29 * 60 <= (relative - before).total_seconds() <= 31 * 60
    assert datetime.now(UTC) < relative  # comparable: what the predicate does every pass
    for bad in ("soon", "99999999999999d"):
        with pytest.raises(InvalidAPIParameters):
            _starts_at(bad)


@unit
def test_file_names_are_bounded() -> None:
    from actors.domain.errors import InvalidAPIParameters
    from actors.gateway.params import MAX_FILE_NAME, file_name, file_names

    assert file_names("a.txt") == ["a.txt"]
    assert file_names(["a", "b"]) == ["a", "b"]
    for bad in (5, True, [], [1], ["a"] * 6, ["x" * (MAX_FILE_NAME + 1)], {"a": 1}):
        with pytest.raises(InvalidAPIParameters):
            file_names(bad)
    for bad_name in (3, "", "y" * (MAX_FILE_NAME + 1), ["a"]):
        with pytest.raises(InvalidAPIParameters):
            file_name(bad_name)


@on_stack
def test_a_body_over_the_cap_is_a_problem_and_never_read_whole(world: World) -> None:
    """9 MiB of JSON (a valid create padded with blanks): past ``client_max_size`` a 400
    problem, and nothing enqueued. Before: 256 MiB were read and the session created."""
    head = asyncio.run(_head(world))
    body = json.dumps(_create("padded-9mib")).encode()
    padded = body[:-1] + b" " * (9 * 2**20) + b"}"
    status, answer = call_raw(world, world.mallory, "POST", "/session", padded)
    _problem(status, answer, 400)
    assert "padded-9mib" not in asyncio.run(_enqueued_since(world, head))


@on_stack
def test_graphql_variables_that_raised_are_problems(world: World) -> None:
    """Variables nested 100,000 deep (RecursionError) and an ``Infinity`` page size
    (OverflowError): both were 500s."""
    nested = b'{"query":"{a}","variables":{"v":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    status, answer = call_raw(world, world.mallory, "POST", "/admin/gql", nested)
    _problem(status, answer, 400)
    query = "query($l:Int!){compute_session_list(limit:$l,offset:0){items{id}}}"
    infinite = b'{"query":' + json.dumps(query).encode() + b',"variables":{"l":Infinity}}'
    status, answer = call_raw(world, world.mallory, "POST", "/admin/gql", infinite)
    _problem(status, answer, 400)


@on_stack
@pytest.mark.parametrize(
    ("method", "route", "body"),
    [
        ("POST", "complete", {"code": "pri", "options": "ab"}),
        ("POST", "complete", {"code": "pri", "options": [1]}),
        ("GET", "download", {"files": 5}),
        ("GET", "download", {"files": True}),
        ("GET", "download_single", {"file": ["a"]}),
        ("GET", "files", {"path": "p" * 5000}),
    ],
)
def test_parameters_of_the_wrong_shape_are_400s(
    world: World, method: str, route: str, body: dict[str, Any]
) -> None:
    """Each was a 500 (``dict("ab")``, ``len(5)``) or an unbounded string to the agent."""
    path = f"/session/{world.victim_session}/{route}"
    status, answer = call(world, world.victim, method, path, body)
    _problem(status, answer, 400)
