"""Model serving end to end, as a lab's users see it: Backend.AI's official client
(``backend.ai-client==23.3.12``, unmodified, its own venv) against ``kh up`` — a model folder
holding a tiny model server and its definition becomes an endpoint whose replicas the
reconciler keeps alive, reached through the gateway's inference proxy (issue 31).

Real containers (the replicas run with ``--network none``; the proxy reaches them through
the runner's tunnel). One stack for the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelhub.testing import docker_missing, docker_required

from .khstack import ROOT, Stack, second_tenant
from .serving_assets import MODEL_SERVER, model_definition

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def client_binary() -> Path:
    return Path(os.environ.get("KH_BAI_CLIENT") or ROOT / ".venv-bai" / "bin" / "backend.ai")


class Lab(Stack):
    def bai(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(client_binary()), *args],
            env=self.env(**env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=240,
        )

    def sdk(self, code: str, **env: str) -> Any:
        """Run ``code`` with the official SDK (``api`` is its session); what it prints last is
        JSON, decoded."""
        script = (
            "import json\nfrom ai.backend.client.session import Session\n"
            "with Session() as api:\n" + "".join(f"    {line}\n" for line in code.splitlines())
        )
        done = subprocess.run(
            [str(client_binary().parent / "python"), "-c", script],
            env=self.env(**env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def lab(serving_stack: Stack) -> Iterator[Lab]:
    if not client_binary().exists():
        reason = f"the official client is not installed at {client_binary()}"
        if os.environ.get("KH_REQUIRE_CLIENT") == "1":
            pytest.fail(f"KH_REQUIRE_CLIENT=1 but {reason}")
        pytest.skip(reason)
    missing = docker_missing()
    if missing is not None:  # replicas on one host's loopback need a container each
        if docker_required():
            pytest.fail(f"KH_REQUIRE_DOCKER=1 but {missing}")
        pytest.skip(f"serving replicas need Docker: {missing}")
    running = serving_stack
    lab = Lab(running.root, running.exports, running.backend)
    lab.workdir = running.workdir / "serving-e2e"
    lab.workdir.mkdir(exist_ok=True)
    (lab.workdir / "server.py").write_text(MODEL_SERVER)
    (lab.workdir / "model-definition.yaml").write_text(model_definition())
    _ok(lab.bai("vfolder", "create", "e2e-model", "--usage-mode", "model"))
    _ok(lab.bai("vfolder", "upload", "e2e-model", "server.py", "model-definition.yaml"))
    yield lab


@pytest.fixture(scope="module")
def bob(lab: Lab) -> dict[str, str]:
    import asyncio

    access_key, secret_key = asyncio.run(second_tenant(lab, "e2ebob"))
    return {"BACKEND_ACCESS_KEY": access_key, "BACKEND_SECRET_KEY": secret_key}


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _wait(check: Callable[[], Any], timeout: float = 240.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:g} s: {what} (last: {last!r})")


def _info(lab: Lab, endpoint_id: str, **env: str) -> dict[str, Any]:
    return lab.sdk(f"print(json.dumps(api.Service({endpoint_id!r}).info()))", **env)  # type: ignore[no-any-return]


def _healthy(lab: Lab, endpoint_id: str, count: int) -> Callable[[], Any]:
    def check() -> Any:
        routes = _info(lab, endpoint_id)["active_routes"]
        statuses = [r.get("status") for r in routes]
        return routes if statuses.count("HEALTHY") == count and len(routes) == count else None

    return check


def _call(
    url: str, token: str | None = None, body: bytes | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"BackendAI {token}"
    request = urllib.request.Request(
        url, body, headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def _create(lab: Lab, name: str, count: int, *extra: str) -> str:
    created = _ok(
        lab.bai(
            "service", "create", "python", "e2e-model", str(count), "-t", name,
            "-r", "cpu=1", "-r", "mem=512m", *extra,
        )
    )  # fmt: skip
    assert name in created.stdout, created.stdout
    listed = lab.sdk(f"print(json.dumps(api.Service.list(name={name!r})))")
    (entry,) = [e for e in listed if e["name"] == name]
    return str(entry["id"])


def test_an_endpoint_serves_through_its_replicas_scales_and_is_private(lab: Lab) -> None:
    endpoint_id = _create(lab, "e2e-echo", 2)
    routes = _wait(_healthy(lab, endpoint_id, 2), what="2 HEALTHY routes")
    assert all(r["traffic_ratio"] == 1.0 for r in routes)
    url = _ok(lab.bai("service", "get-endpoint", endpoint_id)).stdout.strip()
    assert url.startswith("http://127.0.0.1:") and endpoint_id in url

    refused, problem = _call(f"{url}/predict")  # private: a token is required
    assert refused == 401, problem
    token = _ok(lab.bai("service", "generate-token", endpoint_id, "1h", "-q")).stdout.strip()
    status, answer = _call(f"{url}/predict", token, b'{"x": [1, 2, 3]}')
    assert status == 200, answer
    assert answer["path"] == "/predict" and answer["received"] == len(b'{"x": [1, 2, 3]}')
    assert answer["model"] == "echo" and answer["authorization"] is None  # never forwarded
    replicas = {_call(f"{url}/who", token)[1]["replica"] for _ in range(40)}
    assert len(replicas) == 2  # spread over both routes
    wrong, _ = _call(f"{url}/predict", token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"))
    assert wrong == 401

    _ok(lab.bai("service", "scale", endpoint_id, "3"))
    if (os.cpu_count() or 1) >= 3:  # each replica takes a core (the image's minimum)
        _wait(_healthy(lab, endpoint_id, 3), what="3 HEALTHY routes")
    else:  # the third waits for a core: a route, PROVISIONING, its session pending
        third = _wait(
            lambda: [
                r for r in _info(lab, endpoint_id)["active_routes"] if r["status"] != "HEALTHY"
            ],
            what="a third route",
        )
        assert len(_info(lab, endpoint_id)["active_routes"]) == 3, third
    _ok(lab.bai("service", "scale", endpoint_id, "1"))
    _wait(_healthy(lab, endpoint_id, 1), what="back to 1 route")
    assert _call(f"{url}/after-scale", token)[0] == 200

    _ok(lab.bai("service", "rm", endpoint_id))
    gone = _wait(
        lambda: (
            not any(
                e["id"] == endpoint_id for e in lab.sdk("print(json.dumps(api.Service.list()))")
            )
        ),
        what="the endpoint destroyed after its routes drained",
    )
    assert gone
    assert _call(f"{url}/predict", token)[0] == 404


def test_a_killed_replica_is_replaced_and_requests_keep_succeeding(lab: Lab) -> None:
    endpoint_id = _create(lab, "e2e-sturdy", 2, "--public")
    routes = _wait(_healthy(lab, endpoint_id, 2), what="2 HEALTHY routes")
    url = _ok(lab.bai("service", "get-endpoint", endpoint_id)).stdout.strip()
    assert _call(f"{url}/predict")[0] == 200  # public: no token

    victim = routes[0]["session_id"]
    containers = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=ai.backend.session-id={victim}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert containers, f"no container found for session {victim}"
    subprocess.run(["docker", "kill", *containers], capture_output=True, check=True)

    def replaced() -> Any:
        current = _info(lab, endpoint_id)["active_routes"]
        healthy = [r for r in current if r["status"] == "HEALTHY"]
        return len(healthy) == 2 and victim not in {r["session_id"] for r in current}

    _wait(replaced, what="the killed replica replaced by a HEALTHY one")
    failures: list[Any] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, answer = _call(f"{url}/predict", timeout=10)
            if status != 200:
                failures.append((status, answer))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(5)
    stop.set()
    for worker in workers:
        worker.join()
    assert failures == []
    _ok(lab.bai("service", "rm", endpoint_id))


def test_another_tenant_cannot_see_scale_or_call_an_endpoint(lab: Lab, bob: dict[str, str]) -> None:
    endpoint_id = _create(lab, "e2e-mine", 1)
    _wait(_healthy(lab, endpoint_id, 1), what="1 HEALTHY route")
    url = _ok(lab.bai("service", "get-endpoint", endpoint_id)).stdout.strip()
    assert lab.sdk("print(json.dumps(api.Service.list()))", **bob) == []
    for args in (
        ("service", "info", endpoint_id),
        ("service", "scale", endpoint_id, "5"),
        ("service", "generate-token", endpoint_id, "1h"),
        ("service", "rm", endpoint_id),
    ):
        refused = lab.bai(*args, **bob)  # (the client's lookup then prints an IndexError)
        assert refused.returncode != 0, (args, refused.stdout)
    answers = [
        lab.sdk(
            "from ai.backend.client.exceptions import BackendAPIError\n"
            f"try:\n    api.Service({ref!r}).info()\n"
            "except BackendAPIError as e:\n    print(json.dumps([e.status, e.data.get('title')]))",
            **bob,
        )
        for ref in (endpoint_id, "00000000-0000-4000-8000-000000000000")
    ]
    assert answers[0] == answers[1] == [404, "No such endpoint."], answers  # alike
    made_up = lab.bai("service", "scale", "00000000-0000-4000-8000-000000000000", "5", **bob)
    assert made_up.returncode != 0
    assert _info(lab, endpoint_id)["desired_session_count"] == 1  # nothing changed
    bobs_token_attempt = _call(f"{url}/predict")
    assert bobs_token_attempt[0] == 401
    _ok(lab.bai("service", "rm", endpoint_id))
