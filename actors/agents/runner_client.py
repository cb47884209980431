"""The agent's end of one kernel runner's socket (spec §3.4, AbstractCodeRunner).

Records are routed as they arrive: console records to the current run, ``completion``,
``status`` and service replies to their waiters. Runs are multiplexed as upstream: runs
queue in order, the oldest unfinished one receives the console, a ``finished`` (or the
exec-timeout watchdog) hands the console to the next. A result gathers console records
until a terminal record or until ``flush_timeout`` passes (``continued``); consecutive
stdout (stderr) chunks merge into one console item, decoded incrementally so a character
split across chunks survives.

If the connection drops, the next call reconnects; the runner kept what it could not send
and delivers it to the new connection, so a run still in progress keeps its output.
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

from ..domain.errors import KernelExecutionFailed
from ..kernel_runner.console import MAX_RECORD
from ..kernel_runner.framing import HEADER, decode_header, encode

__all__ = ["RunnerClient", "RunnerUnavailable"]

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


class RunnerUnavailable(KernelExecutionFailed):
    """The kernel's runner does not answer (not started yet, or gone)."""


@dataclass
class _Run:
    run_id: str
    records: asyncio.Queue[tuple[str, bytes]] = field(default_factory=asyncio.Queue)
    decoders: dict[str, Any] = field(default_factory=dict)
    watchdog: asyncio.TimerHandle | None = None

    def decode(self, stream: str, data: bytes, final: bool = False) -> str:
        decoder = self.decoders.get(stream)
        if decoder is None:
            decoder = self.decoders[stream] = codecs.getincrementaldecoder("utf-8")("replace")
        return str(decoder.decode(data, final))


class RunnerClient:
    def __init__(self, socket_path: str, *, exec_timeout_s: float | None = None) -> None:
        self.socket_path = socket_path
        self.exec_timeout_s = exec_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._runs: collections.OrderedDict[str, _Run] = collections.OrderedDict()
        self._ended: collections.OrderedDict[str, _Run] = collections.OrderedDict()
        """Runs whose end arrived but whose caller has not read it yet (it continues later,
        and must find its records, not a new empty run)."""
        self._replies: dict[str, asyncio.Queue[bytes]] = collections.defaultdict(asyncio.Queue)
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
                    reader, writer = await asyncio.open_unix_connection(self.socket_path)
                    break
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
                body = await reader.readexactly(op_length + payload_length)
                self._route(body[:op_length].decode("ascii"), body[op_length:])
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
        else:
            self._replies[op].put_nowait(payload)

    def _end_run(self, run: _Run) -> None:
        if run.watchdog is not None:
            run.watchdog.cancel()
        if self._runs.get(run.run_id) is run:
            del self._runs[run.run_id]
            self._ended[run.run_id] = run
            while len(self._ended) > _KEEP_ENDED:  # callers that never came back
                self._ended.popitem(last=False)
        if self._runs:
            self._arm(next(iter(self._runs.values())))

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
        return dict(json.loads(raw)) if raw else {}

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

        def add(kind: str, data: Any) -> None:
            if kind in ("stdout", "stderr") and console and console[-1][0] == kind:
                console[-1][1] += data
            elif data != "" or kind not in ("stdout", "stderr"):
                console.append([kind, data])

        while True:
            if not run.records.empty():
                op, payload = run.records.get_nowait()
            else:
                if not self.connected and not self.closed:
                    with contextlib.suppress(RunnerUnavailable):
                        await self.connect(timeout=0.5)
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    op, payload = await asyncio.wait_for(run.records.get(), timeout)
                except TimeoutError:
                    break
            if op in ("stdout", "stderr"):
                add(op, run.decode(op, payload))
            elif op == "media":
                media = json.loads(payload)
                add("media", [media.get("type"), media.get("data")])
            elif op in ("html", "log"):
                add(op, payload.decode("utf-8", "replace"))
            else:
                status = op
                if payload:
                    parsed = json.loads(payload)
                    if op == "waiting-input":
                        opts = parsed
                    else:
                        exit_code = parsed.get("exitCode")
                if op in _ENDS_RUN:
                    for stream in ("stdout", "stderr"):
                        add(stream, run.decode(stream, b"", final=True))
                    self._ended.pop(run.run_id, None)  # its end is read: done with it
                break
        return {"runId": run.run_id, "status": status, "exitCode": exit_code,
                "options": opts, "console": console}  # fmt: skip

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
        return [str(c) for c in json.loads(raw)]

    async def _request(self, op: str, reply: str, payload: str) -> dict[str, Any]:
        async with self._locks[reply]:
            await self.send(op, payload)
            try:
                return dict(json.loads(await self._reply(reply, _REPLY_TIMEOUT_S)))
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
