"""Soak: the chaos workload (sessions created, executed into and destroyed through the
gateway of a real ``kh up``) without faults, for a set time, with every actor's and Redis's
RSS sampled from ``/proc`` (:mod:`kernelhub.chaos.soak`).

Last line JSON: ``rss_growth_mb_per_h`` per actor (least-squares slope after a warm-up),
``redis_rss_growth_mb_per_h``, ``max_actor_growth_mb_per_h``, ``log_bytes_per_session``
(Redis ``used_memory`` grown per session), ``aof_bytes_per_session``, ``sessions``, plus
``machine``. Target: no actor growing more than 50 MB/h at steady load.

    .venv/bin/python bench/soak.py [--minutes 30] [--sample 10]
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
from kernelhub.chaos.soak import SoakConfig, run_soak
from kernelhub.chaos.workload import WorkloadSpec

TARGET_MB_PER_H = 50.0


async def main(options: argparse.Namespace) -> dict[str, object]:
    config = SoakConfig(
        seconds=options.minutes * 60,
        sample_every_s=options.sample,
        warmup_s=options.warmup,
        seed=options.seed,
        workload=WorkloadSpec(
            rate_per_s=options.rate, concurrency=options.concurrency, probe_interval_s=30.0
        ),
    )
    figures = await run_soak(config)
    return {
        **figures,
        "minutes": options.minutes,
        "target_mb_per_h": TARGET_MB_PER_H,
        "machine": machine(str(figures.get("redis_version"))),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None, help="seconds not fitted")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rate", type=float, default=1.0, help="sessions started per second")
    parser.add_argument("--concurrency", type=int, default=6)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options))))
