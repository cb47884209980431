"""Recovery after a fault, as a user would feel it: how long until a new session reaches
RUNNING, and until the read models have caught up with the log again.

Measured from the fault's start for kills (the failure is instant; what follows is the
recovery) and from its end for a stopped Redis (the pause is the fault's own length).
The probe session is a real create through the gateway, recorded like any other, so the
checker judges it too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from events import RedisEventStore, position_key
from projections.models import default_projections

from .faults import Injected
from .workload import Workload

__all__ = ["Recovery", "measure", "percentile", "projections_caught_up"]


@dataclass
class Recovery:
    kind: str
    target: str
    running_s: float | None
    """None: no session reached RUNNING within the timeout."""
    projections_s: float | None


async def projections_caught_up(store: RedisEventStore, head: str) -> bool:
    want = position_key(head)
    for projection in default_projections():
        status = await store.read_models.status(projection.name)
        if position_key(str(status.get("checkpoint", "0-0"))) < want:
            return False
    return True


async def measure(
    injected: Injected, workload: Workload, store: RedisEventStore, timeout: float = 90.0
) -> Recovery:
    since = injected.ended if injected.kind == "stop_redis" else injected.started
    deadline = time.monotonic() + timeout
    running_at: float | None = None
    probes = 0
    while time.monotonic() < deadline and running_at is None:
        probes += 1
        name = f"chaos-probe-{injected.fault.index:04d}-{probes}-{uuid.uuid4().hex[:6]}"
        ack = await workload.create(name, "probe")
        if ack.session_id is None:
            await asyncio.sleep(0.5)
            continue
        ok = ack.status == "RUNNING" or await workload.wait_running(
            ack.session_id, max(1.0, deadline - time.monotonic())
        )
        if ok:
            running_at = time.time()
        task = asyncio.create_task(workload.destroy(ack.session_id, forced=not ok))
        workload.background(task)
    projections_at: float | None = None
    deadline = max(deadline, time.monotonic() + 30)
    while time.monotonic() < deadline and projections_at is None:
        try:
            head = await asyncio.wait_for(store.head(), 5)
            if await asyncio.wait_for(projections_caught_up(store, head), 5):
                projections_at = time.time()
                break
        except Exception:  # Redis still coming back: keep asking until the deadline
            pass
        await asyncio.sleep(0.1)
    return Recovery(
        injected.kind,
        injected.target,
        None if running_at is None else round(running_at - since, 3),
        None if projections_at is None else round(projections_at - since, 3),
    )


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]
