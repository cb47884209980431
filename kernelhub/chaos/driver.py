"""A chaos run: the stack up, the workload going, faults one after another (each waits for
the one before to be recovered from, then a seeded pause), then quiet, settle, and the
checker's verdict.

``seed`` decides everything random: the fault schedule, and the workload's choices. It is
printed at the start, so a failing run is replayed with ``bench/chaos.py --seed S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from events import RedisEventStore

from .checker import Verdict, check
from .client import GatewayClient
from .diagnose import diagnose
from .faults import FaultInjector, Injected, schedule
from .record import ClientRecord
from .recovery import Recovery, measure, percentile, projections_caught_up
from .stack import ChaosStack
from .workload import Workload, WorkloadSpec

__all__ = ["ChaosConfig", "ChaosResult", "run_chaos", "settle"]


@dataclass(frozen=True)
class ChaosConfig:
    seconds: float = 300.0
    seed: int | None = None
    mean_gap_s: float = 3.0
    """Mean quiet time between one fault's recovery and the next fault."""
    faults: bool = True
    max_faults: int | None = None
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    sim_agents: int = 2
    nodes: int = 0
    """Ray worker nodes (each with a simulated agent) whose death is a fault kind."""
    settle_s: float = 90.0
    stuck_after_s: float = 60.0
    record_dir: Path | None = None
    """Where the client record and the fault list are kept (default: not kept)."""


@dataclass
class ChaosResult:
    seed: int
    seconds: float
    injected: list[Injected]
    recoveries: list[Recovery]
    record: ClientRecord
    verdict: Verdict
    driver_restarts: int
    redis_version: str | None = None
    skipped: list[str] = field(default_factory=list)
    """Faults that could not be injected (the target vanished, Ray's state API was busy):
    said, counted, not a verdict on the system."""

    def figures(self) -> dict[str, Any]:
        running = [r.running_s for r in self.recoveries if r.running_s is not None]
        caught = [r.projections_s for r in self.recoveries if r.projections_s is not None]
        by_kind: dict[str, int] = {}
        for item in self.injected:
            by_kind[item.kind] = by_kind.get(item.kind, 0) + 1
        never = sum(1 for r in self.recoveries if r.running_s is None)
        return {
            "seed": self.seed,
            "seconds": round(self.seconds, 1),
            "faults": len(self.injected),
            "faults_by_kind": by_kind,
            "faults_skipped": len(self.skipped),
            "sessions": self.verdict.sessions,
            "executions": self.verdict.executions_checked,
            "acked_lost": self.verdict.acked_lost,
            "stuck": self.verdict.stuck,
            "verify_ok": self.verdict.verify_ok,
            "ok": self.verdict.ok,
            "findings": self.verdict.summary()["by_rule"],
            "recovery_p50_s": percentile(running, 50),
            "recovery_p99_s": percentile(running, 99),
            "recovery_max_s": max(running, default=None),
            "not_recovered": never,
            "projections_p50_s": percentile(caught, 50),
            "projections_p99_s": percentile(caught, 99),
            "retried_503": self.record.retried_503,
            "client_errors": self.record.errors,
            "redis_restarted_by_driver": self.driver_restarts,
            "events": self.verdict.events,
        }


def _say(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


async def run_chaos(config: ChaosConfig, stack: ChaosStack | None = None) -> ChaosResult:
    """The whole run; a stack is started (and stopped) unless one is given."""
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**32)
    _say(f"seed {seed} (replay: bench/chaos.py --seed {seed})")
    own = stack is None
    if stack is None:
        stack = await asyncio.to_thread(ChaosStack.up, sim_agents=config.sim_agents)
    try:
        for n in range(config.nodes - len(stack.nodes)):
            await asyncio.to_thread(stack.add_node, f"i-node{n + 1}")
        return await _run(config, seed, stack)
    finally:
        if own:
            await asyncio.to_thread(stack.down)


async def _run(config: ChaosConfig, seed: int, stack: ChaosStack) -> ChaosResult:
    record = ClientRecord()
    client = GatewayClient(stack.endpoint, stack.access_key, stack.secret_key, record)
    store = RedisEventStore.from_url(stack.redis_url)
    workload = Workload(
        client, record, config.workload, ledger=stack.ledger, redis_url=stack.redis_url, seed=seed
    )
    injector = FaultInjector(stack)
    injected: list[Injected] = []
    skipped: list[str] = []
    recoveries: list[Recovery] = []
    stop = asyncio.Event()
    started = time.monotonic()
    work = asyncio.create_task(workload.run(stop))
    try:
        if config.faults:
            faults = schedule(seed, config.mean_gap_s)
            while time.monotonic() - started < config.seconds:
                if config.max_faults is not None and len(injected) >= config.max_faults:
                    break
                fault = next(faults)
                await asyncio.sleep(fault.gap_s)
                if time.monotonic() - started >= config.seconds:
                    break
                try:
                    item = await asyncio.to_thread(injector.inject, fault)
                except Exception as exc:  # the injector's trouble is not the system's
                    skipped.append(f"fault {fault.index}: {exc!r}"[:300])
                    _say(f"fault {fault.index} skipped: {exc!r}"[:300])
                    continue
                injected.append(item)
                recovery = await measure(item, workload, store)
                recoveries.append(recovery)
                _say(
                    f"fault {fault.index} {item.kind} {item.target}: running after "
                    f"{recovery.running_s} s, projections after {recovery.projections_s} s"
                )
        remaining = config.seconds - (time.monotonic() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(work, 300)
        except TimeoutError:
            _say("the workload did not finish within 300 s after the end")
    elapsed = time.monotonic() - started
    _say(f"faults over after {elapsed:.0f} s; settling")
    await settle(store, config.settle_s)
    early = await check(
        store, record, stack.ledger, stuck_after_s=config.stuck_after_s, projections=False
    )
    if early.undecided_s > 0:  # a session still transitional: stuck only past its deadline
        _say(f"a session is still on its way; judging it in {early.undecided_s:.0f} s")
        await asyncio.sleep(early.undecided_s + 1)
    verdict = await check(store, record, stack.ledger, stuck_after_s=config.stuck_after_s)
    if config.record_dir is not None and not verdict.ok:
        await asyncio.to_thread(diagnose, stack, verdict, config.record_dir)
    version = None
    with contextlib.suppress(Exception):
        version = str((await store.server_info()).get("redis_version"))
    await client.aclose()
    await store.close()
    result = ChaosResult(
        seed,
        elapsed,
        injected,
        recoveries,
        record,
        verdict,
        injector.driver_restarts,
        version,
        skipped,
    )
    if config.record_dir is not None:
        _keep(config.record_dir, result)
    return result


async def settle(store: RedisEventStore, timeout: float) -> bool:
    """Wait until the log has been quiet for a few seconds and the read models hold all of
    it (True), or ``timeout`` passed (False)."""
    deadline = time.monotonic() + timeout
    last, quiet_since = "", time.monotonic()
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            head = await store.head()
            if head != last:
                last, quiet_since = head, time.monotonic()
            elif time.monotonic() - quiet_since > 5 and await projections_caught_up(store, head):
                return True
        await asyncio.sleep(0.5)
    return False


def _keep(directory: Path, result: ChaosResult) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    result.record.save(directory / "client-record.json")
    faults = [
        {**asdict(i), "recovery": asdict(r)}
        for i, r in zip(result.injected, result.recoveries, strict=False)
    ]
    (directory / "faults.json").write_text(json.dumps(faults, indent=1))
    (directory / "verdict.json").write_text(json.dumps(result.verdict.summary(), indent=1))
