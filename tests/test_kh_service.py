"""``kh service`` and the SDK's :class:`~kernelhub.sdk.services.Services`.

Two layers:

- ``unit``: what the CLI and the SDK *send* and how they *print* the answers, against a
  real local aiohttp server that records each request and answers in 23.3.5's ``/services``
  shapes (and a stand-in inference proxy at ``/serving/<id>``). It plays no part in what is
  served: it only checks parsing and printing, names resolved, one-line errors.
- ``e2e``: one real ``kh up``: a model folder holding a tiny stdlib model server and its
  ``model-definition.yaml``, ``kh service create`` until a route is HEALTHY, ``info``,
  ``generate-token``, a call through the endpoint with and without the token, ``scale``,
  ``rm`` (drained, then gone), and ``kh why <endpoint>`` telling the replicas' history.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from actors.domain.commands.endpoints import EndpointCommand
from actors.endpoints.writer import EndpointService
from events import Event, NewEvent, RedisEventStore
from events.catalogue import (
    EndpointCreated,
    EndpointDestroyed,
    EndpointDestroying,
    EndpointRouteAdded,
    EndpointRouteRemoved,
    EndpointRouteStatusChanged,
    EndpointScaled,
    EndpointTokenIssued,
    KernelTerminated,
    SessionTerminated,
    SessionTerminating,
)
from events.catalogue.endpoint import ModelService
from events.envelope import Initiator
from kernelhub.cli import main
from kernelhub.history.endpoint_why import explain_endpoint, route_lines
from kernelhub.redis_server import EmbeddedRedis
from kernelhub.sdk import AuthenticationFailed, Client, ClientConfig, NotFound, PendingTimeout
from kernelhub.sdk.services import Services, call_endpoint

from .khstack import KH, Stack, second_tenant
from .serving_assets import MODEL_SERVER, model_definition

PROBLEM = "application/problem+json"
NOT_FOUND = {
    "type": "https://api.backend.ai/probs/object-not-found",
    "title": "No such endpoint.",
}


# ---- a stand-in gateway: the /services contract's shapes, recorded ---------------------------
class FakeGateway:
    """``/services`` in memory, every request recorded as (method, path, query, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.refuse: dict[str, Any] | None = None
        self.token = "tok-" + uuid.uuid4().hex
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # -- the server's life
    def __enter__(self) -> FakeGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_route("*", "/services", self._services)
        app.router.add_route("*", "/services/{id}", self._one)
        app.router.add_post("/services/{id}/{verb}", self._verb)
        app.router.add_route("*", "/services/{id}/routings/{route}", self._route)
        app.router.add_route("*", "/serving/{id}{tail:.*}", self._proxy)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        if raw and request.content_type == "application/json":
            body = json.loads(raw)
        elif raw:
            body = raw.decode()
        self.requests.append((request.method, request.path, dict(request.query), body))
        if self.refuse is not None and request.path.startswith("/services"):
            return web.json_response(self.refuse, status=400, content_type=PROBLEM)
        response: web.StreamResponse = await handler(request)
        return response

    # -- the contract's shapes
    def add(self, name: str, routes: list[str], *, public: bool = False) -> dict[str, Any]:
        endpoint_id = str(uuid.uuid4())
        info = {
            "endpoint_id": endpoint_id,
            "name": name,
            "desired_session_count": len(routes),
            "active_routes": [
                {
                    "route_id": str(uuid.uuid4()),
                    "session_id": str(uuid.uuid4()),
                    "traffic_ratio": 1.0,
                    "status": status,
                }
                for status in routes
            ],
            "service_endpoint": f"{self.url}/serving/{endpoint_id}",
            "is_public": public,
        }
        self.endpoints[endpoint_id] = info
        return info

    def _found(self, request: web.Request) -> dict[str, Any]:
        info = self.endpoints.get(request.match_info["id"])
        if info is None:
            raise web.HTTPNotFound(text=json.dumps(NOT_FOUND), content_type=PROBLEM)
        return info

    async def _services(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await request.json()
            info = self.add(body["name"], ["PROVISIONING"] * body["desired_session_count"])
            info["is_public"] = body["open_to_public"]
            return web.json_response(info)
        name = request.query.get("name")
        return web.json_response(
            [
                {
                    "id": e["endpoint_id"],
                    "name": e["name"],
                    "desired_session_count": e["desired_session_count"],
                    "active_route_count": len(e["active_routes"]),
                    "service_endpoint": e["service_endpoint"],
                    "is_public": e["is_public"],
                }
                for e in self.endpoints.values()
                if name is None or e["name"] == name
            ]
        )

    async def _one(self, request: web.Request) -> web.Response:
        info = self._found(request)
        if request.method == "DELETE":
            del self.endpoints[info["endpoint_id"]]
            return web.json_response({"success": True})
        return web.json_response(info)

    async def _verb(self, request: web.Request) -> web.Response:
        info = self._found(request)
        verb = request.match_info["verb"]
        if verb == "scale":
            to = (await request.json())["to"]
            current = len(info["active_routes"])
            info["desired_session_count"] = to
            return web.json_response({"current_route_count": current, "target_count": to})
        if verb == "token":
            return web.json_response({"token": self.token})
        return web.json_response({"success": True})

    async def _route(self, request: web.Request) -> web.Response:
        info = self._found(request)
        route = request.match_info["route"]
        if request.method == "PUT":
            for r in info["active_routes"]:
                if r["route_id"] == route:
                    r["traffic_ratio"] = (await request.json())["traffic_ratio"]
            return web.json_response(info)
        return web.json_response({"success": True})

    async def _proxy(self, request: web.Request) -> web.Response:
        info = self._found(request)
        if not info["is_public"] and request.headers.get("Authorization") != (
            f"BackendAI {self.token}"
        ):
            refusal = {"type": "https://api.backend.ai/probs/auth-failed", "title": "No token."}
            return web.json_response(refusal, status=401, content_type=PROBLEM)
        tail = request.match_info["tail"]
        if tail == "/missing":
            return web.json_response({"detail": "the model has no such thing"}, status=404)
        return web.json_response({"path": tail, "received": len(await request.read())})


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeGateway]:
    with FakeGateway() as running:
        monkeypatch.setenv("BACKEND_ENDPOINT", running.url)
        monkeypatch.setenv("BACKEND_ACCESS_KEY", "AKTEST")
        monkeypatch.setenv("BACKEND_SECRET_KEY", "sk-test")
        monkeypatch.setenv("KH_CONFIG_DIR", str(tmp_path / "cfg"))
        monkeypatch.delenv("KH_DEBUG", raising=False)
        yield running


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["service", *args])
    out, err = capsys.readouterr()
    return code, out, err


def config(gateway: FakeGateway) -> ClientConfig:
    return ClientConfig(endpoint=gateway.url, access_key="AKTEST", secret_key="sk-test")


# ---- unit: what is sent, what is printed ------------------------------------------------------
@pytest.mark.unit
def test_create_sends_the_official_clients_keys_and_prints_the_endpoint(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    boot = tmp_path / "boot.sh"
    boot.write_text("#!/bin/sh\necho booted\n")
    code, out, err = run(
        capsys,
        *("create", "python", "my-model", "2", "-t", "echo"),
        *("-e", "A=b c", "-r", "cpu=1", "-r", "mem=512m", "--resource-opts", "shmem=64m"),
        *("--model-mount-destination", "/srv/model", "--scaling-group", "default"),
        *("--tag", "nightly", "--bootstrap-script", str(boot), "-p", "proj", "--public"),
    )
    assert code == 0, err
    ((method, path, _query, body),) = gateway.requests
    assert (method, path) == ("POST", "/services")
    assert body == {
        "name": "echo",
        "desired_session_count": 2,
        "image": "python",
        "cluster_size": 1,
        "open_to_public": True,
        "group": "proj",
        "domain": "default",
        "tag": "nightly",
        "bootstrap_script": "#!/bin/sh\necho booted\n",
        "config": {
            "model": "my-model",
            "model_mount_destination": "/srv/model",
            "environ": {"A": "b c"},
            "scaling_group": "default",
            "resources": {"cpu": "1", "mem": "512m"},
            "resource_opts": {"shmem": "64m"},
        },
    }
    (endpoint,) = gateway.endpoints.values()
    assert f'endpoint "echo" created ({endpoint["endpoint_id"]})' in out
    assert endpoint["service_endpoint"] in out
    code, out, _ = run(capsys, "create", "python", "my-model", "1", "-t", "quiet", "--json")
    assert code == 0 and json.loads(out)["name"] == "quiet" and not json.loads(out)["is_public"]


@pytest.mark.unit
def test_an_endpoint_is_named_by_name_or_id(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    echo = gateway.add("echo", ["HEALTHY", "PROVISIONING"])
    code, out, err = run(capsys, "info", "echo")
    assert code == 0, err
    assert gateway.requests[0][1:3] == ("/services", {"name": "echo"})
    assert gateway.requests[1][:2] == ("GET", f"/services/{echo['endpoint_id']}")
    for route in echo["active_routes"]:
        assert route["route_id"] in out and route["status"] in out
    code, out, _ = run(capsys, "info", echo["endpoint_id"], "--json")
    assert code == 0 and json.loads(out) == echo
    code, out, _ = run(capsys, "list", "--json")
    assert json.loads(out)["items"][0]["id"] == echo["endpoint_id"]
    code, out, _ = run(capsys, "get-endpoint", "echo")
    assert out.strip() == echo["service_endpoint"]


@pytest.mark.unit
@pytest.mark.parametrize("ref", ["nope", str(uuid.uuid4())])
def test_an_unknown_endpoint_is_one_line_and_exit_3(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str], ref: str
) -> None:
    for args in (["info", ref], ["scale", ref, "2"], ["rm", ref], ["generate-token", ref, "1h"]):
        code, out, err = run(capsys, *args)
        assert code == 3, (args, out, err)
        assert err.startswith("kh: error: No such endpoint.") and "object-not-found" in err
        assert err.count("\n") == 1 and "Traceback" not in err and not out


@pytest.mark.unit
def test_several_endpoints_of_one_name_ask_for_the_id(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = gateway.add("twin", []), gateway.add("twin", [])
    code, _, err = run(capsys, "info", "twin")
    assert code == 1 and first["endpoint_id"] in err and second["endpoint_id"] in err
    assert "give its id" in err


@pytest.mark.unit
def test_each_command_sends_its_route_and_body(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    echo = gateway.add("echo", ["HEALTHY"])
    eid, rid = echo["endpoint_id"], echo["active_routes"][0]["route_id"]
    expected = [
        (["scale", eid, "3"], ("POST", f"/services/{eid}/scale", {"to": 3}), "3 wanted"),
        (["sync", eid], ("POST", f"/services/{eid}/sync", None), "synced"),
        (
            ["update-traffic-ratio", eid, rid, "0.25"],
            ("PUT", f"/services/{eid}/routings/{rid}", {"traffic_ratio": 0.25}),
            "0.25",
        ),
        (
            ["downscale-route", eid, rid],
            ("DELETE", f"/services/{eid}/routings/{rid}", None),
            "draining",
        ),
        (
            ["generate-token", eid, "2h"],
            ("POST", f"/services/{eid}/token", {"duration": "2h"}),
            gateway.token,
        ),
        (
            ["generate-token", eid, "--valid-until", "4102444800"],
            ("POST", f"/services/{eid}/token", {"valid_until": 4102444800}),
            gateway.token,
        ),
        (["rm", eid], ("DELETE", f"/services/{eid}", None), "removing"),
    ]
    for args, (method, path, body), shown in expected:
        gateway.requests.clear()
        code, out, err = run(capsys, *args)
        assert code == 0, (args, err)
        assert [(m, p, b) for m, p, _q, b in gateway.requests] == [(method, path, body)]
        assert shown in out
    assert not gateway.endpoints


@pytest.mark.unit
def test_the_token_alone_is_on_stdout(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    echo = gateway.add("echo", ["HEALTHY"])
    code, out, _ = run(capsys, "generate-token", "echo", "1d", "-q")
    assert code == 0 and out == gateway.token + "\n"
    code, out, _ = run(capsys, "generate-token", echo["endpoint_id"], "1d", "--json")
    assert json.loads(out) == {"token": gateway.token}


@pytest.mark.unit
@pytest.mark.parametrize(
    "args",
    [
        ["generate-token", "echo"],
        ["generate-token", "echo", "1h", "--valid-until", "1"],
        ["create", "python", "m", "1", "-e", "NOEQUALS"],
        ["create", "python", "m", "1", "-r", "cpu"],
        ["create", "python", "m", "1", "--cluster-mode", "ring"],
        ["call", "echo", "-H", "no-colon"],
        ["scale", "echo", "-1"],
    ],
)
def test_what_cannot_be_sent_is_a_usage_error(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    gateway.add("echo", ["HEALTHY"])
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert "Traceback" not in err
    assert not [r for r in gateway.requests if r[0] != "GET"]  # nothing was changed


@pytest.mark.unit
def test_a_refusal_is_the_servers_one_line(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.refuse = {
        "type": "https://api.backend.ai/probs/invalid-api-params",
        "title": "Invalid API parameters.",
        "msg": "startup_command: the model definition says how the model starts",
    }
    code, out, err = run(capsys, "create", "python", "m", "1", "-c", "python3 serve.py")
    assert gateway.requests[0][3]["startup_command"] == "python3 serve.py"  # sent, not dropped
    assert code == 1 and not out
    assert err == (
        "kh: error: Invalid API parameters.: startup_command: the model definition says how "
        "the model starts (400 invalid-api-params)\n"
    )


@pytest.mark.unit
def test_call_passes_the_token_and_tells_the_proxys_refusal_from_the_models_answer(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    echo = gateway.add("echo", ["HEALTHY"])
    code, _, err = run(capsys, "call", "echo", "/predict")
    assert code == 1 and "No token." in err and "401 auth-failed" in err
    payload = tmp_path / "input.bin"
    payload.write_bytes(b"x" * 1000)
    code, out, err = run(
        capsys, "call", "echo", "/predict", "-X", "post", "-d", f"@{payload}",
        "--token", gateway.token, "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {"status": 200, "body": {"path": "/predict", "received": 1000}}
    code, out, err = run(capsys, "call", "echo", "missing", "--token", gateway.token)
    assert code == 1 and "no such thing" in out and "the model answered 404" in err
    # the SDK: the model's own 404 is an answer; the proxy's refusal raises
    answer = call_endpoint(echo["service_endpoint"], "/missing", token=gateway.token)
    assert answer.status_code == 404
    with pytest.raises(AuthenticationFailed):
        call_endpoint(echo["service_endpoint"], "/x")
    raw = call_endpoint(echo["service_endpoint"], "/x", raise_refusal=False)
    assert raw.status_code == 401


@pytest.mark.unit
def test_the_sdk_waits_for_healthy_routes_and_says_what_it_saw(gateway: FakeGateway) -> None:
    echo = gateway.add("echo", ["HEALTHY", "PROVISIONING"])
    with Client(config(gateway)) as client:
        services = Services(client)
        assert services.wait_healthy("echo", 1, timeout=5)["name"] == "echo"
        started = time.monotonic()
        with pytest.raises(PendingTimeout, match="1 of 2 routes HEALTHY") as late:
            services.wait_healthy(echo["endpoint_id"], timeout=0.6)
        assert time.monotonic() - started < 5
        assert "PROVISIONING" in str(late.value) and "kh why" in str(late.value)
        with pytest.raises(NotFound):
            services.info(str(uuid.uuid4()))
        with pytest.raises(Exception, match="duration or valid_until"):
            services.generate_token("echo")
        assert "wait_healthy" in dir(services)


# ---- unit: kh why <endpoint>, told from the streams ------------------------------------------
def in_stream(stream: str, payloads: list[Any], by: str | None = None) -> list[Event]:
    """The payloads as a stream's events, a second apart; the first asked ``by`` someone,
    and so is a ``(payload, email)`` pair (a person's command, not the reconciler's)."""
    events = []
    for i, item in enumerate(payloads):
        payload, who = item if isinstance(item, tuple) else (item, by if i == 0 else None)
        events.append(
            Event(
                schema_version=1,
                stream=stream,
                version=i + 1,
                position=f"{1_800_000_000_000 + (i + 1) * 1000}-0",
                data=payload,
                initiator=Initiator(email=who) if who else None,
            )
        )
    return events


@pytest.mark.unit
def test_why_tells_each_routes_life_and_why_it_was_drained() -> None:
    eid, owner = uuid.uuid4(), uuid.uuid4()
    r1, r2, r3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    s1, s2, s3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    service = ModelService(start_command=["python3", "/models/server.py"], port=8000,
                           health_check_path="/health", initial_delay_s=30)  # fmt: skip
    created = EndpointCreated(
        endpoint_id=eid, name="echo", image="python", model=uuid.uuid4(),
        resource_slots={"cpu": 1}, scaling_group="default", desired_session_count=1,
        owner=owner, access_key="AK", project_id=uuid.uuid4(), domain="default",
        service=service,
    )  # fmt: skip

    def status(route: uuid.UUID, to: str) -> EndpointRouteStatusChanged:
        return EndpointRouteStatusChanged(endpoint_id=eid, route_id=route, status=to)  # type: ignore[arg-type]

    events = in_stream(
        f"endpoint-{eid.hex}",
        [
            created,
            EndpointRouteAdded(endpoint_id=eid, route_id=r1, session_id=s1, traffic_ratio=1),
            status(r1, "HEALTHY"),
            EndpointTokenIssued(
                endpoint_id=eid, token_id=uuid.uuid4(), expires_at=datetime(2030, 1, 1, tzinfo=UTC)
            ),
            EndpointScaled(endpoint_id=eid, desired_session_count=2),
            EndpointRouteAdded(endpoint_id=eid, route_id=r2, session_id=s2, traffic_ratio=1),
            status(r2, "UNHEALTHY"),
            status(r2, "TERMINATING"),
            EndpointRouteRemoved(endpoint_id=eid, route_id=r2),
            EndpointRouteAdded(endpoint_id=eid, route_id=r3, session_id=s3, traffic_ratio=1),
            status(r3, "HEALTHY"),
            EndpointScaled(endpoint_id=eid, desired_session_count=1),
            status(r3, "TERMINATING"),
            EndpointRouteRemoved(endpoint_id=eid, route_id=r3),
            EndpointDestroying(endpoint_id=eid),
            status(r1, "TERMINATING"),
            EndpointRouteRemoved(endpoint_id=eid, route_id=r1),
            EndpointDestroyed(endpoint_id=eid),
        ],
        by="alice@example.com",
    )
    kernel = uuid.uuid4()
    sessions = {
        str(s2): in_stream(
            f"session-{s2}",
            [
                KernelTerminated(
                    kernel_id=kernel,
                    session_id=s2,
                    reason="self-terminated",  # type: ignore[arg-type]
                    exit_code=1,
                ),
                SessionTerminating(session_id=s2, reason="endpoint-route-unhealthy"),
                SessionTerminated(session_id=s2, reason="endpoint-route-unhealthy"),
            ],
        )
    }
    told = explain_endpoint(events, sessions, 1_900_000_000_000)
    assert (told.status, told.name, told.desired_session_count) == ("destroyed", "echo", 0)
    assert told.headline().startswith(f"endpoint {eid} (echo) is destroyed since")
    text = "\n".join(told.lines)
    assert "created by alice@example.com: 1 replica of python" in text
    assert "private: callers need a token" in text
    assert "python3 /models/server.py on port 8000; health GET /health" in text
    assert "scaled up from 1 to 2" in text and "scaled down from 2 to 1" in text
    assert f"route {str(r2)[:8]} UNHEALTHY: no health check passed within 30s" in text
    assert f"route {str(r2)[:8]} drained: it was UNHEALTHY; a replacement starts" in text
    assert f"route {str(r3)[:8]} drained: more routes served than the 1 wanted" in text
    assert f"route {str(r1)[:8]} drained: the endpoint is being removed (service rm)" in text
    assert "token " in text and "valid until 2030-01-01T00:00:00Z" in text
    assert text.count("removed (after draining)") == 3 and "destroyed: no route left" in text
    routes = {r["route_id"]: r for r in told.as_json()["routes"]}
    assert all(r["status"] == "REMOVED" and r["removed_at"] for r in routes.values())
    assert routes[str(r1)]["healthy_at"] and routes[str(r2)]["healthy_at"] is None
    sick = next(r for r in told.routes if r.route_id == str(r2))
    shown = "\n".join(route_lines(sick))
    assert "session TERMINATED" in shown and "endpoint-route-unhealthy" in shown
    assert "ended self-terminated (exit code 1)" in shown
    lost = next(r for r in told.routes if r.route_id == str(r1))
    assert "no events" in lost.session_because[0]
    bounded = explain_endpoint(events, sessions, 1_900_000_000_000, read={str(s2)})
    older = next(r for r in bounded.routes if r.route_id == str(r1))
    assert older.session_because == [f"(an older route: kh why {s1} tells it)"]


@pytest.mark.unit
def test_why_says_how_a_live_endpoint_stands_and_a_route_whose_session_ended() -> None:
    eid, r1, s1, r2, s2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    r3, s3 = uuid.uuid4(), uuid.uuid4()
    created = EndpointCreated(
        endpoint_id=eid, name="solo", image="python", model=uuid.uuid4(),
        resource_slots={}, scaling_group="default", desired_session_count=1,
        owner=uuid.uuid4(), access_key="AK", project_id=uuid.uuid4(), domain="default",
        open_to_public=True,
    )  # fmt: skip
    events = in_stream(
        f"endpoint-{eid.hex}",
        [
            created,
            EndpointRouteAdded(endpoint_id=eid, route_id=r1, session_id=s1, traffic_ratio=1),
            EndpointRouteRemoved(endpoint_id=eid, route_id=r1),
            EndpointRouteAdded(endpoint_id=eid, route_id=r2, session_id=s2, traffic_ratio=1),
            EndpointRouteStatusChanged(endpoint_id=eid, route_id=r2, status="TERMINATING"),
            EndpointRouteAdded(endpoint_id=eid, route_id=r3, session_id=s3, traffic_ratio=1),
            (EndpointScaled(endpoint_id=eid, desired_session_count=0), "bob@example.com"),
            (
                EndpointRouteStatusChanged(endpoint_id=eid, route_id=r3, status="TERMINATING"),
                "bob@example.com",
            ),
        ],
    )
    failed = in_stream(
        f"session-{s2}", [SessionTerminating(session_id=s2, reason="service-unhealthy")]
    )
    told = explain_endpoint(events, {str(s2): failed}, 1_900_000_000_000)
    assert told.status == "live" and "0 of 0 wanted replicas HEALTHY (0 serving)" in told.headline()
    text = "\n".join(told.lines)
    assert f"route {str(r2)[:8]} drained: its session failed (ERROR) and was replaced" in text
    assert told.routes[1].drained_because == (
        "its session failed (ERROR) and was replaced (service-unhealthy)"
    )
    assert "scaled down from 1 to 0 by bob@example.com" in text
    assert f"route {str(r3)[:8]} drained: downscale-route by bob@example.com: this route" in text
    assert "no model service defined" in text and "public: no token needed" in text
    assert "removed (its session ended on its own; it no longer counts, so a replacement" in text


@pytest.mark.redis
async def test_kh_why_finds_an_endpoint_by_id_or_name_in_a_real_log(
    store: RedisEventStore, redis_server: EmbeddedRedis
) -> None:
    """The CLI against a real log: an endpoint by its id, by its name (the newest of that
    name, a destroyed one included), ``--json``; a route's session told from its stream."""
    writer = await EndpointService(store).load()
    owner, session = uuid.uuid4(), uuid.uuid4()

    def created(name: str) -> EndpointCreated:
        return EndpointCreated(
            endpoint_id=uuid.uuid4(), name=name, image="python", model=uuid.uuid4(),
            resource_slots={"cpu": 1}, scaling_group="default", desired_session_count=1,
            owner=owner, access_key="AK", project_id=uuid.uuid4(), domain="default",
        )  # fmt: skip

    old, new = created("echo"), created("other")
    for event in (old, EndpointDestroying(endpoint_id=old.endpoint_id)):
        await writer.handle(EndpointCommand(event=event))
    await writer.handle(EndpointCommand(event=EndpointDestroyed(endpoint_id=old.endpoint_id)))
    route = EndpointRouteAdded(
        endpoint_id=new.endpoint_id, route_id=uuid.uuid4(), session_id=session, traffic_ratio=1
    )
    for event in (new, route):
        await writer.handle(EndpointCommand(event=event))
    renamed = created("echo")  # the name free again: the newest "echo" is this one
    await writer.handle(EndpointCommand(event=renamed))
    await store.append(
        f"session-{session}",
        [NewEvent(data=SessionTerminated(session_id=session, reason="user-requested"))],
        expected_version=0,
    )
    env = {**os.environ, "KH_REDIS_URL": redis_server.url, "KH_KEY_PREFIX": store.keys.prefix}

    def why(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KH, "why", *args], env=env, capture_output=True, text=True, timeout=120
        )

    by_id = await asyncio.to_thread(why, str(old.endpoint_id))
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.stdout.startswith(f"endpoint {old.endpoint_id} (echo) is destroyed since")
    by_name = await asyncio.to_thread(why, "echo", "--json")
    assert json.loads(by_name.stdout)["endpoint_id"] == str(renamed.endpoint_id)
    told = json.loads((await asyncio.to_thread(why, "other", "--json")).stdout)
    (shown,) = told["routes"]
    assert shown["session"]["status"] == "TERMINATED"
    assert any("user-requested" in line for line in shown["session"]["because"])
    stream = await asyncio.to_thread(why, f"endpoint-{new.endpoint_id.hex}")
    assert stream.returncode == 0 and "route " in stream.stdout
    missing = await asyncio.to_thread(why, "nobody")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


# ---- e2e: one real stack ----------------------------------------------------------------------
class Lab:
    def __init__(self, stack: Stack, bob: dict[str, str]) -> None:
        self.stack, self.bob = stack, bob
        self.mount = "/models" if stack.backend == "docker" else "/home/work/models"
        """Where the model folder goes: the process backend mounts only under /home/work."""

    def create(self, *args: str) -> Any:
        """``kh service create`` with the model folder where this backend mounts it."""
        return self.kh("service", "create", *args, "--model-mount-destination", self.mount)

    def kh(self, *args: str, **env: str) -> Any:
        done = self.stack.kh(*args, "--json", **env)
        if done.returncode != 0:
            print(self.why())  # shown with the failure (pytest's captured stdout)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def until(
        self, check: Callable[[], bool], timeout: float, what: str, endpoint: str = "echo"
    ) -> None:
        """Until ``check()``; past ``timeout`` seconds, fail with ``kh why``'s evidence."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                print(self.why(endpoint))
                pytest.fail(f"{what}: not after {timeout:g}s")
            time.sleep(0.5)

    def why(self, endpoint: str = "echo") -> str:
        """What ``kh why`` says of the endpoint, and the log's latest events (a failure's
        evidence)."""
        told = self.stack.kh("why", endpoint)
        tail = self.stack.kh("events", "tail", "-n", "40")
        return "\n".join((told.stdout, told.stderr, tail.stdout, tail.stderr))

    def config(self, keys: dict[str, str] | None = None) -> ClientConfig:
        exports = {**self.stack.exports, **(keys or {})}
        return ClientConfig(
            endpoint=exports["BACKEND_ENDPOINT"],
            access_key=exports["BACKEND_ACCESS_KEY"],
            secret_key=exports["BACKEND_SECRET_KEY"],
        )


@pytest.fixture(scope="module")
def lab(serving_stack: Stack) -> Iterator[Lab]:
    """The serving modules' shared stack (tests/conftest.py), acting as a tenant of this
    module's own."""
    access_key, secret_key = asyncio.run(second_tenant(serving_stack, "clibob"))
    yield Lab(serving_stack, {"BACKEND_ACCESS_KEY": access_key, "BACKEND_SECRET_KEY": secret_key})


def model_folder(lab: Lab, name: str) -> None:
    """A model folder holding the stdlib model server and its definition."""
    work = lab.stack.workdir / "kh-service" / name
    work.mkdir(parents=True)
    (work / "server.py").write_text(MODEL_SERVER)
    (work / "model-definition.yaml").write_text(model_definition().replace("/models", lab.mount))
    lab.kh("vfolder", "create", name, "-m", "model")
    uploaded = lab.kh(
        "vfolder", "upload", name, "server.py", "model-definition.yaml", "-b", str(work)
    )
    assert sorted(uploaded) == ["model-definition.yaml", "server.py"]


def replicas_answering(url: str, token: str, calls: int) -> set[str]:
    """Which replicas (the model server's hostname/pid) answered ``calls`` requests."""
    seen = set()
    for _ in range(calls):
        answer = call_endpoint(url, "/who", token=token)
        assert answer.status_code == 200, answer.text
        seen.add(answer.json()["replica"])
    return seen


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_kh_service_serves_scales_and_removes_an_endpoint_and_why_tells_it(lab: Lab) -> None:
    model_folder(lab, "echo-model")
    created = lab.create("python", "echo-model", "1", "-t", "echo", "--wait",
                     "--max-wait", "150")  # fmt: skip
    endpoint_id = created["endpoint_id"]
    assert created["name"] == "echo" and created["is_public"] is False
    info = lab.kh("service", "info", "echo")
    (route,) = info["active_routes"]
    assert route["status"] == "HEALTHY" and info["desired_session_count"] == 1
    listed = lab.kh("service", "list")["items"]
    assert [e["id"] for e in listed] == [endpoint_id]
    url = lab.kh("service", "get-endpoint", "echo")["service_endpoint"]
    assert url.endswith(f"/serving/{endpoint_id}")

    # a private endpoint: refused without a token, served with one
    with pytest.raises(AuthenticationFailed):
        call_endpoint(url, "/predict", method="POST", content=b"hello")
    token = lab.kh("service", "generate-token", "echo", "1h")["token"]
    answer = call_endpoint(url, "/predict", method="POST", content=b"hello", token=token)
    assert answer.status_code == 200, answer.text
    assert answer.json()["path"] == "/predict" and answer.json()["received"] == 5
    called = lab.kh("service", "call", "echo", "/predict", "-X", "POST", "-d", "hi",
                    "--token", token)  # fmt: skip
    assert called["status"] == 200 and called["body"]["received"] == 2

    # another tenant sees nothing of it
    assert lab.kh("service", "list", **lab.bob)["items"] == []
    for args in (["info", "echo"], ["info", endpoint_id], ["scale", endpoint_id, "3"]):
        refused = lab.stack.kh("service", *args, **lab.bob)
        assert refused.returncode == 3 and "No such endpoint." in refused.stderr, args

    # scale to 2: both replicas serve; a ratio of 0 takes one out; scale back to 1
    scaled = lab.kh("service", "scale", "echo", "2")
    assert scaled["target_count"] == 2
    with Client(lab.config()) as client:
        services = Services(client)
        two = services.wait_healthy("echo", 2, timeout=240)
        assert len(two["active_routes"]) == 2
        # spread over both (once the proxy's view, at most RESOLVE_TTL_S old, has the second)
        lab.until(lambda: len(replicas_answering(url, token, 40)) == 2, 30, "spread over both")
        quiet = two["active_routes"][0]["route_id"]
        lab.kh("service", "update-traffic-ratio", "echo", quiet, "0")
        assert lab.kh("service", "sync", "echo") == {"success": True}
        # the proxy reads ratios anew
        lab.until(lambda: len(replicas_answering(url, token, 20)) == 1, 30, "ratio 0 honoured")
        lab.kh("service", "update-traffic-ratio", "echo", quiet, "1")
        lab.kh("service", "scale", "echo", "1")

        def one_healthy() -> bool:
            routes = services.info("echo")["active_routes"]
            return [r["status"] for r in routes] == ["HEALTHY"]

        lab.until(one_healthy, 120, "scaled to 1")
        assert call_endpoint(url, "/again", token=token).status_code == 200

    # rm: listed no more at once; it drains, then it is gone
    assert lab.kh("service", "rm", "echo")["removed"] == [endpoint_id]
    assert lab.kh("service", "list")["items"] == []
    lab.until(lambda: lab.stack.kh("service", "info", endpoint_id).returncode != 0, 120, "rm done")
    gone = lab.stack.kh("service", "info", endpoint_id)
    assert gone.returncode == 3 and "No such endpoint." in gone.stderr

    # kh why: the replicas' history from the log
    why = lab.stack.kh("why", endpoint_id)
    assert why.returncode == 0, why.stderr
    text = why.stdout
    print(text)  # the history, for a reader of the run (pytest -rP)
    assert f"endpoint {endpoint_id} (echo)" in text and "destroyed" in text
    assert text.count("added") >= 2 and "HEALTHY" in text
    assert "scaled up from 1 to 2" in text and "scaled down from 2 to 1" in text
    assert f"route {quiet[:8]} takes traffic ratio 0 by " in text
    assert "drained: more routes served than the 1 wanted (scaled down)" in text
    assert "service rm asked by " in text
    explained = json.loads(lab.stack.kh("why", "echo", "--json").stdout)
    assert explained["endpoint_id"] == endpoint_id and len(explained["routes"]) >= 2
    assert all(r["removed_at"] for r in explained["routes"])


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_downscale_route_drains_that_route_and_no_other(lab: Lab) -> None:
    """``downscale-route``: one replica fewer, and the one named the one that goes; the other
    keeps serving throughout (never drained, no replacement started)."""
    model_folder(lab, "pair-model")
    created = lab.create("python", "pair-model", "2", "-t", "pair", "--wait",
                     "--max-wait", "150", "--public")  # fmt: skip
    endpoint_id = created["endpoint_id"]
    goes, stays = (r["route_id"] for r in created["active_routes"])
    lab.kh("service", "downscale-route", "pair", goes)
    with Client(lab.config()) as client:
        services = Services(client)

        def only_the_other() -> bool:
            routes = services.info("pair")["active_routes"]
            return [(r["route_id"], r["status"]) for r in routes] == [(stays, "HEALTHY")]

        lab.until(only_the_other, 120, "the named route gone, the other serving", "pair")
        assert services.info("pair")["desired_session_count"] == 1
        assert call_endpoint(created["service_endpoint"], "/x").status_code == 200
    told = json.loads(lab.stack.kh("why", endpoint_id, "--json").stdout)
    routes = {r["route_id"]: r for r in told["routes"]}
    assert set(routes) == {goes, stays}, told["history"]  # no replacement was needed
    assert routes[stays]["drained_at"] is None, told["history"]
    assert routes[goes]["drained_because"].startswith("downscale-route by ")
    lab.kh("service", "rm", "pair")
