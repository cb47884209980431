"""The inference proxy (:mod:`actors.gateway.serving_proxy`) against a replica that misbehaves.

A replica is the tenant's code, so the proxy must survive whatever it answers: headers
past the cap (502, nothing relayed), a broken chunked body (the caller's answer is cut, the
gateway is fine), an answer that never comes (504), cookies for the gateway's origin
(dropped), a connection closed after each answer (the next request still served). And what
the caller sends is passed on without the hop-by-hop headers or its credential, within the
body cap (413 past it).

The parsing pieces are tested alone first (no services); the rest on a real ``kh up`` with
one public endpoint whose replica runs :data:`HOSTILE`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from actors.gateway.serving_http import (
    MAX_REQUEST_BODY,
    MAX_RESPONSE_HEAD,
    REPLAY_BYTES,
    Answer,
    BodyTooLarge,
    ReplicaFailed,
    Upload,
    UploadTooSlow,
    answered,
    forwarded,
    parse_head,
    read_body,
    read_size,
)
from actors.gateway.serving_proxy import GatewayBusy, InFlight, TooBusy, _pick

from .khstack import Stack, exchange, second_tenant
from .test_services_api import IMAGE, Lab, Tenant, client_binary, remove_endpoints

MOUNT = "/home/work/models"

HOSTILE = """\
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def raw(self, data):
        self.wfile.write(data)
        self.wfile.flush()

    def do_GET(self):
        p = self.path
        if p == "/health":
            return self.raw(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
        if p == "/huge-headers":
            return self.raw(b"HTTP/1.1 200 OK\\r\\nX-Big: " + b"a" * 100000 + b"\\r\\n\\r\\n")
        if p == "/many-headers":
            lines = b"".join(b"X-%d: 1\\r\\n" % i for i in range(300))
            return self.raw(b"HTTP/1.1 200 OK\\r\\n" + lines + b"Content-Length: 0\\r\\n\\r\\n")
        if p == "/chunked":
            body = b"5\\r\\nhello\\r\\n6\\r\\n world\\r\\n0\\r\\nX-Trailer: 1\\r\\n\\r\\n"
            return self.raw(b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n" + body)
        if p == "/bad-chunk":
            self.raw(b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n")
            self.raw(b"5\\r\\nhello\\r\\n")
            self.raw(b"zz\\r\\n")
            self.close_connection = True
            return
        if p == "/neg-chunk":
            self.raw(b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n-1\\r\\n")
            for _ in range(16):
                self.raw(b"A" * 2**20)
            self.close_connection = True
            return
        if p == "/poison":
            return self.raw(
                b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nOK"
                b"HTTP/1.1 200 OK\\r\\nX-Poison: 1\\r\\nContent-Length: 9\\r\\n\\r\\nPOISONED!"
            )
        if p == "/until-close":
            self.raw(b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\n\\r\\nall of it")
            self.close_connection = True
            return
        if p == "/stall":
            time.sleep(30)
            return self.raw(b"HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n")
        if p == "/cookie":
            return self.raw(
                b"HTTP/1.1 200 OK\\r\\nSet-Cookie: session=stolen; Path=/\\r\\n"
                b"Content-Security-Policy: default-src *\\r\\nX-Bad\\x01: 1\\r\\n"
                b"Clear-Site-Data: \\"*\\"\\r\\nAccess-Control-Allow-Origin: *\\r\\n"
                b"WWW-Authenticate: Basic\\r\\nRefresh: 0;url=http://evil.example/\\r\\n"
                b"Content-Length: 2\\r\\n\\r\\nok"
            )
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = json.dumps({"path": p, "headers": headers}).encode()
        self.raw(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)

    def do_HEAD(self):
        # a sloppy server: a body after a HEAD's answer
        self.raw(b"HTTP/1.1 200 OK\\r\\nContent-Length: 9\\r\\n\\r\\nPOISONED!")

    def do_POST(self):
        if self.path == "/early":  # answers after the first MiB, the rest unread
            got = len(self.rfile.read(2**20))
            self.close_connection = True
            body = json.dumps({"received": got}).encode()
            return self.raw(
                b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n"
                % len(body) + body
            )
        size = int(self.headers.get("Content-Length") or 0)
        got = 0
        while got < size:
            got += len(self.rfile.read(min(65536, size - got)))
        body = json.dumps({"received": got}).encode()
        self.raw(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

DEFINITION = f"""\
models:
  - name: hostile
    model_path: {MOUNT}
    service:
      start_command: ["python3", "{MOUNT}/server.py", "8000"]
      port: 8000
      health_check: {{path: /health, interval: 1, max_retries: 3, initial_delay: 60}}
"""


# ---- pure pieces --------------------------------------------------------------------------------
def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=MAX_RESPONSE_HEAD)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def _collect(data: bytes, answer: Answer) -> bytes:
    return b"".join([chunk async for chunk in read_body(_reader(data), answer)])


@pytest.mark.unit
def test_a_head_is_read_with_its_framing() -> None:
    answer = parse_head(
        b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
        b"Set-Cookie: a=b\r\nX-Ok: yes\r\nBad Name: x\r\n\r\n",
        "POST",
    )
    assert (answer.status, answer.reason, answer.length, answer.keep_alive) == (
        201,
        "Created",
        5,
        True,
    )
    assert answer.headers == [("X-Ok", "yes")]  # hop-by-hop, cookies, malformed: dropped
    assert not parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET").keep_alive
    assert not parse_head(b"HTTP/1.1 200 OK\r\n\r\n", "GET").keep_alive  # read to the end
    assert parse_head(b"HTTP/1.1 204 No Content\r\n\r\n", "GET").bodiless


@pytest.mark.unit
@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 200 + b"\r\n",
    ],
)
def test_a_head_the_proxy_cannot_trust_is_a_502(head: bytes) -> None:
    with pytest.raises(ReplicaFailed):
        parse_head(head, "GET")


@pytest.mark.unit
def test_bodies_are_decoded_and_bounded_by_their_framing() -> None:
    chunked = Answer(200, "", [], None, True, True)
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    assert asyncio.run(_collect(body, chunked)) == b"hello world"
    sized = Answer(200, "", [], 4, False, True)
    assert asyncio.run(_collect(b"abcdEXTRA", sized)) == b"abcd"
    with pytest.raises(ReplicaFailed):
        asyncio.run(_collect(b"fffffffffffffffff\r\n", chunked))  # a chunk of 2**68 bytes
    with pytest.raises(ReplicaFailed):
        asyncio.run(_collect(b"zz\r\n", chunked))
    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(_collect(b"ab", sized))


@pytest.mark.unit
@pytest.mark.parametrize("size", [b"-1", b"+1", b"0x1", b"1_0", b" 1", b"-0", b""])
def test_a_chunk_size_that_is_not_plain_hex_is_refused_before_any_read(size: bytes) -> None:
    """Review S14: ``int("-1", 16)`` made ``read(-1)`` read the replica's whole stream into
    one buffer (one tenant could OOM the shared gateway). Nothing may be yielded."""
    chunked = Answer(200, "", [], None, True, True)
    got: list[bytes] = []

    async def drain() -> None:
        async for chunk in read_body(_reader(size + b"\r\n" + b"A" * (4 * 2**20)), chunked):
            got.append(chunk)

    with pytest.raises(ReplicaFailed):
        asyncio.run(drain())
    assert got == []


@pytest.mark.unit
def test_no_read_asks_for_a_non_positive_size() -> None:
    with pytest.raises(ReplicaFailed):
        read_size(0)
    with pytest.raises(ReplicaFailed):
        read_size(-1)
    assert read_size(10) == 10 and read_size(2**40) == 2**16


def _stream(data: bytes = b"", eof: bool = True) -> asyncio.StreamReader:
    stream = asyncio.StreamReader()
    stream.feed_data(data)
    if eof:
        stream.feed_eof()
    return stream


async def _upload(data: bytes, length: int | None, **limits: Any) -> tuple[Upload, bytes, bytes]:
    upload = Upload(_stream(data), length, **limits)
    await upload.start()
    return upload, upload.kept, b"".join([piece async for piece in upload.rest()])


@pytest.mark.unit
def test_a_body_is_streamed_and_only_its_first_64_kib_kept() -> None:
    """Review S6: the body was read whole (16 MiB x 512 requests per endpoint in gateway
    memory). Now only :data:`REPLAY_BYTES` are held, and only a body that small may be
    sent again."""
    small, kept, rest = asyncio.run(_upload(b"x" * 100, 100))
    assert (kept, rest, small.replayable, small.header()) == (
        b"x" * 100,
        b"",
        True,
        "Content-Length: 100",
    )

    async def big() -> tuple[Upload, int, list[int]]:
        upload = Upload(_stream(b"y" * (3 * 2**20)), 3 * 2**20)
        await upload.start()
        sizes = [len(piece) async for piece in upload.rest()]
        return upload, len(upload.kept), sizes

    upload, kept_size, sizes = asyncio.run(big())
    assert kept_size == REPLAY_BYTES and not upload.replayable
    assert max(sizes) <= 2**16 and sum(sizes) + kept_size == 3 * 2**20


@pytest.mark.unit
def test_a_body_without_a_length_goes_chunked() -> None:
    upload, kept, rest = asyncio.run(_upload(b"hello", None))
    assert upload.header() == "Transfer-Encoding: chunked"
    assert kept + rest == b"5\r\nhello\r\n0\r\n\r\n"
    empty, kept, rest = asyncio.run(_upload(b"", None))
    assert (kept, rest, empty.header()) == (b"", b"", None)


@pytest.mark.unit
def test_a_body_past_the_cap_is_refused_as_it_comes() -> None:
    with pytest.raises(BodyTooLarge):
        asyncio.run(_upload(b"", MAX_REQUEST_BODY + 1))
    with pytest.raises(BodyTooLarge):  # no length announced: counted as it comes
        asyncio.run(_upload(b"z" * 300_000, None, cap=200_000))


@pytest.mark.unit
def test_a_caller_trickling_its_body_is_cut() -> None:
    """Review S12: one byte a minute held a slot (and a socket) for ever; now the body must
    average a minimum rate after a grace period."""

    async def trickle() -> None:
        stream = _stream(b"a", eof=False)
        upload = Upload(stream, 1000, grace_s=0.3, rate=1000)

        async def feed() -> None:
            for _ in range(100):
                await asyncio.sleep(0.05)
                stream.feed_data(b"a")

        feeder = asyncio.create_task(feed())
        try:
            await upload.start()
        finally:
            feeder.cancel()

    started = time.monotonic()
    with pytest.raises(UploadTooSlow):
        asyncio.run(trickle())
    assert time.monotonic() - started < 3


@pytest.mark.unit
def test_requests_in_flight_are_capped_gateway_wide() -> None:
    """Review S12: the only cap was per endpoint (16 endpoints x 512 for one tenant)."""
    flight = InFlight(total=3, per_endpoint=2)
    with flight.slot("a"), flight.slot("a"):
        with pytest.raises(TooBusy):
            with flight.slot("a"):
                pass
        with flight.slot("b"):
            with pytest.raises(GatewayBusy):
                with flight.slot("c"):
                    pass
    assert flight.count == 0 and flight.counts == {}


@pytest.mark.unit
@pytest.mark.parametrize(
    "name",
    [
        "Cookie",
        "Forwarded",
        "X-Real-IP",
        "X-Forwarded-Host",
        "X-BackendAI-Version",
        "Authorization",
        "Proxy-Authorization",
    ],
)
def test_the_callers_cookies_and_forwarding_claims_stay_behind(name: str) -> None:
    """Review S10."""
    assert not forwarded(name) and forwarded("X-Custom") and forwarded("Content-Type")


@pytest.mark.unit
@pytest.mark.parametrize(
    "name",
    [
        "Clear-Site-Data",
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Credentials",
        "Refresh",
        "WWW-Authenticate",
        "Strict-Transport-Security",
        "X-BackendAI-Anything",
        "X-Kernelhub-Proxy",
        "Set-Cookie",
        "X-Content-Type-Options",
    ],
)
def test_replica_headers_that_act_on_the_gateways_origin_are_dropped(name: str) -> None:
    """Review S9: the answer comes from the gateway's own origin."""
    answer = parse_head(
        b"HTTP/1.1 200 OK\r\n%b: x\r\nContent-Length: 0\r\n\r\n" % name.encode(), "GET"
    )
    assert answer.headers == [] and not answered(name)
    assert answered("Content-Type") and answered("Location") and answered("Retry-After")


@pytest.mark.unit
def test_only_healthy_routes_with_traffic_are_picked() -> None:
    routes = [
        {"route_id": "a", "status": "HEALTHY", "traffic_ratio": 1.0},
        {"route_id": "b", "status": "PROVISIONING", "traffic_ratio": 1.0},
        {"route_id": "c", "status": "HEALTHY", "traffic_ratio": 0.0},
        {"route_id": "d", "status": "UNHEALTHY", "traffic_ratio": 1.0},
    ]
    assert {_pick(routes, set())["route_id"] for _ in range(50)} == {"a"}  # type: ignore[index]
    assert _pick(routes, {"a"}) is None


# ---- a real stack, a hostile replica ------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile(serving_stack: Stack) -> Iterator[tuple[Lab, str]]:
    """A public endpoint of one replica running :data:`HOSTILE`, on the shared serving stack
    (whose ``KH_SERVING_TIMEOUT_S`` is 5 s)."""
    if not client_binary().exists():
        pytest.skip(f"the official client is not installed at {client_binary()}")
    stack = serving_stack
    bob = Tenant(stack, *asyncio.run(second_tenant(stack, "proxybob")))
    lab = Lab(stack, bob, bob, bob)
    path = lab.folder(bob, "hostile")
    (path / "server.py").write_text(HOSTILE)
    (path / "model-definition.yaml").write_text(DEFINITION)
    for item in (path / "server.py", path / "model-definition.yaml"):
        os.chmod(item, 0o666)
    os.chmod(path, 0o777)
    try:
        args = ["service", "create", IMAGE, "hostile", "1", "-t", "hostile", "--public"]
        bob.ok(*args, "--model-mount-destination", MOUNT)
        status, listed = bob.rest("GET", "/services?name=hostile")
        assert status == 200 and len(listed) == 1, listed
        yield lab, _healthy(bob, listed[0]["id"], stack)
    finally:
        remove_endpoints(bob)


def _healthy(bob: Tenant, endpoint_id: str, stack: Stack, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    info: Any = None
    while time.monotonic() < deadline:
        _, info = bob.rest("GET", f"/services/{endpoint_id}")
        if any(r["status"] == "HEALTHY" for r in info["active_routes"]):
            return str(info["service_endpoint"])
        time.sleep(1)
    raise AssertionError(f"no HEALTHY route: {info}")


def _raw(url: str, method: str = "GET", body: bytes | None = None, **headers: str) -> Any:
    """One request with http.client (the answer as it came: status, headers, body; or the
    exception a cut answer raises)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(
            method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers
        )
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_huge_or_too_many_headers_are_a_502(hostile: tuple[Lab, str]) -> None:
    _, url = hostile
    for path in ("/huge-headers", "/many-headers"):
        status, _, body = _raw(url + path)
        assert status == 502, (path, body)
        assert b"X-Big" not in body
    assert _raw(url + "/echo")[0] == 200  # and the next one is served


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_chunked_and_read_to_the_end_bodies_are_relayed(hostile: tuple[Lab, str]) -> None:
    _, url = hostile
    assert _raw(url + "/chunked")[2] == b"hello world"
    assert _raw(url + "/until-close")[2] == b"all of it"
    assert _raw(url + "/until-close")[2] == b"all of it"  # the closed connection not reused


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_broken_body_cuts_the_answer_not_the_gateway(hostile: tuple[Lab, str]) -> None:
    _, url = hostile
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        _raw(url + "/bad-chunk")
    assert _raw(url + "/echo")[0] == 200


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_negative_chunk_size_is_a_502_not_a_buffered_stream(hostile: tuple[Lab, str]) -> None:
    """Review S14 live: ``-1`` then megabytes must not be read whole into the gateway."""
    _, url = hostile
    status, _, body = _raw(url + "/neg-chunk")
    assert status == 502 and b"AAAA" not in body, (status, body[:200])
    assert _raw(url + "/echo")[0] == 200


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_bytes_past_an_answer_never_reach_the_next_caller(hostile: tuple[Lab, str]) -> None:
    """Review S8: bytes after the framed answer (or after a HEAD's answer) must not be read
    as the next caller's answer on a kept-alive connection."""
    _, url = hostile
    for _ in range(5):
        status, headers, body = _raw(url + "/poison")
        assert (status, body) == (200, b"OK")
        status, headers, body = _raw(url + "/innocent")
        assert b"POISONED" not in body and "X-Poison" not in headers, body
        assert _raw(url + "/x", "HEAD")[0] == 200
        status, headers, body = _raw(url + "/innocent")
        assert b"POISONED" not in body and json.loads(body)["path"] == "/innocent", body


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_body_is_streamed_to_the_replica_not_buffered(hostile: tuple[Lab, str]) -> None:
    """Review S6: the caller sends 1 MiB of a 4 MiB body and waits. A proxy that holds the
    body until it is whole never asks the replica; a streaming one gets its early answer."""
    _, url = hostile
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(
            f"POST {parts.path}/early HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {4 * 2**20}\r\n\r\n".encode()
            + b"b" * 2**20
        )
        answer = b""
        while b"received" not in answer:
            piece = sock.recv(65536)
            assert piece, answer
            answer += piece
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"received": 1048576' in answer, answer


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_replica_that_never_answers_is_a_504(hostile: tuple[Lab, str]) -> None:
    _, url = hostile
    started = time.monotonic()
    status, _, body = _raw(url + "/stall")
    assert status == 504, body
    assert time.monotonic() - started < 25


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_replica_sets_no_cookie_on_the_gateways_origin(hostile: tuple[Lab, str]) -> None:
    _, url = hostile
    status, headers, body = _raw(url + "/cookie")
    assert (status, body) == (200, b"ok")
    lowered = {k.lower(): v for k, v in headers.items()}
    assert "set-cookie" not in lowered and "x-bad\x01" not in lowered
    assert lowered["content-security-policy"] == "sandbox"
    assert lowered["x-content-type-options"] == "nosniff"
    for name in ("clear-site-data", "access-control-allow-origin", "www-authenticate", "refresh"):
        assert name not in lowered, lowered  # review S9


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_hop_by_hop_headers_and_credentials_stay_behind(hostile: tuple[Lab, str]) -> None:
    _, url = hostile
    status, _, body = _raw(
        url + "/echo?a=1&b=%2F",
        **{
            "Connection": "keep-alive, X-Secret",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "Authorization": "BackendAI not-for-the-replica",
            "X-Custom": "passed",
            "TE": "trailers",
            "Cookie": "kh_session=victim",
            "Forwarded": "for=6.6.6.6",
            "X-Real-IP": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "X-BackendAI-Version": "v9",
        },
    )
    assert status == 200
    seen = json.loads(body)
    assert seen["path"] == "/echo?a=1&b=%2F"
    headers = seen["headers"]
    assert headers["x-custom"] == "passed"
    for name in (
        "proxy-authorization",
        "authorization",
        "te",
        "cookie",
        "forwarded",
        "x-real-ip",
        "x-forwarded-host",
        "x-backendai-version",
    ):
        assert name not in headers, headers
    assert headers["x-forwarded-for"] == "127.0.0.1"


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_body_past_the_cap_is_a_413(hostile: tuple[Lab, str]) -> None:
    _, url = hostile
    status, _, body = _raw(url + "/upload", "POST", b"x" * (MAX_REQUEST_BODY + 1))
    assert status == 413, body
    status, _, body = _raw(url + "/upload", "POST", b"x" * (MAX_REQUEST_BODY - 10))
    assert status == 200 and json.loads(body) == {"received": MAX_REQUEST_BODY - 10}


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_many_callers_at_once_are_all_served(hostile: tuple[Lab, str]) -> None:
    _, url = hostile
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: _raw(f"{url}/echo?i={i}"), range(200)))
    assert [a[0] for a in answers] == [200] * 200
    assert sorted(json.loads(a[2])["path"] for a in answers) == sorted(
        f"/echo?i={i}" for i in range(200)
    )


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_an_unknown_endpoint_without_a_token_reads_as_a_private_one(
    hostile: tuple[Lab, str],
) -> None:
    _, url = hostile
    base = url.rsplit("/", 1)[0]
    made_up = exchange(f"{base}/{uuid.uuid4()}", "GET", {})
    not_an_id = exchange(f"{base}/not-an-id/x", "GET", {})
    assert made_up[0] == not_an_id[0] == 401, (made_up, not_an_id)


_SNAPSHOT = """\
import json, sys
import ray
from kernelhub.ray_head import connect
connect(json.load(open(sys.argv[1]))["ray_address"])
print(json.dumps(ray.get(ray.get_actor("gateway").metrics_snapshot.remote())))
"""


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_answers_are_counted_per_endpoint_and_made_up_ids_make_no_series(
    hostile: tuple[Lab, str],
) -> None:
    import subprocess
    import sys

    from kernelhub.ray_head import RAY_ENV

    lab, url = hostile
    endpoint_id = url.rsplit("/", 1)[1]
    assert _raw(url + "/echo")[0] == 200
    assert _raw(url + "/huge-headers")[0] == 502
    made_up = [str(uuid.uuid4()) for _ in range(5)]
    for endpoint in made_up:
        exchange(f"{url.rsplit('/', 1)[0]}/{endpoint}", "GET", {})
    done = subprocess.run(
        [sys.executable, "-c", _SNAPSHOT, str(lab.stack.root / "data" / "embedded.json")],
        env={**os.environ, **RAY_ENV},  # Ray's token is in the real ~/.ray
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    snapshot: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    served = [k for k in snapshot if k.startswith("kernelhub_serving_requests_total")]
    assert any(endpoint_id in k and "200" in k for k in served), served
    errors = [k for k in snapshot if k.startswith("kernelhub_serving_errors_total")]
    assert any(endpoint_id in k and "bad-answer" in k for k in errors), errors
    assert any("unknown" in k for k in served), served
    assert not [k for k in snapshot for e in made_up if e in k]  # no series per made-up id


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_unsigned_path_reaches_no_other_route(hostile: tuple[Lab, str]) -> None:
    """The proxy is exempt from keypair signing by its matched route, never by a path prefix:
    a path that starts ``/serving/`` but resolves elsewhere is signed like any other."""
    _, url = hostile
    base = url.split("/serving/", 1)[0]
    for path in ("/serving/../folders", "/serving/x/../../folders", "/serving/%2e%2e/folders"):
        status, _, body = _raw(base + path)
        assert status in (400, 401, 404), (path, status, body)  # refused, never a listing
