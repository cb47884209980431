"""A hostile tenant against the agent's and the gateway's link to its kernel (issue 26,
attacks 4 and 5's execution half): the kernel's ``run`` dir is the tenant's to write, and its
code runs inside the runner's own process, so everything read from there is hostile.

- sockets replaced by symlinks to another tenant's kernel: the terminal, the app tunnel and
  code execution must not reach it (a clear refusal instead);
- a fake server announcing a 4 GiB frame: refused after the header, nothing allocated;
- a FIFO, ``/dev/zero`` or a huge sparse file at ``batch.jsonl``: never blocks the agent's
  loop, read bounded;
- an execution printing forever that nobody reads: what the agent buffers stays capped;
- containers without capabilities and with a read-only root, proven from inside.

The pure parts (peer checks, frame caps, bounded reads) run against real unix sockets and
processes without Docker; the attacks end to end run in real containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from actors.agents.backends.base import MAX_LOG_BYTES, KernelLaunch, remove_tree
from actors.agents.backends.docker import DockerBackend
from actors.agents.backends.process import ProcessBackend
from actors.agents.kernel_sockets import (
    KernelPeer,
    KernelSocket,
    SocketRefused,
    connect,
    read_tail,
)
from actors.agents.runner_client import (
    KEEP_MARKS,
    MAX_BUFFERED_BYTES,
    MAX_FRAME,
    MAX_MARK,
    RECORD_OVERHEAD,
    RunnerClient,
    RunnerUnavailable,
)
from actors.domain.commands.sessions import CreateSession, DestroySession, RestartSession
from actors.domain.errors import KernelExecutionFailed
from actors.domain.slots import ResourceSlot
from actors.gateway.apps import ANSWER_TIMEOUT_S, AppNotFound, open_tunnel, tunnel_of
from actors.gateway.terminal import FrameTooLarge, _Terminal
from actors.hosts.local import LocalCluster
from actors.sessions.execution import main_kernel
from events import RedisEventStore
from kernelhub.in_kernel.kernel_runner.framing import HEADER
from kernelhub.in_kernel.kernel_runner.outbox import MAX_RECORD
from kernelhub.testing import BASE_IMAGE, eventually
from tests.runner_process import RunnerProcess

pytestmark = pytest.mark.hostile
G = 2**30
M = 2**20
FLOOD = 64 * M
"""What a fake server tries to push after announcing a huge frame."""
READ_AT_MOST = 16 * M
"""What a reader that refuses at the header can have let through (socket buffers)."""


# ---- fakes: servers a tenant's code could run ----------------------------------------------
class FakeServer:
    """A unix socket server (a thread) that answers each connection with ``reply(conn)``;
    ``sent`` is how many bytes it managed to push before the other side went away."""

    def __init__(self, path: str, reply: Callable[[socket.socket], int]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.reply = reply
        self.sent: list[int] = []
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                self.sent.append(self.reply(conn))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def flood(prefix: bytes) -> Callable[[socket.socket], int]:
    """Send ``prefix`` (a header announcing a huge frame), then as much as the peer takes."""

    def reply(conn: socket.socket) -> int:
        sent = 0
        chunk = b"\0" * M
        try:
            conn.sendall(prefix)
            while sent < FLOOD:
                conn.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        return sent

    return reply


def vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


# ---- the peer check (unit) ------------------------------------------------------------------
@pytest.mark.unit
async def test_a_symlink_to_another_kernels_socket_is_refused(
    run_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    server = FakeServer(str(other / "proxy.sock"), lambda conn: conn.send(b"ok\n"))
    try:
        (run_dir / "proxy.sock").symlink_to(other / "proxy.sock")
        target = KernelSocket(str(run_dir), "proxy.sock", KernelPeer(session=os.getsid(0)))
        with pytest.raises(SocketRefused, match="symlink, not a socket"):
            await connect(target)
        assert server.accepted == 0  # the other kernel never saw a connection
    finally:
        server.close()


@pytest.mark.unit
async def test_a_socket_answered_outside_the_kernel_is_refused_after_connecting(
    run_dir: Path,
) -> None:
    """The race the name check cannot close (a swap between the check and the connect)
    lands on a listener outside the kernel: the peer check refuses it."""
    path = run_dir / "runner.sock"
    script = (
        "import socket, sys, time\ns = socket.socket(socket.AF_UNIX)\n"
        f"s.bind({str(path)!r}); s.listen(4); print('up', flush=True)\n"
        "while True:\n    c, _ = s.accept()\n    try: c.sendall(b'hello')\n"
        "    except OSError: pass\n"
    )
    listener = subprocess.Popen(  # noqa: ASYNC220 (a listener of its own, started once)
        [sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline() == b"up\n"
        elsewhere = KernelSocket(str(run_dir), "runner.sock", KernelPeer(session=os.getsid(0)))
        with pytest.raises(SocketRefused, match="not one of the kernel's processes"):
            await connect(elsewhere)
        wrong_container = KernelSocket(
            str(run_dir), "runner.sock", KernelPeer(pid_namespace=(0, 1))
        )
        with pytest.raises(SocketRefused, match="not in the kernel's container"):
            await connect(wrong_container)
        for peer in (KernelPeer(session=listener.pid), KernelPeer.of_namespace(listener.pid)):
            reader, writer = await connect(KernelSocket(str(run_dir), "runner.sock", peer))
            assert await reader.readexactly(5) == b"hello"
            writer.close()
    finally:
        listener.kill()
        listener.wait()


@pytest.mark.unit
def test_a_peer_identity_crosses_to_the_gateway_as_plain_data() -> None:
    target = KernelSocket("/var/k/run", "proxy.sock", KernelPeer(pid_namespace=(3, 4026531836)))
    wire = json.loads(json.dumps(target.to_wire()))
    assert KernelSocket.from_wire(wire) == target
    process = KernelSocket("/var/k/run", "proxy.sock", KernelPeer(session=42))
    assert KernelSocket.from_wire(json.loads(json.dumps(process.to_wire()))) == process


# ---- frame caps (unit) ----------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("announced", [60 * M, 2**32 - 1])
async def test_the_agent_refuses_a_runner_frame_past_the_cap_before_reading_it(
    run_dir: Path, announced: int
) -> None:
    """60 MiB passes the protocol's own limit but not the agent's cap; 4 GiB neither."""
    header = HEADER.pack(6, announced) + b"status"
    server = FakeServer(str(run_dir / "runner.sock"), flood(header))
    client = RunnerClient(str(run_dir / "runner.sock"))
    before = vm_rss()
    try:
        with pytest.raises(RunnerUnavailable):
            await client.check_status(timeout=2)
        await eventually(lambda: bool(server.sent), timeout=10, message="the server gave up")
        assert server.sent[0] < READ_AT_MOST  # the connection closed at the header
        assert vm_rss() - before < READ_AT_MOST
    finally:
        await client.close()
        server.close()


@pytest.mark.unit
async def test_replies_nobody_asked_for_are_not_kept(run_dir: Path) -> None:
    def spam(conn: socket.socket) -> int:
        frames = [
            HEADER.pack(len(op), 2) + op.encode() + b"{}"
            for op in [f"x{i}" for i in range(5000)] + ["status"] * 500
        ]
        conn.sendall(b"".join(frames))
        time.sleep(1)
        return 0

    server = FakeServer(str(run_dir / "runner.sock"), spam)
    client = RunnerClient(str(run_dir / "runner.sock"))
    try:
        await client.connect(timeout=2)
        await eventually(lambda: client._replies["status"].qsize() > 0, timeout=5, message="read")
        await asyncio.sleep(0.2)
        assert len(client._replies) == 4  # the replies the agent asks for, no more
        assert all(queue.qsize() <= 8 for queue in client._replies.values())
    finally:
        await client.close()
        server.close()


@pytest.mark.unit
async def test_the_gateway_refuses_a_terminal_frame_past_the_cap(run_dir: Path) -> None:
    announced = struct.pack(">cI", b"d", 2**32 - 1)
    server = FakeServer(str(run_dir / "proxy.sock"), flood(b"ok\n" + announced))
    before = vm_rss()
    try:
        terminal = await _Terminal.open(KernelSocket.at(str(run_dir / "proxy.sock")), 24, 80)

        async def drain() -> None:
            async for _ in terminal.frames():
                pass

        with pytest.raises(FrameTooLarge, match="4294967295 bytes"):
            await asyncio.wait_for(drain(), 20)
        await eventually(lambda: bool(server.sent), timeout=10, message="the server gave up")
        assert server.sent[0] < READ_AT_MOST
        assert vm_rss() - before < READ_AT_MOST
    finally:
        server.close()


@pytest.mark.unit
async def test_the_gateway_reads_a_tunnel_answer_line_no_further_than_its_cap(
    run_dir: Path,
) -> None:
    server = FakeServer(str(run_dir / "proxy.sock"), flood(b"o"))  # a line without an end
    try:
        with pytest.raises(AppNotFound, match="longer than 256 bytes"):
            await asyncio.wait_for(
                open_tunnel(KernelSocket.at(str(run_dir / "proxy.sock")), "tcp 80", "app"), 20
            )
        await eventually(lambda: bool(server.sent), timeout=10, message="the server gave up")
        assert server.sent[0] < READ_AT_MOST
    finally:
        server.close()


# ---- batch.jsonl (unit) ---------------------------------------------------------------------
def process_backend(tmp_path: Path) -> tuple[ProcessBackend, uuid.UUID, Path]:
    backend = ProcessBackend(tmp_path / "agent")
    kernel_id = uuid.uuid4()
    dirs = backend.dirs(kernel_id)
    dirs.create()
    return backend, kernel_id, dirs.batch_record


async def loop_stays_free(call: Any, within: float = 5.0) -> Any:
    """``call``'s result, within half of ``within`` seconds. A loop blocked on a FIFO would
    stay blocked (``wait_for`` cannot fire) until :func:`unblock_later` opens its other end
    after ``within`` seconds: the old code ends the test as a failure, not a hang."""
    started = time.monotonic()
    result = await asyncio.wait_for(call, within)
    assert time.monotonic() - started < within / 2
    return result


def unblock_later(fifo: Path, after: float) -> None:
    def open_for_writing() -> None:
        time.sleep(after)
        with contextlib.suppress(OSError):
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)

    threading.Thread(target=open_for_writing, daemon=True).start()


@pytest.mark.unit
async def test_a_fifo_at_the_batch_record_never_blocks_the_agent(tmp_path: Path) -> None:
    backend, kernel_id, record = process_backend(tmp_path)
    os.mkfifo(record)
    unblock_later(record, 5.0)
    assert await loop_stays_free(backend.batch_exit(kernel_id)) is None


@pytest.mark.unit
def test_a_symlink_at_the_batch_record_is_not_followed(tmp_path: Path) -> None:
    """A symlink to ``/dev/zero`` would feed an endless line to a reader that follows it
    (not run against the old code: it exhausts the memory of the test)."""
    backend, kernel_id, record = process_backend(tmp_path)
    secret = tmp_path / "host-secret"
    secret.write_text('{"op": "exec", "exitCode": 7}\n')
    for target in ("/dev/zero", str(secret)):
        record.unlink(missing_ok=True)
        record.symlink_to(target)
        assert asyncio.run(backend.batch_exit(kernel_id)) is None
        assert read_tail(str(record.parent), record.name) is None


@pytest.mark.unit
async def test_a_huge_sparse_batch_record_is_read_as_its_tail(tmp_path: Path) -> None:
    backend, kernel_id, record = process_backend(tmp_path)
    with record.open("wb") as out:
        out.truncate(8 * G)  # 8 GiB of NULs without a line end, on no disk
        out.seek(0, os.SEEK_END)
        out.write(b'\n{"op": "exec", "exitCode": 3}\n')
    before = vm_rss()
    assert await loop_stays_free(backend.batch_exit(kernel_id)) == 3
    assert vm_rss() - before < READ_AT_MOST


# ---- executions nobody reads (unit, a real runner) -----------------------------------------
_PRINT_FOREVER = "import sys\nchunk = 'x' * 65536\nwhile True:\n    sys.stdout.write(chunk)\n"


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[RunnerProcess]:
    process = RunnerProcess(tmp_path)
    process.disconnect()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.unit
async def test_an_execution_printing_forever_that_nobody_reads_stays_bounded(
    runner: RunnerProcess,
) -> None:
    client = RunnerClient(runner.socket_path)
    try:
        await client.check_status()
        first = await client.execute("flood", "query", _PRINT_FOREVER, flush_timeout=0.2)
        assert first["status"] == "continued"
        before = vm_rss()
        highest = 0
        for _ in range(30):  # 3 s of output nobody reads
            await asyncio.sleep(0.1)
            highest = max(highest, client.buffered_bytes())
        assert highest <= MAX_BUFFERED_BYTES + 2**16
        assert vm_rss() - before < 3 * MAX_BUFFERED_BYTES
        late = await client.execute("flood", "continue", flush_timeout=0.2)
        kind, note = late["console"][0]
        assert kind == "stderr" and "bytes of output were dropped" in note
        await client.interrupt()
        while late["status"] != "finished":
            late = await client.execute("flood", "continue", flush_timeout=5)
    finally:
        await client.close()


# ---- in real containers ---------------------------------------------------------------------
AGENT = "i-hostile"


@pytest.fixture
async def cluster(
    docker: None, store: RedisEventStore, tmp_path: Path
) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(
        store,
        [(AGENT, {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.5,
        backend=lambda agent_id: DockerBackend(tmp_path / agent_id, owner=agent_id),
        stop_grace_s=1.0,
    ) as local:
        yield local


async def tenant_session(cluster: LocalCluster, access_key: str) -> uuid.UUID:
    sid = await cluster.shard.handle(
        CreateSession(
            name=f"s-{access_key.lower()}",
            access_key=access_key,
            scaling_group="default",
            image=BASE_IMAGE,
            requested=[ResourceSlot(cpu=1, mem=G)],
        )
    )

    async def running() -> bool:
        return (await cluster.shard.get(sid)).status.name == "RUNNING"

    await eventually(running, timeout=60, message="RUNNING")
    return sid


async def run(cluster: LocalCluster, sid: uuid.UUID, code: str) -> str:
    result = await cluster.execution.execute(sid, None, "query", code)
    console = list(result["console"])
    while result["status"] != "finished":
        result = await cluster.execution.execute(sid, result["runId"], "continue")
        console += result["console"]
    return "".join(data for kind, data in console if kind in ("stdout", "stderr"))


async def kernel_of(cluster: LocalCluster, sid: uuid.UUID) -> uuid.UUID:
    return main_kernel(await cluster.execution.session(sid))[0]


def backend_of(cluster: LocalCluster) -> DockerBackend:
    backend = cluster.agents[AGENT].backend
    assert isinstance(backend, DockerBackend)
    return backend


@pytest.fixture
async def tenants(cluster: LocalCluster) -> tuple[uuid.UUID, uuid.UUID]:
    """Tenant A (the attacker) and tenant B, whose kernel holds a marker A must never see."""
    a, b = await asyncio.gather(tenant_session(cluster, "AKA"), tenant_session(cluster, "AKB"))
    await run(cluster, b, "open('/home/work/marker', 'w').write('B-SECRET-MARKER')")
    return a, b


async def terminal_output(terminal: _Terminal, until: str, timeout: float = 20) -> str:
    seen = ""

    async def read() -> None:
        nonlocal seen
        async for kind, payload in terminal.frames():
            if kind == b"d":
                seen += payload.decode(errors="replace")
                if until in seen:
                    return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), timeout)
    return seen


@pytest.mark.docker
async def test_a_terminal_through_a_planted_symlink_never_reaches_another_tenant(
    cluster: LocalCluster, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = tenants
    victim = backend_of(cluster).dirs(await kernel_of(cluster, b)).run / "proxy.sock"
    planted = await run(
        cluster,
        a,
        (
            "import os\nos.unlink('/opt/kernelhub/run/proxy.sock')\n"
            f"os.symlink({str(victim)!r}, '/opt/kernelhub/run/proxy.sock')\nprint('planted')"
        ),
    )
    assert planted.strip() == "planted"
    gateway = SimpleNamespace(router=SimpleNamespace(execution=cluster.execution))
    target = await tunnel_of(gateway, str(a))  # what the gateway's pty and tcpproxy do
    with pytest.raises(AppNotFound, match=r"refused: .*symlink, not a socket"):
        await _Terminal.open(target, 24, 80)
    with pytest.raises(AppNotFound, match="refused"):
        await open_tunnel(target, "tcp 8080", "app 'jupyter'")
    # B's own terminal still works, in its hardened container
    terminal = await _Terminal.open(await tunnel_of(gateway, str(b)), 24, 80)
    try:
        await terminal.send(b"d", b"cat /home/work/marker; echo; id -u\n")
        seen = await terminal_output(terminal, "1000")
        assert "B-SECRET-MARKER" in seen and "1000" in seen
    finally:
        await terminal.stop()


@pytest.mark.docker
async def test_code_execution_through_a_planted_symlink_never_reaches_another_tenant(
    cluster: LocalCluster, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = tenants
    kernel_a = await kernel_of(cluster, a)
    victim = backend_of(cluster).dirs(await kernel_of(cluster, b)).run / "runner.sock"
    await run(
        cluster,
        a,
        (
            "import os\nos.unlink('/opt/kernelhub/run/runner.sock')\n"
            f"os.symlink({str(victim)!r}, '/opt/kernelhub/run/runner.sock')"
        ),
    )
    await cluster.agents[AGENT].execution.close_runner(kernel_a)  # as when the agent restarts
    with pytest.raises(KernelExecutionFailed, match="refused") as refused:
        await run(cluster, a, "print(open('/home/work/marker').read())")
    assert "B-SECRET-MARKER" not in str(refused.value)
    assert "B-SECRET-MARKER" in await run(cluster, b, "print(open('/home/work/marker').read())")


@pytest.mark.docker
async def test_a_fake_tunnel_in_the_kernel_announcing_4_gib_is_cut_at_the_header(
    cluster: LocalCluster, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = tenants
    await run(
        cluster,
        a,
        f"""
import os, socket, struct, threading
path = '/opt/kernelhub/run/proxy.sock'
os.unlink(path)
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(1)
def serve():
    conn, _ = server.accept()
    conn.recv(256)
    sent = 0
    try:
        conn.sendall(b'ok\\n' + struct.pack('>cI', b'd', 2**32 - 1))
        chunk = bytes(2**20)
        while sent < {FLOOD}:
            conn.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    open('/home/work/sent.txt', 'w').write(str(sent))
threading.Thread(target=serve, daemon=True).start()
""",
    )
    gateway = SimpleNamespace(router=SimpleNamespace(execution=cluster.execution))
    before = vm_rss()
    terminal = await _Terminal.open(await tunnel_of(gateway, str(a)), 24, 80)

    async def drain() -> None:
        async for _ in terminal.frames():
            pass

    with pytest.raises(FrameTooLarge):
        await asyncio.wait_for(drain(), 20)
    assert vm_rss() - before < READ_AT_MOST

    async def sent() -> str:
        return await run(
            cluster,
            a,
            "import os\nif os.path.exists('sent.txt'):\n    print(open('sent.txt').read())",
        )

    pushed = await eventually(sent, timeout=20, interval=0.5, message="the fake server gave up")
    assert int(pushed) < READ_AT_MOST


@pytest.mark.docker
async def test_a_fifo_or_dev_zero_at_the_batch_record_never_blocks_the_agent(
    cluster: LocalCluster, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = tenants
    kernel_a = await kernel_of(cluster, a)
    backend = backend_of(cluster)
    record = backend.dirs(kernel_a).batch_record
    await run(cluster, a, "import os\nos.mkfifo('/opt/kernelhub/run/batch.jsonl')")
    unblock_later(record, 8.0)
    exit_code, answer = await loop_stays_free(
        asyncio.gather(backend.batch_exit(kernel_a), run(cluster, b, "print(6 * 7)")), 16
    )
    assert exit_code is None and answer.strip() == "42"  # B served meanwhile
    await run(
        cluster,
        a,
        "import os\nos.unlink('/opt/kernelhub/run/batch.jsonl')\n"
        "os.symlink('/dev/zero', '/opt/kernelhub/run/batch.jsonl')",
    )
    before = vm_rss()
    assert await loop_stays_free(backend.batch_exit(kernel_a)) is None
    assert vm_rss() - before < READ_AT_MOST


@pytest.mark.docker
async def test_an_execution_printing_forever_into_nobodys_queue_stays_bounded(
    cluster: LocalCluster, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = tenants
    kernel_a = await kernel_of(cluster, a)
    first = await cluster.execution.execute(a, None, "query", _PRINT_FOREVER, None, 0.2)
    assert first["status"] == "continued"
    client = cluster.agents[AGENT].execution.runners[kernel_a]
    before = vm_rss()
    highest = 0
    for _ in range(40):  # 4 s of output nobody reads
        await asyncio.sleep(0.1)
        highest = max(highest, client.buffered_bytes())
    assert highest <= MAX_BUFFERED_BYTES + 2**16
    assert vm_rss() - before < 3 * MAX_BUFFERED_BYTES
    late = await cluster.execution.execute(a, first["runId"], "continue", "", None, 0.2)
    assert "bytes of output were dropped" in late["console"][0][1]
    assert (await run(cluster, b, "print('B still served')")).strip() == "B still served"
    await cluster.execution.call(a, "interrupt")


_FROM_INSIDE = """
import errno, os, socket, stat
def attempt(name, action):
    try:
        action()
        print(name, 'ok')
    except OSError as exc:
        print(name, errno.errorcode.get(exc.errno, exc.errno))
attempt('write-root', lambda: open('/kh-was-here', 'w'))
attempt('write-etc', lambda: open('/etc/kh-was-here', 'w'))
attempt('write-tmp', lambda: open('/tmp/scratch', 'w').write('x'))
attempt('write-var-tmp', lambda: open('/var/tmp/scratch', 'w').write('x'))
open('/home/work/mine', 'w').write('x')
attempt('chown', lambda: os.chown('/home/work/mine', 0, 0))
attempt('raw-socket', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt('mknod', lambda: os.mknod('/tmp/zero', stat.S_IFCHR | 0o600, os.makedev(1, 5)))
caps = dict(line.split(':\\t') for line in open('/proc/self/status').read().splitlines()
            if line.startswith('Cap'))
print('CapBnd', caps['CapBnd'], 'CapEff', caps['CapEff'])
"""


@pytest.mark.docker
async def test_a_container_has_no_capabilities_and_a_read_only_root(
    cluster: LocalCluster, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = tenants
    backend = backend_of(cluster)
    record = backend._kernels[await kernel_of(cluster, a)]
    shown = await backend.docker.containers.container(record.container_id).show()
    host = shown["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["ReadonlyRootfs"] is True and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] > 0 and host["PidsLimit"] > 0
    seen = dict(line.split(" ", 1) for line in (await run(cluster, a, _FROM_INSIDE)).splitlines())
    assert seen["write-root"] == seen["write-etc"] == "EROFS"
    assert seen["write-tmp"] == seen["write-var-tmp"] == "ok"  # tmpfs scratch
    assert seen["chown"] == seen["raw-socket"] == seen["mknod"] == "EPERM"
    assert seen["CapBnd"] == "0000000000000000 CapEff 0000000000000000"
    batch = await cluster.execution.execute(a, None, "batch", "", {"exec": _BATCH})
    console = list(batch["console"])
    while batch["status"] != "finished":  # batch mode runs its shell commands as before
        batch = await cluster.execution.execute(a, batch["runId"], "continue")
        console += batch["console"]
    assert batch["exitCode"] == 0 and ["stdout", "batch-ran\n"] in console


_BATCH = "echo batch-ran > /tmp/b && cat /tmp/b"


# ---- review findings: what a run's unread records may pin (unit) ----------------------------
_SLOW_FLOOD = (  # 64 KiB every 2 ms: ~32 MiB/s, mirrored to the runner's kernel.log too
    'python3 -c "import sys, time\nwhile True:\n'
    "    sys.stdout.write('x' * 65536); sys.stdout.flush(); time.sleep(0.002)\""
)
_MARK_BOUND = MAX_BUFFERED_BYTES + KEEP_MARKS * (MAX_MARK + RECORD_OVERHEAD) + 2**16
"""What one run may hold: the cap, the kept marks, one record past the cap."""


async def stays_under(client: RunnerClient, bound: int, seconds: float) -> int:
    """The highest ``buffered_bytes`` seen over ``seconds``; fails at the first sample over
    ``bound`` (the old code grew by ~250 MiB/s: stop before it eats the test machine)."""
    highest = 0
    for _ in range(int(seconds * 10)):
        await asyncio.sleep(0.1)
        highest = max(highest, client.buffered_bytes())
        assert highest <= bound, f"{highest} bytes buffered, past {bound}"
    return highest


@pytest.mark.unit
async def test_an_unread_build_finished_does_not_pin_a_batch_flood_behind_it(
    runner: RunnerProcess,
) -> None:
    """Review finding 1: batch mode whose ``continue`` never comes. ``build-finished`` sat
    at the head of the run's buffer and nothing behind it was ever dropped (1 GB in 4 s)."""
    client = RunnerClient(runner.socket_path)
    try:
        await client.check_status()
        options = {"clean": "", "build": "sleep 0.3", "exec": _SLOW_FLOOD}
        first = await client.execute("b", "batch", "", options, flush_timeout=0.2)
        assert first["status"] == "clean-finished"
        before = vm_rss()
        highest = await stays_under(client, _MARK_BOUND, 3.0)
        assert highest > MAX_BUFFERED_BYTES // 2  # the flood did arrive
        assert vm_rss() - before < 3 * MAX_BUFFERED_BYTES
        build = await client.execute("b", "continue", flush_timeout=0.2)
        assert build["status"] == "build-finished" and build["exitCode"] == 0
        late = await client.execute("b", "continue", flush_timeout=0.2)
        kind, note = late["console"][0]
        assert kind == "stderr" and "bytes of output were dropped" in note
        await client.interrupt()
        while late["status"] != "finished":
            late = await client.execute("b", "continue", flush_timeout=5)
    finally:
        await client.close()


@pytest.mark.unit
async def test_a_fake_runner_sending_huge_pause_records_is_held_bounded(run_dir: Path) -> None:
    """Review finding 1, attack 2: user code replaces the runner and sends ``waiting-input``
    and ``build-finished`` records of 1 MiB each, with console between them. None of them
    used to be dropped; now marks are cut at 64 KiB and only the newest few are kept."""
    done = threading.Event()

    def serve(conn: socket.socket) -> int:
        conn.recv(4096)  # the ``code`` request: a run now receives what follows
        sent = 0
        with contextlib.suppress(OSError):
            for i in range(96):
                op = "waiting-input" if i % 2 else "build-finished"
                frame = HEADER.pack(len(op), M) + op.encode() + b"{" + b" " * (M - 2) + b"}"
                frame += HEADER.pack(6, M // 4) + b"stdout" + b"y" * (M // 4)
                conn.sendall(frame)
                sent += len(frame)
        done.set()
        time.sleep(2)
        return sent

    server = FakeServer(str(run_dir / "runner.sock"), serve)
    client = RunnerClient(str(run_dir / "runner.sock"))
    try:
        first = await client.execute("r", "query", "input()", flush_timeout=1)
        assert first["status"] in ("build-finished", "waiting-input")
        await asyncio.to_thread(done.wait, 20)
        await asyncio.sleep(0.3)  # read what is in the socket
        assert client.buffered_bytes() <= _MARK_BOUND
        run = client._runs["r"]
        assert len(run.records._marks) <= KEEP_MARKS
    finally:
        await client.close()
        server.close()


# ---- review findings: what the tenant leaves on disk when its kernel goes -------------------
DEEP = 1200
"""Levels of nested directories: past what a recursive remover survives (~1000)."""


def dig(top: Path, levels: int) -> Path:
    """``mkdir d; cd d`` ``levels`` times, relative (as a tenant would: PATH_MAX does not
    apply), a symlink to ``top``'s parent at the bottom; the bottom's path."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        os.symlink(str(top.parent), "up", dir_fd=fd)
    finally:
        os.close(fd)
    return top.joinpath(*["d"] * levels)


@pytest.mark.unit
async def test_a_tree_too_deep_to_recurse_is_removed_and_nothing_outside_it(
    tmp_path: Path,
) -> None:
    """Review finding 3: ``shutil.rmtree`` raised RecursionError (not an OSError, so not
    ignored) on 1200 levels, out of the backend's ``remove`` and the agent's destroy."""
    backend, kernel_id, _ = process_backend(tmp_path)
    dirs = backend.dirs(kernel_id)
    dig(dirs.work, DEEP)
    keep = tmp_path / "host-file"
    keep.write_text("the host's")
    os.symlink(keep, dirs.work / "host-link")
    try:
        await backend.remove(kernel_id)
        assert not dirs.root.exists()
        assert keep.read_text() == "the host's"  # links were removed, not followed
    finally:  # a tree left behind would break pytest's own cleanup of old temp dirs
        remove_tree(dirs.root)


@pytest.mark.docker
async def test_a_session_whose_tenant_dug_too_deep_still_terminates_and_is_cleaned(
    cluster: LocalCluster,
) -> None:
    """Review finding 3 end to end: the tenant nests 1200 directories in its work dir, then
    destroys its session. The agent's removal raised, the kernel was never reported
    terminated: the session stayed TERMINATING and the tree stayed on the host's disk."""
    a = await tenant_session(cluster, "AKA")
    b = await tenant_session(cluster, "AKB")
    kernel_a = await kernel_of(cluster, a)
    root = backend_of(cluster).dirs(kernel_a).root
    dug = await run(
        cluster,
        a,
        (
            f"import os\nfd = os.open('/home/work', os.O_RDONLY)\nfor _ in range({DEEP}):\n"
            "    os.mkdir('d', dir_fd=fd)\n    deeper = os.open('d', os.O_RDONLY, dir_fd=fd)\n"
            "    os.close(fd)\n    fd = deeper\nos.symlink('/etc', 'etc', dir_fd=fd)\nprint('dug')"
        ),
    )
    assert dug.strip() == "dug"
    await cluster.shard.handle(DestroySession(session_id=a))

    async def terminated() -> bool:
        return (await cluster.shard.get(a)).status.name == "TERMINATED"

    try:
        await eventually(terminated, timeout=60, message="TERMINATED")
        assert not root.exists()
        assert (await run(cluster, b, "print('B still served')")).strip() == "B still served"
    finally:
        remove_tree(root)


# ---- review findings: what a container's own output costs the host and the agent ------------
def peak_rss_since_reset() -> Callable[[], int]:
    """Reset this process's peak RSS (``VmHWM``); the returned call says how far it rose
    above the RSS at the reset (a call that allocates and frees shows in the peak)."""
    Path("/proc/self/clear_refs").write_text("5")
    start = vm_rss()

    def risen() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 - start
        raise AssertionError("no VmHWM")

    return risen


def _stderr_flood(mib: int, marker: str) -> str:
    """User code writing straight to the container's stderr (the runner's own fd 2): lines
    of 64 KiB, then ``marker``."""
    return (
        f"import os\nline = b'x' * 65535 + b'\\n'\nfor _ in range({mib * 16}):\n"
        f"    os.write(2, line)\nos.write(2, b'{marker}\\n')\nprint('flooded')"
    )


@pytest.mark.docker
async def test_a_container_flooding_its_stderr_leaves_a_bounded_log_on_host_and_agent(
    cluster: LocalCluster,
) -> None:
    """Review finding 2 (and 7's ``earlier.log``): dockerd kept the whole log (no rotation
    configured), and the agent read all of it into memory on ``logs``, destroy and each
    restart, where ``earlier.log`` grew by 1 MiB a time."""
    a = await tenant_session(cluster, "AKA")
    kernel = await kernel_of(cluster, a)
    backend = backend_of(cluster)
    shown = await backend.docker.containers.container(backend._kernels[kernel].container_id).show()
    assert shown["HostConfig"]["LogConfig"]["Config"].get("max-size")
    assert (await run(cluster, a, _stderr_flood(64, "FIRST-END"))).strip() == "flooded"

    async def log_ends_with_marker() -> bool:
        return (await backend.logs(kernel)).endswith(b"FIRST-END\n")

    await eventually(log_ends_with_marker, timeout=60, interval=0.5, message="the log's end")
    on_disk = Path(shown["LogPath"])
    held = sum(path.stat().st_size for path in on_disk.parent.glob(on_disk.name + "*"))
    assert held <= 9 * M  # 64 MiB written: dockerd kept two files of 4 MiB at most
    risen = peak_rss_since_reset()
    tail = await backend.logs(kernel)
    assert len(tail) <= MAX_LOG_BYTES and risen() < 8 * M

    for turn in range(2):  # each restart carries the log over, into a bounded earlier.log
        before = backend._kernels[kernel].container_id
        marker = f"TURN-{turn}-END"
        assert (await run(cluster, a, _stderr_flood(2, marker))).strip() == "flooded"
        await eventually(
            log_ends_with_marker_of(backend, kernel, marker),
            timeout=60,
            interval=0.5,
            message="the marker in the log",
        )
        await cluster.shard.handle(RestartSession(session_id=a))

        async def restarted(before: str = before) -> bool:
            record = backend._kernels.get(kernel)
            status = (await cluster.shard.get(a)).status.name
            return status == "RUNNING" and record is not None and record.container_id != before

        await eventually(restarted, timeout=60, message="restarted")
        earlier = backend.dirs(kernel).root / "earlier.log"
        assert earlier.stat().st_size <= MAX_LOG_BYTES
        assert marker.encode() + b"\n" in earlier.read_bytes()[-4096:]  # then the runner's end
    assert (await run(cluster, a, "print('still here')")).strip() == "still here"
    assert len(await backend.logs(kernel)) <= MAX_LOG_BYTES


def log_ends_with_marker_of(
    backend: DockerBackend, kernel: uuid.UUID, marker: str
) -> Callable[[], Any]:
    async def seen() -> bool:
        return (await backend.logs(kernel)).endswith(marker.encode() + b"\n")

    return seen


# ---- review finding 6: a legitimate runner never sends a frame the agent refuses ------------
async def read_to_the_end(client: RunnerClient, run_id: str) -> tuple[list[Any], dict[str, Any]]:
    """Every console entry of a run, and its last answer (``finished``)."""
    console: list[Any] = []
    while True:
        answer = await client.execute(run_id, "continue", flush_timeout=2)
        console += answer["console"]
        if answer["status"] == "finished":
            return console, answer


_LATE_OUTPUT = (
    "import sys, time\ntime.sleep(1.0)\n"  # the agent is away by then
    f"sys.stdout.write('a' * 65535)\nsys.stdout.write('b' * {MAX_RECORD})\n"
    "_ = sys.stdout.write('end')\nclass Big:\n    def _repr_html_(self):\n"
    f"        return 'h' * ({MAX_RECORD} + 1)\nBig()"  # displayed: the last expression
)


@pytest.mark.unit
async def test_output_queued_while_the_agent_was_away_reaches_it_without_an_oversized_frame(
    runner: RunnerProcess,
) -> None:
    """Review finding 6: 64 KiB - 1 of stdout and one record at the 10 MiB cap, queued while
    the agent reconnected, were merged into a frame 5 bytes over the agent's cap: the agent
    closed, the runner sent the same frame again on each reconnection, the run never ended.
    A display over the cap (``_repr_html_``) went the same way; it becomes a note."""
    runner.connect()  # frame by frame first: none past the agent's cap, nothing lost
    runner.send("code", _LATE_OUTPUT)
    runner.disconnect()
    await asyncio.sleep(2.0)  # the output waits in the runner for the next connection
    runner.connect()
    records = await asyncio.to_thread(runner.records_until, "finished", timeout=30)
    runner.disconnect()
    assert max(len(op) + len(data) for op, data in records) <= MAX_FRAME
    out = b"".join(data for op, data in records if op == "stdout")
    assert out == b"a" * 65535 + b"b" * MAX_RECORD + b"end"
    errors = b"".join(data for op, data in records if op == "stderr")
    assert f"a display of {MAX_RECORD + 1} bytes was not sent".encode() in errors
    assert "html" not in [op for op, _ in records]

    first = RunnerClient(runner.socket_path)  # and through the agent's client: the run ends
    await first.check_status()
    answer = await first.execute("late", "query", _LATE_OUTPUT, flush_timeout=0.2)
    assert answer["status"] == "continued"
    await first.close()  # as when the agent restarts
    await asyncio.sleep(2.0)
    second = RunnerClient(runner.socket_path)
    try:
        console, answer = await asyncio.wait_for(read_to_the_end(second, "late"), 60)
        assert answer["exitCode"] == 0
        assert "".join(data for kind, data in console if kind == "stdout").endswith("end")
    finally:
        await second.close()


# ---- review finding 7: the small ones -------------------------------------------------------
@pytest.mark.unit
async def test_a_fake_tunnel_that_never_answers_is_given_up_on(run_dir: Path) -> None:
    """A tenant's own ``proxy.sock`` server that accepts and never answers held a gateway
    connection and one of the keypair's stream slots for good."""

    def silent(conn: socket.socket) -> int:
        time.sleep(6)
        return 0

    server = FakeServer(str(run_dir / "proxy.sock"), silent)
    try:
        started = time.monotonic()
        with pytest.raises(AppNotFound, match="did not answer within 1 s"):
            tunnel = KernelSocket.at(str(run_dir / "proxy.sock"))
            await asyncio.wait_for(open_tunnel(tunnel, "pty 24 80", "a terminal", 1.0), 5)
        assert time.monotonic() - started < 3
        assert ANSWER_TIMEOUT_S < 60  # what the gateway's handlers use
    finally:
        server.close()


def drain_later(fifo: Path, after: float) -> None:
    """Open ``fifo`` for reading after ``after`` seconds (and close it soon after): a writer
    the old code left blocked in ``open`` is let go, so the test fails instead of hanging."""

    def open_for_reading() -> None:
        time.sleep(after)
        with contextlib.suppress(OSError):
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            time.sleep(0.5)
            os.close(fd)

    threading.Thread(target=open_for_reading, daemon=True).start()


@pytest.mark.unit
async def test_a_fifo_at_a_process_kernels_log_never_blocks_the_agent(tmp_path: Path) -> None:
    backend, kernel_id, _ = process_backend(tmp_path)
    log_path = backend.dirs(kernel_id).log
    os.mkfifo(log_path)
    unblock_later(log_path, 5.0)
    assert await loop_stays_free(backend.logs(kernel_id)) == b""


@pytest.mark.unit
async def test_a_process_kernel_restarts_over_whatever_its_tenant_left_in_its_dirs(
    tmp_path: Path,
) -> None:
    """A directory at ``batch.jsonl`` (the agent's unlink raised IsADirectoryError) or at
    ``runner.sock`` (the new runner could not bind), a FIFO at ``kernel.log`` (the agent's
    open blocked its loop): each made every restart of the kernel fail."""
    backend = ProcessBackend(tmp_path / "agent")
    launch = KernelLaunch(kernel_id=uuid.uuid4(), session_id=uuid.uuid4(), slots={})
    kernel_id, dirs = launch.kernel_id, backend.dirs(launch.kernel_id)

    async def answers() -> None:
        target = backend.kernel_socket(kernel_id, "runner.sock")
        assert target is not None
        client = RunnerClient(target)
        try:
            assert "started_at" in await client.check_status(timeout=20)
        finally:
            await client.close()

    try:
        await backend.start(launch)
        await answers()
        await backend.stop(kernel_id, 1.0)
        for name in ("batch.jsonl", "runner.sock"):
            (dirs.run / name / "inside").mkdir(parents=True)
        dirs.log.unlink()
        os.mkfifo(dirs.log)
        drain_later(dirs.log, 5.0)
        await loop_stays_free(backend.start(launch))
        await answers()
        assert dirs.log.is_file() and not dirs.batch_record.exists()
    finally:
        await backend.stop(kernel_id, 1.0)
        await backend.remove(kernel_id)


@pytest.mark.docker
async def test_a_container_restarts_over_directories_its_tenant_planted_in_run(
    cluster: LocalCluster,
) -> None:
    """The same in a container: the tenant owns ``/opt/kernelhub/run`` and plants
    directories at the names the agent and the next runner need; the restart failed."""
    a = await tenant_session(cluster, "AKA")
    kernel = await kernel_of(cluster, a)
    backend = backend_of(cluster)
    planted = await run(
        cluster,
        a,
        (
            "import os\nrun = '/opt/kernelhub/run'\nos.unlink(run + '/runner.sock')\n"
            "for name in ('runner.sock', 'batch.jsonl', 'pid'):\n"
            "    os.makedirs(run + '/' + name + '/inside')\nprint('planted')"
        ),
    )
    assert planted.strip() == "planted"
    before = backend._kernels[kernel].container_id
    await cluster.shard.handle(RestartSession(session_id=a))

    async def restarted() -> str | None:
        status = (await cluster.shard.get(a)).status.name
        record = backend._kernels.get(kernel)
        moved = record is not None and record.container_id != before
        return status if status == "ERROR" or (status == "RUNNING" and moved) else None

    assert await eventually(restarted, timeout=60, message="restarted") == "RUNNING"
    assert (await run(cluster, a, "print(6 * 7)")).strip() == "42"
