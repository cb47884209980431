"""The chaos client: sessions created, executed into and destroyed through the gateway at a
set rate with bounded concurrency, plus a trickle of events appended straight to the store;
every acknowledgement lands in the :class:`~.record.ClientRecord`.

Two kinds of session: ``sim`` ones land on simulated agents (scheduling, ledger and
lifecycle under load, no code run), ``exec`` ones are pinned to the process agent with the
superadmin's ``agentList`` and run code that appends a unique token to a ledger file the
whole run shares, then prints how often it finds it there: a double run shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from events import NewEvent, RedisEventStore
from events.catalogue.bgtask import BgtaskDone
from kernelhub.sdk.aio import create_body

from .client import GatewayClient
from .record import ClientRecord, CreateAck, DestroyAck, ExecRecord, ProbeAppend

__all__ = ["Workload", "WorkloadSpec", "exec_code"]

PROBE_STREAM_PREFIX = "bgtask-chaos-"
"""Probe events go to streams no actor writes or projects (``bgtask_done`` is in the
catalogue and folded by nothing), so they disturb nothing but the log's length."""


@dataclass(frozen=True)
class WorkloadSpec:
    rate_per_s: float = 1.0
    """New sessions started per second (while fewer than ``concurrency`` are alive)."""
    concurrency: int = 6
    exec_share: float = 0.3
    """The share of sessions pinned to the process agent that run code."""
    exec_agent: str = "i-proc"
    executions: tuple[int, int] = (1, 3)
    hold_s: tuple[float, float] = (0.0, 3.0)
    """How long a session is kept after its work before it is destroyed."""
    probe_interval_s: float = 0.5
    create_wait_s: int = 30
    """``maxWaitSeconds`` of a create: the gateway answers RUNNING or TIMEOUT by then."""
    call_deadline_s: float = 120.0


def exec_code(ledger: Path, token: str) -> str:
    """Python that records one run of itself: appends ``token`` (one line, ``O_APPEND``) to
    ``ledger`` and prints how many times the token is there now."""
    return (
        "import os\n"
        f"p = {str(ledger)!r}\n"
        "fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\n"
        f"os.write(fd, b{token + chr(10)!r})\n"
        "os.close(fd)\n"
        "with open(p) as f:\n"
        f"    print('chaos-count', f.read().split().count({token!r}))\n"
    )


class Workload:
    def __init__(
        self,
        client: GatewayClient,
        record: ClientRecord,
        spec: WorkloadSpec,
        *,
        ledger: Path,
        redis_url: str,
        seed: int,
        prefix: str = "kh",
    ) -> None:
        self.client = client
        self.record = record
        self.spec = spec
        self.ledger = ledger
        self.redis_url = redis_url
        self.prefix = prefix
        self.rng = random.Random(seed)
        self._alive: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[object]] = set()
        self._counter = 0

    # ---- the loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Start sessions at the set rate until ``stop``; then let the live ones finish."""
        probes = asyncio.create_task(self._probes(stop))
        interval = 1.0 / self.spec.rate_per_s
        while not stop.is_set():
            if len(self._alive) < self.spec.concurrency:
                kind = "exec" if self.rng.random() < self.spec.exec_share else "sim"
                task = asyncio.create_task(self.life(kind))
                self._alive.add(task)
                task.add_done_callback(self._alive.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
        await probes
        waiting = {*self._alive, *self._background}
        if waiting:
            await asyncio.wait(waiting)

    def background(self, task: asyncio.Task[object]) -> None:
        """Keep a task the workload waits for before it ends (a probe's destroy)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _name(self, kind: str) -> str:
        self._counter += 1
        return f"chaos-{kind}-{self._counter:05d}-{uuid.uuid4().hex[:6]}"

    async def life(self, kind: str) -> None:
        """One session's life: created, used, held a moment, destroyed."""
        rng = random.Random(self.rng.random())
        ack = await self.create(self._name(kind), kind)
        if ack.session_id is None:
            return
        running = ack.status == "RUNNING" or await self.wait_running(ack.session_id)
        if running and kind == "exec":
            for _ in range(rng.randint(*self.spec.executions)):
                await self.execute(ack.session_id)
        await asyncio.sleep(rng.uniform(*self.spec.hold_s))
        await self.destroy(ack.session_id, forced=not running)

    # ---- the calls ------------------------------------------------------------------------
    async def create(self, name: str, kind: str) -> CreateAck:
        ack = CreateAck(name=name, kind=kind, sent_at=time.time())
        self.record.creates.append(ack)
        body = create_body(
            "python",
            name=name,
            type="interactive",
            resources={"cpu": 1, "mem": "512m"},
            startup_command=None,
            environ=None,
            bootstrap_script=None,
            tag="chaos",
            callback_url=None,
            starts_at=None,
            resource_opts=None,
            architecture=None,
            agent_list=[self.spec.exec_agent] if kind == "exec" else [],
            preopen_ports=(),
            cluster_size=1,
            cluster_mode=None,
            scaling_group=None,
            mounts=(),
            mount_map=None,
            dependencies=(),
            owner_access_key=None,
            domain="default",
            group="default",
            reuse=True,  # a retry under the same name finds the first attempt's session
        )
        body["enqueueOnly"] = False
        body["maxWaitSeconds"] = self.spec.create_wait_s
        answer = await self.client.call(
            "create",
            "POST",
            "/session",
            json_body=body,
            idempotent=True,
            deadline=time.monotonic() + self.spec.call_deadline_s,
        )
        if answer is None or answer.status != 201:
            ack.error = "no answer" if answer is None else f"{answer.status}: {answer.body}"
            if answer is not None:
                self.record.count_error(f"create:{answer.status}")
            return ack
        ack.attempts = answer.attempts
        ack.session_id = str(answer.body["sessionId"])
        ack.status = str(answer.body["status"])
        ack.acked_at = time.time()
        return ack

    async def status(self, session_id: str) -> str | None:
        answer = await self.client.call(
            "info",
            "GET",
            f"/session/{session_id}",
            idempotent=True,
            deadline=time.monotonic() + 30,
        )
        if answer is None or answer.status != 200 or not isinstance(answer.body, dict):
            return None
        return str(answer.body.get("status"))

    async def wait_running(self, session_id: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = await self.status(session_id)
            if status == "RUNNING":
                return True
            if status in ("TERMINATED", "CANCELLED", "ERROR"):
                return False
            await asyncio.sleep(1.0)
        return False

    async def execute(self, session_id: str) -> ExecRecord:
        token = f"tok-{uuid.uuid4().hex}"
        run = ExecRecord(session_id=session_id, token=token, sent_at=time.time())
        self.record.executions.append(run)
        body = {"mode": "query", "code": exec_code(self.ledger, token), "runId": token}
        deadline = time.monotonic() + self.spec.call_deadline_s
        console: list[str] = []
        while True:
            answer = await self.client.call(
                "exec",
                "POST",
                f"/session/{session_id}",
                json_body={**body, "options": {}},
                idempotent=False,
                deadline=deadline,
            )
            if answer is None or answer.status != 200 or not isinstance(answer.body, dict):
                run.error = "no answer" if answer is None else f"{answer.status}: {answer.body}"
                if answer is not None and answer.status < 500:
                    self.record.count_error(f"exec:{answer.status}")
                return run
            result = answer.body.get("result") or {}
            console += [str(text) for kind, text in result.get("console") or [] if kind == "stdout"]
            if result.get("status") == "finished":
                break
            if result.get("status") not in ("continued", "waiting-input", None):
                run.error = f"status {result.get('status')}"
                return run
            body = {"mode": "continue", "code": "", "runId": result.get("runId") or token}
        run.result = "".join(console)
        for line in run.result.splitlines():
            if line.startswith("chaos-count "):
                run.count_seen = int(line.split()[1])
        return run

    async def destroy(self, session_id: str, *, forced: bool = False) -> DestroyAck:
        ack = DestroyAck(session_id=session_id, sent_at=time.time())
        self.record.destroys.append(ack)
        answer = await self.client.call(
            "destroy",
            "DELETE",
            f"/session/{session_id}",
            params={"forced": "true"} if forced else None,
            idempotent=True,
            deadline=time.monotonic() + self.spec.call_deadline_s,
        )
        if answer is None or answer.status >= 300:
            ack.error = "no answer" if answer is None else f"{answer.status}: {answer.body}"
            return ack
        ack.attempts = answer.attempts
        ack.acked_at = time.time()
        return ack

    # ---- appends straight to the store ----------------------------------------------------
    async def _probes(self, stop: asyncio.Event) -> None:
        store = RedisEventStore.from_url(self.redis_url, prefix=self.prefix)
        try:
            while not stop.is_set():
                await self.probe(store)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.spec.probe_interval_s)
        finally:
            await store.close()

    async def probe(self, store: RedisEventStore) -> ProbeAppend:
        """One event appended with a fresh command id, retried with the same one (the store
        answers a retried success with the first positions, never a second copy)."""
        command = uuid.uuid4()
        stream = f"{PROBE_STREAM_PREFIX}{command}"
        event = NewEvent.for_command(command, 0, BgtaskDone(task_id=command, message="chaos"))
        probe = ProbeAppend(str(command), stream, str(event.event_id))
        self.record.probes.append(probe)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                result = await asyncio.wait_for(store.append(stream, [event], 0), 10)
            except Exception as exc:  # Redis down or stopped: the outcome is unknown, retry
                probe.error = type(exc).__name__
                await asyncio.sleep(0.5)
                continue
            probe.position, probe.acked_at, probe.error = result.positions[0], time.time(), None
            return probe
        return probe
