"""The agent's end of one kernel runner's socket (23.03's ``AbstractCodeRunner``, in
``agent/kernel.py``; the ops and records are its ``kernel/base.py``'s, see docs/upstream.md).

Records are routed as they arrive: console records to the current run, ``completion``,
``status`` and service replies to their waiters. Runs are multiplexed as upstream: runs
queue in order, the oldest unfinished one receives the console, a ``finished`` (or the
exec-timeout watchdog) hands the console to the next. A result gathers console records
until a terminal record or until ``flush_timeout`` passes (``continued``); consecutive
stdout (stderr) chunks merge into one console item, decoded incrementally so a character
split across chunks survives.

If the connection drops, the next call reconnects; the runner kept what it could not send
and delivers it to the new connection, so a run still in progress keeps its output.

The runner is not trusted (user code runs inside its process and may replace it): the socket
is reached through :mod:`.kernel_sockets` (never a path the tenant planted, never another
kernel's runner), a frame larger than :data:`MAX_FRAME` closes the connection before its body
is read, replies are only taken for requests that exist, and what a run prints while nobody
reads it is bounded (:class:`_Records`).
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import structlog

from kernelhub.in_kernel.kernel_runner.console import MAX_RECORD
from kernelhub.in_kernel.kernel_runner.framing import HEADER, FrameError, decode_header, encode

from ..domain.errors import KernelExecutionFailed
from .kernel_sockets import KernelSocket, SocketRefused
from .kernel_sockets import connect as connect_kernel

__all__ = [
    "KEEP_MARKS",
    "MAX_BUFFERED_BYTES",
    "MAX_FRAME",
    "MAX_MARK",
    "RECORD_OVERHEAD",
    "RunnerClient",
    "RunnerUnavailable",
]

log = structlog.get_logger(__name__)

_TERMINAL = frozenset({"clean-finished", "build-finished", "finished", "waiting-input"})
_ENDS_RUN = frozenset({"finished", "exec-timeout"})
_CONSOLE = frozenset({"stdout", "stderr", "media", "html", "log"})
_REPLY_TIMEOUT_S = 10.0
_COMPLETION_TIMEOUT_S = 5.0
_KEEPALIVE_S = 10.0
_CONNECT_RETRY_MAX_S = 0.005
"""A kernel's start waits on the runner's socket: a failed local connect costs microseconds,
a long backoff costs the user up to its length in start time."""
_KEEP_ENDED = 256
MAX_FRAME = MAX_RECORD + 2**16
"""The largest frame read from a runner: a console record (capped at ``MAX_RECORD`` by the
runner) and its op. A larger header ends the connection before anything is allocated."""
MAX_BUFFERED_BYTES = 4 * 2**20
"""What one run keeps of its console while nobody reads it (past this its oldest console
records are dropped wherever they sit; the newest is always kept, so at most this, or one
record plus the few kept marks: :class:`_Records`)."""
_ENDED_BUDGET_BYTES = 8 * 2**20
_ENDED_TTL_S = 600.0
"""Ended runs whose caller never came back: dropped oldest first past this many bytes in
all, or once unread this long."""
MAX_MARK = 2**16
"""A record that ends or pauses a run (small JSON from a legitimate runner) is cut here."""
KEEP_MARKS = 8
"""Unread records that end or pause a run kept per run: the newest (a legitimate run sends
at most three before its end is read; the end is always the newest)."""
RECORD_OVERHEAD = 64
"""What one buffered record costs besides its payload (counted against the cap, so a
runner sending empty records cannot grow the buffer by their number)."""
_REPLIES = frozenset({"status", "completion", "service-result", "apps-result"})
"""The replies the agent asks for; any other op from the runner is dropped."""
_KEEP_REPLIES = 8


class RunnerUnavailable(KernelExecutionFailed):
    """The kernel's runner does not answer (not started yet, or gone), or its socket was
    refused (not the kernel's own)."""


class _Records:
    """A run's records not yet read, bounded whatever the runner sends.

    Console records past :data:`MAX_BUFFERED_BYTES` are dropped **oldest first**, wherever
    they sit (the run keeps printing; a reader who comes back late sees the newest output,
    preceded by one ``stderr`` line saying how many bytes went). Records that end or pause
    the run (``*-finished``, ``waiting-input``, ``exec-timeout``) are kept in their own small
    queue: one left unread (a batch ``build-finished`` nobody continued past) must not pin
    the console behind it. A legitimate runner sends a few small ones per run, so they are
    capped at :data:`MAX_MARK` bytes each and only the newest :data:`KEEP_MARKS` are kept.
    Every record also costs :data:`RECORD_OVERHEAD` against the cap, so empty records
    cannot pile up either: what a run holds never exceeds ``cap``, or one console record
    plus the kept marks when a single record is larger than the cap."""

    def __init__(self, cap: int = MAX_BUFFERED_BYTES) -> None:
        self.cap = cap
        self._console: collections.deque[tuple[int, str, bytes]] = collections.deque()
        self._marks: collections.deque[tuple[int, str, bytes]] = collections.deque()
        self._seq = 0
        self.size = 0
        """Bytes held (payloads plus :data:`RECORD_OVERHEAD` each)."""
        self.dropped = 0
        """Bytes dropped and not yet told to the reader."""
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._console) + len(self._marks)

    def empty(self) -> bool:
        return not self._console and not self._marks and not self.dropped

    def put_nowait(self, record: tuple[str, bytes]) -> None:
        op, payload = record
        self._seq += 1
        if op in _CONSOLE:
            self._console.append((self._seq, op, payload))
        else:
            payload = payload[:MAX_MARK]
            self._marks.append((self._seq, op, payload))
            if len(self._marks) > KEEP_MARKS:  # only a hostile runner sends this many
                _, _, gone = self._marks.popleft()
                self.size -= len(gone) + RECORD_OVERHEAD
        self.size += len(payload) + RECORD_OVERHEAD
        while self.size > self.cap and len(self._console) > 1:
            _, _, gone = self._console.popleft()
            self.size -= len(gone) + RECORD_OVERHEAD
            self.dropped += len(gone)
        self._ready.set()

    def get_nowait(self) -> tuple[str, bytes]:
        mark_first = bool(self._marks) and (
            not self._console or self._marks[0][0] < self._console[0][0]
        )
        if self.dropped and not mark_first:  # told where the console resumes
            note = (
                f"\n[kernelhub: {self.dropped} bytes of output were dropped: "
                "nobody read them in time]\n"
            )
            self.dropped = 0
            return "stderr", note.encode()
        _, op, payload = (self._marks if mark_first else self._console).popleft()
        self.size -= len(payload) + RECORD_OVERHEAD
        if self.empty():
            self._ready.clear()
        return op, payload

    async def get(self) -> tuple[str, bytes]:
        while self.empty():
            await self._ready.wait()
        return self.get_nowait()


@dataclass
class _Run:
    run_id: str
    records: _Records = field(default_factory=_Records)
    ended_at: float = 0.0
    decoders: dict[str, Any] = field(default_factory=dict)
    watchdog: asyncio.TimerHandle | None = None

    def decode(self, stream: str, data: bytes, final: bool = False) -> str:
        decoder = self.decoders.get(stream)
        if decoder is None:
            decoder = self.decoders[stream] = codecs.getincrementaldecoder("utf-8")("replace")
        return str(decoder.decode(data, final))


class RunnerClient:
    def __init__(self, socket: KernelSocket | str, *, exec_timeout_s: float | None = None) -> None:
        self.socket = socket if isinstance(socket, KernelSocket) else KernelSocket.at(socket)
        """Where the runner listens and who must answer there (a bare path: a runner the
        caller started itself, whose identity is not checked)."""
        self.socket_path = str(self.socket)
        self.exec_timeout_s = exec_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._runs: collections.OrderedDict[str, _Run] = collections.OrderedDict()
        self._ended: collections.OrderedDict[str, _Run] = collections.OrderedDict()
        """Runs whose end arrived but whose caller has not read it yet (it continues later,
        and must find its records, not a new empty run)."""
        self._replies: dict[str, asyncio.Queue[bytes]] = {op: asyncio.Queue() for op in _REPLIES}
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._connect_lock = asyncio.Lock()
        self.closed = False

    # ---- the connection ---------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self, timeout: float = 30.0) -> None:
        """Connect (retrying while the runner starts up) unless connected."""
        async with self._connect_lock:
            if self.connected:
                return
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            delay = 0.01
            while True:
                try:
                    reader, writer = await connect_kernel(self.socket)
                    break
                except SocketRefused as exc:  # not the kernel's runner: no retry helps
                    raise RunnerUnavailable(str(exc)) from exc
                except OSError as exc:
                    if loop.time() + delay > deadline:
                        raise RunnerUnavailable(
                            f"the kernel runner does not answer: {exc}"
                        ) from exc
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _CONNECT_RETRY_MAX_S)
            self._reader, self._writer = reader, writer
            self._read_task = asyncio.create_task(self._read_loop(reader))
            if self._keepalive is None:
                self._keepalive = asyncio.create_task(self._ping())

    async def close(self) -> None:
        self.closed = True
        for task in (self._keepalive, self._read_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._writer = None

    async def send(self, op: str, payload: bytes | str = b"") -> None:
        if not self.connected:
            await self.connect(timeout=5.0)
        assert self._writer is not None
        data = payload.encode() if isinstance(payload, str) else payload
        self._writer.write(encode(op, data))
        try:
            await self._writer.drain()
        except OSError as exc:
            raise RunnerUnavailable(f"the kernel runner went away: {exc}") from exc

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                op_length, payload_length = decode_header(await reader.readexactly(HEADER.size))
                if op_length + payload_length > MAX_FRAME:
                    raise FrameError(
                        f"a frame of {op_length + payload_length} bytes exceeds "
                        f"the cap of {MAX_FRAME}"
                    )
                body = await reader.readexactly(op_length + payload_length)
                self._route(body[:op_length].decode("ascii"), body[op_length:])
        except FrameError as exc:
            log.warning("runner connection closed", socket=self.socket_path, error=str(exc))
        except (asyncio.IncompleteReadError, OSError, ValueError) as exc:
            if not self.closed:
                log.info("runner connection ended", socket=self.socket_path, error=repr(exc))
        finally:
            if self._writer is not None and self._reader is reader:
                self._writer.close()

    async def _ping(self) -> None:
        """The keepalive: ``status`` every 10 s (no ``ping`` op exists)."""
        while True:
            await asyncio.sleep(_KEEPALIVE_S)
            with contextlib.suppress(Exception):
                if self.connected:  # the same request (and lock) as any status check
                    await self.check_status(_REPLY_TIMEOUT_S)

    def _route(self, op: str, payload: bytes) -> None:
        if op in _CONSOLE or op in _TERMINAL:
            if not self._runs:
                return  # nobody attached: dropped, as upstream
            run = next(iter(self._runs.values()))
            run.records.put_nowait((op, payload[:MAX_RECORD]))
            if op in _ENDS_RUN:
                self._end_run(run)
        elif op in _REPLIES:
            replies = self._replies[op]
            if replies.qsize() >= _KEEP_REPLIES:  # answers nobody asked for
                replies.get_nowait()
            replies.put_nowait(payload)

    def _end_run(self, run: _Run) -> None:
        if run.watchdog is not None:
            run.watchdog.cancel()
        if self._runs.get(run.run_id) is run:
            del self._runs[run.run_id]
            run.ended_at = asyncio.get_running_loop().time()
            self._ended[run.run_id] = run
            self._forget_ended(run.ended_at)
        if self._runs:
            self._arm(next(iter(self._runs.values())))

    def _forget_ended(self, now: float) -> None:
        """Drop ended runs whose callers never came back: the oldest first, past a count, a
        total of bytes held, or an age."""
        held = sum(run.records.size for run in self._ended.values())
        while self._ended:
            oldest = next(iter(self._ended.values()))
            if (
                len(self._ended) <= _KEEP_ENDED
                and held <= _ENDED_BUDGET_BYTES
                and now - oldest.ended_at <= _ENDED_TTL_S
            ):
                break
            held -= oldest.records.size
            del self._ended[oldest.run_id]

    def buffered_bytes(self) -> int:
        """Bytes held for callers that have not read them (all runs, records' overhead included)."""
        runs = [*self._runs.values(), *self._ended.values()]
        return sum(run.records.size for run in runs)

    def _arm(self, run: _Run) -> None:
        """The exec-timeout watchdog of the run now receiving output."""
        if self.exec_timeout_s is None or run.watchdog is not None:
            return

        def expire() -> None:
            if self._runs.get(run.run_id) is run:
                run.records.put_nowait(("exec-timeout", b""))
                run.watchdog = None
                self._end_run(run)

        run.watchdog = asyncio.get_running_loop().call_later(self.exec_timeout_s, expire)

    # ---- requests ------------------------------------------------------------------------------
    async def check_status(self, timeout: float = 30.0) -> dict[str, Any]:
        """Ask the runner for its status (it answers once its bootstrap is done)."""
        await self.connect(timeout)
        async with self._locks["status"]:
            await self.send("status")
            raw = await self._reply("status", timeout)
        return _json_object(raw)

    async def _reply(self, op: str, timeout: float) -> bytes:
        try:
            return await asyncio.wait_for(self._replies[op].get(), timeout)
        except TimeoutError:
            raise RunnerUnavailable(f"the kernel runner did not answer {op!r}") from None

    async def execute(
        self,
        run_id: str,
        mode: str,
        code: str = "",
        options: dict[str, Any] | None = None,
        flush_timeout: float | None = 2.0,
    ) -> dict[str, Any]:
        """One execute call (modes ``query``, ``batch``, ``input``, ``continue``); the result
        as the API returns it: ``runId``, ``status``, ``exitCode``, ``options``, ``console``."""
        options = options or {}
        if mode in ("query", "batch"):
            run = self._runs.get(run_id)
            if run is None:
                run = self._runs[run_id] = _Run(run_id)
                if next(iter(self._runs)) == run_id:
                    self._arm(run)
            if mode == "query":
                await self.send("code", code)
            else:
                for op in ("clean", "build", "exec"):
                    await self.send(op, str(options.get(op) or ""))
        elif mode == "input":
            run = self._attached(run_id)
            await self.send("input", code)
        elif mode == "continue":
            run = self._attached(run_id)
        else:
            raise ValueError(f"unknown execution mode {mode!r}")
        return await self._next_result(run, flush_timeout)

    def _attached(self, run_id: str) -> _Run:
        """A run to continue; one this client never saw (the agent restarted) attaches
        now and receives what the runner still had to send."""
        run = self._runs.get(run_id) or self._ended.get(run_id)
        if run is None:
            run = self._runs[run_id] = _Run(run_id)
        return run

    async def _next_result(self, run: _Run, flush_timeout: float | None) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = None if flush_timeout is None else loop.time() + flush_timeout
        console: list[list[Any]] = []
        status, exit_code, opts = "continued", None, {}
        taken = 0

        def add(kind: str, data: Any) -> None:
            if kind in ("stdout", "stderr") and console and console[-1][0] == kind:
                console[-1][1] += data
            elif data != "" or kind not in ("stdout", "stderr"):
                console.append([kind, data])

        while True:
            if taken >= MAX_BUFFERED_BYTES:  # one answer holds a bounded part of a flood:
                break  # the rest waits for the next ``continue`` (``continued``)
            if not run.records.empty():
                op, payload = run.records.get_nowait()
                taken += len(payload)
            else:
                if not self.connected and not self.closed:
                    with contextlib.suppress(RunnerUnavailable):
                        await self.connect(timeout=0.5)
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    op, payload = await asyncio.wait_for(run.records.get(), timeout)
                except TimeoutError:
                    break
                taken += len(payload)
            if op in ("stdout", "stderr"):
                add(op, run.decode(op, payload))
            elif op == "media":
                media = _json_object(payload)
                add("media", [media.get("type"), media.get("data")])
            elif op in ("html", "log"):
                add(op, payload.decode("utf-8", "replace"))
            else:
                status = op
                if payload:
                    parsed = _json_object(payload)
                    if op == "waiting-input":
                        opts = parsed
                    else:
                        exit_code = parsed.get("exitCode")
                if op in _ENDS_RUN:
                    for stream in ("stdout", "stderr"):
                        add(stream, run.decode(stream, b"", final=True))
                    self._ended.pop(run.run_id, None)  # its end is read: done with it
                break
        return {
            "runId": run.run_id,
            "status": status,
            "exitCode": exit_code,
            "options": opts,
            "console": console,
        }

    async def interrupt(self) -> None:
        await self.send("interrupt")

    async def complete(self, code: str, options: dict[str, Any] | None = None) -> list[str]:
        """Completions; always an answer (an empty list after a timeout)."""
        async with self._locks["completion"]:
            await self.send("complete", json.dumps({"code": code, "options": options or {}}))
            try:
                raw = await self._reply("completion", _COMPLETION_TIMEOUT_S)
            except RunnerUnavailable:
                return []
        try:
            completions = json.loads(raw)
        except ValueError:
            return []
        return [str(c) for c in completions] if isinstance(completions, list) else []

    async def _request(self, op: str, reply: str, payload: str) -> dict[str, Any]:
        async with self._locks[reply]:
            await self.send(op, payload)
            try:
                return _json_object(await self._reply(reply, _REPLY_TIMEOUT_S))
            except RunnerUnavailable:
                return {"status": "failed", "error": "timeout"}

    async def start_service(self, info: dict[str, Any]) -> dict[str, Any]:
        return await self._request("start-service", "service-result", json.dumps(info))

    async def shutdown_service(self, name: str) -> None:
        await self.send("shutdown-service", json.dumps(name))

    async def get_apps(self, name: str = "") -> dict[str, Any]:
        return await self._request("get-apps", "apps-result", name)

    async def feed_event(self, kind: str, data: dict[str, Any] | None = None) -> None:
        await self.send("event", json.dumps({"type": kind, "data": data or {}}))

    async def shutdown(self) -> None:
        with contextlib.suppress(RunnerUnavailable):
            await self.send("shutdown")


def _json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object the runner sent; ``{}`` for anything else (the runner is not trusted
    to send well-formed answers)."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
