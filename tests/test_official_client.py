"""Backend.AI's official client (``backend.ai-client==23.3.12``, unmodified, in its own
venv) against ``kh up``: its CLI and its SDK, end to end (issue "The front door, part 1").

The client's ``run`` exits 0 even when a creation failed, so these assert on what it
printed; ``ps`` runs with ``--output json`` (its table mode exits 1 on an empty list when
stdout is not a terminal). Every call runs in a directory without a ``.env`` file.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis
import requests
import schemathesis

from actors.domain.commands.tenancy import SetPreset
from actors.gateway.openapi import openapi_document
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.signing import parse_date, sign, string_to_sign
from kernelhub.testing import eventually
from projections.tenancy_queries import TenancyLookups

from .khstack import ROOT, Stack, kh_up, second_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
KH = [sys.executable, "-m", "kernelhub.cli"]


class BaiStack(Stack):
    def bai(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = [str(client_binary()), *args]
        return subprocess.run(
            command,
            env=self.env(**env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def sdk(self, code: str, **env: str) -> subprocess.CompletedProcess[str]:
        python = client_binary().parent / "python"
        return subprocess.run(
            [str(python), "-c", code],
            env=self.env(**env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def ps(self, *args: str) -> list[dict[str, str]]:
        listed = self.bai("--output", "json", "ps", *args)
        assert listed.returncode == 0, listed.stderr
        items: list[dict[str, str]] = json.loads(listed.stdout)["items"]
        return items


def client_binary() -> Path:
    return Path(os.environ.get("KH_BAI_CLIENT") or ROOT / ".venv-bai" / "bin" / "backend.ai")


IDLE_1H = json.dumps(
    {"enabled": "network_timeout", "checkers": {"network_timeout": {"threshold": "1h"}}}
)
"""The network checker on, with a threshold no test outlives: sessions report it."""


@pytest.fixture(scope="module")
def stack() -> Iterator[BaiStack]:
    if not client_binary().exists():
        reason = f"the official client is not installed at {client_binary()}"
        if os.environ.get("KH_REQUIRE_CLIENT") == "1":
            pytest.fail(f"KH_REQUIRE_CLIENT=1 but {reason}")
        pytest.skip(reason)
    with kh_up(KH_IDLE=IDLE_1H) as running:
        yield BaiStack(running.root, running.exports, running.backend)


def test_run_rm_prints_42(stack: BaiStack) -> None:
    ran = stack.bai("run", "--rm", "python", "-c", "print(6*7)")
    assert ran.stdout == "42\n", ran.stderr
    assert "Execution finished. (exit code = 0)" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_a_session_from_create_to_rm(stack: BaiStack) -> None:
    created = stack.bai("session", "create", "-t", "e2e-life", "python")
    assert created.returncode == 0, created.stderr
    (session_id,) = [s["session_id"] for s in stack.ps() if s["name"] == "e2e-life"]
    assert str(uuid.UUID(session_id)) == session_id
    listed = [s for s in stack.ps() if s["name"] == "e2e-life"]
    assert [(s["status"], s["type"], s["image"]) for s in listed] == [
        ("RUNNING", "INTERACTIVE", "kernelhub/python:3.11")
    ]
    info = stack.bai("session", "info", session_id)
    assert info.returncode == 0, info.stderr
    rows = [line.split() for line in info.stdout.splitlines()]
    assert ["Name", "e2e-life"] in rows and ["Status", "RUNNING"] in rows
    assert ["Session", "ID", session_id] in rows
    assert "Cluster Role: main" in info.stdout and "Agent: i-local" in info.stdout
    assert "network_timeout" in info.stdout and "expire_after" in info.stdout  # idle_checks
    logs = stack.bai("session", "logs", "e2e-life")
    assert logs.returncode == 0 and "runner started" in logs.stdout, logs.stderr
    removed = stack.bai("session", "rm", "e2e-life")
    assert removed.returncode == 0 and "Done." in removed.stderr, removed.stderr
    assert not [s for s in stack.ps() if s["name"] == "e2e-life"]
    ended = [s for s in stack.ps("--dead") if s["session_id"] == session_id]
    assert [(s["status"], s["status_info"]) for s in ended] == [("TERMINATED", "user-requested")]


def test_a_batch_run_of_an_uploaded_file(stack: BaiStack) -> None:
    (stack.workdir / "main.py").write_text("import sys\nprint('uploaded and run', sys.argv[1:])\n")
    ran = stack.bai("run", "--rm", "--exec", "python3 main.py a b", "python", "main.py")
    assert "uploaded and run ['a', 'b']\n" in ran.stdout, ran.stderr
    assert "Build finished." in ran.stderr and "Execution finished. (exit code = 0)" in ran.stderr


def test_state_is_kept_across_two_runs_on_one_session(stack: BaiStack) -> None:
    first = stack.bai("run", "-t", "e2e-state", "python", "-c", "kept = 6 * 7")
    assert "Execution finished" in first.stderr, first.stderr
    second = stack.bai("run", "-t", "e2e-state", "python", "-c", "print(kept)")
    assert second.stdout == "42\n" and "Reusing session" in second.stderr, second.stderr
    assert stack.bai("session", "rm", "e2e-state").returncode == 0


def test_a_batch_session_runs_its_startup_command(stack: BaiStack) -> None:
    created = stack.bai(
        "session",
        "create",
        "--type",
        "batch",
        "-t",
        "e2e-batch",
        "--startup-command",
        "echo from-batch; exit 3",
        "python",
    )
    assert created.returncode == 0, created.stderr

    def ended() -> list[dict[str, str]]:
        return [s for s in stack.ps("--dead") if s["name"] == "e2e-batch"]

    (session,) = asyncio.run(eventually(ended, timeout=60, interval=0.5, message="batch ended"))
    assert (session["type"], session["result"]) == ("BATCH", "FAILURE")
    logs = stack.bai("session", "logs", session["session_id"])
    assert "from-batch" in logs.stdout, logs.stderr


def test_a_wrong_secret_gets_a_clean_401(stack: BaiStack) -> None:
    refused = stack.bai("session", "rm", "anything", BACKEND_SECRET_KEY="not-the-secret")
    assert refused.returncode == 1
    assert (
        "401 Unauthorized" in refused.stderr and "Credential/signature mismatch." in refused.stderr
    )
    assert "Traceback" not in refused.stderr
    missing = stack.bai("session", "rm", "no-such-session")
    assert missing.returncode == 1 and "No such session." in missing.stderr


SDK = """
import json
from ai.backend.client.session import Session
with Session() as api:
    cs = api.ComputeSession.get_or_create(
        "python", name="e2e-sdk", resources={"cpu": 1, "mem": "512m"})
    again = api.ComputeSession.get_or_create("python", name="e2e-sdk")
    assert again.id == cs.id and again.created is False, (again.id, again.created)
    code = "import os\\nprint(6*7, os.environ['BACKENDAI_SESSION_NAME'])"
    r = cs.execute(code=code, mode="query")
    out = list(r["console"])
    while r["status"] != "finished":
        r = cs.execute(r["runId"], "", mode="continue")
        out += r["console"]
    print("".join(text for kind, text in out if kind == "stdout"), end="")
    print(cs.get_info()["status"])
    print(json.dumps(cs.destroy()))
"""


def test_the_sdk_get_or_create_execute_destroy(stack: BaiStack) -> None:
    ran = stack.sdk(SDK)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["42 e2e-sdk", "RUNNING", '{"stats": {}}']


def test_another_tenants_session_is_not_found_and_owner_is_for_admins(
    stack: BaiStack,
) -> None:
    """A second user's keypair: the admin's session does not exist for it, and asking for
    it by owner is forbidden (not an admin)."""
    created = stack.bai("session", "create", "-t", "e2e-mine", "python")
    assert created.returncode == 0, created.stderr
    other_ak, other_sk = asyncio.run(second_tenant(stack))
    env = {"BACKEND_ACCESS_KEY": other_ak, "BACKEND_SECRET_KEY": other_sk}
    hidden = stack.bai("session", "rm", "e2e-mine", **env)
    assert hidden.returncode == 1 and "No such session." in hidden.stderr, hidden.stderr
    as_owner = stack.bai(
        "session", "rm", "-o", stack.exports["BACKEND_ACCESS_KEY"], "e2e-mine", **env
    )
    assert as_owner.returncode == 1 and "403 Forbidden" in as_owner.stderr, as_owner.stderr
    listed = stack.bai("--output", "json", "ps", **env)
    assert json.loads(listed.stdout)["total_count"] == 0
    assert [s["name"] for s in stack.ps() if s["name"] == "e2e-mine"] == ["e2e-mine"]
    assert stack.bai("session", "rm", "e2e-mine").returncode == 0


# ---- the wire, as any client sees it ---------------------------------------------------------
def signed(stack: BaiStack, method: str, path: str, **options: Any) -> tuple[int, bytes]:
    status, _, body = signed_full(stack, method, path, **options)
    return status, body


def signed_full(
    stack: BaiStack,
    method: str,
    path: str,
    *,
    body: object = None,
    date: str | None = None,
    version: str = "v7.20230615",
    secret: str | None = None,
    access_key: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request signed as the official client signs (by kernelhub's signer, which the
    known-answer vectors pin), sent with the standard library."""
    endpoint = stack.exports["BACKEND_ENDPOINT"]
    host = endpoint.removeprefix("http://")
    raw_date = date or datetime.now(UTC).isoformat()
    content_type = "application/json" if body is not None else "text/plain"
    text = string_to_sign(method, path, raw_date, host, content_type, version)
    key = secret or stack.exports["BACKEND_SECRET_KEY"]
    signature = sign(key, parse_date(raw_date), host, text)
    credential = f"{access_key or stack.exports['BACKEND_ACCESS_KEY']}:{signature}"
    headers = {
        "Date": raw_date,
        "X-BackendAI-Version": version,
        "Content-Type": content_type,
        "Authorization": f"BackendAI signMethod=HMAC-SHA256, credential={credential}",
    }
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(endpoint + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def problem_of(reply: tuple[int, bytes]) -> tuple[int, str, str]:
    status, body = reply
    data = json.loads(body)
    return status, data["type"].rsplit("/", 1)[-1], data["title"]


def test_the_version_probe_answers_signed_or_not(stack: BaiStack) -> None:
    with urllib.request.urlopen(stack.exports["BACKEND_ENDPOINT"] + "/", timeout=10) as reply:
        assert json.loads(reply.read()) == {"version": "v7.20230615", "manager": "23.03.12"}
    status, body = signed(stack, "GET", "/")
    assert status == 200 and json.loads(body)["version"] == "v7.20230615"
    status, body = signed(stack, "GET", "/manager/announcement")
    assert (status, json.loads(body)) == (200, {"enabled": False, "message": ""})


def test_every_refusal_is_a_problem_body(stack: BaiStack) -> None:
    assert problem_of(
        signed(
            stack,
            "POST",
            "/session",
            body={
                "name": "e2e-bad",
                "image": "python",
                "no_such_key": 1,
            },
        )
    )[:2] == (400, "invalid-api-params")
    assert problem_of(
        signed(
            stack,
            "POST",
            "/session",
            body={
                "name": "e2e-bad",
                "image": "no-such-image",
            },
        )
    ) == (404, "object-not-found", "No such environment image.")
    assert problem_of(signed(stack, "POST", "/session", body={"name": "x", "image": "python"}))[
        :2
    ] == (400, "invalid-api-params")  # the name rule: 4 to 64 characters
    assert problem_of(signed(stack, "GET", "/no/such/route")) == (
        404,
        "url-not-found",
        "Unknown URL path.",
    )
    assert problem_of(signed(stack, "PUT", "/session/x"))[:2] == (405, "method-not-allowed")
    assert problem_of(signed(stack, "GET", "/session/x", date="2001-01-01T00:00:00+00:00")) == (
        400,
        "invalid-auth-params",
        "Missing or invalid authorization parameters.",
    )
    assert problem_of(signed(stack, "GET", "/session/x", version="v9.20990101"))[:2] == (
        400,
        "generic-bad-request",
    )
    assert problem_of(signed(stack, "GET", "/session/x", secret="wrong"))[:2] == (
        401,
        "auth-failed",
    )
    status, body = signed(stack, "POST", "/admin/gql", body={"query": "{ nope }"})
    assert status == 200 and json.loads(body)["errors"]  # GraphQL errors, the reference's way


def test_graphql_answers_in_the_order_asked_with_json_strings(stack: BaiStack) -> None:
    created = stack.bai("session", "create", "-t", "e2e-gql", "python")
    assert created.returncode == 0, created.stderr
    query = (
        "query($limit:Int!, $offset:Int!, $status:String) { compute_session_list("
        "limit:$limit, offset:$offset, status:$status) { items { status name occupying_slots "
        "id containers { occupied_slots agent } } total_count } }"
    )
    status, body = signed(
        stack,
        "POST",
        "/admin/gql",
        body={
            "query": query,
            "variables": {"limit": 20, "offset": 0, "status": "RUNNING,PENDING"},
        },
    )
    assert status == 200
    listing = json.loads(body)["data"]["compute_session_list"]
    (item,) = [i for i in listing["items"] if i["name"] == "e2e-gql"]
    assert list(item) == ["status", "name", "occupying_slots", "id", "containers"]
    assert json.loads(item["occupying_slots"])["cpu"] == "1"  # a JSON-encoded string
    assert json.loads(item["containers"][0]["occupied_slots"])["cpu"] == "1"
    assert listing["total_count"] >= len(listing["items"]) >= 1
    one = signed(
        stack,
        "POST",
        "/admin/gql",
        body={
            "query": "query($id: UUID!) { compute_session(id: $id) { name status_data } }",
            "variables": {"id": item["id"]},
        },
    )
    assert json.loads(one[1])["data"]["compute_session"] == {"name": "e2e-gql", "status_data": None}
    assert stack.bai("session", "rm", "e2e-gql").returncode == 0


def test_session_events_stream_until_the_session_ends(stack: BaiStack) -> None:
    created = stack.bai("session", "create", "-t", "e2e-events", "python")
    assert created.returncode == 0, created.stderr
    tailing = tails(stack)
    command = [str(client_binary()), "session", "events", "e2e-events"]
    watcher = subprocess.Popen(
        command,
        env=stack.env(),
        cwd=stack.workdir,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    other_ak, other_sk = asyncio.run(second_tenant(stack, "events"))
    snooper = open_events(stack, "/events/session?name=e2e-events&scope=*", other_ak, other_sk)
    try:
        asyncio.run(
            eventually(
                lambda: tails(stack) >= tailing + 1 and connected(watcher.pid, stack),
                timeout=30,
                message="the streams on the gateway's log tail",
            )
        )
        assert stack.bai("session", "rm", "e2e-events").returncode == 0
        out, err = watcher.communicate(timeout=60)  # ends by itself: server_close
    finally:
        watcher.kill()
    names = [line.split(" ", 1)[0] for line in out.splitlines()]
    assert names == [
        "session_terminating",
        "kernel_terminating",
        "kernel_terminated",
        "session_terminated",
        "server_close",
    ], err
    data = json.loads(out.splitlines()[-2].split(" ", 1)[1])
    assert (data["sessionName"], data["reason"]) == ("e2e-events", "user-requested")
    assert watcher.returncode == 0
    # the other tenant, watching the same name, saw none of it (pings at most)
    snooper.settimeout(2.0)
    seen = b""
    try:
        while chunk := snooper.recv(65536):
            seen += chunk
    except TimeoutError:
        pass
    finally:
        snooper.close()
    assert b"200 OK" in seen and b"event:" not in seen


def tails(stack: BaiStack) -> int:
    """Redis clients tailing the log (XREAD): the gateway's event streams share one."""
    client = redis.Redis.from_url(stack.exports["KH_REDIS_URL"])
    try:
        return sum(1 for c in client.client_list() if c.get("cmd") == "xread")
    finally:
        client.close()


def connected(pid: int, stack: BaiStack) -> bool:
    """Whether the process ``pid`` has a connection open to the gateway (its stream is
    registered on the log tail before the gateway answers its headers)."""
    import psutil

    port = int(stack.exports["BACKEND_ENDPOINT"].rsplit(":", 1)[1])
    return any(
        c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        for c in psutil.Process(pid).net_connections("tcp")
    )


def open_events(stack: BaiStack, path: str, access_key: str, secret_key: str) -> socket.socket:
    """A raw, signed SSE request (no Content-Type, as the client sends it)."""
    endpoint = stack.exports["BACKEND_ENDPOINT"]
    host = endpoint.removeprefix("http://")
    date = datetime.now(UTC).isoformat()
    text = string_to_sign("GET", path, date, host, "application/octet-stream", "v7.20230615")
    signature = sign(secret_key, parse_date(date), host, text)
    address, port = host.rsplit(":", 1)
    connection = socket.create_connection((address, int(port)), timeout=10)
    connection.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nDate: {date}\r\n"
            "X-BackendAI-Version: v7.20230615\r\n"
            f"Authorization: BackendAI signMethod=HMAC-SHA256, credential={access_key}:{signature}"
            "\r\n\r\n"
        ).encode()
    )
    return connection


def test_the_rate_limit_trips_with_the_right_headers(stack: BaiStack) -> None:
    access_key, secret_key = asyncio.run(second_tenant(stack, "limited", rate_limit=3))
    answers = [
        signed_full(stack, "GET", "/manager/announcement", access_key=access_key, secret=secret_key)
        for _ in range(4)
    ]
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    assert [a[1]["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert {(a[1]["X-RateLimit-Limit"], a[1]["X-RateLimit-Window"]) for a in answers} == {
        ("3", "900")
    }
    assert problem_of((answers[3][0], answers[3][2]))[:2] == (429, "rate-limit-exceeded")
    status, headers, _ = signed_full(stack, "GET", "/no/such/route")  # errors carry them too
    assert status == 404 and headers["X-RateLimit-Limit"] == "30000"
    with urllib.request.urlopen(stack.exports["BACKEND_ENDPOINT"] + "/", timeout=10) as reply:
        assert reply.headers["X-RateLimit-Limit"] == "1000"  # no keypair: the default


def test_files_down_and_listed_restart_and_refusals(stack: BaiStack) -> None:
    assert stack.bai("session", "create", "-t", "e2e-files", "python").returncode == 0
    made = stack.bai(
        "run",
        "-t",
        "e2e-files",
        "python",
        "-c",
        (
            "import os; os.makedirs('d', exist_ok=True); open('d/x', 'w').write('x' * 5)\n"
            "open('out.txt', 'wb').write(bytes(range(256)) * 4)"
        ),
    )
    assert "exit code = 0" in made.stderr, made.stderr
    dest = stack.workdir / "downloaded"
    got = stack.bai("session", "download", "e2e-files", "out.txt", "d", "--dest", str(dest))
    assert got.returncode == 0, got.stderr
    assert (dest / "out.txt").read_bytes() == bytes(range(256)) * 4
    assert (dest / "d" / "x").read_text() == "xxxxx"
    listed = stack.bai("session", "ls", "e2e-files")
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines()[2:] if line.strip()}
    assert {"d", "out.txt"} <= names
    renamed = stack.bai("session", "rename", "e2e-files", "e2e-renamed")
    assert renamed.returncode == 1 and "This API query is not implemented." in renamed.stderr
    assert "Traceback" not in renamed.stderr
    restarted = stack.bai("session", "restart", "e2e-files")
    assert restarted.returncode == 0 and "Done." in restarted.stderr, restarted.stderr
    after = stack.bai("run", "-t", "e2e-files", "python", "-c", "print(open('d/x').read())")
    assert after.stdout == "xxxxx\n", after.stderr  # the work dir outlives a restart
    status, body = signed(stack, "GET", "/manager/status")
    assert status == 200 and json.loads(body)["status"] == "running"
    assert json.loads(body)["active_sessions"] >= 1
    status, body = signed(stack, "GET", "/session/_/match?id=e2e-fi")
    assert [m["name"] for m in json.loads(body)["matches"]] == ["e2e-files"]
    assert stack.bai("session", "rm", "e2e-files").returncode == 0


SDK_CONTROL = """
import json, threading, time
from ai.backend.client.session import Session
with Session() as api:
    cs = api.ComputeSession.get_or_create("python", name="e2e-control")
    print(json.dumps(cs.complete("import o", opts={"row": 0, "col": 8, "line": "import o"})))
    first = cs.execute(code="import time\\nwhile True: time.sleep(0.05)", mode="query")
    cs.interrupt()
    r = first
    while r["status"] != "finished":
        r = cs.execute(r["runId"], "", mode="continue")
    print(r["status"], any("KeyboardInterrupt" in text for _, text in r["console"]))
    cs.destroy()
"""


SDK_IDLE = """
import json, time
from ai.backend.client.session import Session
with Session() as api:
    cs = api.ComputeSession.get_or_create("python", name="e2e-idle")
    remaining = lambda: cs.get_info()["idleChecks"]["network_timeout"]["remaining"]
    first = remaining()
    time.sleep(1.5)
    later = remaining()
    r = cs.execute(code="1", mode="query")
    while r["status"] != "finished":
        r = cs.execute(r["runId"], "", mode="continue")
    print(json.dumps([first, later, remaining()]))
    cs.destroy()
"""


def test_idle_checks_count_down_and_an_execution_resets_them(stack: BaiStack) -> None:
    ran = stack.sdk(SDK_IDLE)
    assert ran.returncode == 0, ran.stderr
    first, later, reset = json.loads(ran.stdout)
    assert 0 < later < first <= 3600 and later < reset <= 3600


def test_the_sdk_completes_and_interrupts(stack: BaiStack) -> None:
    ran = stack.sdk(SDK_CONTROL)
    assert ran.returncode == 0, ran.stderr
    completion, interrupted = ran.stdout.splitlines()
    assert "os" in json.loads(completion)["result"]["completions"]
    assert interrupted == "finished True"


def test_an_app_in_the_session_is_reached_through_the_tunnel(stack: BaiStack) -> None:
    """``backend.ai app`` to a web server started in a session whose container has no
    network: the bytes go through the kernel runner's unix-socket tunnel."""
    created = stack.bai("session", "create", "-t", "e2e-app", "--preopen", "8080", "python")
    assert created.returncode == 0, created.stderr
    served = stack.bai(
        "run",
        "-t",
        "e2e-app",
        "python",
        "-c",
        (
            "open('hello.txt', 'w').write('hello from the kernel')\n"
            "import subprocess\n"
            "subprocess.Popen(['python3', '-m', 'http.server', '8080', '--bind', '127.0.0.1'],"
            " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
        ),
    )
    assert "exit code = 0" in served.stderr, served.stderr
    status, body = signed(stack, "GET", "/stream/session/e2e-app/apps")
    assert (status, json.loads(body)) == (
        200,
        [{"name": "8080", "protocol": "preopen", "ports": [8080]}],
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(client_binary()), "app", "e2e-app", "8080", "-b", f"127.0.0.1:{port}"]
    proxy = subprocess.Popen(
        command,
        env=stack.env(),
        cwd=stack.workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def fetched() -> bytes:
            try:
                url = f"http://127.0.0.1:{port}/hello.txt"
                with urllib.request.urlopen(url, timeout=10) as reply:
                    return bytes(reply.read())
            except OSError:
                return b""  # the client's listener (or the server in the kernel) not up yet

        got = asyncio.run(eventually(fetched, timeout=60, interval=0.5, message="fetched"))
        assert got == b"hello from the kernel"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n")  # never finished
            assert asyncio.run(
                eventually(
                    lambda: network_timer(stack, "e2e-app") is None, timeout=30, message="held"
                )
            )
        assert asyncio.run(
            eventually(lambda: network_timer(stack, "e2e-app"), timeout=30, message="restarted")
        )
    finally:
        proxy.kill()
        proxy.wait(10)
    # a plain GET (no websocket upgrade) is refused before the app is even looked up
    assert problem_of(signed(stack, "GET", "/stream/session/e2e-app/tcpproxy?app=nope")) == (
        400,
        "generic-bad-request",
        "Bad request.",
    )
    status, body = signed(stack, "POST", "/session/e2e-app/start-service", body={"app": "8080"})
    assert status == 200 and set(json.loads(body)) == {"token", "wsproxy_addr"}, body
    for params, expected in (
        ({"app": "nope"}, (404, "object-not-found", "No such app service.")),
        ({"app": "8080", "port": 9999}, (400, "invalid-api-params")),
        ({"service": "8080", "envs": "[1]"}, (400, "invalid-api-params")),
        ({}, (400, "invalid-api-params")),
    ):
        answer = problem_of(signed(stack, "POST", "/session/e2e-app/start-service", body=params))
        assert answer[: len(expected)] == expected, (params, answer)
    assert stack.bai("session", "rm", "e2e-app").returncode == 0


def network_timer(stack: BaiStack, ref: str) -> float | None:
    """The session's network-timeout remaining time as ``GET /session`` reports it (None
    while an app connection holds the timer)."""
    status, body = signed(stack, "GET", f"/session/{ref}")
    assert status == 200, body
    remaining: float | None = json.loads(body)["idleChecks"]["network_timeout"]["remaining"]
    return remaining


def test_a_frozen_manager_refuses_new_sessions_and_serves_the_rest(stack: BaiStack) -> None:
    """``PUT /manager/status`` (superadmin): while frozen, creating answers 503
    server-frozen (the client prints it), while info, execution and destroy still work;
    running again lets sessions in. A user may not freeze."""
    assert stack.bai("session", "create", "-t", "e2e-before-freeze", "python").returncode == 0
    user_ak, user_sk = asyncio.run(second_tenant(stack, "freezer"))
    assert (
        problem_of(
            signed(
                stack,
                "PUT",
                "/manager/status",
                body={"status": "frozen"},
                access_key=user_ak,
                secret=user_sk,
            )
        )[0]
        == 403
    )
    try:
        status, _ = signed(stack, "PUT", "/manager/status", body={"status": "frozen"})
        assert status == 204
        status, body = signed(stack, "GET", "/manager/status")
        assert json.loads(body)["status"] == "frozen"
        refused = stack.bai("session", "create", "-t", "e2e-frozen", "python")
        assert refused.returncode != 0 and "frozen" in refused.stdout + refused.stderr
        assert problem_of(
            signed(
                stack,
                "POST",
                "/session",
                body={
                    "image": "python",
                    "sessionName": "e2e-frozen2",
                    "clientSessionToken": "e2e-frozen2",
                },
            )
        ) == (
            503,
            "server-frozen",
            "The server is frozen due to maintenance. Please try again later.",
        )
        # `run -t` would create-or-reuse (a create: refused, as 23.03); reads and code run
        status, body = signed(stack, "GET", "/session/e2e-before-freeze")
        assert status == 200 and json.loads(body)["status"] == "RUNNING"
        code = {"mode": "query", "code": "print(6*7)", "runId": "frz"}
        status, body = signed(stack, "POST", "/session/e2e-before-freeze", body=code)
        assert status == 200, body
        asleep = signed(stack, "PUT", "/manager/status", body={"status": "asleep"})
        assert problem_of(asleep)[:2] == (400, "invalid-api-params")
    finally:
        status, _ = signed(stack, "PUT", "/manager/status", body={"status": "running"})
        assert status == 204
    assert stack.bai("session", "rm", "e2e-before-freeze").returncode == 0
    created = stack.bai("session", "create", "-t", "e2e-after-freeze", "python")
    assert created.returncode == 0, created.stderr
    assert stack.bai("session", "rm", "e2e-after-freeze").returncode == 0


def ws_headers(stack: BaiStack, path: str) -> dict[str, str]:
    """A websocket upgrade's signature (no body, no Content-Type: octet-stream signed)."""
    host = stack.exports["BACKEND_ENDPOINT"].removeprefix("http://")
    date = datetime.now(UTC).isoformat()
    text = string_to_sign("GET", path, date, host, "application/octet-stream", "v7.20230615")
    signature = sign(stack.exports["BACKEND_SECRET_KEY"], parse_date(date), host, text)
    credential = f"{stack.exports['BACKEND_ACCESS_KEY']}:{signature}"
    return {
        "Date": date,
        "X-BackendAI-Version": "v7.20230615",
        "Authorization": f"BackendAI signMethod=HMAC-SHA256, credential={credential}",
    }


async def _terminal(stack: BaiStack, ref: str, typed: list[dict[str, Any]]) -> bytes:
    import aiohttp

    path = f"/stream/session/{ref}/pty"
    out = b""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            stack.exports["BACKEND_ENDPOINT"] + path, headers=ws_headers(stack, path)
        ) as ws:
            for frame in typed:
                await ws.send_str(json.dumps(frame))
            async for message in ws:  # until the shell exits and the socket closes
                if message.type == aiohttp.WSMsgType.TEXT:
                    frame = json.loads(message.data)
                    assert frame["type"] == "out"
                    out += base64.b64decode(frame["data"])
    return out


def test_a_terminal_in_the_session_through_the_pty_websocket(stack: BaiStack) -> None:
    """``/stream/session/{ref}/pty``: keystrokes in as base64 stdin frames, output back as
    ``out`` frames, a resize the shell sees, and the socket closing when the shell exits."""
    assert stack.bai("session", "create", "-t", "e2e-pty", "python").returncode == 0

    def keys(text: str) -> dict[str, Any]:
        return {"type": "stdin", "chars": base64.b64encode(text.encode()).decode()}

    typed = [
        {"type": "resize", "rows": 30, "cols": 100},
        {"type": "ping"},
        keys("echo answer=$((6*7)); stty size; pwd; exit\n"),
    ]
    out = asyncio.run(asyncio.wait_for(_terminal(stack, "e2e-pty", typed), timeout=60))
    # the work dir: /home/work in a container, its host directory for a process kernel
    home = b"/home/work\r\n" if stack.backend == "docker" else b"/work\r\n"
    assert b"answer=42" in out and b"30 100" in out and home in out
    assert problem_of(signed(stack, "GET", "/stream/session/e2e-pty/pty"))[:2] == (
        400,
        "generic-bad-request",
    )
    assert stack.bai("session", "rm", "e2e-pty").returncode == 0


# ---- the API under fuzz ------------------------------------------------------------------
class Signed(requests.auth.AuthBase):
    """Signs each request as it will go on the wire (its encoded path and query)."""

    def __init__(self, stack: BaiStack) -> None:
        self.host = stack.exports["BACKEND_ENDPOINT"].removeprefix("http://")
        self.access_key = stack.exports["BACKEND_ACCESS_KEY"]
        self.secret_key = stack.exports["BACKEND_SECRET_KEY"]

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        date = datetime.now(UTC).isoformat()
        raw_type = str(request.headers.get("Content-Type") or "application/octet-stream")
        content_type = raw_type.split(";")[0].strip().lower()
        text = string_to_sign(
            str(request.method), str(request.path_url), date, self.host, content_type, "v7.20230615"
        )
        signature = sign(self.secret_key, parse_date(date), self.host, text)
        request.headers.update(
            {
                "Date": date,
                "X-BackendAI-Version": "v7.20230615",
                "Authorization": "BackendAI signMethod=HMAC-SHA256, "
                f"credential={self.access_key}:{signature}",
            }
        )
        return request


FUZZED = schemathesis.openapi.from_dict(openapi_document()).exclude(
    method="PUT", path="/manager/status"
)
"""Everything but the freeze: fuzzing a superadmin's freeze (and force-kill) would leave the
stack frozen for the rest of the run; the freeze has a test of its own."""


@FUZZED.parametrize()
@hypothesis.settings(
    max_examples=20, deadline=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_no_input_gets_a_5xx_or_a_traceback(case: schemathesis.Case, stack: BaiStack) -> None:
    """Whatever schemathesis makes of the OpenAPI document, signed, never breaks the
    gateway: no 5xx, no traceback in any body, and every refusal a problem body."""
    session = requests.Session()
    session.auth = Signed(stack)
    response = case.call(base_url=stack.exports["BACKEND_ENDPOINT"], session=session, timeout=30)
    assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        problem = response.json()
        assert {"type", "title"} <= set(problem), problem


def test_another_tenant_cannot_see_exec_download_stream_or_destroy(stack: BaiStack) -> None:
    """User B, with a valid keypair, finds none of user A's session: not by name, not by
    UUID, through no route (REST, websocket, SSE, GraphQL)."""
    assert stack.bai("session", "create", "-t", "e2e-private", "python").returncode == 0
    (own,) = [s["session_id"] for s in stack.ps() if s["name"] == "e2e-private"]
    b_ak, b_sk = asyncio.run(second_tenant(stack, "tenant-b"))
    as_b = {"access_key": b_ak, "secret": b_sk}
    for ref in ("e2e-private", own):
        for method, path, body in (
            ("GET", f"/session/{ref}", None),
            ("POST", f"/session/{ref}", {"mode": "query", "code": "print(1)", "runId": None}),
            ("GET", f"/session/{ref}/download_single?file=x", None),
            ("GET", f"/session/{ref}/files", None),
            ("GET", f"/session/{ref}/logs", None),
            ("GET", f"/stream/session/{ref}/execute", None),
            ("GET", f"/stream/session/{ref}/apps", None),
            ("GET", f"/stream/session/{ref}/pty", None),
            ("DELETE", f"/session/{ref}", None),
        ):
            status, reply = signed(stack, method, path, body=body, **as_b)
            assert problem_of((status, reply)) == (404, "object-not-found", "No such session."), (
                method,
                path,
            )
    env = {"BACKEND_ACCESS_KEY": b_ak, "BACKEND_SECRET_KEY": b_sk}
    ran = stack.bai("run", "-t", "e2e-private", "python", "-c", "print('as B')", **env)
    assert "as B" in ran.stdout  # B's own new session of that name, not A's
    assert stack.bai("session", "rm", "e2e-private", **env).returncode == 0
    info = signed(
        stack,
        "POST",
        "/admin/gql",
        body={
            "query": "query($id: UUID!) { compute_session(id: $id) { name } }",
            "variables": {"id": own},
        },
        **as_b,
    )
    assert json.loads(info[1])["data"]["compute_session"] is None
    snoop = open_events(stack, f"/events/session?sessionId={own}&scope=*", b_ak, b_sk)
    snoop.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        head += snoop.recv(4096)
    assert head.startswith(b"HTTP/1.1 200")
    assert stack.bai("session", "rm", "e2e-private").returncode == 0  # A's, by A
    snoop.settimeout(2)
    seen = head
    try:
        while chunk := snoop.recv(65536):
            seen += chunk
    except TimeoutError:
        pass
    snoop.close()
    assert b"event:" not in seen  # A's session ended; B was told nothing of it


async def set_presets(stack: BaiStack) -> None:
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        tenancy = await TenancyService(
            store, SecretBox.from_file(stack.root / "data" / "master.key")
        ).load()
        await tenancy.handle(
            SetPreset(name="small", resource_slots={"cpu": 1, "mem": 2**28}, shared_memory="64m")
        )
        await tenancy.handle(SetPreset(name="huge", resource_slots={"cpu": 10_000, "mem": 2**50}))
        lookups = TenancyLookups(store)
        await eventually(lambda: lookups.presets(), timeout=20, message="projected")

        async def both() -> bool:
            return len(await lookups.presets()) == 2

        await eventually(both, timeout=20, message="both presets projected")
    finally:
        await store.close()


def test_presets_say_what_fits_now_and_usage_is_binned(stack: BaiStack) -> None:
    asyncio.run(set_presets(stack))
    status, body = signed(stack, "GET", "/resource/presets")
    assert status == 200
    assert {p["name"]: p["resource_slots"] for p in json.loads(body)["presets"]} == {
        "small": {"cpu": "1", "mem": "268435456"},
        "huge": {"cpu": "10000", "mem": "1125899906842624"},
    }
    assert stack.bai("session", "create", "-t", "e2e-preset", "python").returncode == 0
    status, body = signed(stack, "POST", "/resource/check-presets", body={"group": "default"})
    assert status == 200, body
    checked = json.loads(body)
    assert {p["name"]: p["allocatable"] for p in checked["presets"]} == {
        "small": True,
        "huge": False,
    }
    assert checked["keypair_using"]["cpu"] == "1"  # the session just created
    assert checked["keypair_limits"]["cpu"] == "Infinity"  # the default policy: unlimited
    assert set(checked["scaling_groups"]) == {"default"}
    refused = signed(stack, "POST", "/resource/check-presets", body={"group": "no-such-group"})
    assert problem_of(refused)[:2] == (400, "invalid-api-params")
    today = datetime.now(UTC).strftime("%Y%m%d")
    status, body = signed(
        stack, "GET", f"/resource/usage/period?start_date={today}&end_date={today}"
    )
    bins = json.loads(body)
    assert status == 200 and bins and all(b["num_sessions"] >= 1 for b in bins)
    assert sum(float(b["slot_seconds"].get("cpu", 0)) for b in bins) > 0
    status, body = signed(stack, "POST", "/resource/recalculate-usage")
    assert (status, json.loads(body)) == (200, {})
    status, body = signed(stack, "POST", "/resource/check-presets", body={"group": "default"})
    assert json.loads(body)["keypair_using"]["cpu"] == "1"  # the same, folded again
    assert stack.bai("session", "rm", "e2e-preset").returncode == 0
