"""Session callbacks (``callback_url``): the pure decisions (body, URL and address rules,
retries, the checkpoint), delivery on the write side in one process, and the whole stack
through Backend.AI's official client: each status change POSTed in order, retried, a dead
receiver delaying nobody else, SSRF refused, and a killed follower resuming without a loss.

Receivers listen on 127.0.0.1 only; private ranges are named in unit tests, never reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from actors.domain.callbacks import (
    CALLBACK_EVENTS,
    CallbackPolicy,
    Delivery,
    Progress,
    address_refusal,
    callback_body,
    connect_host,
    destination_of,
    judge,
    literal_address,
    parse_allow,
    retry_delay,
    validate_callback_url,
)
from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.errors import InvalidAPIParameters
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from actors.runtime.callbacks import (
    AddressRefused,
    CallbackDispatcher,
    GuardedResolver,
    callback_client,
)
from events import RedisEventStore
from kernelhub.testing import eventually

from .khstack import Stack, kh_up, signed_request
from .test_official_client import BaiStack, client_binary

unit = pytest.mark.unit
LOCAL = CallbackPolicy(allow=parse_allow("127.0.0.1/32"))
LIFECYCLE = ["enqueued", "scheduled", "preparing", "started", "terminating", "terminated"]


# ---- the receiver ------------------------------------------------------------------------------
class Receiver:
    """An HTTP server on 127.0.0.1 in its own thread, recording every POST it gets.

    Paths choose its answer: ``/ok/...`` 200; ``/flaky/...`` 500 to the first two requests
    of that path, then 200; ``/hang/...`` never answers until :meth:`release` (200 after);
    ``/after2/...`` 200 to two requests, then as ``/hang``; ``/redirect/...`` 307 to
    ``/ok/landed``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.released = threading.Event()
        self.waiting = 0
        """Requests held unanswered right now."""
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def release(self) -> None:
        """Answer what is held, and everything from now on."""
        self.released.set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.requests.append(
                {"path": request.path, "headers": dict(request.headers), "body": body}
            )
            seen = self._seen[request.path] = self._seen.get(request.path, 0) + 1
        kind = request.path.split("/")[1]
        if kind == "redirect":
            raise web.HTTPTemporaryRedirect(self.url("/ok/landed"))
        if kind == "flaky" and seen <= 2:
            return web.Response(status=500)
        if kind == "hang" or (kind == "after2" and seen > 2):
            self.waiting += 1
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.released.wait)
            finally:
                self.waiting -= 1
        return web.Response(status=200)

    def got(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def events(self, path: str) -> list[str]:
        """The events received at ``path``, each once (its first arrival), in arrival order."""
        firsts: dict[str, str] = {}
        for request in self.got(path):
            firsts.setdefault(request["headers"]["Idempotency-Key"], request["body"]["event"])
        return list(firsts.values())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def until(predicate: Any, timeout: float = 60, message: str = "condition") -> Any:
    return asyncio.run(eventually(predicate, timeout=timeout, interval=0.1, message=message))


# ---- what a receiver is sent -------------------------------------------------------------------
@unit
def test_the_body_is_23_03s_session_lifecycle_for_each_session_event() -> None:
    assert set(CALLBACK_EVENTS) == {
        "session_enqueued",
        "session_scheduled",
        "session_preparing",
        "session_started",
        "session_cancelled",
        "session_terminating",
        "session_terminated",
        "session_success",
        "session_failure",
        "session_idle_warning",  # kernelhub's: a reclaim ahead (docs/idle.md)
    }
    assert callback_body("session_idle_warning", "1b4c", 0)["event"] == "idle_warning"
    body = callback_body("session_terminated", "1b4c", 1_796_126_536_855)
    assert body == {
        "type": "session_lifecycle",
        "event": "terminated",
        "session_id": "1b4c",
        "when": "2026-12-01T12:02:16.855000+00:00",
    }
    assert datetime.fromisoformat(body["when"]).utcoffset() is not None


# ---- which URLs a tenant may name -------------------------------------------------------------
@unit
@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/kh?token=abc",
        "http://example.org:8080/x",
        "http://8.8.8.8/",
        "http://[2606:4700::1111]/",
    ],
)
def test_public_http_urls_are_taken(url: str) -> None:
    assert validate_callback_url(url, CallbackPolicy()) == url


@unit
@pytest.mark.hostile
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://example.com:70/_x", "only http and https"),
        ("http://user:secret@example.com/", "no user name or password"),
        ("http://example.com@127.0.0.1/", "no user name or password"),
        ("http:///nohost", "no host"),
        ("http://example.com/a b", "whitespace"),
        ("http://example.com/\r\nX-Injected: 1", "control"),
        ("http://example.com:99999/", "not a URL"),
        ("http://example.com/" + "a" * 3000, "longer than 2048"),
        ("http://127.0.0.1:9/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f.0.0.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://10.0.0.8/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fc00::1]/", "private"),
        ("http://[fe80::1]/", "link-local"),
        ("http://224.0.0.1/", "multicast"),
        ("http://100.64.0.1/", "not a public address"),
        ("http://[2001:db8::1]/", "private"),  # documentation
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 carrying 127.0.0.1
        ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 carrying 10.0.0.1
        ("http://127.0.0.1./", "loopback"),
        # spellings urllib takes for names and aiohttp (yarl's IDNA) for 127.0.0.1 (review H1)
        ("http://\u2460\u2461\u2466.0.0.1:8080/", "to an HTTP client 127.0.0.1"),
        ("http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/", "loopback"),
        ("http://127\u30020\u30020\u30021/", "loopback"),
        (
            "http://\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14/",
            "metadata",
        ),
        ("http://\uff11\uff10.0.0.1/", "private"),
        ("http://\uff11\uff12\uff17\uff0e\uff11/", "loopback"),  # 127.1
    ],
)
def test_a_url_callbacks_may_not_use_is_refused_naming_callback_url(url: str, why: str) -> None:
    with pytest.raises(InvalidAPIParameters) as refused:
        validate_callback_url(url, CallbackPolicy())
    assert refused.value.msg.startswith("callback_url: ") and why in refused.value.msg


@unit
def test_a_host_is_judged_as_the_http_client_will_connect_to_it() -> None:
    full_width_name = "http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/hook"
    assert validate_callback_url(full_width_name, CallbackPolicy()) == full_width_name
    assert connect_host(full_width_name) == "example.com"
    assert destination_of(full_width_name) == "http://example.com:80"
    assert destination_of("http://\u2460\u2461\u2466.0.0.1:81/") == "http://127.0.0.1:81"
    assert destination_of("http://[2606:4700::1111]/") == "http://[2606:4700::1111]:80"


@unit
def test_the_operator_allow_list_opens_exactly_what_it_names() -> None:
    assert validate_callback_url("http://127.0.0.1:8000/hook", LOCAL)
    assert validate_callback_url("http://[::ffff:127.0.0.1]:8000/hook", LOCAL)
    for url in ("http://127.0.0.2/", "http://[::1]/", "http://10.0.0.1/"):
        with pytest.raises(InvalidAPIParameters):
            validate_callback_url(url, LOCAL)
    policy = CallbackPolicy.from_env(
        {"KH_CALLBACK_ALLOW": " 10.1.0.0/16, ::1 ", "KH_CALLBACK_ATTEMPTS": "3"}
    )
    assert policy.allow == (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("::1"))
    assert policy.max_attempts == 3
    assert address_refusal("10.1.2.3", policy) is None
    assert address_refusal("10.2.0.1", policy) == "a private address"
    with pytest.raises(ValueError, match="KH_CALLBACK_ALLOW"):
        CallbackPolicy.from_env({"KH_CALLBACK_ALLOW": "localhost"})
    with pytest.raises(ValueError, match="KH_CALLBACK_ATTEMPTS"):
        CallbackPolicy.from_env({"KH_CALLBACK_ATTEMPTS": "0"})


@unit
def test_addresses_and_destinations() -> None:
    assert address_refusal("8.8.8.8") is None and address_refusal("2606:4700::1111") is None
    assert address_refusal("2001:0:4136:e378:8000:63bf:3fff:fdd2") == "a Teredo address"
    assert literal_address("example.com") is None and literal_address("cafe.be") is None
    assert literal_address("017700000001") == ipaddress.ip_address("127.0.0.1")
    assert destination_of("HTTPS://Hooks.Example.com/a?b") == "https://hooks.example.com:443"
    assert destination_of("http://127.0.0.1:81/x") == "http://127.0.0.1:81"


@unit
async def test_names_are_judged_on_what_they_resolve_to_when_connecting() -> None:
    with pytest.raises(AddressRefused, match="loopback"):
        await GuardedResolver(CallbackPolicy()).resolve("localhost", 80, socket.AF_UNSPEC)
    kept = await GuardedResolver(LOCAL).resolve("localhost", 80, socket.AF_UNSPEC)
    assert {r["host"] for r in kept} == {"127.0.0.1"}


CIRCLED_LOOPBACK = "\u2460\u2461\u2466.0.0.1"  # 127.0.0.1 once IDNA-normalised


@unit
@pytest.mark.hostile
async def test_the_socket_itself_refuses_a_loopback_address_whatever_its_spelling(
    receiver: Receiver,
) -> None:
    """Below the URL check and the resolver (which aiohttp skips for a literal), the client's
    socket factory judges the address it connects to: even a URL never checked is refused."""
    async with callback_client(CallbackPolicy()) as http:
        for host in (CIRCLED_LOOPBACK, "127.0.0.1", "[::ffff:127.0.0.1]"):
            with pytest.raises(aiohttp.ClientConnectorError) as refused:
                await http.post(f"http://{host}:{receiver.port}/ok/direct", json={})
            assert isinstance(refused.value.os_error, AddressRefused), host
            assert "loopback" in str(refused.value.os_error)
    async with callback_client(LOCAL) as http:  # the allow-list opens it at every layer
        async with http.post(receiver.url("/ok/allowed"), json={}) as response:
            assert response.status == 200
    assert receiver.got("/ok/direct") == []


def _delivery(url: str, n: int = 0) -> Delivery:
    return Delivery(
        event_id=f"{n}-0", position=f"{n + 1}-0", session_id="s", url=url, body={"event": "x"}
    )


@pytest.mark.redis
@pytest.mark.hostile
async def test_a_unicode_spelling_of_loopback_is_never_delivered(
    store: RedisEventStore, receiver: Receiver
) -> None:
    told: list[str] = []
    dispatcher = CallbackDispatcher(store, CallbackPolicy(), name="cb-h1", on_outcome=told.append)
    dispatcher.connect()
    try:
        for n, host in enumerate(
            (CIRCLED_LOOPBACK, "\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11")
        ):
            assert dispatcher.enqueue(_delivery(f"http://{host}:{receiver.port}/ok/u", n), "AK")
        await eventually(lambda: told.count("dropped") == 2, timeout=10, message="dropped")
    finally:
        await dispatcher.stop()
    assert receiver.got("/ok/u") == [] and "delivered" not in told


@contextlib.contextmanager
def tarpits(count: int) -> Iterator[list[int]]:
    """``count`` loopback ports that take connections and never answer (never accepted:
    the kernel completes each handshake into the backlog, and nobody reads)."""
    sockets = []
    try:
        for _ in range(count):
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            sockets.append(listener)
        yield [listener.getsockname()[1] for listener in sockets]
    finally:
        for listener in sockets:
            listener.close()


@pytest.mark.redis
@pytest.mark.hostile
async def test_many_hung_receivers_do_not_delay_an_honest_one(
    store: RedisEventStore, receiver: Receiver
) -> None:
    """Review M1: with one shared pool of 64 and the pool wait inside each attempt's time,
    ~100 tarpit destinations made every other tenant's attempt time out."""
    policy = CallbackPolicy(allow=LOCAL.allow, timeout_s=60, max_attempts=1)
    told: list[str] = []
    dispatcher = CallbackDispatcher(store, policy, name="cb-m1", on_outcome=told.append)
    dispatcher.connect()
    try:
        with tarpits(112) as ports:
            for n, port in enumerate(ports):  # 7 attackers' access keys, 16 destinations each
                url = f"http://127.0.0.1:{port}/hang"
                assert dispatcher.enqueue(_delivery(url, n), f"ATTACKER{n % 7}")
            await asyncio.sleep(1.0)  # their attempts connected and wait for an answer
            started = asyncio.get_running_loop().time()
            assert dispatcher.enqueue(_delivery(receiver.url("/ok/honest"), 999), "HONEST")
            await eventually(lambda: "delivered" in told, timeout=5, message="honest delivered")
            assert asyncio.get_running_loop().time() - started < 5
            assert receiver.events("/ok/honest") == ["x"] and "dropped" not in told
    finally:
        await dispatcher.stop()


@pytest.mark.redis
@pytest.mark.hostile
async def test_destinations_in_flight_are_bounded_per_owner_and_overall(
    store: RedisEventStore,
) -> None:
    policy = CallbackPolicy(
        allow=LOCAL.allow, max_destinations=4, max_destinations_per_owner=2, max_attempts=1
    )
    told: list[str] = []
    dispatcher = CallbackDispatcher(store, policy, name="cb-cap", on_outcome=told.append)
    dispatcher.connect()
    try:
        with tarpits(6) as ports:
            urls = [f"http://127.0.0.1:{port}/hang" for port in ports]
            assert dispatcher.enqueue(_delivery(urls[0], 0), "A")
            assert dispatcher.enqueue(_delivery(urls[1], 1), "A")
            assert not dispatcher.enqueue(_delivery(urls[2], 2), "A")  # A's share is full
            assert dispatcher.enqueue(_delivery(urls[0], 3), "A")  # a live one still queues
            assert dispatcher.enqueue(_delivery(urls[2], 4), "B")
            assert dispatcher.enqueue(_delivery(urls[3], 5), "B")
            assert not dispatcher.enqueue(_delivery(urls[4], 6), "C")  # all four are live
            assert dispatcher.enqueue(_delivery(urls[3], 7), "C")  # B's destination
            assert told == ["dropped", "dropped"] and dispatcher.pending == 6
    finally:
        await dispatcher.stop()


# ---- after each attempt ------------------------------------------------------------------------
@unit
def test_what_follows_an_attempt() -> None:
    policy = CallbackPolicy(max_attempts=3, backoff_s=1.0, backoff_cap_s=3.0)
    assert judge(204, None, 1, policy, 0.5).kind == "delivered"
    for status, error in ((500, None), (503, None), (429, None), (408, None), (None, "timeout")):
        retry = judge(status, error, 1, policy, 1.0)
        assert (retry.kind, retry.delay_s) == ("retry", 1.0)
    assert judge(500, None, 3, policy, 0.5).kind == "drop"  # attempts are bounded
    assert "gave up after 3 attempts" in judge(None, "refused", 3, policy, 0.5).why
    for status in (301, 302, 307, 400, 404, 410):  # redirects are not followed
        assert judge(status, None, 1, policy, 0.5).kind == "drop"
    assert judge(None, "x is loopback", 1, policy, 0.5, refused=True).kind == "drop"
    delays = [retry_delay(n, policy, 1.0) for n in range(1, 5)]
    assert delays == [1.0, 2.0, 3.0, 3.0]  # doubling, capped
    assert retry_delay(1, policy, 0.0) == 0.5  # jitter keeps the upper half


@unit
def test_the_checkpoint_never_passes_a_delivery_still_owed() -> None:
    progress = Progress("0-0")
    progress.read("1-0", 1)
    progress.read("2-0", 0)
    progress.read("3-0", 1)
    assert progress.checkpoint == "0-0" and progress.owed == 2
    progress.done("3-0")
    assert progress.checkpoint == "0-0"  # 1-0 is still owed
    progress.done("1-0")
    assert progress.checkpoint == "3-0" and progress.owed == 0
    progress.read("4-0", 1)  # one receiver holds the checkpoint back ...
    for n in range(5, 1005):  # ... while a thousand other deliveries come and go
        progress.read(f"{n}-0", 1)
        progress.read(f"{n}-1", 0)
        progress.done(f"{n}-0")
    assert progress.checkpoint == "3-0" and len(progress) <= 3
    progress.done("4-0")
    assert progress.checkpoint == "1004-1"


@unit
def test_many_deliveries_owed_at_once_are_done_in_any_order_cheaply() -> None:
    progress = Progress("0-0")
    count = 50_000  # a linear scan per done would take minutes here
    for n in range(1, count + 1):
        progress.read(f"{n}-0", 1)
    for n in range(count, 1, -1):
        progress.done(f"{n}-0")
    assert progress.checkpoint == "0-0" and progress.owed == 1 and len(progress) <= 2
    progress.done("1-0")
    assert progress.checkpoint == f"{count}-0" and progress.owed == 0
    progress.done("1-0")  # done twice (a bug elsewhere) owes nothing negative
    assert progress.owed == 0


# ---- delivery on the write side in one process -------------------------------------------------
outcomes: list[str] = []
"""What the local cluster's callbacks told (delivered, failed, dropped)."""


@contextlib.asynccontextmanager
async def local_cluster(
    store: RedisEventStore, policy: CallbackPolicy
) -> AsyncIterator[LocalCluster]:
    outcomes.clear()
    local = LocalCluster(store, safety_tick_s=0.5, callback_policy=policy)
    local.callbacks.on_outcome = outcomes.append
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


@pytest.fixture
async def cluster(store: RedisEventStore) -> AsyncIterator[LocalCluster]:
    async with local_cluster(store, CallbackPolicy(backoff_s=0.05, max_attempts=3)) as local:
        yield local


async def _create(cluster: LocalCluster, url: str) -> uuid.UUID:
    return await cluster.shard.handle(
        CreateSession(
            name=f"cb-{uuid.uuid4().hex[:6]}",
            access_key="AK1",
            scaling_group="default",
            image="kernelhub/python:3.11",
            requested=[ResourceSlot(cpu=1, mem=2**30)],
            callback_url=url,
        )
    )


async def _destroy_running(cluster: LocalCluster, sid: uuid.UUID) -> None:
    """Destroy a session once it runs, and wait for its end (a local cluster stopped while
    its agents stop kernels waits for them)."""

    async def status_is(status: str) -> bool:
        return (await cluster.shard.get(sid)).status.name == status

    await eventually(lambda: status_is("RUNNING"), timeout=20, message="running")
    await cluster.shard.handle(DestroySession(session_id=sid))
    await eventually(lambda: status_is("TERMINATED"), timeout=20, message="terminated")


@pytest.mark.redis
@pytest.mark.hostile
async def test_a_name_resolving_to_loopback_is_refused_when_delivering(
    cluster: LocalCluster, store: RedisEventStore, receiver: Receiver
) -> None:
    sid = await _create(cluster, f"http://localhost:{receiver.port}/ok/name")
    await cluster.shard.handle(DestroySession(session_id=sid))

    async def ended() -> list[str]:
        types = [e.type for e in await store.read_stream(f"session-{sid}")]
        return types if types[-1] in ("session_terminated", "session_cancelled") else []

    types = await eventually(ended, timeout=20, message="session ended")
    sent = len([t for t in types if t in CALLBACK_EVENTS])
    await eventually(lambda: outcomes.count("dropped") == sent, timeout=20, message="dropped")
    assert cluster.callbacks.pending == 0
    assert receiver.got("/ok/name") == [] and "delivered" not in outcomes


@pytest.mark.redis
@pytest.mark.hostile
async def test_a_redirect_is_not_followed(store: RedisEventStore, receiver: Receiver) -> None:
    async with local_cluster(store, CallbackPolicy(allow=LOCAL.allow)) as cluster:
        sid = await _create(cluster, receiver.url("/redirect/a"))
        await eventually(lambda: "dropped" in outcomes, timeout=20, message="dropped")
        await _destroy_running(cluster, sid)
    assert [r["body"]["event"] for r in receiver.got("/redirect/a")][:1] == ["enqueued"]
    assert receiver.got("/ok/landed") == []  # where it pointed: never asked


@pytest.mark.redis
async def test_an_idle_warning_reaches_the_callback_before_the_reclaim(
    store: RedisEventStore, receiver: Receiver
) -> None:
    from actors.domain.idle import IdleConfig

    idle = IdleConfig.parse(
        {
            "enabled": "network_timeout",
            "warning-lead": "1s",
            "checkers": {"network_timeout": {"threshold": "2s"}},
        }
    )
    local = LocalCluster(store, safety_tick_s=0.5, callback_policy=LOCAL, idle=idle)
    await local.start()
    try:
        await _create(local, receiver.url("/ok/idle"))

        def reclaimed() -> bool:
            return "terminated" in receiver.events("/ok/idle")

        await eventually(reclaimed, timeout=30, message="reclaimed and told")
    finally:
        await local.stop()
    told = receiver.events("/ok/idle")
    assert told.index("started") < told.index("idle_warning") < told.index("terminating")


@pytest.mark.redis
async def test_past_its_queue_bound_a_destination_drops_and_owes_nothing(
    store: RedisEventStore, receiver: Receiver
) -> None:
    policy = CallbackPolicy(allow=LOCAL.allow, queue_bound=1)
    async with local_cluster(store, policy) as cluster:
        held = await _create(cluster, receiver.url("/hang/full"))
        await eventually(lambda: receiver.waiting == 1, timeout=20, message="one held")
        await eventually(lambda: "dropped" in outcomes, timeout=20, message="overflow dropped")
        assert cluster.callbacks.pending == 1  # the held one fills its queue's bound
        receiver.release()
        await _destroy_running(cluster, held)
        ended = await eventually(
            lambda: _last_of(store, held, "session_terminated"), timeout=20, message="ended"
        )
        await eventually(lambda: cluster.callbacks.pending == 0, timeout=30, message="drained")
        await eventually(
            lambda: _checkpoint_is(store, ended), timeout=10, message="checkpoint at the end"
        )
    delivered = receiver.events("/hang/full")
    assert delivered[0] == "enqueued" and "scheduled" not in delivered  # dropped, not owed
    assert delivered[-1] == "terminated"


async def _last_of(store: RedisEventStore, sid: uuid.UUID, event_type: str) -> str | None:
    events = await store.read_stream(f"session-{sid}")
    return events[-1].position if events and events[-1].type == event_type else None


async def _checkpoint_is(store: RedisEventStore, position: str) -> bool:
    return await store.followers.get("callbacks") == position


# ---- the whole stack, through the official client ----------------------------------------------
@pytest.fixture(scope="module")
def stack() -> Iterator[BaiStack]:
    if not client_binary().exists():
        pytest.skip(f"the official client is not installed at {client_binary()}")
    with kh_up(
        KH_CALLBACK_ALLOW="127.0.0.1/32",
        KH_CALLBACK_BACKOFF_S="0.2",
        KH_CALLBACK_TIMEOUT_S="120",
    ) as running:
        yield BaiStack(running.root, running.exports, running.backend)


def _check_bodies(requests: list[dict[str, Any]]) -> str:
    (session_id,) = {r["body"]["session_id"] for r in requests}
    for request in requests:
        assert request["body"]["type"] == "session_lifecycle"
        assert request["headers"]["Content-Type"].startswith("application/json")
        assert str(uuid.UUID(request["headers"]["Idempotency-Key"]))
        datetime.fromisoformat(request["body"]["when"])
    keys: dict[str, str] = {}
    for request in requests:  # a repeat carries its first delivery's key and body
        key = request["headers"]["Idempotency-Key"]
        assert keys.setdefault(key, request["body"]["event"]) == request["body"]["event"]
    return str(session_id)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_each_status_change_is_posted_in_order(stack: BaiStack, receiver: Receiver) -> None:
    url = receiver.url("/ok/run")
    ran = stack.bai("run", "--rm", "--callback-url", url, "python", "-c", "print(6*7)")
    assert ran.stdout == "42\n", ran.stderr
    until(lambda: "terminated" in receiver.events("/ok/run"), message="terminated posted")
    assert receiver.events("/ok/run") == LIFECYCLE
    session_id = _check_bodies(receiver.got("/ok/run"))
    assert str(uuid.UUID(session_id)) == session_id


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_failing_receiver_gets_the_event_again(stack: BaiStack, receiver: Receiver) -> None:
    url = receiver.url("/flaky/one")
    created = stack.bai("session", "create", "--callback-url", url, "-t", "cb-flaky", "python")
    assert created.returncode == 0, created.stderr
    until(lambda: "started" in receiver.events("/flaky/one"), message="started posted")
    first = receiver.got("/flaky/one")[:3]  # 500, 500, then 200: the same event thrice
    assert [r["body"]["event"] for r in first] == ["enqueued"] * 3
    assert len({r["headers"]["Idempotency-Key"] for r in first}) == 1
    assert stack.bai("session", "rm", "cb-flaky").returncode == 0
    until(lambda: "terminated" in receiver.events("/flaky/one"), message="terminated posted")
    assert receiver.events("/flaky/one") == LIFECYCLE
    _check_bodies(receiver.got("/flaky/one"))


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_receiver_that_never_answers_delays_nobody_else(
    stack: BaiStack, receiver: Receiver
) -> None:
    with Receiver() as dead:
        created = stack.bai(
            "session", "create", "--callback-url", dead.url("/hang/a"), "-t", "cb-dead", "python"
        )
        assert created.returncode == 0, created.stderr  # its creation did not wait on it
        until(lambda: dead.waiting == 1, message="the dead receiver holds a request")
        url = receiver.url("/ok/b")
        created = stack.bai("session", "create", "--callback-url", url, "-t", "cb-alive", "python")
        assert created.returncode == 0, created.stderr
        assert stack.bai("session", "rm", "cb-alive").returncode == 0
        until(lambda: "terminated" in receiver.events("/ok/b"), message="the live one served")
        assert receiver.events("/ok/b") == LIFECYCLE
        assert dead.waiting == 1 and dead.events("/hang/a") == ["enqueued"]  # still stuck
        listed = {s["name"]: s["status"] for s in stack.ps()}
        assert listed["cb-dead"] == "RUNNING"
        assert stack.bai("session", "rm", "cb-dead").returncode == 0


@pytest.mark.e2e
@pytest.mark.hostile
def test_a_literal_address_outside_the_allow_list_is_refused_at_create(
    stack: BaiStack, receiver: Receiver
) -> None:
    for url in (f"http://127.0.0.2:{receiver.port}/ok/x", "http://169.254.169.254/latest"):
        status, answer = signed_request(
            stack.exports["BACKEND_ENDPOINT"],
            "POST",
            "/session",
            stack.exports["BACKEND_ACCESS_KEY"],
            stack.exports["BACKEND_SECRET_KEY"],
            json.dumps(
                {"name": "cb-refused", "image": "python", "enqueueOnly": True, "callbackUrl": url}
            ).encode(),
        )
        assert status == 400, answer
        assert answer["type"].endswith("/invalid-api-params") and "callback_url" in json.dumps(
            answer
        )
    assert not [s for s in stack.ps() if s["name"] == "cb-refused"]
    assert receiver.requests == []


def _callbacks_process(stack: Stack) -> int:
    """The pid of the stack's ``callbacks`` actor (Ray titles its worker ``ray::CallbacksActor``;
    the stack's data directory is in its environment)."""
    needle = str(stack.root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            title = (entry / "cmdline").read_bytes()
            if (
                title.startswith(b"ray::CallbacksActor")
                and needle in (entry / "environ").read_bytes()
            ):
                found.append(int(entry.name))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.e2e
@pytest.mark.fault
@pytest.mark.timeout(900)
def test_a_follower_killed_mid_way_delivers_the_rest_after_its_restart(
    stack: BaiStack, receiver: Receiver
) -> None:
    url = receiver.url("/after2/kill")
    created = stack.bai("session", "create", "--callback-url", url, "-t", "cb-kill", "python")
    assert created.returncode == 0, created.stderr
    until(lambda: receiver.waiting == 1, message="the third event held")
    assert receiver.events("/after2/kill") == LIFECYCLE[:3]
    pid = _callbacks_process(stack)
    os.kill(pid, signal.SIGKILL)
    receiver.release()  # the receiver answers from now on
    until(lambda: "started" in receiver.events("/after2/kill"), message="resumed after restart")
    assert _callbacks_process(stack) != pid
    assert stack.bai("session", "rm", "cb-kill").returncode == 0
    until(lambda: "terminated" in receiver.events("/after2/kill"), message="terminated posted")
    assert receiver.events("/after2/kill") == LIFECYCLE  # none lost, in order
    requests = receiver.got("/after2/kill")
    held = [r for r in requests if r["body"]["event"] == "preparing"]
    assert len(held) >= 2  # sent again after the restart, with its key: a receiver dedupes
    _check_bodies(requests)
