"""``kh import-trace FORMAT DIR`` and ``kh whatif WORKLOAD``: recorded demand replayed
through the real scheduler under other policies (docs/whatif.md).

Nothing here touches an installation: a workload file in, figures out (and a plot). The
replay is :func:`actors.domain.whatif.simulate`, pure and as fast as the CPU goes.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .errors import KernelhubError
from .operator_cli import DataDir, installation_settings, operator_command, with_store

if TYPE_CHECKING:  # imported when a command runs: `kh` starts without the server's modules
    from actors.domain.whatif import Policy, SimResult, Workload, WorkloadAgent
    from events import RedisEventStore

    from .config import Settings

__all__ = [
    "app",
    "load_workload",
    "parse_agents",
    "parse_duration",
    "window",
    "workload_of_log",
]

app = typer.Typer(add_completion=False, rich_markup_mode=None)
"""``kh whatif``, ``kh import-trace``: top-level commands (:mod:`kernelhub.cli` merges them)."""

MAX_WORKLOAD_BYTES = 512 * 2**20
MAX_AGENTS_FILE_BYTES = 64 * 2**20
MAX_POLICIES = 8
MAX_SECONDS = 1e10
SELECTORS = (
    "concentrated",
    "dispersed",
    "round-robin",
    "fragmentation",
    "largest",
    "least-occupied",
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``30d``: seconds from the workload's start."""
    match = _DURATION.match(text.strip()[:40])
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else math.inf
    if not seconds <= MAX_SECONDS:
        raise KernelhubError(
            f"{option}: {text[:40]!r} is not a time (like 3600, 90m, 2h, 30d; at most 300 years)"
        )
    return seconds


def load_workload(path: Path) -> Workload:
    from pydantic import ValidationError

    from actors.domain.whatif import Workload

    if not path.is_file():
        raise KernelhubError(f"{path}: no such workload file (kh import-trace writes one)")
    if path.stat().st_size > MAX_WORKLOAD_BYTES:
        raise KernelhubError(f"{path}: larger than {MAX_WORKLOAD_BYTES // 2**20} MiB")
    try:
        return Workload.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise KernelhubError(f"{path}: not a workload: {where}: {first['msg']}") from None


def workload_of_log(settings: Settings, group: str) -> Workload:
    """The installation's recorded demand in ``group`` (every event in the live log)."""
    from actors.domain.whatif.from_log import INTERESTS, LogWorkload

    fold = LogWorkload(scaling_group=group)

    async def read(store: RedisEventStore) -> None:
        async for event in store.iter_log():
            if event.type in INTERESTS:
                fold.apply(event)

    with_store(settings, read)
    if fold.skipped:
        print(f"kh: the log's first {len(fold.sessions)} sessions only", file=sys.stderr)
    if not fold.agents:
        raise KernelhubError(f"the log has no agent in resource group {group!r}")
    return fold.workload(f"log of {settings.data_dir} (group {group})")


def parse_agents(spec: str, workload: Workload) -> list[WorkloadAgent]:
    """``--agents``: ``scale:F`` keeps that share of the recorded agents (every k-th in id
    order, so the mix of node types stays), or a JSON file with a list of agents."""
    from pydantic import ValidationError

    from actors.domain.whatif import Workload, WorkloadAgent
    from actors.domain.whatif.workload import MAX_AGENTS

    if spec.startswith("scale:"):
        try:
            share = float(spec.removeprefix("scale:"))
        except ValueError:
            share = -1.0
        if not 0 < share <= 1:  # NaN too
            raise KernelhubError(f"--agents {spec!r}: scale must be a share in (0, 1]")
        ordered = sorted(workload.agents, key=lambda a: a.agent_id)
        step = 1 / share
        return [ordered[int(i * step)] for i in range(max(1, int(len(ordered) * share)))]
    path = Path(spec)
    if not path.is_file():
        raise KernelhubError(f"--agents {spec!r}: neither scale:F nor an agents file")
    if path.stat().st_size > MAX_AGENTS_FILE_BYTES:
        raise KernelhubError(f"--agents {spec}: larger than {MAX_AGENTS_FILE_BYTES // 2**20} MiB")
    try:
        raw = json.loads(path.read_bytes())
        if not isinstance(raw, list):
            raise ValueError("not a list")
        if len(raw) > MAX_AGENTS:
            raise ValueError(f"more than {MAX_AGENTS} agents")
        agents = [WorkloadAgent.model_validate(a) for a in raw]
        return Workload(agents=agents, jobs=[]).agents  # the same checks (ids unique)
    except (ValueError, ValidationError) as exc:
        raise KernelhubError(f"--agents {spec}: not a list of agents: {str(exc)[:200]}") from None


def window(workload: Workload, start: float | None, end: float | None) -> Workload:
    """The jobs that arrived in [start, end), with time counted from ``start``."""
    lo = start or 0.0
    hi = end if end is not None else workload.span_s
    if end is None and lo >= hi:
        raise KernelhubError(f"--from is past the record's end ({workload.span_s:.0f} s)")
    if hi <= lo:
        raise KernelhubError("--to must be after --from")
    inside = [j for j in workload.jobs if lo <= j.arrival_s < hi]
    kept = {j.job_id for j in inside}
    jobs = [  # a dependency on a job before the window was met before it (it is not replayed)
        j.model_copy(
            update={
                "arrival_s": j.arrival_s - lo,
                "dependencies": tuple(d for d in j.dependencies if d in kept),
            }
        )
        for j in inside
    ]
    return workload.model_copy(update={"jobs": jobs, "span_s": hi - lo})


def _policy(scheduler: str, selector: str | None, config: dict[str, Any]) -> Policy:
    from actors.domain.scheduling.agents import selection_key
    from actors.domain.scheduling.plugins import check_scheduler_config
    from actors.domain.whatif import Policy

    try:  # the rule a group's scheduler_opts are judged by
        check_scheduler_config(scheduler, config)
    except ValueError as exc:
        raise KernelhubError(f"--policy {scheduler[:40]!r}: {str(exc)[:200]}") from None
    if selector is not None and selector != "round-robin":
        try:
            selection_key(selector)
        except ValueError:
            raise KernelhubError(
                f"--selector {selector[:40]!r}: one of {', '.join(SELECTORS)}"
            ) from None
    return Policy(scheduler, selector, config)


def run_whatif(
    workload: Workload, policies: list[Policy], samples: int = 500, patience: int | None = None
) -> tuple[dict[str, Any], list[SimResult], dict[str, float]]:
    """The record's figures, each policy's, and each replay's seconds (``patience``: see
    :func:`~actors.domain.whatif.simulate`)."""
    from actors.domain.whatif import (
        Fragmentation,
        accelerator_slot,
        demand_mix,
        recorded,
        simulate,
    )

    accelerator = accelerator_slot(workload)
    probe = None
    if accelerator is not None:
        names = sorted(workload.slot_types)
        probe = Fragmentation(
            demand_mix(workload.jobs, names, accelerator), names.index(accelerator)
        )
    results, seconds = [], {}
    for policy in policies:
        began = time.perf_counter()
        results.append(
            simulate(workload, policy, samples=samples, fragmentation=probe, patience=patience)
        )
        seconds[policy.label] = time.perf_counter() - began
    return recorded(workload), results, seconds


_ROWS = (
    ("started", "started"),
    ("never_started", "never started"),
    ("withdrawn", "turned away (--inflate)"),
    ("wait_p50_s", "wait p50 (s)"),
    ("wait_p95_s", "wait p95 (s)"),
    ("wait_p99_s", "wait p99 (s)"),
    ("jct_p50_s", "completion p50 (s)"),
    ("jct_p95_s", "completion p95 (s)"),
    ("jct_p99_s", "completion p99 (s)"),
    ("gpu_alloc_pct", "accelerators allocated (%)"),
    ("gpu_alloc_peak_pct", "accelerators allocated, peak (%)"),
    ("frag_gpus_mean", "fragmented accelerators"),
    ("queue_mean", "queue length (mean)"),
    ("fairness_jain", "fairness (Jain)"),
    ("share_min", "served share min"),
    ("share_max", "served share max"),
    ("same_placement", "placed as recorded"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def render(columns: list[dict[str, Any]]) -> str:
    """The figures side by side, one column per policy (the record first)."""
    header = ["", *(c["policy"] for c in columns)]
    rows = [header] + [
        [label, *(_cell(c.get(key)) for c in columns)]
        for key, label in _ROWS
        if key != "withdrawn" or any(c.get(key) is not None for c in columns)
    ]
    reasons = sorted({r for c in columns for r in c.get("pending_reasons", {})})
    rows += [
        [f"pending: {r}"[:40], *(_cell(c.get("pending_reasons", {}).get(r)) for c in columns)]
        for r in reasons
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def plot(
    path: Path,
    results: list[SimResult],
    accelerator: str | None,
    inflated: Workload | None = None,
) -> None:
    """Allocation and queue length over time, one line per policy; for an ``inflated``
    workload, allocation and fragmented accelerators against the demand arrived (the FGD
    paper's axes: nothing queues there, what does not fit is turned away)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise KernelhubError("--plot needs matplotlib: pip install 'kernelhub[plot]'") from None
    from actors.domain.whatif.inflate import arrived_demand

    slot = accelerator or "cpu"
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    arrived = arrived_demand(inflated, slot) if inflated is not None else None
    for result in results:
        if arrived is not None:
            xs = [100 * arrived(s.t) for s in result.samples]
            ys = [s.fragmented for s in result.samples]
        else:
            xs = [s.t / 86400 for s in result.samples]
            ys = [float(s.pending) for s in result.samples]
        total = result.capacity.get(slot) or 1.0
        top.plot(
            xs,
            [100 * s.allocated[slot] / total for s in result.samples],
            label=result.policy.label,
        )
        bottom.plot(xs, ys, label=result.policy.label)
    top.set_ylabel(f"{slot} allocated (%)")
    if arrived is not None:
        bottom.set_ylabel(f"fragmented {slot}")
        bottom.set_xlabel(f"{slot} asked for by the tasks arrived (% of the cluster's)")
    else:
        bottom.set_ylabel("pending sessions")
        bottom.set_xlabel("days")
    top.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


@app.command("whatif")
@operator_command
def whatif(
    workload_file: Annotated[
        Path | None,
        typer.Argument(
            metavar="[WORKLOAD]",
            help="A workload file (kh import-trace); none: the installation's own log.",
        ),
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="fifo, lifo, drf, mof or fair_share (drf/dispersed: with a selector); repeat"
            " to compare.",
        ),
    ] = None,
    selector: Annotated[
        str | None, typer.Option(help=f"Agent selector: {', '.join(SELECTORS)}.")
    ] = None,
    config: Annotated[str | None, typer.Option(help="The scheduler's config, as JSON.")] = None,
    agents: Annotated[
        str | None, typer.Option(help="scale:F (a share of the agents) or an agents JSON file.")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Replay demand from (90m, 2h, 30d).")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Replay demand until.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    plot_file: Annotated[Path | None, typer.Option("--plot", help="Write FILE.png.")] = None,
    group: Annotated[
        str, typer.Option(help="From the log: the resource group whose demand is replayed.")
    ] = "default",
    inflate: Annotated[
        float | None,
        typer.Option(
            help="Instead of the recorded timing: tasks drawn from its mix arrive one a second"
            " and never leave, what does not fit is turned away, until they ask for this share"
            " of the accelerators (1.0: all).",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="--inflate: the draw's seed (0).")] = None,
    checker: Annotated[
        str | None,
        typer.Option(help="kh whatif idle: network_timeout or session_lifetime."),
    ] = None,
    threshold: Annotated[
        str | None, typer.Option(help="kh whatif idle: the checker's threshold (30m, 8h).")
    ] = None,
    came_back: Annotated[
        str | None,
        typer.Option(help="kh whatif idle: an owner back within this counts (default 30m)."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Replay recorded demand under other policies and compare with what happened.
    ``kh whatif idle --checker C --threshold T``: the recorded activity under another idle
    or lifetime check (what it would reclaim, free, and how many owners came back)."""
    idle_options = {"--checker": checker, "--threshold": threshold, "--came-back": came_back}
    if workload_file == Path("idle") and not workload_file.exists():
        others = {
            "--policy": policy,
            "--selector": selector,
            "--config": config,
            "--agents": agents,
            "--plot": plot_file,
            "--inflate": inflate,
            "--seed": seed,
        }
        for name, value in others.items():
            if value is not None:
                raise KernelhubError(f"{name}: not with kh whatif idle (it replays activity)")
        idle_whatif(
            installation_settings(data_dir=data_dir),
            group,
            checker or "network_timeout",
            threshold,
            came_back or "30m",
            (start, end),
            as_json,
        )
        return
    for name, value in idle_options.items():
        if value is not None:
            raise KernelhubError(f"{name}: only with kh whatif idle")
    if workload_file is not None:
        workload = load_workload(workload_file)
    else:
        workload = workload_of_log(installation_settings(data_dir=data_dir), group)
    try:
        scheduler_config = json.loads(config) if config else {}
    except ValueError:
        raise KernelhubError("--config: not JSON") from None
    if not isinstance(scheduler_config, dict):
        raise KernelhubError("--config: a JSON object")
    if len(policy or ()) > MAX_POLICIES:
        raise KernelhubError(f"--policy: at most {MAX_POLICIES} to compare")
    if plot_file is not None and not plot_file.parent.is_dir():
        raise KernelhubError(f"--plot {plot_file}: no such folder")
    policies = []
    for given in policy or ["fifo"]:  # fifo, or fifo/fragmentation: its own selector
        scheduler, _, own = given.partition("/")
        chosen = selector if not own else (None if own == "default" else own)
        policies.append(_policy(scheduler, chosen, scheduler_config))
    if agents is not None:
        workload = workload.model_copy(update={"agents": parse_agents(agents, workload)})
    if start is not None or end is not None:
        workload = window(
            workload,
            parse_duration(start, "--from") if start else None,
            parse_duration(end, "--to") if end else None,
        )
    if not workload.jobs:
        raise KernelhubError("no jobs to replay in that window")
    from actors.domain.whatif import accelerator_slot, summarize

    accelerator = accelerator_slot(workload)
    inflated = None
    if seed is not None and inflate is None:
        raise KernelhubError("--seed: only with --inflate")
    if inflate is not None:
        workload = inflated = inflated_workload(workload, accelerator, inflate, seed or 0)
    what_happened, results, seconds = run_whatif(
        workload, policies, patience=1 if inflated is not None else None
    )
    columns = [summarize(r, accelerator) for r in results]
    if inflated is None:  # an inflated workload was drawn, not recorded: nothing happened
        columns.insert(0, what_happened)
    if plot_file is not None:
        plot(plot_file, results, accelerator, inflated)
    if as_json:
        print(
            json.dumps(
                {
                    "workload": workload.source,
                    "jobs": len(workload.jobs),
                    "agents": len(workload.agents),
                    "sim_seconds": seconds,
                    "columns": columns,
                }
            )
        )
        return
    print(f"{len(workload.jobs)} jobs on {len(workload.agents)} agents ({workload.source})")
    print(render(columns))
    if plot_file is not None:
        print(f"plot: {plot_file}")


def idle_whatif(
    settings: Settings,
    group: str,
    checker: str,
    threshold: str | None,
    came_back: str,
    window: tuple[str | None, str | None],
    as_json: bool,
) -> None:
    """``kh whatif idle``: the log's activity under another idle check (docs/idle.md)."""
    from actors.domain.whatif.idle import IDLE_INTERESTS, LogActivity, idle_what_if

    if checker not in ("network_timeout", "session_lifetime"):
        raise KernelhubError(
            f"--checker {checker[:40]!r}: network_timeout or session_lifetime (utilization"
            " samples are telemetry, not in the log)"
        )
    if threshold is None:
        raise KernelhubError("--threshold: the checker's threshold is needed (like 30m)")
    threshold_s = parse_duration(threshold, "--threshold")
    came_back_s = parse_duration(came_back, "--came-back")
    if threshold_s <= 0:
        raise KernelhubError("--threshold: more than 0")
    fold = LogActivity(scaling_group=group)

    async def read(store: RedisEventStore) -> None:
        from events.archive import merged_entries

        tails = store.codec.stored_tails(IDLE_INTERESTS)
        every = len(tails) < len(IDLE_INTERESTS)  # one has an upcaster: no tail to match
        async for position, fields in merged_entries(store):
            raw = fields.get(b"e", fields.get("e", b""))
            body = raw if isinstance(raw, bytes) else str(raw).encode()
            if every or body.endswith(tails):
                event = store.codec.decode(position, fields)
                if event.type in IDLE_INTERESTS:
                    fold.apply(event)

    with_store(settings, read)
    sessions = list(fold.sessions.values())
    first = min((s.created_s for s in sessions), default=0.0)
    start, end = window
    low = first + parse_duration(start, "--from") if start else None
    high = first + parse_duration(end, "--to") if end else None
    if low is not None and high is not None and high <= low:
        raise KernelhubError("--to must be after --from")
    chosen = [
        s
        for s in sessions
        if (low is None or s.created_s >= low) and (high is None or s.created_s < high)
    ]
    report = idle_what_if(chosen, checker, threshold_s, came_back_s, fold.last_s)  # type: ignore[arg-type]
    facts = report.as_json()
    if as_json:
        print(json.dumps({"group": group, **facts}, sort_keys=True))
        return
    freed = ", ".join(f"{k} {v:,.1f}" for k, v in facts["slot_hours_freed"].items()) or "nothing"
    share = facts["came_back_share"]
    print(
        f"{checker} at {threshold}: {facts['would_reclaim']} of {facts['sessions_judged']}"
        f" sessions reclaimed (the record: {facts['recorded_reclaims']}); slot-hours freed:"
        f" {freed}; owners back within {came_back}: {facts['came_back']}"
        + (f" ({100 * share:.0f}%)" if share is not None else "")
    )


def inflated_workload(
    workload: Workload, accelerator: str | None, demand: float, seed: int
) -> Workload:
    """``--inflate``: the FGD paper's loaded benchmark (docs/whatif.md)."""
    from actors.domain.whatif.inflate import MAX_DEMAND, inflate

    if not 0 < demand <= MAX_DEMAND:  # NaN too
        raise KernelhubError(
            f"--inflate {demand}: a share of the accelerators in (0, {MAX_DEMAND}]"
        )
    if accelerator is None:
        raise KernelhubError("--inflate: the workload's agents have no accelerator")
    try:
        return inflate(workload, accelerator, demand=demand, seed=seed)
    except ValueError as exc:
        raise KernelhubError(f"--inflate: {exc}") from None


@app.command("import-trace")
@operator_command
def import_trace_command(
    trace_format: Annotated[
        str, typer.Argument(metavar="FORMAT", help="One of: alibaba-gpu-v2023.")
    ],
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The trace's folder.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The workload file to write.")
    ] = Path("workload.json"),
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N tasks.")] = None,
) -> None:
    """Turn a public trace into a workload file for kh whatif."""
    from .traces import import_trace

    if not output.parent.is_dir():
        raise KernelhubError(f"--output {output}: no such folder")
    workload = import_trace(trace_format, folder, limit)
    output.write_text(workload.model_dump_json())
    print(f"{len(workload.jobs)} jobs, {len(workload.agents)} agents -> {output}", file=sys.stderr)
