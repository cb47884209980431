"""What-if on a real trace: the Alibaba GPU trace (8,152 tasks, 1,523 nodes, 149 days)
replayed through the real scheduler under each policy and selector (docs/whatif.md).

Per policy: the replay's seconds (``sim_seconds``: simulated days per wall second is the
point: no Ray, no Redis, no clock), ``gpu_alloc_pct``, ``frag_gpus_mean``, ``wait_p99_s``
and the record's own ``wait_p99_s`` beside them. The baseline is the record itself (what
the trace's scheduler did), measured from the same workload in the same run.

The loaded benchmark of the ``fragmentation`` selector (``inflated``): at its own timing the
trace barely loads its cluster (every selector places alike), so, as the FGD paper does,
tasks drawn from its mix arrive one a second and never leave, and what does not fit is
turned away, until they ask for every GPU (``--inflate``, the share of the GPUs). Each
selector faces the same arrivals at the same instants, so the same load:
``frag_reduction_vs_best`` is one minus the ``fragmentation`` selector's mean fragmented
GPUs over the best of ``concentrated`` and ``dispersed`` (``frag_reduction_own_timing``: the
same at the trace's own timing, where the load is too light to say much).

Start-time estimates (``eta_*``): on the same trace with its nodes scaled down
(``--eta-agents``: the trace's jobs are short, and at its own size, or even a twentieth of
it, nothing waits), the jobs that waited at least a minute in the ``--eta-policy`` replay
are estimated at their arrival by the scheduler's own estimator, knowing only the past
(``actors.domain.whatif.eta``), and each estimate is compared with the wait the replay gave:
``eta_within_50pct`` (the share within ±50% of the wait; no estimate counts as a miss) and
``eta_median_abs_err_s``. Two loads (``eta_by_agents``): fifteen nodes (``scale:0.01``, the
headline ``eta_*``: waits of hours to two days), and seven (``scale:0.005``: a queue of
weeks behind services that hold most GPUs for months, so that almost nothing has ended,
and nothing is learned, before the judged arrivals, and the later ones stand behind more
than the 1,000 sessions a round estimates). Last line: one JSON object.

    .venv/bin/python bench/whatif.py [--trace DIR] [--limit N] [--agents scale:F]
        [--policy fifo/concentrated ...] [--inflate SHARE] [--eta-agents scale:F ...]
        [--eta-sample N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.domain.whatif import Policy, Workload, summarize
from bench._baselines import machine
from kernelhub.traces import import_trace
from kernelhub.whatif_cli import parse_agents, run_whatif

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "alibaba-gpu-v2023"
HEAD = ROOT / "tests" / "data" / "alibaba-gpu-v2023-head"
POLICIES = (
    "fifo/fragmentation",
    "fifo/concentrated",
    "fifo/dispersed",
    "fifo/default",
    "drf/default",
)
SAME_LOAD_PCT = 1.0
"""Two replays ran at the same load when their GPU allocation differs by less than this
(points of percent): a replay whose queue was held (strict FIFO behind a head that waits
for a whole big node) allocated less, and its fewer fragments say nothing of placement."""
TARGET_SIM_SECONDS = 60.0
ETA_AGENTS = ("scale:0.01", "scale:0.005")
"""The loads estimates are judged at (module doc)."""
INFLATED = ("fifo/fragmentation", "fifo/concentrated", "fifo/dispersed", "fifo/default")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE if TRACE.is_dir() else HEAD)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--agents", default=None, help="scale:F")
    parser.add_argument("--policy", action="append", default=None)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--inflate", type=float, default=1.0, help="0: no loaded benchmark")
    parser.add_argument(
        "--eta-agents",
        action="append",
        default=None,
        help="scale:F, repeatable (default: scale:0.01 and scale:0.005); the first is the headline",
    )
    parser.add_argument("--eta-policy", default="fifo/concentrated")
    parser.add_argument("--eta-sample", type=int, default=100, help="0: no estimates")
    args = parser.parse_args()

    began = time.perf_counter()
    workload = import_trace("alibaba-gpu-v2023", args.trace, args.limit)
    import_s = time.perf_counter() - began
    if args.agents:
        workload = workload.model_copy(update={"agents": parse_agents(args.agents, workload)})
    policies = []
    for label in args.policy or POLICIES:
        scheduler, _, selector = label.partition("/")
        policies.append(Policy(scheduler, None if selector in ("", "default") else selector))
    record, results, seconds = run_whatif(workload, policies, samples=args.samples)
    from actors.domain.whatif import accelerator_slot

    accelerator = accelerator_slot(workload)
    per_policy = {}
    for result in results:
        figures = summarize(result, accelerator)
        label = result.policy.label
        per_policy[label] = {
            "sim_seconds": round(seconds[label], 2),
            "sim_days_per_s": round(workload.span_s / 86400 / max(seconds[label], 1e-9), 2),
            "gpu_alloc_pct": figures["gpu_alloc_pct"],
            "frag_gpus_mean": figures["frag_gpus_mean"],
            "wait_p99_s": figures["wait_p99_s"],
            "never_started": figures["never_started"],
            "fairness_jain": figures["fairness_jain"],
            "passes": figures["passes"],
        }
        print(f"{label:24} {json.dumps(per_policy[label])}", file=sys.stderr)
    fastest = min(seconds.values())
    inflated = loaded(workload, args.inflate, args.samples) if args.inflate else {}
    eta: dict[str, Any] = {}
    if args.eta_sample:
        loads = [estimates(workload, spec, args) for spec in args.eta_agents or ETA_AGENTS]
        eta = {**loads[0], "eta_by_agents": {f["eta_agents"]: f for f in loads}}
    print(
        json.dumps(
            {
                "bench": "whatif",
                "trace": str(args.trace.name),
                "tasks": len(workload.jobs),
                "nodes": len(workload.agents),
                "span_days": round(workload.span_s / 86400, 1),
                "import_seconds": round(import_s, 2),
                "sim_seconds": round(fastest, 2),
                "sim_seconds_target": TARGET_SIM_SECONDS,
                "recorded_wait_p99_s": record["wait_p99_s"],
                "frag_reduction_vs_best": reduction(inflated, same_load=False),
                "frag_reduction_target": 0.2,
                "frag_reduction_own_timing": reduction(per_policy, same_load=True),
                "policies": per_policy,
                "inflated": inflated,
                **eta,
                "machine": machine(),
            }
        )
    )


def reduction(per_policy: dict[str, dict[str, Any]], *, same_load: bool) -> float | None:
    """One minus the ``fragmentation`` selector's mean fragmented GPUs over the best of
    concentrated and dispersed; ``same_load``: only against replays that allocated as much
    (at the recorded timing a held queue allocates less; inflated, the load is the same)."""
    new = per_policy.get("fifo/fragmentation")
    if new is None or new["frag_gpus_mean"] is None:
        return None
    peers = [
        per_policy[label]["frag_gpus_mean"]
        for label in ("fifo/concentrated", "fifo/dispersed")
        if label in per_policy
        and (
            not same_load
            or abs(per_policy[label]["gpu_alloc_pct"] - new["gpu_alloc_pct"]) < SAME_LOAD_PCT
        )
    ]
    if not peers or min(peers) <= 0:
        return None
    return round(1 - float(new["frag_gpus_mean"]) / min(peers), 3)


def loaded(workload: Workload, share: float, samples: int) -> dict[str, dict[str, Any]]:
    """The inflated replay of each selector (module doc)."""
    from actors.domain.whatif import accelerator_slot
    from kernelhub.whatif_cli import inflated_workload

    accelerator = accelerator_slot(workload)
    drawn = inflated_workload(workload, accelerator, share, seed=0)
    policies = [
        Policy("fifo", None if s == "default" else s)
        for s in (label.partition("/")[2] for label in INFLATED)
    ]
    _, results, seconds = run_whatif(drawn, policies, samples=samples, patience=1)
    figures = {}
    for result in results:
        summary = summarize(result, accelerator)
        label = result.policy.label
        figures[label] = {
            "sim_seconds": round(seconds[label], 2),
            "tasks": len(drawn.jobs),
            "turned_away": summary["withdrawn"],
            "gpu_alloc_peak_pct": round(summary["gpu_alloc_peak_pct"], 2),
            "frag_gpus_mean": round(summary["frag_gpus_mean"], 1),
        }
        print(f"inflated {label:15} {json.dumps(figures[label])}", file=sys.stderr)
    return figures


def estimates(workload: Workload, agents: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start-time estimates judged against a replay of the loaded trace (module doc)."""
    from actors.domain.whatif import simulate
    from actors.domain.whatif.eta import judge_estimates

    loaded = workload.model_copy(update={"agents": parse_agents(agents, workload)})
    scheduler, _, selector = args.eta_policy.partition("/")
    policy = Policy(scheduler, None if selector in ("", "default") else selector)
    result = simulate(loaded, policy, samples=0)
    began = time.perf_counter()
    judged = judge_estimates(loaded, result, min_wait_s=60.0, sample=args.eta_sample)
    seconds = time.perf_counter() - began
    errors = [j.error_s for j in judged if j.error_s is not None]
    within = sum(1 for j in judged if j.error_s is not None and j.error_s <= 0.5 * j.waited_s)
    figures = {
        "eta_agents": agents,
        "eta_policy": policy.label,
        "eta_judged": len(judged),
        "eta_estimated": len(errors),
        "eta_within_50pct": round(within / len(judged), 3) if judged else None,
        "eta_within_50pct_target": 0.6,
        "eta_median_abs_err_s": round(statistics.median(errors), 1) if errors else None,
        "eta_median_wait_s": round(statistics.median(j.waited_s for j in judged), 1)
        if judged
        else None,
        "eta_seconds": round(seconds, 2),
    }
    print(f"estimates                {json.dumps(figures)}", file=sys.stderr)
    return figures


if __name__ == "__main__":
    main()
