"""A tenant's numbers and strings against the log and the scheduler (issue 26, attacks 3, 6
and 7), replayed by a plain user through the front door.

* ``mem: 0`` / ``cpu: 0`` used to start a container with no memory limit and a whole pinned
  core (and the scheduler counted 0 bytes); negative, NaN, infinite or below-the-image's-
  minimum values went through too. Now: 400 naming the slot, nothing appended.
* ``cpu: "1e100000000"`` was a 100 MB event, ``startup_command`` had no bound: the log is
  immutable and Redis ``noeviction``, so a full Redis is an outage. Now every value is
  bounded before it becomes an event, and a fuzzer checks that no request grows the log by
  more than a fixed amount, and none gets a 5xx.
* ``rocm.device: 1`` (a slot no agent has) made the group's scheduling pass raise, every
  pass, forever. Now the gateway refuses it (400 naming the slot), and a pass that meets such
  a session anyway keeps it PENDING with a reason and schedules the others.

The front-door tests share one ``kh up --backend sim`` (simulated kernels: nothing here needs
a real one); the Docker test checks a real container's limits; the scheduler's isolation is
also shown on real Redis with the write side in one process. Each attack test failed on the
code before the fix (the gateway answered 201 or 500, the pass raised).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from actors.domain.commands.sessions import CreateSession
from actors.domain.slots import ResourceSlot
from actors.gateway.params import MAX_SCRIPT
from actors.hosts.local import LocalCluster
from actors.sessions.shard import session_stream
from events import RedisEventStore
from kernelhub.testing import docker_missing, docker_required, eventually
from projections.queries import ReadModels

from .khstack import KH, Stack, second_tenant, signed_request, stack_root, stop_stack

pytestmark = pytest.mark.hostile

G = 2**30
LARGEST_ENTRY = 4 * MAX_SCRIPT + 16 * 2**10
"""The largest event a create may append: its ``session_enqueued``, whose biggest part is
the startup command (at most ``MAX_SCRIPT`` characters, 4 bytes each in UTF-8 at worst)."""
LOG_GROWTH_PER_REQUEST = LARGEST_ENTRY + 64 * 2**10
"""The most one create request may add to the log, all its events together (the rest of a
session's life on the sim backend is a few KiB; a refused one adds nothing)."""


def on_stack(test: Any) -> Any:
    return pytest.mark.timeout(600)(pytest.mark.e2e(test))


# ---- the stack: kh up --backend sim, a plain tenant ------------------------------------------
@dataclass
class Tenant:
    stack: Stack
    access_key: str
    secret_key: str
    log: redis.Redis
    log_key: str

    def post(self, path: str, body: bytes | str | Any) -> tuple[int, Any]:
        """A signed request with ``body`` sent as is when bytes or text (raw JSON, numbers a
        JSON encoder would never write), else JSON-encoded."""
        if isinstance(body, str):
            data = body.encode()
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        return signed_request(
            self.stack.exports["BACKEND_ENDPOINT"],
            "POST",
            path,
            self.access_key,
            self.secret_key,
            data,
            timeout=120,
        )

    def last_id(self) -> str:
        newest = self.log.xrevrange(self.log_key, count=1)
        return newest[0][0].decode() if newest else "0-0"

    def appended_since(self, last: str) -> list[tuple[str, int]]:
        """(event type, bytes) of every log entry after ``last``."""
        out = []
        for _, fields in self.log.xrange(self.log_key, min=f"({last}", max="+"):
            size = sum(len(k) + len(v) for k, v in fields.items())
            body = json.loads(fields[b"e"])
            out.append((str(body.get("type")), size))
        return out


@contextmanager
def sim_up() -> Iterator[Stack]:
    """``kh up --backend sim`` in a temporary directory (as ``khstack.kh_up``, simulated
    kernels: the requests, the log and the scheduler are real)."""
    with stack_root("kh-bounds-") as root:
        environ = {
            **os.environ,
            "KH_DATA_DIR": str(root / "data"),
            "KH_CONFIG_DIR": str(root / "cfg"),
            "KH_GATEWAY_PORT": "0",
            "KH_STOP_GRACE_S": "1",
        }
        environ.pop("KH_REDIS_URL", None)
        try:
            up = subprocess.run(
                [*KH, "up", "--backend", "sim"],
                env=environ,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert up.returncode == 0, up.stderr
            lines = [line for line in up.stdout.splitlines() if line.startswith("export ")]
            exports = dict(line.removeprefix("export ").split("=", 1) for line in lines)
            yield Stack(root, exports)
        finally:
            stop_stack(root, environ)


def _tenant(stack: Stack, name: str) -> Tenant:
    access_key, secret_key = asyncio.run(second_tenant(stack, name))
    client = redis.Redis.from_url(stack.exports["KH_REDIS_URL"])
    prefix = os.environ.get("KH_KEY_PREFIX", "kh")
    return Tenant(stack, access_key, secret_key, client, f"{prefix}:log")


@pytest.fixture(scope="class")
def tenant() -> Iterator[Tenant]:
    """One sim stack for the front-door tests (class-scoped: it is down before the Docker
    test brings up its own, so two stacks never share the machine)."""
    with sim_up() as stack:
        mallory = _tenant(stack, "mallory")
        yield mallory
        mallory.log.close()


def _create(name: str, resources: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "image": "python", "enqueueOnly": True, **extra}
    if resources is not None:
        body["config"] = {"resources": resources}
    return body


def _refused(tenant: Tenant, body: Any, *words: str) -> dict[str, Any]:
    """A 400 problem body naming what was wrong, and nothing appended to the log."""
    before = tenant.last_id()
    status, problem = tenant.post("/session", body)
    assert status == 400, (status, problem)
    assert isinstance(problem, dict) and problem["type"].endswith("/invalid-api-params")
    text = json.dumps(problem)
    for word in words:
        assert word in text, (word, problem)
    assert len(text) < 4096  # never an echo of what was sent
    assert "session_enqueued" not in [t for t, _ in tenant.appended_since(before)]
    return problem


# ---- the fuzzer ---------------------------------------------------------------------------------
class Raw(str):
    """A JSON token written as is (numbers no encoder would write: ``1e100000000``)."""


def _encode(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value)


_raw_numbers = st.one_of(
    st.from_regex(r"-?[0-9]{1,60}(\.[0-9]{1,60})?([eE][+-]?[0-9]{1,10})?", fullmatch=True),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e100000000", "-0", "0.0", "1e-400"]),
).map(Raw)
_scalars = st.one_of(
    _raw_numbers,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=40),
    st.from_regex(r"[0-9.]{1,30}[eE]?[0-9]{0,9}[kmgtKMGT]?", fullmatch=True),
    st.sampled_from(["0", "1", "256m", "1g", "0.5", "1e100000000", "Infinity", "NaN"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_long_text = st.one_of(st.text(max_size=30), st.integers(0, 200_000).map(lambda n: "é" * n))


def _mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """``valid`` nine times in ten: a request must get past its other fields for the
    hostile one to reach the code that would append it."""
    return st.sampled_from(range(10)).flatmap(lambda n: hostile if n == 9 else valid)


_amounts = st.one_of(
    _raw_numbers,  # as raw JSON numbers
    _raw_numbers.map(str),  # and as strings
    st.sampled_from(
        [
            "0",
            "1",
            "2",
            "256m",
            "1g",
            "0.5",
            "1e100000000",
            "Infinity",
            "NaN",
            "1" + "0" * 100,
            "0." + "0" * 50 + "1",
            "64t",
            "1e-400",
        ]
    ),
    st.integers(),
    st.floats(),
    _values,
)
_slot_names = _mostly(
    st.sampled_from(["cpu", "mem", "cuda.device", "rocm.device"]), st.text(max_size=70)
)
_config = st.fixed_dictionaries(
    {"resources": _mostly(st.dictionaries(_slot_names, _amounts, min_size=1, max_size=3), _values)},
    optional={
        "environ": _mostly(st.dictionaries(st.text(max_size=20), _long_text, max_size=4), _values),
        "mounts": _mostly(st.lists(_long_text, max_size=3), _values),
        "preopenPorts": _mostly(
            st.lists(st.integers(1024, 65535), max_size=3),
            st.lists(st.integers(), max_size=100) | _values,
        ),
        "resource_opts": _values,
        "scalingGroup": _mostly(st.just("default"), _long_text),
    },
)
_requests = st.fixed_dictionaries(
    {
        "name": _mostly(st.from_regex(r"fz[a-z0-9]{8,12}", fullmatch=True), _long_text),
        "image": _mostly(st.just("python"), _long_text),
        "config": _mostly(_config, _values),
    },
    optional={
        "startupCommand": _long_text,
        "bootstrap_script": _long_text,
        "type": _mostly(st.just("interactive"), _values),
        "clusterSize": _mostly(st.integers(1, 2), st.integers() | _raw_numbers),
        "tag": _long_text,
        "dependencies": _mostly(st.just([]), st.lists(_long_text, max_size=5) | _values),
        "callbackUrl": _long_text,
        "maxWaitSeconds": _mostly(st.just(0), _raw_numbers),
        "group": _mostly(st.just("default"), _long_text),
    },
)


class TestFrontDoor:
    """A plain tenant against one ``kh up --backend sim``."""

    # ---- attack 3 and 6: slot values ----
    _SLOT_CASES = [
        ('{"mem": "0"}', "mem"),
        ('{"mem": 0}', "mem"),
        ('{"cpu": "0"}', "cpu"),
        ('{"cpu": 0, "mem": "1g"}', "cpu"),
        ('{"cpu": "-1"}', "cpu"),
        ('{"mem": "-1g"}', "mem"),
        ('{"cpu": "NaN"}', "cpu"),
        ('{"cpu": NaN}', "NaN"),  # a bare NaN token: not JSON, the body is refused naming it
        ('{"cpu": "Infinity"}', "cpu"),
        ('{"cpu": 1e400}', "cpu"),  # a JSON number that is infinite as a float
        ('{"mem": "inf"}', "mem"),
        ('{"cpu": "1e100000000"}', "cpu"),
        ('{"cpu": 1e100000000}', "cpu"),
        ('{"mem": "1e100000000"}', "mem"),
        ('{"cpu": "1000000000000000000000000000000"}', "cpu"),
        ('{"cpu": 100000000000000000000000000000000000000}', "cpu"),
        ('{"cpu": "0.0000001"}', "cpu"),
        ('{"mem": "128m"}', "smaller than the minimum required by the image"),  # min 256m
        ('{"cpu": "0.5"}', "smaller than the minimum required by the image"),  # min 1
        ('{"rocm.device": 1}', "rocm.device"),
        ('{"cpu": [1, [2, [3]]]}', "cpu"),
        ('{"cpu": {"a": 1}}', "cpu"),
        ('{"cpu": true}', "cpu"),
        ('{"Bad Slot!": 1}', "resources"),
    ]

    @on_stack
    @pytest.mark.parametrize(("resources", "named"), _SLOT_CASES)
    def test_slot_values_are_bounded_before_they_reach_the_log(
        self, tenant: Tenant, resources: str, named: str
    ) -> None:
        body = (
            f'{{"name": "bad-slots", "image": "python", "enqueueOnly": true, '
            f'"config": {{"resources": {resources}}}}}'
        )
        _refused(tenant, body, named)

    @on_stack
    def test_a_slot_no_agent_offers_is_refused_naming_it_and_the_group_still_schedules(
        self,
        tenant: Tenant,
    ) -> None:
        """Attack 7 through the front door: the request is refused with the slot's name, and a
        normal session in the same group is scheduled right after."""
        _refused(tenant, _create("rocm-ask", {"rocm.device": 1}), "rocm.device", "unknown")
        status, created = tenant.post("/session", _create("after-rocm", {"cpu": 1, "mem": "512m"}))
        assert status == 201, created

        async def running() -> bool:
            store = RedisEventStore.from_url(tenant.stack.exports["KH_REDIS_URL"])
            try:
                record = await ReadModels(store).session(created["sessionId"])
                return record is not None and record["status"] == "RUNNING"
            finally:
                await store.close()

        asyncio.run(eventually(running, timeout=60, message="the normal session runs"))

    @on_stack
    def test_a_request_within_bounds_gets_exactly_what_it_asked(self, tenant: Tenant) -> None:
        before = tenant.last_id()
        status, created = tenant.post("/session", _create("fine-one", {"cpu": "1.5", "mem": "1g"}))
        assert status == 201, created
        enqueued = [size for t, size in tenant.appended_since(before) if t == "session_enqueued"]
        assert len(enqueued) == 1 and enqueued[0] < 4096

        async def requested() -> dict[str, str]:
            store = RedisEventStore.from_url(tenant.stack.exports["KH_REDIS_URL"])
            try:
                record = await ReadModels(store).session(created["sessionId"])
                assert record is not None
                kernel = next(iter(record["kernels"].values()))
                return dict(kernel["requested_slots"])
            finally:
                await store.close()

        assert asyncio.run(requested()) == {"cpu": "1.5", "mem": str(G)}

    # ---- attack 6: strings and lists ----
    _BIG = 2 * MAX_SCRIPT
    """Over the field's cap and under the gateway's 8 MiB body cap, which refuses bigger
    bodies before any field is read (tests/test_hostile_gateway.py)."""

    @on_stack
    @pytest.mark.parametrize(
        ("extra", "named"),
        [
            ({"startupCommand": "x" * _BIG, "type": "batch"}, "startupCommand"),
            ({"startup_command": "echo hi; " * 10_000}, "startup_command"),
            ({"bootstrap_script": "x" * _BIG}, "bootstrap_script"),
            ({"tag": "t" * 100_000}, "tag"),
            ({"callbackUrl": "http://x/" + "a" * 100_000}, "callbackUrl"),
            ({"dependencies": [str(uuid.uuid4()) for _ in range(1000)]}, "dependencies"),
            ({"clusterSize": 100_000}, "clusterSize"),
            ({"maxWaitSeconds": 10**400}, "maxWaitSeconds"),
            ({"config": {"environ": {f"K{i}": "v" for i in range(10_000)}}}, "config.environ"),
            ({"config": {"environ": {"K": "v" * 100_000}}}, "config.environ.K"),
            ({"config": {"mounts": ["m"] * 10_000}}, "config.mounts"),
            ({"config": {"preopenPorts": list(range(2000, 12000))}}, "config.preopenPorts"),
            ({"config": {"agentList": ["i-x"] * 1000}}, "config.agentList"),
            ({"config": {"resource_opts": {"shmem": ["x" * 1000] * 100}}}, "config.resource_opts"),
            ({"config": {"resources": {f"s{i}": 1 for i in range(1000)}}}, "resources"),
        ],
    )
    def test_strings_lists_and_maps_are_capped_naming_the_field(
        self, tenant: Tenant, extra: dict[str, Any], named: str
    ) -> None:
        _refused(tenant, _create("long-ones", **extra), named)

    @on_stack
    def test_an_inference_session_is_no_way_around_the_lifetime_checks(
        self, tenant: Tenant
    ) -> None:
        """Replicas skip idle and lifetime checks (as 23.3.5's): a plain create of type
        inference would be a session no check ever reclaims (review S16)."""
        _refused(tenant, _create("forever", type="inference"), "/services")

    @on_stack
    def test_a_name_of_a_megabyte_and_a_body_nested_deep_are_400_not_500(
        self, tenant: Tenant
    ) -> None:
        _refused(tenant, _create("n" * 2**20), "name")
        _refused(
            tenant,
            '{"name": "deep", "image": "python", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "Malformed body",
        )

    @on_stack
    def test_execute_code_and_options_are_capped(self, tenant: Tenant) -> None:
        status, created = tenant.post("/session", _create("exec-caps"))
        assert status == 201, created
        path = f"/session/{created['sessionName']}"
        status, problem = tenant.post(path, {"mode": "query", "runId": "r" * 10_000, "code": "1"})
        assert status == 400 and "runId" in json.dumps(problem), problem
        status, problem = tenant.post(path, {"mode": "query", "code": "x" * (5 * 2**20)})
        assert status == 400 and "code" in json.dumps(problem), problem
        status, problem = tenant.post(
            path, {"mode": "query", "code": "1", "options": {"o": "x" * 100_000}}
        )
        assert status == 400 and "options" in json.dumps(problem), problem

    @on_stack
    def test_kh_session_create_with_mem_0_is_one_line_and_exit_1(self, tenant: Tenant) -> None:
        root = tenant.stack.root
        env = {
            "KH_DATA_DIR": str(root / "data"),
            "KH_CONFIG_DIR": str(root / "cfg"),
            "HOME": os.environ["HOME"],
        }  # the operator's: Ray's token is ~/.ray/auth_token
        for flags, named in (
            (["--mem", "0"], "mem"),
            (["--cpu", "0"], "cpu"),
            (["--cpu", "1e100000000"], "cpu"),
            (["-r", "rocm.device=1"], "rocm.device"),
        ):
            done = tenant.stack.kh("session", "create", "--name", "cli-bad", *flags, **env)
            assert done.returncode == 1, (flags, done.stdout, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("kh: error: ") and named in lines[0], (
                lines
            )
            assert done.stdout == ""

    @on_stack
    @settings(deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=_requests)
    def test_fuzzed_create_requests_never_5xx_and_grow_the_log_boundedly(
        self, tenant: Tenant, request: dict[str, Any]
    ) -> None:
        request["enqueueOnly"] = True  # an accepted one is answered at once (it may never fit)
        before = tenant.last_id()
        status, answer = tenant.post("/session", _encode(request))
        event(f"status {status}")
        assert status < 500, (status, answer)
        assert status in (201, 400, 403, 404, 412), (status, answer)
        appended = tenant.appended_since(before)
        assert sum(size for _, size in appended) <= LOG_GROWTH_PER_REQUEST, appended
        assert all(size <= LARGEST_ENTRY for _, size in appended), appended
        if status != 201:
            assert "session_enqueued" not in [t for t, _ in appended]


# ---- attack 3 on Docker: the container's limits ----------------------------------------------
@pytest.fixture(scope="module")
def docker_tenant(shared_stack: Stack) -> Iterator[Tenant]:
    missing = docker_missing()
    if missing is not None:
        if docker_required():
            pytest.fail(f"KH_REQUIRE_DOCKER=1 but {missing}")
        pytest.skip(missing)
    victim = _tenant(shared_stack, "memzero")
    try:
        yield victim
    finally:
        victim.log.close()


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_mem_0_never_makes_an_unlimited_container(docker_tenant: Tenant) -> None:
    """``--mem 0`` / ``mem: "0"`` used to start a container with ``Memory=0`` (no limit). Now
    it is refused, and a session that leaves memory out gets the image's minimum, which the
    container enforces."""
    _refused(docker_tenant, _create("mem-zero", {"mem": "0"}), "mem")
    _refused(docker_tenant, _create("cpu-zero", {"cpu": "0"}), "cpu")
    status, created = docker_tenant.post(
        "/session", {"name": "mem-default", "image": "python", "maxWaitSeconds": 120}
    )
    assert status == 201 and created["status"] == "RUNNING", created
    found = subprocess.run(
        ["docker", "ps", "-q", "--filter", "label=ai.backend.kernel-id"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    inspected = json.loads(
        subprocess.run(
            ["docker", "inspect", *found], capture_output=True, text=True, check=True
        ).stdout
    )
    ours = [
        c
        for c in inspected
        if created["sessionId"] in json.dumps(c["Config"]["Labels"])
        or c["Config"]["Labels"].get("ai.backend.kernel-id") in _kernels(docker_tenant, created)
    ]
    assert ours, "the session's container"
    host = ours[0]["HostConfig"]
    assert host["Memory"] >= 256 * 2**20 and host["CpuQuota"] > 0, host


def _kernels(tenant: Tenant, created: dict[str, Any]) -> set[str]:
    async def ids() -> set[str]:
        store = RedisEventStore.from_url(tenant.stack.exports["KH_REDIS_URL"])
        try:
            record = await ReadModels(store).session(created["sessionId"])
            return set(record["kernels"]) if record else set()
        finally:
            await store.close()

    return asyncio.run(ids())


# ---- attack 7 at the scheduler, on real Redis (the write side in one process) -----------------
@pytest.mark.redis
async def test_a_pending_slot_no_agent_has_stays_pending_with_a_reason_once_and_others_run(
    store: RedisEventStore,
) -> None:
    """A session asking for ``rocm.device`` that reached the log anyway (an operator's
    direct enqueue; a slot whose agents left the group): before, every pass raised on it and
    nobody else in the group was scheduled. Now it waits with the slot named, that reason is
    appended once, not every pass, and the session behind it runs."""
    async with LocalCluster(store, safety_tick_s=0.3) as cluster:

        async def create(name: str, **slots: Any) -> uuid.UUID:
            sid: uuid.UUID = await cluster.shard.handle(
                CreateSession(
                    name=name,
                    access_key="AK1",
                    scaling_group="default",
                    image="kernelhub/python:3.11",
                    requested=[ResourceSlot({"cpu": 1, "mem": G, **slots})],
                )
            )
            return sid

        odd = await create("odd", **{"rocm.device": 1})
        normal = await create("normal")
        models = ReadModels(store)

        async def status(sid: uuid.UUID, wanted: str) -> bool:
            record = await models.session(str(sid))
            return record is not None and record["status"] == wanted

        await eventually(lambda: status(normal, "RUNNING"), timeout=30, message="normal runs")
        for _ in range(3):
            await cluster.scheduler.run_pass()
        record = await models.session(str(odd))
        assert record is not None and record["status"] == "PENDING"
        assert record["status_info"] == "no-available-instances"
        assert "rocm.device" in json.dumps(record["status_data"])
        failures = [
            e
            for e in await store.read_stream(session_stream(odd))
            if e.type == "session_scheduling_failed"
        ]
        assert len(failures) == 1


# ---- the container backend's own last check ----------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize(
    "slots",
    [
        {},
        {"cpu": "1"},
        {"mem": "268435456"},
        {"cpu": "0", "mem": "268435456"},
        {"cpu": "1", "mem": "0"},
    ],
)
def test_the_docker_backend_never_configures_a_container_without_both_limits(
    tmp_path: Path, slots: dict[str, str]
) -> None:
    """Whatever path a launch took (an operator's direct enqueue, a bench, a log written
    before the bounds), Docker reads 0 as "no limit": the backend refuses to build that
    container rather than start it unlimited; with both amounts the limits are set."""
    from actors.agents.backends.base import KernelLaunch
    from actors.agents.backends.docker import DockerBackend, UnlimitedKernel

    backend = DockerBackend(tmp_path, owner="i-test", cores=[0])
    asked = {name: Decimal(value) for name, value in slots.items()}
    launch = KernelLaunch(kernel_id=uuid.uuid4(), session_id=uuid.uuid4(), slots=asked)
    with pytest.raises(UnlimitedKernel):
        backend._config(launch, {}, (0,))
    launch = KernelLaunch(
        kernel_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        slots={"cpu": Decimal("0.5"), "mem": Decimal(2**28)},
    )
    host = backend._config(launch, {}, (0,))["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 2**28 and host["CpuQuota"] == 50_000
