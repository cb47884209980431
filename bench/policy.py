"""The pure scheduling policy on a big queue: predicates + fifo pick + agent selection +
ledger reservation, no Ray, no Redis. This is the baseline the end-to-end scheduler bench
(issue "Scheduling at scale") divides by.

10,000 pending sessions from 10 keypairs without quotas (1 cpu / 1g each) onto 1,000 agents
of 16 cpu / 64g (room for all). ``policy_only_per_s`` = sessions placed / wall time of the
pass, median of the rounds. Last line: one JSON object.

    .venv/bin/python bench/policy.py [--sessions 10000] [--agents 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.domain.predicates import Occupancy, PredicateContext
from actors.domain.scaling_groups import ScalingGroup
from actors.domain.scheduling import AgentInfo, PendingSession, schedule_pass
from actors.domain.session import SessionSpec, expand_cluster
from actors.domain.slots import INTRINSIC_SLOTS, ResourceSlot
from bench._baselines import machine

TARGET_PER_S = 5000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def workload(sessions: int, agents: int) -> tuple[list[PendingSession], list[AgentInfo]]:
    request = ResourceSlot(cpu=1, mem=2**30)
    queue = [
        PendingSession(
            SessionSpec(
                session_id=uuid.UUID(int=i + 1),
                name=f"s{i}",
                access_key=f"AK{i % 10}",
                kernels=expand_cluster(1, [request], kernel_ids=[uuid.UUID(int=10**7 + i)]),
                created_at=T0 + timedelta(milliseconds=i),
            )
        )
        for i in range(sessions)
    ]
    hosts = [AgentInfo(f"i-{n:05d}", ResourceSlot(cpu=16, mem=64 * 2**30)) for n in range(agents)]
    return queue, hosts


def one_round(sessions: int, agents: int) -> tuple[int, float]:
    queue, hosts = workload(sessions, agents)
    ctx = PredicateContext(
        now=T0 + timedelta(hours=1), known_slot_types=INTRINSIC_SLOTS, occupancy=Occupancy()
    )
    start = time.perf_counter()
    result = schedule_pass(
        group=ScalingGroup("default"), pending=queue, existing=[], agents=hosts, ctx=ctx
    )
    elapsed = time.perf_counter() - start
    return len(result.decisions), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates, placed = [], 0
    for _ in range(args.rounds):
        placed, elapsed = one_round(args.sessions, args.agents)
        rates.append(placed / elapsed)
    per_s = round(statistics.median(rates))
    print(
        json.dumps(
            {
                "bench": "policy",
                "sessions": args.sessions,
                "agents": args.agents,
                "placed": placed,
                "rounds": args.rounds,
                "policy_only_per_s": per_s,
                "target_met": per_s >= TARGET_PER_S,
                "machine": machine(),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
