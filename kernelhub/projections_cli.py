"""``kh projections ...``: run, inspect and rebuild the read models."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from events import RedisEventStore, position_key
from projections.models import default_projections
from projections.runtime import Projector

from .errors import KernelhubError

__all__ = ["add_parser", "progress_bar", "projection_rows"]


async def projection_rows(store: RedisEventStore) -> list[dict[str, Any]]:
    """Each projection's state, generation, checkpoint, lag and rate (``kh projections status``)."""
    head = await store.head()
    head_ms = position_key(head)[0]
    rows = []
    for projection in default_projections():
        raw = await store.redis.hgetall(store.keys.projection_status(projection.name))
        status = {_text(k): _text(v) for k, v in raw.items()}
        checkpoint = status.get("checkpoint", "0-0")
        lag = max(0, head_ms - position_key(checkpoint)[0]) if checkpoint != "0-0" else None
        rows.append(
            {
                "projection": projection.name,
                "state": status.get("state", "never run"),
                "generation": int(status.get("generation", 0) or 0),
                "checkpoint": checkpoint,
                "head": head,
                "lag_ms": lag,
                "events_per_s": float(status.get("events_per_s", 0) or 0),
                "error": status.get("error") or None,
            }
        )
    return rows


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def progress_bar(name: str) -> Any:
    """A one-line bar on stderr: ``name [#####-----] done/total events``."""

    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        print(f"\r{name:10} [{bar}] {done}/{total} events", end=end, file=sys.stderr, flush=True)

    return show


async def run_command(store: RedisEventStore, args: argparse.Namespace) -> int:
    if args.projections_command == "status":
        rows = await projection_rows(store)
        if args.json:
            print(json.dumps(rows, sort_keys=True))
        else:
            header = ("projection", "state", "gen", "checkpoint", "lag ms", "ev/s")
            print("{:12} {:10} {:>4} {:22} {:>8} {:>9}".format(*header))
            for r in rows:
                lag = "-" if r["lag_ms"] is None else r["lag_ms"]
                print(
                    f"{r['projection']:12} {r['state']:10} {r['generation']:>4} "
                    f"{r['checkpoint']:22} {lag:>8} {r['events_per_s']:>9.1f}"
                )
                if r["error"]:
                    print(f"  ! {r['error']}")
        return 1 if any(r["error"] for r in rows) else 0

    projector = Projector(store, default_projections())
    if args.projections_command == "rebuild":
        names = [args.name] if args.name else list(projector.projections)
        unknown = [n for n in names if n not in projector.projections]
        if unknown:
            known = ", ".join(sorted(projector.projections))
            raise KernelhubError(f"no projection named {unknown[0]!r} (there are: {known})")
        generations = await projector.rebuild_many(names, progress=progress_bar(",".join(names)))
        for name, generation in generations.items():
            print(f"{name}: generation {generation} is active")
        await projector.wait_cleanup()
        return 0

    # run
    await projector.load()
    if args.exit_when_idle:
        await projector.catch_up()
    else:
        await projector.run()
    halted = [s.error for s in projector.states.values() if s.error]
    for error in halted:
        print(f"kh: error: {error}", file=sys.stderr)
    return 1 if halted else 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("projections", help="read models: status, rebuild, run")
    commands = parser.add_subparsers(dest="projections_command", metavar="COMMAND", required=True)
    status = commands.add_parser("status", help="checkpoint, lag and rate of each projection")
    status.add_argument("--json", action="store_true")
    rebuild = commands.add_parser("rebuild", help="rebuild from the log and swap in atomically")
    rebuild.add_argument("name", nargs="?", help="one projection (default: all)")
    run = commands.add_parser("run", help="tail the log and keep the read models current")
    run.add_argument("--exit-when-idle", action="store_true", help="stop once caught up")
