"""Chaos under load: a real ``kh up`` (simulated agents and one process agent,
``appendfsync always``), a workload of sessions created, executed into and destroyed
through the gateway, and faults at random times from a seed (SIGKILL of a random
kernelhub actor's worker, SIGKILL of ``redis-server``, SIGSTOP/SIGCONT of it; with
``--nodes N``, a Ray worker node's death and replacement); then quiet,
settle, and the checker's verdict from the log and the client's record
(:mod:`kernelhub.chaos`, docs/reliability.md).

Last line JSON: ``faults``, ``faults_by_kind``, ``sessions``, ``acked_lost`` (must be 0),
``stuck`` (0), ``verify_ok``, ``recovery_p50_s``/``recovery_p99_s`` (fault to the next
session RUNNING), ``projections_p50_s``/``projections_p99_s`` (to the read models caught
up), ``findings`` by rule, ``seed``, plus ``machine``. Targets: 0 lost, 0 stuck over >= 200
faults, recovery p99 <= 10 s. The seed is printed first (stderr); ``--seed`` replays it.

    .venv/bin/python bench/chaos.py [--minutes 5] [--seed S] [--nodes N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from bench._baselines import machine
from kernelhub.chaos.driver import ChaosConfig, run_chaos
from kernelhub.chaos.workload import WorkloadSpec

TARGETS = {"acked_lost": 0, "stuck": 0, "min_faults": 200, "recovery_p99_s": 10.0}


async def main(options: argparse.Namespace) -> dict[str, object]:
    config = ChaosConfig(
        seconds=options.minutes * 60,
        seed=options.seed,
        mean_gap_s=options.gap,
        faults=not options.no_faults,
        nodes=options.nodes,
        workload=WorkloadSpec(rate_per_s=options.rate, concurrency=options.concurrency),
        record_dir=Path(options.keep) if options.keep else None,
    )
    result = await run_chaos(config)
    return {
        **result.figures(),
        "minutes": options.minutes,
        "targets": TARGETS,
        "machine": machine(result.redis_version),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--gap", type=float, default=3.0, help="mean seconds between faults")
    parser.add_argument("--rate", type=float, default=1.0, help="sessions started per second")
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--nodes", type=int, default=0, help="Ray worker nodes that may die")
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--keep", default=None, help="keep the record and faults here")
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options))))
