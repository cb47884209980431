"""An agent: registers its capacity, runs kernels through a backend (:mod:`.backends`) and
reports their lifecycle to the session shard.

What else it does has its own module: heartbeats and utilization samples
(:mod:`.telemetry`), the users' calls forwarded to a kernel's runner or work dir
(:mod:`.execution`), and reconciliation's judgement of what the backend runs against what
the log says runs here (:mod:`actors.domain.reconcile`; the agent reads both sides and acts
on the findings).

The session's options reach each kernel through its launch (:meth:`Agent._launches`): the
user's ``environ`` beside ours (:mod:`.kernel_env`, which drops what no user may set, and the
agent logs what it dropped), the bootstrap script (run by the runner before it answers
``status``: a kernel whose script fails or runs past :data:`BOOTSTRAP_TIMEOUT_S` is not
reported started, and its session ends with the exit code and the output's tail in
``status_data.error``), ``resource_opts.shmem`` (what each backend makes of it: its module
says), and the exec timeout (the runner client's watchdog: a run past it answers
``exec-timeout`` and the kernel is destroyed with that reason, as upstream does; a batch past
it ends its session ``task-timeout`` with exit code -2).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog

from actors.domain.commands.sessions import (
    RecordBatchResult,
    ReportKernel,
    ReportKernels,
    RestartFailed,
    SessionClient,
    StartFailed,
)
from actors.runtime.background import Background
from actors.runtime.outage import until_reachable
from actors.sessions.isolation import UnisolatedRefused, agent_refusal, check_kernel
from events import AnyPayload, Event, RedisEventStore, events_for_command
from events.catalogue import (
    AgentRegistered,
    AgentStarted,
    KernelCreating,
    KernelLifecycleEventReason,
    KernelPulling,
    KernelStarted,
    KernelTerminated,
    SessionFailure,
    SessionSuccess,
)
from projections.queries import ReadModels

from ..domain.device_alloc import DeviceAllocationError
from ..domain.reconcile import (
    Suspects,
    agent_schedulable_command_id,
    agent_start_command_id,
    batch_result_command_id,
    batch_run_id,
    exited_command_id,
    judge,
    restarted_command_id,
)
from ..domain.session_aggregate import SessionAggregate
from ..domain.statuses import KernelStatus
from .accelerators import Accelerators
from .backends import isolation_of
from .backends.base import Backend, ImageNotAvailable, KernelLaunch, starts_at_once
from .backends.sim import SimBackend
from .execution import ExecutionProxy, keep_logs
from .kernel_env import kernel_environ, user_environ
from .runner_client import RunnerClient
from .telemetry import AgentTelemetry
from .vfolder_mounts import MountRefused

__all__ = [
    "AGENTS_REACT_TO",
    "BOOTSTRAP_TIMEOUT_S",
    "Agent",
    "BootstrapFailed",
    "SimAgent",
    "dispatch",
    "resumed_batch_wait",
]

log = structlog.get_logger(__name__)

AGENTS_REACT_TO = frozenset({"session_preparing", "session_terminating", "session_status_changed"})
_NOT_STARTED_IN_LOG = frozenset(
    {KernelStatus.SCHEDULED, KernelStatus.PREPARING, KernelStatus.BUILDING, KernelStatus.PULLING}
)
"""Kernel statuses before ``kernel_started``: the log has not seen the kernel run."""

RUNNER_START_TIMEOUT_S = 30.0
BOOTSTRAP_TIMEOUT_S = 300.0
"""How long a session's bootstrap script may run in each kernel before the kernel fails to
start (installs take minutes; a script that never ends must not hold the slots forever)."""
BATCH_TIMEOUT_EXIT_CODE = -2
"""A batch past the exec timeout: ``session_failure(task-timeout)`` with this exit code, as
upstream's agent reports it."""


class BootstrapFailed(Exception):
    """A kernel's bootstrap script exited non-zero or ran past its time: the kernel is not
    started and its session ends with this (``status_data.error``)."""

    def __init__(self, exit_code: int, timed_out: bool, tail: str, timeout_s: float) -> None:
        if timed_out:
            message = f"bootstrap script ran past its time limit ({timeout_s:g} s) and was killed"
        elif exit_code < 0:
            message = f"bootstrap script was killed by signal {-exit_code}"
        else:
            message = f"bootstrap script exited with {exit_code}"
        super().__init__(message)
        self.exit_code = exit_code
        self.timed_out = timed_out
        self.tail = tail


def bootstrap_failure(status: Mapping[str, Any], timeout_s: float) -> BootstrapFailed | None:
    """Pure: the failure a runner's ``status`` reply tells of, if any (the reply is the
    kernel's, so it is read defensively: a malformed one is a failure of its own)."""
    outcome = status.get("bootstrap")
    if outcome is None:
        return None
    if not isinstance(outcome, Mapping):
        return BootstrapFailed(-1, False, "the runner's report of it was unreadable", timeout_s)
    try:
        exit_code = int(outcome.get("exit_code", -1))
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON Infinity
        return BootstrapFailed(-1, False, "the runner's report of it was unreadable", timeout_s)
    if not -(2**31) <= exit_code < 2**31:  # no process exits so: the report is not one
        return BootstrapFailed(-1, False, "the runner's report of it was unreadable", timeout_s)
    timed_out = outcome.get("timed_out") is True
    if exit_code == 0 and not timed_out:
        return None
    tail = str(outcome.get("tail") or "")[-2000:]
    return BootstrapFailed(exit_code, timed_out, tail, timeout_s)


def resumed_batch_wait(
    exec_timeout_s: float | None, running_since: str | None, now: datetime
) -> float | None:
    """Pure: how long an agent that adopted a running batch kernel (after a restart) waits
    for its command before ending the session ``task-timeout``; None: no limit. The command
    was started by the lost agent process just after the kernel started, so its deadline is
    the kernel's RUNNING time (from the log, via the read model) plus the exec timeout; the
    watchdog that kept it was in that process and is gone. Without a recorded start the
    whole timeout counts from now (late rather than never)."""
    if not exec_timeout_s or exec_timeout_s <= 0:
        return None
    if not running_since:
        return float(exec_timeout_s)
    try:
        started = datetime.fromisoformat(running_since.replace("Z", "+00:00"))
    except ValueError:
        return float(exec_timeout_s)
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    return max(0.0, exec_timeout_s - (now - started).total_seconds())


class Agent:
    def __init__(
        self,
        store: RedisEventStore,
        shard: SessionClient,
        agent_id: str,
        capacity: Mapping[str, Decimal | int | str],
        *,
        backend: Backend,
        scaling_group: str = "default",
        stop_grace_s: float = 1.0,
        metrics: Any = None,
        accelerators: Accelerators | None = None,
        bootstrap_timeout_s: float = BOOTSTRAP_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.bootstrap_timeout_s = bootstrap_timeout_s
        self.shard = shard
        self.agent_id = agent_id
        self.accelerators = accelerators or Accelerators()
        """Its devices and which kernel holds which (the slots they add are offered)."""
        self.capacity = {
            **{k: Decimal(str(v)) for k, v in capacity.items()},
            **self.accelerators.slots(),
        }
        self.scaling_group = scaling_group
        self.backend = backend
        self.isolation = isolation_of(backend)
        """What its backend isolates, registered (``none``: tenants refused, see
        :mod:`actors.sessions.isolation`)."""
        self.stop_grace_s = stop_grace_s
        self.metrics = metrics
        """An ``ActorMetrics`` when hosted by an actor."""
        self.schedulable = True
        self.models = ReadModels(store)
        self._starting: set[uuid.UUID] = set()
        """Kernels being created or restarted right now (not strays, not missing)."""
        self._suspects = Suspects()
        """What the last reconciliation round saw differ (acted on when seen again)."""
        self._slots: dict[uuid.UUID, dict[str, Decimal]] = {}
        """What each kernel started here was allocated (utilization is a share of it)."""
        self.background = Background()
        self._session_of: dict[uuid.UUID, uuid.UUID] = {}
        """The session of each kernel started (or resumed) here."""
        self._watcher: asyncio.Task[None] | None = None
        self._stopping: set[uuid.UUID] = set()
        """Kernels being stopped right now (never "unstopped" while their stop is under way)."""
        self._stopped: set[uuid.UUID] = set()
        """Kernels this agent stopped itself (their end is reported, or being reported):
        never "missing" while the read model still shows them running."""
        self.telemetry = AgentTelemetry(store, agent_id, backend, self.accelerators, self._slots)
        self.execution = ExecutionProxy(store, agent_id, backend, self.background, self._session_of)
        """The users' calls to its kernels (``KERNEL_OPERATIONS``, :mod:`.execution`)."""
        self.execution.on_exec_timeout = self._exec_timed_out

    async def on_event(self, event: Event, session: SessionAggregate | None = None) -> None:
        """The agent's reactions to the log: create the kernels placed on it when their
        session is prepared; restart them; stop them when it is destroyed. A host of many
        agents passes the session it folded once (see :func:`dispatch`)."""
        data: Any = event.data
        if not _concerns_agents(event):
            return
        if session is None:
            session = await self.shard.load(data.session_id)
        mine = [k for k in session.kernels.values() if k.agent == self.agent_id]
        if not mine:
            return
        if event.type == "session_preparing":
            self._recreate_leftovers(session, mine)
            self._spawn_creation(session, [k.kernel_id for k in mine])
        elif event.type == "session_status_changed":
            ids = [k.kernel_id for k in mine if k.status is KernelStatus.RESTARTING]
            self._starting.update(ids)
            self.background.spawn(self.restart_kernels(session, ids))
        else:
            stopping = [k.kernel_id for k in mine if k.status is KernelStatus.TERMINATING]
            if stopping:
                self._spawn_destroy(session.session_id, stopping, str(data.reason))

    def _spawn_destroy(
        self, session_id: uuid.UUID, kernel_ids: list[uuid.UUID], reason: str
    ) -> None:
        """Stop kernels in the background, marked as being stopped from now on (so that a
        reconciliation round in between does not call them "unstopped")."""
        self._stopping.update(kernel_ids)
        self.background.spawn(self.destroy_kernels(session_id, kernel_ids, reason))

    async def _report(self, command: Any) -> Any:
        """Send the shards what happened here, waiting out a log that cannot be reached (the
        same command, so the same id: a report that landed before the outage is not doubled).
        A report lost to an outage would leave its session where the log last saw it: a
        kernel started but PREPARING, stopped but TERMINATING, for good."""
        return await until_reachable("agent report", lambda: self.shard.handle(command))

    def _launches(self, session: Any, kernel_ids: Iterable[uuid.UUID]) -> list[KernelLaunch]:
        spec = session.spec or {}
        kernels = {k["kernel_id"]: k for k in spec.get("kernels", [])}
        dropped = user_environ(spec)[1]
        if dropped:  # the gateway refuses these: a log that has them was not written by it
            log.warning(
                "session environ entries dropped",
                agent=self.agent_id,
                session=str(session.session_id),
                names=dropped,
            )
        shmem = (spec.get("resource_opts") or {}).get("shmem")
        exec_timeout = spec.get("exec_timeout_s")
        return [
            KernelLaunch(
                kernel_id,
                session.session_id,
                {
                    name: Decimal(v)
                    for name, v in kernels.get(str(kernel_id), {})
                    .get("requested_slots", {})
                    .items()
                },
                session_type=session.session_type,
                startup_command=spec.get("startup_command"),
                environ=kernel_environ(session.session_id, spec, kernel_id, self.agent_id),
                main=kernels.get(str(kernel_id), {}).get("cluster_role", "main") == "main",
                image=kernels.get(str(kernel_id), {}).get("image") or spec.get("image", ""),
                bootstrap_script=spec.get("bootstrap_script") or None,
                bootstrap_timeout_s=self.bootstrap_timeout_s,
                shmem=int(shmem) if shmem else None,
                exec_timeout_s=float(exec_timeout) if exec_timeout else None,
                vfolder_mounts=tuple(spec.get("mounts") or ()),
            )
            for kernel_id in kernel_ids
        ]

    def _recreate_leftovers(self, session: Any, kernels: Iterable[Any]) -> None:
        """Kernels the log asks to create that already run here, though the log never saw
        them start: leftovers of a history the log no longer has (Redis restarted and lost
        its last second, after this agent had started them). Each is stopped and created
        afresh, so what runs is what the log says; one the log saw start (a reaction
        replayed after a restart) is left alone."""
        known = self.backend.known()
        leftover = [
            k.kernel_id
            for k in kernels
            if k.status in _NOT_STARTED_IN_LOG
            and k.kernel_id in known
            and k.kernel_id not in self._starting
        ]
        if not leftover:
            return
        log.warning(
            "kernels the log never saw start run here; creating them afresh",
            agent=self.agent_id,
            session=str(session.session_id),
            kernels=[str(k) for k in leftover],
        )
        self._starting.update(leftover)
        launches = self._launches(session, leftover)

        async def replace() -> None:
            try:
                for kernel_id in leftover:
                    await self._stop_kernel(kernel_id, note="kernelhub-agent: recreated\n")
                    self._stopped.discard(kernel_id)  # stopped to start again, not for good
            except BaseException:
                self._starting.difference_update(leftover)
                raise
            await self.create_kernels(session.session_id, launches)

        self.background.spawn(replace())

    def _spawn_creation(self, session: Any, kernel_ids: list[uuid.UUID]) -> None:
        """Create kernels not already being created or known here: the log's reaction and
        reconciliation's "stalled" finding can both ask for the same kernel (the follower
        lagging behind the read model), and a kernel must start once."""
        busy = self._starting | self.backend.known()
        kernel_ids = [k for k in kernel_ids if k not in busy]
        if not kernel_ids:
            return
        self._starting.update(kernel_ids)
        launches = self._launches(session, kernel_ids)
        self.background.spawn(self.create_kernels(session.session_id, launches))

    async def drain(self) -> None:
        await self.background.drain()

    async def close(self, *, stop_kernels: bool = False) -> None:
        """Let go of the runners; with ``stop_kernels`` also stop every kernel (a local
        cluster shutting down; a real agent leaves them running, to be adopted)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
            self._watcher = None
        await self.execution.close()
        if stop_kernels:
            for kernel_id in self.backend.known():
                await self._stop_kernel(kernel_id)
        await self.backend.close()
        self.accelerators.close()

    @property
    def stream(self) -> str:
        return f"agent-{self.agent_id}"

    def _registration(self) -> AgentRegistered:
        return AgentRegistered(
            agent_id=self.agent_id,
            scaling_group=self.scaling_group,
            available_slots=self.capacity,
            version="kernelhub",
            schedulable=self.schedulable,
            compute_plugins=self.accelerators.info(),
            isolation=self.isolation,
        )

    async def register(self) -> None:
        """Announce capacity and liveness; a drained agent stays drained across restarts
        (the flag comes back from its stream), and kernels left running are adopted."""
        await self.announce()
        adopted = await self.backend.adopt()
        await self._restore_adopted(adopted)
        for kernel_id in adopted:
            self.background.spawn(self._resume(kernel_id))
        if self._watcher is None:  # after adopting: it also reports adopted kernels that ended
            self._watcher = asyncio.create_task(self.backend.watch(self))

    async def announce(self) -> None:
        """Append the registration and ``agent_started`` at the stream's version, and beat
        once: at start, and again when the agent's stream lost them (Redis restarted and
        lost its last second) so that the scheduler still sees this agent."""
        events = await self.store.read_stream(self.stream)
        registered = [e.data for e in events if isinstance(e.data, AgentRegistered)]
        if registered:
            self.schedulable = registered[-1].schedulable
        command = agent_start_command_id(self.agent_id, len(events))
        payloads: list[AnyPayload] = [self._registration(), AgentStarted(reason="self-started")]
        batch = events_for_command(command, payloads, actor=self.agent_id)
        await self.store.append(self.stream, batch, len(events))
        await self.heartbeat()

    async def announce_if_lost(self) -> bool:
        """After the log changed under the agent: announce again if its stream no longer
        holds a registration. Whether it did."""
        if any(
            isinstance(e.data, AgentRegistered) for e in await self.store.read_stream(self.stream)
        ):
            return False
        log.warning(
            "the agent's registration is gone from the log; announcing again", agent=self.agent_id
        )
        await self.announce()
        return True

    # ---- what the backend hears of (KernelObserver) ----------------------------------------
    def kernel_exited(self, kernel_id: uuid.UUID, exit_code: int, oom_killed: bool) -> None:
        """A kernel ended on its own: its container exited, was OOM-killed or killed from
        outside. Cleaned up and reported as a kernel the session did not ask to end."""
        if kernel_id in self._starting:
            return  # a creation or restart under way reports (or fails) it
        self.background.spawn(self._report_exit(kernel_id, exit_code, oom_killed))

    def kernel_oom(self, kernel_id: uuid.UUID) -> None:
        """The kernel lost a process to the OOM killer: the runner logs what went (if it is
        still there to)."""
        client = self.execution.runner(kernel_id)
        if client is not None:
            self.background.spawn(client.feed_event("oom", {}))

    def _exec_timed_out(self, kernel_id: uuid.UUID) -> None:
        """A query run went past the exec timeout: the kernel is destroyed with reason
        ``exec-timeout``, as upstream's agent does (its code may still run, and whatever it
        printed next would reach the next run's console). A batch's end is its session's
        result instead (:meth:`_report_batch_result`)."""
        if kernel_id in self._starting or kernel_id in self._stopped:
            return
        if kernel_id not in self.backend.running():
            return
        self._stopped.add(kernel_id)  # its end is reported here, never as a stray
        self.background.spawn(
            self._end_kernel(
                kernel_id,
                KernelLifecycleEventReason.EXEC_TIMEOUT,
                "kernelhub-agent: an execution ran past the exec timeout; the kernel was "
                "destroyed (exec-timeout)\n",
            )
        )

    async def _end_kernel(self, kernel_id: uuid.UUID, reason: str, note: str) -> None:
        session_id = self._session_of.get(kernel_id)
        exit_code = await self._stop_kernel(kernel_id, note=note)
        if session_id is None:
            return
        await self._report_terminated(
            session_id, kernel_id, reason, exit_code if exit_code is not None else -1
        )

    async def _report_terminated(
        self, session_id: uuid.UUID, kernel_id: uuid.UUID, reason: str, exit_code: int
    ) -> None:
        """Tell the kernel's shard it ended (one command id per kernel: a retry, or a second
        path noticing the same end, reports it once)."""
        if self.metrics is not None:
            self.metrics.inc("kernelhub_kernels_terminated_total", agent=self.agent_id)
        await self._report(
            ReportKernel(
                session_id=session_id,
                report=KernelTerminated(
                    kernel_id=kernel_id,
                    session_id=session_id,
                    reason=reason,
                    exit_code=exit_code,
                ),
                command_id=exited_command_id(kernel_id),
            )
        )

    async def _report_exit(self, kernel_id: uuid.UUID, exit_code: int, oom_killed: bool) -> None:
        session_id = self._session_of.get(kernel_id)
        if session_id is None:  # adopted and not yet used: the read model knows its session
            kernel = await self.models.kernel(str(kernel_id))
            session_id = uuid.UUID(kernel["session_id"]) if kernel is not None else None
        reason = (
            KernelLifecycleEventReason.OOM_KILLED
            if oom_killed
            else KernelLifecycleEventReason.SELF_TERMINATED
        )
        note = f"kernelhub-agent: the kernel ended by itself ({reason}, exit code {exit_code})\n"
        await self._stop_kernel(kernel_id, note=note)
        if session_id is None:
            return  # not a kernel the log knows: nothing to report
        await self._report_terminated(session_id, kernel_id, reason, exit_code)

    async def set_schedulable(self, schedulable: bool) -> bool:
        """Drain (``False``) or undrain the agent: the scheduler places nothing new on a
        drained agent; what runs there keeps running. Returns whether anything changed."""
        if schedulable == self.schedulable:
            return False
        self.schedulable = schedulable
        version = await self.store.stream_version(self.stream)
        command = agent_schedulable_command_id(self.agent_id, version)
        batch = events_for_command(command, [self._registration()], actor=self.agent_id)
        await self.store.append(self.stream, batch, version)
        return True

    async def heartbeat(self) -> None:
        """One heartbeat, with its kernels' live stats (:mod:`.telemetry`)."""
        await self.telemetry.heartbeat()

    async def sample_utilization(self) -> int:
        """One utilization sample of every running kernel; returns how many."""
        return await self.telemetry.sample_utilization()

    # ---- reconciliation ------------------------------------------------------------------------
    async def _expected(self) -> dict[uuid.UUID, dict[str, Any]]:
        """Kernels the log places on this agent (its ledger holds), with their records."""
        record = await self.models.agent(self.agent_id)
        holds = list((record or {}).get("holds", {}))
        return {uuid.UUID(k): r for k, r in (await self.models.kernels(holds)).items()}

    async def reconcile(self) -> dict[str, set[uuid.UUID]]:
        """One round (see :mod:`actors.domain.reconcile`); returns what it acted on."""
        expected = await self._expected()
        found = judge(
            expected,
            running=self.backend.running(),
            known=self.backend.known(),
            starting=self._starting,
            stopped=self._stopped,
            suspects=self._suspects,
            stopping=self._stopping,
        )
        self._suspects = found.suspects
        self._stopped &= found.stopped  # forgotten once the log no longer places them here
        for kernel_id in found.stray:
            await self._stop_kernel(kernel_id)
            report = found.stray_reports.get(kernel_id)
            if report is not None:  # a kernel the log knows, in an ended session
                await self._report(report)
        for missing in found.missing_reports:
            await self._report(missing)
        for session_id, kernel_ids in found.stalled_by_session.items():
            self._spawn_creation(await self.shard.load(session_id), list(kernel_ids))
        for session_id, (kernel_ids, reason) in found.unstopped_by_session.items():
            log.warning(
                "terminating kernels nobody was stopping; stopping them",
                agent=self.agent_id,
                session=str(session_id),
                kernels=[str(k) for k in kernel_ids],
            )
            self._spawn_destroy(session_id, list(kernel_ids), reason)
        return found.acted()

    async def _restore_adopted(self, kernel_ids: set[uuid.UUID]) -> None:
        """Adopted kernels keep the devices they were given (recorded with their start),
        before this agent gives any device to a new kernel, and their slots (utilization
        is a share of them)."""
        if not kernel_ids:
            return
        records = await self.models.kernels([str(k) for k in kernel_ids])
        for kernel_id, record in records.items():
            self.accelerators.restore(kernel_id, record.get("attached_devices") or {})
            slots = record.get("occupied_slots") or record.get("requested_slots") or {}
            self._slots[uuid.UUID(kernel_id)] = {k: Decimal(v) for k, v in slots.items()}

    async def _resume(self, kernel_id: uuid.UUID) -> None:
        """An adopted batch kernel: wait for its command again, as the lost agent did."""
        kernel = await self.models.kernel(str(kernel_id))
        if kernel is None:
            return
        session = await self.shard.load(uuid.UUID(kernel["session_id"]))
        self._session_of[kernel_id] = session.session_id
        exec_timeout = (session.spec or {}).get("exec_timeout_s")
        self.execution.exec_timeouts[kernel_id] = float(exec_timeout) if exec_timeout else None
        main = kernel.get("cluster_role", "main") == "main"
        if session.session_type == "batch" and main and session.result == "undefined":
            # the command is under way (or done): wait for its recorded end, never re-run it,
            # and no longer than what is left of its exec timeout
            started = (kernel.get("status_history") or {}).get("RUNNING")
            wait_s = resumed_batch_wait(
                self.execution.exec_timeouts[kernel_id], started, datetime.now(UTC)
            )
            await self._report_batch_result(session.session_id, kernel_id, None, wait_s)

    async def create_kernels(self, session_id: uuid.UUID, launches: Iterable[KernelLaunch]) -> None:
        kernels = list(launches)
        try:
            await self._create_kernels(session_id, kernels)
        finally:
            self._starting.difference_update(k.kernel_id for k in kernels)

    async def _create_kernels(self, session_id: uuid.UUID, kernels: list[KernelLaunch]) -> None:
        owner = kernels[0].environ.get("BACKENDAI_ACCESS_KEY", "") if kernels else ""
        refused = await agent_refusal(
            self.store, isolation=self.isolation, access_key=owner, agent_id=self.agent_id
        )
        if refused is not None:  # no tenant's code runs unisolated, whatever path it took
            await self._report(StartFailed(session_id=session_id, error=refused))
            return
        try:
            at_once = starts_at_once(self.backend)
            for launch in kernels:
                await self._pull(session_id, launch)
                creating = ReportKernel(
                    session_id=session_id,
                    report=KernelCreating(kernel_id=launch.kernel_id, session_id=session_id),
                )
                if not at_once:  # CREATING is worth telling while a start takes a while
                    await self._report(creating)
                log.info(
                    "kernel starting",
                    agent=self.agent_id,
                    kernel=str(launch.kernel_id),
                    session=str(session_id),
                    image=launch.image,
                )
                info = await self._start(launch)
                log.info(
                    "kernel started",
                    agent=self.agent_id,
                    kernel=str(launch.kernel_id),
                    session=str(session_id),
                )
                started = ReportKernel(
                    session_id=session_id,
                    report=KernelStarted(
                        kernel_id=launch.kernel_id, session_id=session_id, creation_info=info
                    ),
                )
                await self._report(ReportKernels(items=(creating, started)) if at_once else started)
                if self.metrics is not None:
                    self.metrics.inc("kernelhub_kernels_started_total", agent=self.agent_id)
        except Exception as exc:
            for launch in kernels:
                tail = (await self.backend.logs(launch.kernel_id))[-2000:]
                log.warning(
                    "kernel creation failed",
                    kernel=str(launch.kernel_id),
                    error=repr(exc),
                    kernel_log=tail.decode("utf-8", "replace"),
                )
                await self._stop_kernel(launch.kernel_id)
            await self._report(StartFailed(session_id=session_id, error=self._error(exc)))
            if isinstance(
                exc, ImageNotAvailable | DeviceAllocationError | BootstrapFailed | MountRefused
            ):
                return  # the user's problem, told in status_data: not the agent's failure
            raise
        batch = [k for k in kernels if k.session_type == "batch" and k.main]
        if batch:
            self._starting.difference_update(k.kernel_id for k in kernels)
            command = batch[0].startup_command or ""
            await self._report_batch_result(session_id, batch[0].kernel_id, command)

    def _error(self, exc: BaseException) -> dict[str, Any]:
        """``status_data.error`` of a session that failed to start (23.03's
        ``convert_to_status_data`` for an agent error, without a traceback)."""
        error: dict[str, Any] = {
            "src": "agent",
            "name": type(exc).__name__,
            "repr": repr(exc),
            "agent_id": self.agent_id,
        }
        if isinstance(exc, ImageNotAvailable):
            error["image"] = exc.image
        if isinstance(exc, MountRefused):
            error["repr"] = str(exc)
        if isinstance(exc, BootstrapFailed):
            error["repr"] = str(exc)
            error["exit_code"] = exc.exit_code
            error["output"] = exc.tail
        return error

    async def _pull(self, session_id: uuid.UUID, launch: KernelLaunch) -> None:
        """PULLING, when the backend has to fetch the image first (never for Docker here:
        there is no registry; the simulated backend's pull delay exercises it)."""
        if await self.backend.check_image(launch.image):
            pulling = KernelPulling(
                kernel_id=launch.kernel_id, session_id=session_id, reason=launch.image
            )
            await self._report(ReportKernel(session_id=session_id, report=pulling))
            await self.backend.pull(launch.image)

    async def _start(self, launch: KernelLaunch) -> dict[str, Any]:
        """Give it its devices, start it and wait until its runner answers (upstream's
        check_status)."""
        devices = self.accelerators.allocate(str(launch.kernel_id), launch.slots)
        launch = replace(launch, devices=devices)
        info = await self.backend.start(launch)
        self._stopped.discard(launch.kernel_id)
        info["agent"] = self.agent_id
        if devices.holds:
            info["attached_devices"] = devices.attached()
        self._slots[launch.kernel_id] = dict(launch.slots)
        self._session_of[launch.kernel_id] = launch.session_id
        self.execution.exec_timeouts[launch.kernel_id] = launch.exec_timeout_s
        client = self.execution.connect(launch.kernel_id)
        if client is not None:
            wait = RUNNER_START_TIMEOUT_S
            if launch.bootstrap_script:  # the runner answers once the script has ended
                wait += launch.bootstrap_timeout_s
            failed = bootstrap_failure(await client.check_status(wait), launch.bootstrap_timeout_s)
            if failed is not None:
                raise failed
        return info

    async def _report_batch_result(
        self,
        session_id: uuid.UUID,
        kernel_id: uuid.UUID,
        command: str | None,
        wait_s: float | None = None,
    ) -> None:
        """Run the batch command through the runner (``command`` None: it was sent by an
        earlier agent process, and its end is awaited at most ``wait_s``, what is left of
        its exec timeout) and report its exit code as the session's result."""
        client = self.execution.runner(kernel_id)
        exit_code: int | None
        if client is None or command is None:
            try:
                async with asyncio.timeout(wait_s):
                    exit_code = await self.backend.wait(kernel_id)
            except TimeoutError:
                exit_code = None  # past the exec timeout: the session ends task-timeout
        else:
            exit_code = await self._run_batch(client, kernel_id, command)
        result: SessionSuccess | SessionFailure
        if exit_code is None:  # past the exec timeout (upstream's TASK_TIMEOUT, -2)
            log.info("batch timed out", agent=self.agent_id, kernel=str(kernel_id))
            result = SessionFailure(
                session_id=session_id,
                reason=KernelLifecycleEventReason.TASK_TIMEOUT,
                exit_code=BATCH_TIMEOUT_EXIT_CODE,
            )
        elif exit_code == 0:
            result = SessionSuccess(session_id=session_id, reason="task-done", exit_code=0)
        else:
            result = SessionFailure(
                session_id=session_id, reason="task-failed", exit_code=exit_code
            )
        await self._report(
            RecordBatchResult(
                session_id=session_id, result=result, command_id=batch_result_command_id(kernel_id)
            )
        )

    async def _run_batch(
        self, client: RunnerClient, kernel_id: uuid.UUID, command: str
    ) -> int | None:
        """The command's exit code; None when it ran past the exec timeout."""
        run_id = batch_run_id(kernel_id)
        options = {"clean": "", "build": "", "exec": command}
        result = await client.execute(run_id, "batch", command, options)
        while result["status"] != "finished":
            if result["status"] == "exec-timeout":
                return None
            if result["status"] == "continued":
                recorded = await self.backend.batch_exit(kernel_id)
                if recorded is not None:  # the record beat the (lost) finished message
                    return recorded
                if kernel_id not in self.backend.running():
                    return await self.backend.wait(kernel_id)
            result = await client.execute(run_id, "continue")
        return int(result["exitCode"])

    async def restart_kernels(self, session: Any, kernel_ids: list[uuid.UUID]) -> None:
        """Stop and start each kernel again (its work dir kept); the session is RUNNING once
        all reported."""
        try:
            for launch in self._launches(session, kernel_ids):
                await self.execution.close_runner(launch.kernel_id)
                await self.backend.stop(launch.kernel_id, self.stop_grace_s)
                self.telemetry.forget(launch.kernel_id)
                log.info(
                    "kernel starting",
                    agent=self.agent_id,
                    kernel=str(launch.kernel_id),
                    session=str(session.session_id),
                    image=launch.image,
                )
                owner = launch.environ.get("BACKENDAI_ACCESS_KEY", "")
                await check_kernel(
                    self.store, isolation=self.isolation, access_key=owner, agent_id=self.agent_id
                )
                info = await self._start(launch)
                log.info(
                    "kernel started",
                    agent=self.agent_id,
                    kernel=str(launch.kernel_id),
                    session=str(session.session_id),
                )
                await self._report(
                    ReportKernel(
                        session_id=session.session_id,
                        report=KernelStarted(
                            kernel_id=launch.kernel_id,
                            session_id=session.session_id,
                            reason="restarting",
                            creation_info=info,
                        ),
                        command_id=restarted_command_id(launch.kernel_id, session.version),
                    )
                )
        except UnisolatedRefused as refused:  # stopped, and not started again: the opt-in went
            await self._report(RestartFailed(session_id=session.session_id, msg=str(refused)))
        except BootstrapFailed as failed:  # the session's own script: ERROR, with its reason
            msg = f"{failed}; its output ended with:\n{failed.tail}" if failed.tail else str(failed)
            await self._report(RestartFailed(session_id=session.session_id, msg=msg))
        except Exception as exc:
            await self._report(RestartFailed(session_id=session.session_id, msg=repr(exc)))
            raise
        finally:
            self._starting.difference_update(kernel_ids)

    async def destroy_kernels(
        self, session_id: uuid.UUID, kernel_ids: Iterable[uuid.UUID], reason: str
    ) -> None:
        kernel_ids = list(kernel_ids)
        self._stopping.update(kernel_ids)
        try:
            await self._destroy_kernels(session_id, kernel_ids, reason)
        finally:
            self._stopping.difference_update(kernel_ids)

    async def _destroy_kernels(
        self, session_id: uuid.UUID, kernel_ids: list[uuid.UUID], reason: str
    ) -> None:
        for kernel_id in kernel_ids:
            exit_code = await self._stop_kernel(kernel_id)
            known = exit_code is not None
            log.info(
                "kernel stopped",
                agent=self.agent_id,
                kernel=str(kernel_id),
                session=str(session_id),
                reason=reason,
                exit_code=exit_code,
            )
            if known and self.metrics is not None:
                self.metrics.inc("kernelhub_kernels_terminated_total", agent=self.agent_id)
            await self._report(
                ReportKernel(
                    session_id=session_id,
                    report=KernelTerminated(
                        kernel_id=kernel_id,
                        session_id=session_id,
                        reason=reason if known else "already-terminated",
                        exit_code=exit_code if exit_code is not None else -1,
                    ),
                )
            )

    async def _stop_kernel(self, kernel_id: uuid.UUID, note: str = "") -> int | None:
        """Stop a kernel for good: its log kept (capped, TTL'd; ``note`` appended), its
        directories removed; its exit code, or None if the backend did not know it."""
        await self.execution.close_runner(kernel_id)
        self.execution.exec_timeouts.pop(kernel_id, None)
        self._stopped.add(kernel_id)
        exit_code = await self.backend.stop(kernel_id, self.stop_grace_s)
        self.accelerators.release(str(kernel_id))
        self._slots.pop(kernel_id, None)
        session_id = self._session_of.pop(kernel_id, None)
        if session_id is not None:
            self.execution.forget_session(session_id)
        self.telemetry.forget(kernel_id)
        try:  # the kernel is stopped: what follows must not keep it from being reported so
            kept = await self.backend.logs(kernel_id) + note.encode()
            if kept:
                await keep_logs(self.store, kernel_id, kept)
        except Exception as exc:  # a stopped kernel left behind would block its re-creation
            log.warning("kernel log not kept", kernel=str(kernel_id), error=repr(exc))
        try:
            await self.backend.remove(kernel_id)
        except Exception as exc:  # what the tenant left on disk is logged, not fatal
            log.warning("kernel not cleaned up", kernel=str(kernel_id), error=repr(exc))
        return exit_code


def _concerns_agents(event: Event) -> bool:
    data: Any = event.data
    if event.type == "session_status_changed":
        return bool(data.status == "RESTARTING")
    return event.type in ("session_preparing", "session_terminating")


async def dispatch(shard: SessionClient, agents: Mapping[str, Agent], event: Event) -> None:
    """Hand an event to the hosted agents it concerns: the session is folded once per host,
    not once per agent (a host of a thousand simulated agents would otherwise read the
    stream a thousand times), and not at all by a host whose agents the event does not
    name (with two hosts, half of all the folds were of the other host's sessions)."""
    if not _concerns_agents(event):
        return
    named = getattr(event.data, "agents", None)  # on events since issue 33; None before
    if named is not None and not any(agent_id in agents for agent_id in named):
        return  # another host's session: its stream is not read here
    session = await shard.load(event.data.session_id)  # type: ignore[union-attr]
    for agent_id in dict.fromkeys(k.agent for k in session.kernels.values()):
        agent = agents.get(agent_id) if agent_id else None
        if agent is not None:
            await agent.on_event(event, session)


def SimAgent(
    store: RedisEventStore,
    shard: SessionClient,
    agent_id: str,
    capacity: Mapping[str, Decimal | int | str],
    *,
    scaling_group: str = "default",
    start_delay: float = 0.02,
    stop_delay: float = 0.01,
    batch_exit_code: int = 0,
    agent_class: type[Agent] = Agent,
    **options: Any,
) -> Agent:
    """An agent on the simulated backend."""
    backend = SimBackend(start_delay, stop_delay, batch_exit_code)
    return agent_class(
        store, shard, agent_id, capacity, backend=backend, scaling_group=scaling_group, **options
    )
