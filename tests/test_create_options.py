"""Every create parameter of 23.03's ``POST /session`` (docs/gateway.md, "Create") is
honoured or refused with a 400 naming it, never accepted and dropped (issue "An honest
session API").

The pure checks first (what each option must be, as the gateway reads it), then one ``kh up``
with the official client: a walk over the whole parameter list, each key (and every alias)
observable in the session (its info, its read-model record, its creation event, or the
kernel, through an exec) or refused naming it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis

from actors.agents.kernel_env import user_environ
from actors.domain.commands.tenancy import RegisterImage
from actors.domain.errors import ImageNotFound, InvalidAPIParameters
from actors.domain.scheduling.records import spec_of
from actors.domain.session import (
    DEFAULT_SHMEM,
    ClusterMode,
    check_environ,
    check_shmem,
    designated_agents,
    parse_starts_at,
    resource_opts_of,
    session_architecture,
)
from actors.gateway.params import CreateConfig, CreateParams, parse
from actors.sessions.shard import session_stream
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.testing import eventually
from projections.queries import ReadModels
from projections.tenancy_queries import TenancyLookups

from .khstack import Stack, second_tenant, signed_request
from .test_official_client import BaiStack, client_binary

M = 2**20

# ---- the parameter list: every key and alias of 23.03's create schema ---------------------------
TOP_LEVEL = {
    "name": ("name", "clientSessionToken"),
    "image": ("image", "lang"),
    "architecture": ("arch", "architecture"),
    "session_type": ("type", "sessionType"),
    "group": ("group", "groupName", "group_name"),
    "domain": ("domain", "domainName", "domain_name"),
    "cluster_size": ("cluster_size", "clusterSize"),
    "cluster_mode": ("cluster_mode", "clusterMode"),
    "config": ("config",),
    "tag": ("tag",),
    "enqueue_only": ("enqueueOnly", "enqueue_only"),
    "max_wait_seconds": ("maxWaitSeconds", "max_wait_seconds"),
    "starts_at": ("starts_at", "startsAt"),
    "reuse_if_exists": ("reuseIfExists", "reuse_if_exists"),
    "startup_command": ("startupCommand", "startup_command"),
    "bootstrap_script": ("bootstrap_script", "bootstrapScript"),
    "dependencies": ("dependencies",),
    "callback_url": ("callback_url", "callbackUrl", "callbackURL"),
    "owner_access_key": ("owner_access_key",),
}
CONFIG = {
    "mounts": ("mounts",),
    "mount_map": ("mount_map", "mountMap"),
    "environ": ("environ",),
    "scaling_group": ("scaling_group", "scalingGroup"),
    "resources": ("resources",),
    "resource_opts": ("resource_opts", "resourceOpts"),
    "preopen_ports": ("preopen_ports", "preopenPorts"),
    "agent_list": ("agent_list", "agentList"),
}
SAMPLE: dict[str, Any] = {
    "name": "walker",
    "image": "python",
    "architecture": "x86_64",
    "session_type": "batch",
    "group": "default",
    "domain": "default",
    "cluster_size": 1,
    "cluster_mode": "single-node",
    "config": {},
    "tag": "t",
    "enqueue_only": True,
    "max_wait_seconds": 5,
    "starts_at": "10s",
    "reuse_if_exists": False,
    "startup_command": "true",
    "bootstrap_script": "true",
    "dependencies": [],
    "callback_url": "http://example.com/cb",
    "owner_access_key": "AK",
    "mounts": ["data"],
    "mount_map": {"data": "/home/work/d"},
    "environ": {"FOO": "bar"},
    "scaling_group": "default",
    "resources": {"cpu": 1},
    "resource_opts": {"shmem": "64m"},
    "preopen_ports": [8080],
    "agent_list": ["i-local"],
}


def _aliases(model: type[Any]) -> dict[str, tuple[str, ...]]:
    """Each field of a request model and the keys it accepts."""
    found = {}
    for field, info in model.model_fields.items():
        alias = info.validation_alias
        found[field] = tuple(alias.choices) if alias is not None else (field,)
    return found


@pytest.mark.unit
def test_the_walk_covers_every_key_the_gateway_accepts() -> None:
    """The lists below are 23.03's create schema: a key the request models accept and the walk
    does not know (or the reverse) fails here, so no parameter escapes the walk."""
    assert _aliases(CreateParams) == TOP_LEVEL
    assert _aliases(CreateConfig) == CONFIG


@pytest.mark.unit
@pytest.mark.parametrize(
    ("field", "key"), [(f, k) for f, keys in TOP_LEVEL.items() for k in keys if f != "name"]
)
def test_every_top_level_alias_sets_its_field(field: str, key: str) -> None:
    base = {k: v for k, v in {"name": "walker", "image": "python"}.items() if k != field}
    params = parse(CreateParams, {**base, key: SAMPLE[field]})
    assert getattr(params, field) is not None


@pytest.mark.unit
@pytest.mark.parametrize(("field", "key"), [(f, k) for f, keys in CONFIG.items() for k in keys])
def test_every_config_alias_sets_its_field(field: str, key: str) -> None:
    body = {"name": "walker", "image": "python", "config": {key: SAMPLE[field]}}
    params = parse(CreateParams, body)
    assert params.config is not None and getattr(params.config, field) == SAMPLE[field]


@pytest.mark.unit
def test_an_unknown_key_is_refused_naming_it() -> None:
    with pytest.raises(InvalidAPIParameters, match="clusterSize"):
        parse(CreateParams, {"name": "walker", "image": "python", "config": {"clusterSize": 2}})
    with pytest.raises(InvalidAPIParameters, match="shmem"):
        parse(CreateParams, {"name": "walker", "image": "python", "shmem": "1g"})


# ---- each option's own rules ------------------------------------------------------------------
@pytest.mark.unit
class TestEnviron:
    def test_plain_names_pass(self) -> None:
        assert check_environ({"FOO": "bar", "_lower_9": "", "SP": "a b=c"}) == {
            "FOO": "bar",
            "_lower_9": "",
            "SP": "a b=c",
        }
        assert check_environ({}) is None and check_environ(None) is None

    @pytest.mark.parametrize("name", ["", "A=B", "A\0B", "9A", "A-B", "A.B", "É"])
    def test_a_name_no_environment_can_hold_is_refused(self, name: str) -> None:
        with pytest.raises(InvalidAPIParameters, match=r"config\.environ"):
            check_environ({name: "x"})

    @pytest.mark.parametrize("name", ["BACKENDAI_SESSION_ID", "BACKENDAI_X", "KERNELHUB_AGENT_ID"])
    def test_kernelhubs_own_variables_cannot_be_overridden(self, name: str) -> None:
        with pytest.raises(InvalidAPIParameters, match=f"{name}.*reserved"):
            check_environ({"OK": "1", name: "forged"})

    @pytest.mark.parametrize("name", ["backendai_token", "Kernelhub_x", "BackendAI_SESSION_ID"])
    def test_a_reserved_prefix_in_any_case_is_refused_not_dropped_later(self, name: str) -> None:
        # the agent drops these names whatever their case: a 201 here would be a variable
        # accepted and then silently missing in the kernel
        with pytest.raises(InvalidAPIParameters, match=f"{name}.*reserved"):
            check_environ({"OK": "1", name: "forged"})
        kept, dropped = user_environ({"environ": {"OK": "1", name: "forged"}})
        assert kept == {"OK": "1"} and dropped == [name]

    def test_what_the_gateway_accepts_the_agent_keeps(self) -> None:
        given = {"OK": "1", "backendai": "x", "kernelhub": "y", "MY_BACKENDAI_X": "z"}
        assert check_environ(given) == given
        assert user_environ({"environ": given}) == (given, [])

    @pytest.mark.parametrize("value", ["x\0y", "x\nINJECTED=1", "x\ry"])
    def test_a_nul_or_a_line_break_in_a_value_is_refused(self, value: str) -> None:
        with pytest.raises(InvalidAPIParameters, match="NUL or a line break"):
            check_environ({"A": value})


@pytest.mark.unit
class TestShmem:
    def test_asked_then_the_image_label_then_64m(self) -> None:
        label = {"ai.backend.resource.preferred.shmem": "128m"}
        assert resource_opts_of({"shmem": "1g"}, label) == {"shmem": 1024 * M}
        assert resource_opts_of({"shmem": 4096}, label) == {"shmem": 4096}
        assert resource_opts_of({}, label) == {"shmem": 128 * M}
        assert resource_opts_of(None, {}) == {"shmem": DEFAULT_SHMEM} == {"shmem": 64 * M}

    @pytest.mark.parametrize("opts", [{"cpuset": "0"}, {"shmem": "1g", "ulimit": 1}])
    def test_any_other_option_is_refused_naming_it(self, opts: dict[str, Any]) -> None:
        (other,) = set(opts) - {"shmem"}
        with pytest.raises(InvalidAPIParameters, match=f"resource_opts.{other}"):
            resource_opts_of(opts, {})

    @pytest.mark.parametrize("value", ["", "lots", "-1m", 0, -5, True, 1.5, ["1g"], "inf", "0.5"])
    def test_an_ill_formed_size_is_refused(self, value: Any) -> None:
        with pytest.raises(InvalidAPIParameters, match="shmem"):
            resource_opts_of({"shmem": value}, {})

    def test_a_bad_image_label_is_refused_naming_it(self) -> None:
        with pytest.raises(InvalidAPIParameters, match=r"preferred\.shmem"):
            resource_opts_of(None, {"ai.backend.resource.preferred.shmem": "much"})

    def test_it_must_be_less_than_the_memory(self) -> None:
        check_shmem(64 * M, Decimal(65 * M))
        with pytest.raises(InvalidAPIParameters, match=r"Shared memory should be less .*s:1g"):
            check_shmem(1024 * M, Decimal(1024 * M))


@pytest.mark.unit
class TestArchitecture:
    def test_the_images_own_when_none_is_asked(self) -> None:
        assert session_architecture(None, "img", "aarch64") == "aarch64"
        assert session_architecture("", "img", "x86_64") == "x86_64"

    @pytest.mark.parametrize("asked", ["x86_64", "amd64", "X64", " x86_64 "])
    def test_aliases_read_as_upstream(self, asked: str) -> None:
        assert session_architecture(asked, "img", "x86_64") == "x86_64"

    def test_another_architecture_is_not_found_as_upstream(self) -> None:
        with pytest.raises(ImageNotFound, match="registered for x86_64, not aarch64"):
            session_architecture("arm64", "img", "x86_64")


@pytest.mark.unit
class TestAgentList:
    KNOWN = {"i-a", "i-b", "i-c"}

    def test_single_node_names_one_agent_for_every_kernel(self) -> None:
        assert designated_agents(["i-a"], ClusterMode.SINGLE_NODE, 3, self.KNOWN) == ("i-a",) * 3
        with pytest.raises(InvalidAPIParameters, match="only one manually assigned agent"):
            designated_agents(["i-a", "i-b"], ClusterMode.SINGLE_NODE, 2, self.KNOWN)

    def test_multi_node_names_one_distinct_agent_per_kernel(self) -> None:
        agents = designated_agents(["i-b", "i-a"], ClusterMode.MULTI_NODE, 2, self.KNOWN)
        assert agents == ("i-b", "i-a")
        with pytest.raises(InvalidAPIParameters, match="same to the cluster size"):
            designated_agents(["i-a"], ClusterMode.MULTI_NODE, 2, self.KNOWN)
        with pytest.raises(InvalidAPIParameters, match="distinct agents"):
            designated_agents(["i-a", "i-a"], ClusterMode.MULTI_NODE, 2, self.KNOWN)

    def test_an_unknown_agent_is_refused_as_upstream(self) -> None:
        with pytest.raises(InvalidAPIParameters, match=r"^No such agent: i-z$"):
            designated_agents(["i-z"], ClusterMode.SINGLE_NODE, 1, self.KNOWN)

    def test_none_asked_leaves_the_choice_to_the_scheduler(self) -> None:
        assert designated_agents(None, ClusterMode.SINGLE_NODE, 1, self.KNOWN) == ()
        assert designated_agents([], ClusterMode.MULTI_NODE, 2, self.KNOWN) == ()

    def test_the_scheduler_reads_the_agent_the_record_carries(self) -> None:
        """From the read model (which copies ``session_enqueued``'s kernel agents) to the
        spec the placement reads (tests/test_domain_scheduler.py: a designated agent is
        used, or the session stays pending)."""
        kernel = {
            "id": str(uuid.uuid4()),
            "cluster_role": "main",
            "cluster_idx": 1,
            "local_rank": 0,
            "cluster_hostname": "main1",
            "requested_slots": {"cpu": "1", "mem": str(2**30)},
            "image": "img",
            "architecture": "x86_64",
            "role": "COMPUTE",
            "agent": "i-b",
        }
        record = {
            "id": str(uuid.uuid4()),
            "name": "s",
            "access_key": "AK",
            "kernels": {kernel["id"]: kernel},
            "created_ms": 0,
            "type": "interactive",
            "cluster_mode": "single-node",
            "domain": "default",
            "scaling_group": "default",
            "dependencies": [],
            "creation_id": "c",
        }
        assert spec_of(record).main_kernel.agent == "i-b"


@pytest.mark.unit
class TestStartsAt:
    NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def test_a_time_without_a_zone_is_utc(self) -> None:
        assert parse_starts_at("2026-01-02T03:04:05", self.NOW) == datetime(
            2026, 1, 2, 3, 4, 5, tzinfo=UTC
        )

    def test_a_zone_is_kept(self) -> None:
        at = parse_starts_at("2026-01-02T03:04:05+09:00", self.NOW)
        assert at == datetime(2026, 1, 1, 18, 4, 5, tzinfo=UTC)
        assert parse_starts_at("2026-01-02T03:04:05Z", self.NOW).tzinfo is not None

    @pytest.mark.parametrize(
        ("text", "delta"), [("10s", 10), ("30m", 1800), ("1h", 3600), ("1h30m", 5400)]
    )
    def test_relative_durations_count_from_now(self, text: str, delta: int) -> None:
        assert parse_starts_at(text, self.NOW) == self.NOW + timedelta(seconds=delta)

    def test_a_number_is_not_a_string(self) -> None:
        """As 23.03's schema: starts_at is a string (a JSON number is no time)."""
        with pytest.raises(InvalidAPIParameters, match="starts_at"):
            parse(CreateParams, {"name": "walker", "image": "python", "starts_at": 1700000000})


# ---- end to end: one kh up, the official client and signed requests ------------------------
def _e2e(test: Any) -> Any:
    return pytest.mark.timeout(600)(pytest.mark.e2e(test))


@dataclass
class Walk:
    """The stack, a plain user of it, and the log to check that a refusal appended nothing."""

    stack: BaiStack
    user: tuple[str, str]
    log: redis.Redis
    log_key: str

    def post(self, body: dict[str, Any], keys: tuple[str, str] | None = None) -> tuple[int, Any]:
        access_key, secret_key = keys or self.admin
        return signed_request(
            self.stack.exports["BACKEND_ENDPOINT"],
            "POST",
            "/session",
            access_key,
            secret_key,
            json.dumps(body).encode(),
            timeout=150,
        )

    def get(self, path: str) -> tuple[int, Any]:
        access_key, secret_key = self.admin
        return signed_request(
            self.stack.exports["BACKEND_ENDPOINT"], "GET", path, access_key, secret_key
        )

    @property
    def admin(self) -> tuple[str, str]:
        return self.stack.exports["BACKEND_ACCESS_KEY"], self.stack.exports["BACKEND_SECRET_KEY"]

    def last_id(self) -> str:
        newest = self.log.xrevrange(self.log_key, count=1)
        return newest[0][0].decode() if newest else "0-0"

    def enqueued_since(self, last: str) -> list[str]:
        entries = self.log.xrange(self.log_key, min=f"({last}", max="+")
        bodies = [json.loads(fields[b"e"]) for _, fields in entries]
        return [str(b.get("type")) for b in bodies if b.get("type") == "session_enqueued"]

    def read(self, query: Any) -> Any:
        async def go() -> Any:
            store = RedisEventStore.from_url(self.stack.exports["KH_REDIS_URL"])
            try:
                return await query(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def record(self, session_id: str) -> dict[str, Any]:
        found = self.read(lambda store: ReadModels(store).session(session_id))
        assert found is not None, session_id
        return found  # type: ignore[no-any-return]

    def spec(self, session_id: str) -> dict[str, Any]:
        """What ``session_enqueued`` carried (values the read model does not keep)."""

        async def first(store: RedisEventStore) -> dict[str, Any]:
            events = await store.read_stream_stored(session_stream(uuid.UUID(session_id)))
            assert events[0].type == "session_enqueued", events[0].type
            return events[0].data["spec"]  # type: ignore[no-any-return]

        return self.read(first)  # type: ignore[no-any-return]

    def refused(
        self,
        body: dict[str, Any],
        named: str,
        *,
        status: int = 400,
        kind: str = "invalid-api-params",
        keys: tuple[str, str] | None = None,
    ) -> None:
        """Refused with ``status``, a problem of ``kind`` naming ``named``, and nothing
        reached the log."""
        before = self.last_id()
        got, problem = self.post(body, keys)
        assert got == status, (body, got, problem)
        assert str(problem["type"]).endswith(kind), problem
        assert named in json.dumps(problem), (named, problem)
        assert self.enqueued_since(before) == [], body


@pytest.fixture(scope="module")
def walk(shared_stack: Stack) -> Iterator[Walk]:
    if not client_binary().exists():
        pytest.skip(f"the official client is not installed at {client_binary()}")
    running = shared_stack
    stack = BaiStack(running.root, running.exports, running.backend)
    user = asyncio.run(second_tenant(stack, "walker"))
    log = redis.Redis.from_url(stack.exports["KH_REDIS_URL"])
    try:
        yield Walk(stack, user, log, f"{os.environ.get('KH_KEY_PREFIX', 'kh')}:log")
    finally:
        log.close()


def _body(name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "image": "python", "enqueueOnly": True, **more}


def _batch(name: str, **more: Any) -> dict[str, Any]:
    return _body(name, type="batch", startupCommand="true", **more)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@_e2e
def test_the_whole_parameter_list_is_honoured_or_refused(walk: Walk) -> None:
    """Issue "An honest session API", done when: every key of 23.03's create schema (and
    of its ``config``) is observable in the session or refused with a 400 naming it. The
    ``checks`` below are keyed by the request models' fields, and the first assertion
    makes them the whole list (with the aliases: tests above)."""
    admin_ak = walk.admin[0]
    user_ak = walk.user[0]
    boot = "echo booted-by-walk > /tmp/kh-walk-boot"
    status, made = walk.post(
        {
            "name": "walk-main",
            "image": "python",
            "architecture": "x86_64",
            "type": "interactive",
            "group": "default",
            "domain": "default",
            "clusterSize": 1,
            "clusterMode": "single-node",
            "tag": "walk-tag",
            "enqueueOnly": False,
            "maxWaitSeconds": 150,
            "reuseIfExists": True,
            "bootstrap_script": boot,
            "callback_url": "https://example.com/kh-walk",
            "owner_access_key": admin_ak,
            "config": {
                "mounts": [],
                "mount_map": {},
                "environ": {"WALK": "yes"},
                "scalingGroup": "default",
                "resources": {"cpu": 1, "mem": "1g"},
                "resource_opts": {"shmem": "128m"},
                "preopenPorts": [8123],
                "agentList": ["i-local"],
            },
        }
    )
    assert status == 201 and made["status"] == "RUNNING" and made["created"], made
    main = made["sessionId"]
    record, spec = walk.record(main), walk.spec(main)
    _, info = walk.get(f"/session/{main}")
    (kernel,) = record["kernels"].values()

    # the batch-only ones, each on its own session
    status, timed = walk.post(
        _batch("walk-wait", enqueueOnly=False, maxWaitSeconds=1, starts_at="1h")
    )
    assert status == 201 and timed["status"] == "TIMEOUT", timed
    status, later = walk.post(_batch("walk-later", starts_at="30m"))
    assert status == 201 and later["status"] == "PENDING", later
    status, after = walk.post(_batch("walk-after", dependencies=[later["sessionId"]]))
    assert status == 201, after
    status, theirs = walk.post(_batch("walk-theirs", owner_access_key=user_ak, starts_at="1h"))
    assert status == 201, theirs
    status, again = walk.post({**_body("walk-main"), "reuseIfExists": True})
    assert status == 201 and (again["sessionId"], again["created"]) == (main, False), again

    ran = walk.stack.bai(
        "run",
        "-t",
        "walk-main",
        "python",
        "-c",
        "import os; s = os.statvfs('/dev/shm'); "
        "print(os.environ['WALK'], open('/tmp/kh-walk-boot').read().strip(), "
        "s.f_blocks * s.f_frsize)",
    )
    checks: dict[str, Any] = {
        "name": lambda: record["name"] == info["sessionName"] == "walk-main",
        "image": lambda: record["image"] == info["image"] == "kernelhub/python:3.11",
        "architecture": lambda: info["architecture"] == kernel["architecture"] == "x86_64",
        "session_type": lambda: (
            record["type"] == "interactive" and walk.record(later["sessionId"])["type"] == "batch"
        ),
        "group": lambda: info["groupId"] == str(record["project_id"]) != "None",
        "domain": lambda: record["domain"] == info["domainName"] == "default",
        "cluster_size": lambda: record["cluster_size"] == 1,
        "cluster_mode": lambda: record["cluster_mode"] == "single-node",
        "config": lambda: True,  # its keys are walked one by one below
        "tag": lambda: record["tag"] == info["tag"] == "walk-tag",
        "enqueue_only": lambda: later["status"] == "PENDING",
        "max_wait_seconds": lambda: timed["status"] == "TIMEOUT",
        "starts_at": lambda: (
            _utc(walk.record(later["sessionId"])["starts_at"])
            > datetime.now(UTC) + timedelta(minutes=25)
        ),
        "reuse_if_exists": lambda: not again["created"],
        "startup_command": lambda: walk.record(later["sessionId"])["startup_command"] == "true",
        "bootstrap_script": lambda: (
            spec["bootstrap_script"] == boot and "booted-by-walk" in ran.stdout
        ),
        "dependencies": lambda: (
            walk.record(after["sessionId"])["dependencies"] == [later["sessionId"]]
        ),
        "callback_url": lambda: spec["callback_url"] == "https://example.com/kh-walk",
        "owner_access_key": lambda: (
            walk.record(theirs["sessionId"])["access_key"] == user_ak
            and record["access_key"] == admin_ak
        ),
        # config
        # honoured: the names are resolved (tests/test_vfolder_mounts_stack.py mounts real
        # folders); here a folder nobody has is 404 and a map beside no mount is refused
        "mounts": lambda: _missing_folder(walk, {"mounts": ["walk-no-such-folder"]}),
        "mount_map": lambda: "not in config.mounts" in _refusal(walk, {"mountMap": {"d": "/x"}}),
        "environ": lambda: (
            spec["environ"] == {"WALK": "yes"}
            and "WALK" in info["environ"]
            and ran.stdout.startswith("yes ")
        ),
        "scaling_group": lambda: record["scaling_group"] == "default",
        "resources": lambda: record["requested_slots"]["mem"] == str(2**30),
        "resource_opts": lambda: (
            record["resource_opts"] == {"shmem": 128 * M}
            and str(128 * M) in info["resourceOpts"]
            and ran.stdout.split()[-1] == str(128 * M)
        ),
        "preopen_ports": lambda: (
            record["preopen_ports"] == [8123]
            and {"name": "8123", "protocol": "preopen", "ports": [8123]} in made["servicePorts"]
        ),
        "agent_list": lambda: kernel["agent"] == "i-local",
    }
    assert set(checks) == set(TOP_LEVEL) | set(CONFIG)
    failed = [key for key, check in checks.items() if not check()]
    assert not failed, (failed, ran.stdout, ran.stderr, record, info, spec)
    for session in ("walk-main", "walk-after", "walk-later", "walk-wait"):
        walk.stack.bai("session", "rm", session)
    walk.stack.bai("session", "rm", "-o", user_ak, "walk-theirs")


def _missing_folder(walk: Walk, config: dict[str, Any]) -> bool:
    before = walk.last_id()
    status, problem = walk.post(_body("walk-refused", config=config))
    assert walk.enqueued_since(before) == [], problem
    return status == 404 and "No such virtual folder" in json.dumps(problem)


def _refusal(walk: Walk, config: dict[str, Any]) -> str:
    before = walk.last_id()
    status, problem = walk.post(_body("walk-refused", config=config))
    assert status == 400 and walk.enqueued_since(before) == [], problem
    return json.dumps(problem)


@_e2e
def test_every_alias_is_read_as_its_key(walk: Walk) -> None:
    """The other spellings of the walk's keys, together on one batch session."""
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    status, made = walk.post(
        {
            "clientSessionToken": "walk-aliases",
            "lang": "python",
            "arch": "amd64",
            "sessionType": "batch",
            "groupName": "default",
            "domainName": "default",
            "cluster_size": 1,
            "cluster_mode": "single-node",
            "enqueue_only": True,
            "max_wait_seconds": 0,
            "startsAt": in_an_hour.isoformat(),
            "reuse_if_exists": False,
            "startup_command": "true",
            "bootstrapScript": "true",
            "callbackURL": "http://example.com/cb",
            "config": {
                "mountMap": {},
                "scaling_group": "default",
                "resourceOpts": {"shmem": 4 * M},
                "preopen_ports": [8124],
                "agent_list": ["i-local"],
            },
        }
    )
    assert status == 201 and made["status"] == "PENDING", made
    record, spec = walk.record(made["sessionId"]), walk.spec(made["sessionId"])
    assert (record["name"], record["type"], record["architecture"]) == (
        "walk-aliases",
        "batch",
        "x86_64",
    )
    assert _utc(record["starts_at"]) == in_an_hour
    assert (spec["bootstrap_script"], spec["callback_url"]) == ("true", "http://example.com/cb")
    assert record["resource_opts"] == {"shmem": 4 * M} and record["preopen_ports"] == [8124]
    assert [k["agent"] for k in record["kernels"].values()] == ["i-local"]
    walk.stack.bai("session", "rm", "walk-aliases")


@_e2e
def test_a_naive_starts_at_is_utc_and_a_zone_is_kept(walk: Walk) -> None:
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    status, naive = walk.post(_batch("walk-naive", starts_at=at.replace(tzinfo=None).isoformat()))
    assert status == 201, naive
    tokyo = at.astimezone(timezone(timedelta(hours=9))).isoformat()
    status, zoned = walk.post(_batch("walk-zoned", starts_at=tokyo))
    assert status == 201, zoned
    assert _utc(walk.record(naive["sessionId"])["starts_at"]) == at
    assert _utc(walk.record(zoned["sessionId"])["starts_at"]) == at
    for name in ("walk-naive", "walk-zoned"):
        walk.stack.bai("session", "rm", name)


@_e2e
def test_refusals_name_the_parameter_and_append_nothing(walk: Walk) -> None:
    """Every option that is not honoured, or not as sent, is a 4xx naming it; an attacker's
    oversized or ill-formed value is refused before anything reaches the log."""
    user = walk.user
    cases: list[tuple[dict[str, Any], str]] = [
        (_body("walk-r1", config={"mounts": ["data/sub"]}), "config.mounts[0]"),
        (_body("walk-r2", config={"mount_map": {"data": "/home/work/d"}}), "config.mount_map"),
        (_body("walk-r3", startupCommand="sleep 1"), "startupCommand"),
        (_body("walk-r4", starts_at="10s"), "starts_at"),
        (_body("walk-r5", config={"resource_opts": {"cpuset": "0"}}), "resource_opts.cpuset"),
        (
            _body("walk-r6", config={"resources": {"mem": "1g"}, "resource_opts": {"shmem": "1g"}}),
            "smaller than the minimum required by the image",  # its mem minimum + shmem
        ),
        (_body("walk-r7", config={"resource_opts": {"shmem": "1e400"}}), "shmem"),
        (_body("walk-r8", config={"environ": {"BACKENDAI_SESSION_ID": "x"}}), "BACKENDAI_"),
        (_body("walk-r9", config={"environ": {"KERNELHUB_AGENT_ID": "x"}}), "KERNELHUB_"),
        (_body("walk-ra", config={"environ": {"A=B": "x"}}), "config.environ"),
        (_body("walk-rb", config={"environ": {"A": "x\ny=1"}}), "config.environ"),
        (_body("walk-rc", config={"agentList": ["i-nope"]}), "No such agent: i-nope"),
        (_body("walk-rd", callback_url="ftp://example.com/"), "callback_url"),
        (_body("walk-re", callback_url="http://example.com/\r\nX: 1"), "callback_url"),
        (_body("walk-rf", tag="t" * 65), "tag"),
        (_batch("walk-rg", starts_at="soon"), "starts_at"),
        (_batch("walk-rh", starts_at="99999999999w"), "starts_at"),
        (_batch("walk-ri", starts_at=1700000000), "starts_at"),
        (_body("walk-rj", bogus=1), "bogus"),
        (_body("walk-rk", config={"clusterSize": 2}), "clusterSize"),
    ]
    for body, named in cases:
        walk.refused(body, named)
    walk.refused(_body("walk-rl", arch="aarch64"), "aarch64", status=404, kind="object-not-found")
    status, kept = walk.post(_batch("walk-kept", starts_at="1h"))
    assert status == 201, kept
    walk.refused({**_batch("walk-kept"), "config": {"mounts": ["../etc"]}}, "config.mounts")
    walk.refused(
        _body("walk-rm", config={"agentList": ["i-local"]}),
        "agent_list",
        status=403,
        kind="insufficient-privilege",
        keys=user,
    )


@_e2e
def test_run_with_e_prints_the_variable_and_forged_ones_are_refused(walk: Walk) -> None:
    ran = walk.stack.bai(
        "run", "-e", "FOO=bar", "--rm", "python", "-c", "import os; print(os.environ['FOO'])"
    )
    assert ran.stdout == "bar\n", ran.stderr
    forged = walk.stack.bai("run", "-e", "BACKENDAI_ACCESS_KEY=x", "--rm", "python", "-c", "1")
    assert "BACKENDAI_ACCESS_KEY" in forged.stdout + forged.stderr and "reserved" in (
        forged.stdout + forged.stderr
    ), forged
    mounted = walk.stack.bai("run", "-m", "data", "--rm", "python", "-c", "1")
    assert "No such virtual folder" in mounted.stdout + mounted.stderr, mounted


@_e2e
def test_a_plain_user_may_not_choose_the_agent(walk: Walk) -> None:
    access_key, secret_key = walk.user
    ran = walk.stack.bai(
        "run",
        "--assign-agent",
        "i-local",
        "--rm",
        "python",
        "-c",
        "print('never')",
        BACKEND_ACCESS_KEY=access_key,
        BACKEND_SECRET_KEY=secret_key,
    )
    out = ran.stdout + ran.stderr
    assert "never" not in ran.stdout and "agent_list" in out, out


@_e2e
def test_starts_at_10s_keeps_a_batch_pending_until_then_and_tag_shows(walk: Walk) -> None:
    created = walk.stack.bai(
        "session",
        "create",
        "--type",
        "batch",
        "--starts-at",
        "10s",
        "--startup-command",
        "echo started",
        "--tag",
        "walk-cli-tag",
        "--enqueue-only",
        "-t",
        "walk-starts",
        "python",
    )
    assert created.returncode == 0, created.stderr
    began = time.monotonic()
    status, info = walk.get("/session/walk-starts")
    assert status == 200 and info["tag"] == "walk-cli-tag", info
    sid = info["sessionId"]
    time.sleep(5)
    assert walk.record(sid)["status"] == "PENDING"

    async def started(store: RedisEventStore) -> bool:
        record = await ReadModels(store).session(sid)
        return record is not None and record["status"] != "PENDING"

    async def wait(store: RedisEventStore) -> bool:
        return await eventually(lambda: started(store), timeout=90, message="started")

    walk.read(wait)
    assert time.monotonic() - began >= 8


@_e2e
def test_kernelhubs_sdk_sends_environ_and_tag_reaches_the_session(walk: Walk) -> None:
    ran = walk.stack.kh(
        "run", "-e", "FOO=from-kh", "--rm", "python", "-c", "import os; print(os.environ['FOO'])"
    )
    assert ran.stdout == "from-kh\n", ran.stderr


@_e2e
def test_an_images_architecture_and_execution_timeout_reach_the_session(walk: Walk) -> None:
    """An image registered for another architecture: asked as x86_64 it is not found (as
    23.03's lookup by architecture), asked for nothing its kernels carry its own; an
    image's ``ai.backend.exec-timeout`` becomes the session's execution timeout."""

    async def register(store: RedisEventStore) -> None:
        box = SecretBox.from_file(walk.stack.root / "data" / "master.key")
        tenancy = await TenancyService(store, box).load()
        await tenancy.handle(RegisterImage(name="walk/arm:1", architecture="aarch64"))
        await tenancy.handle(
            RegisterImage(
                name="walk/timed:1",
                labels={"ai.backend.exec-timeout": "90", "ai.backend.resource.min.mem": "256m"},
            )
        )
        lookups = TenancyLookups(store)
        await eventually(lambda: lookups.image("walk/timed:1"), timeout=20, message="projected")

    walk.read(register)
    walk.refused(
        {**_batch("walk-arm-x86", starts_at="1h"), "image": "walk/arm:1", "arch": "x86_64"},
        "registered for aarch64, not x86_64",
        status=404,
        kind="object-not-found",
    )
    status, arm = walk.post({**_batch("walk-arm", starts_at="1h"), "image": "walk/arm:1"})
    assert status == 201, arm
    assert [k["architecture"] for k in walk.record(arm["sessionId"])["kernels"].values()] == [
        "aarch64"
    ]
    status, timed = walk.post({**_batch("walk-timed", starts_at="1h"), "image": "walk/timed:1"})
    assert status == 201, timed
    assert walk.spec(timed["sessionId"])["exec_timeout_s"] == 90
    assert walk.record(timed["sessionId"])["exec_timeout_s"] == 90
    for name in ("walk-arm", "walk-timed"):
        walk.stack.bai("session", "rm", name)
