"""``kh projections ...``: run, inspect and rebuild the read models."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .errors import KernelhubError
from .operator_cli import (
    JsonFlag,
    exit_with,
    installation_settings,
    operator_command,
    operator_group,
    with_store,
)

if TYPE_CHECKING:
    from events import RedisEventStore

__all__ = ["app", "progress_bar", "projection_rows"]

app = operator_group("The read models: status, rebuild, run.")


async def projection_rows(store: RedisEventStore) -> list[dict[str, Any]]:
    """Each projection's state, generation, checkpoint, lag and rate (``kh projections status``)."""
    from events import position_key
    from projections.models import default_projections

    head = await store.head()
    head_ms = position_key(head)[0]
    rows = []
    for projection in default_projections():
        status = await store.read_models.status(projection.name)
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


def progress_bar(name: str) -> Any:
    """A one-line bar on stderr: ``name [#####-----] done/total events``."""

    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        print(f"\r{name:10} [{bar}] {done}/{total} events", end=end, file=sys.stderr, flush=True)

    return show


@app.command("status", help="Checkpoint, lag and rate of each projection (exit 1: one halted).")
@operator_command
def status_(context: typer.Context, as_json: JsonFlag = False) -> None:
    rows = with_store(installation_settings(context), projection_rows)
    if as_json:
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
    exit_with(1 if any(r["error"] for r in rows) else 0)


@app.command(help="Rebuild from the log and swap in atomically.")
@operator_command
def rebuild(
    context: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="one projection (default: all)", show_default=False)
    ] = None,
) -> None:
    async def run(store: RedisEventStore) -> None:
        from projections.models import default_projections
        from projections.runtime import Projector

        projector = Projector(store, default_projections())
        names = [name] if name else list(projector.projections)
        unknown = [n for n in names if n not in projector.projections]
        if unknown:
            known = ", ".join(sorted(projector.projections))
            raise KernelhubError(f"no projection named {unknown[0]!r} (there are: {known})")
        generations = await projector.rebuild_many(names, progress=progress_bar(",".join(names)))
        for rebuilt, generation in generations.items():
            print(f"{rebuilt}: generation {generation} is active")
        await projector.wait_cleanup()

    with_store(installation_settings(context), run)


@app.command(help="Tail the log and keep the read models current (exit 1: one halted).")
@operator_command
def run(
    context: typer.Context,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="stop once caught up")
    ] = False,
) -> None:
    async def go(store: RedisEventStore) -> int:
        from projections.models import default_projections
        from projections.runtime import Projector

        projector = Projector(store, default_projections())
        await projector.load()
        if exit_when_idle:
            await projector.catch_up()
        else:
            await projector.run()
        halted = [s.error for s in projector.states.values() if s.error]
        for error in halted:
            print(f"kh: error: {error}", file=sys.stderr)
        return 1 if halted else 0

    exit_with(with_store(installation_settings(context), go))
