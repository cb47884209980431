"""``kh events ...``, ``kh replay`` and ``kh why``: what happened, when and why, from the log.

Every command has ``--json``. Secrets are redacted everywhere except
``kh events export --with-secrets``. The commands read Redis only (``KH_REDIS_URL`` or the
embedded installation) and need no actor running.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .errors import KernelhubError
from .operator_cli import (
    DataDir,
    JsonFlag,
    exit_with,
    installation_settings,
    operator_command,
    operator_group,
    with_store,
)
from .projections_cli import progress_bar

if TYPE_CHECKING:
    from events import RedisEventStore, StoredEvent

    from .history.positions import Cutoff

__all__ = ["app", "history_app"]

app = operator_group(
    "The event log: tail, show, verify, checkpoint, audit, export, import, archive."
)
"""``kh events ...``."""
history_app = typer.Typer(add_completion=False, rich_markup_mode=None)
"""``kh replay`` and ``kh why``: top-level commands (:mod:`kernelhub.cli` merges them)."""

_STREAM_PREFIXES = (
    "session-",
    "agent-",
    "alloc-",
    "pass-",
    "estimate-",
    "tenancy-",
    "image-",
    "endpoint-",
    "config",
)
_PAGE = 2000


def _colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _print_event(event: StoredEvent, as_json: bool) -> None:
    from .history.render import event_json, event_line

    if as_json:
        print(json.dumps(event_json(event), sort_keys=True), flush=True)
    else:
        print(event_line(event, colour=_colour()), flush=True)


async def _now_ms(store: RedisEventStore) -> int:
    return await store.clock.now_ms()


async def _cutoff(store: RedisEventStore, text: str) -> Cutoff:
    from .history.positions import parse_cutoff

    return parse_cutoff(text, await _now_ms(store))


def _say(as_json: bool, facts: dict[str, Any], text: str) -> None:
    print(json.dumps(facts, sort_keys=True) if as_json else text)


# ---- kh events ------------------------------------------------------------------------------
@app.command(help="The latest events, one line each.")
@operator_command
def tail(
    context: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events")] = (
        False
    ),
    type_: Annotated[
        list[str] | None,
        typer.Option(
            "--type", metavar="TYPE", help="only this event type (repeatable)", show_default=False
        ),
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option(help="only this stream (session-<id>, agent-<id>, ...)", show_default=False),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="from a time (2026-12-01T12:00:00Z), a while ago (10m) or a position",
            show_default=False,
        ),
    ] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", help="how many (without --since)")] = 20,
    as_json: JsonFlag = False,
) -> None:
    types = frozenset(type_) if type_ else None

    def wanted(event: StoredEvent) -> bool:
        return (types is None or event.type in types) and (stream is None or event.stream == stream)

    async def run(store: RedisEventStore) -> None:
        from .history.positions import position_before

        if since:
            last = (await _cutoff(store, since)).after_for_since()
            while True:
                page = await store.read_stored(last, _PAGE)
                for event in page:
                    if wanted(event):
                        _print_event(event, as_json)
                if page:
                    last = page[-1].position
                if len(page) < _PAGE:
                    break
        else:
            last = await store.head()
            for event in await _last_matching(store, wanted, lines):
                _print_event(event, as_json)
        if not follow:
            return
        streams = (lambda name: name == stream) if stream else None
        async for live in store.subscribe(last, types=types, streams=streams):
            stored = (await store.read_stored(position_before(live.position), 1))[0]
            _print_event(stored, as_json)

    with_store(installation_settings(context), run)


async def _last_matching(store: RedisEventStore, wanted: Any, count: int) -> list[StoredEvent]:
    """The last ``count`` events ``wanted`` accepts, reading back from the head in pages."""
    found: list[StoredEvent] = []
    before: str | None = None
    while len(found) < count:
        entries = await store.read_raw_backwards(before, _PAGE)
        if not entries:
            break
        decoded = [store.codec.decode_stored(p, f) for p, f in entries]
        found = [e for e in reversed(decoded) if wanted(e)] + found
        before = entries[-1][0]
        if len(entries) < _PAGE:
            break
    return found[-count:] if count else []


async def _resolve_stream(store: RedisEventStore, ref: str) -> str:
    """A stream name, a session's id or name, or an agent's id -> the stream."""
    if ref.startswith(_STREAM_PREFIXES):
        return ref
    try:
        candidate = f"session-{uuid.UUID(ref)}"
        if await store.stream_version(candidate) or await store.archived_stream(candidate):
            return candidate
    except ValueError:
        pass
    if await store.stream_version(f"agent-{ref}"):
        return f"agent-{ref}"
    record = await _session_by_name(store, ref)
    if record is not None:
        return f"session-{record['id']}"
    if endpoint := await _endpoint_stream(store, ref):
        return endpoint
    raise KernelhubError(f"no stream, session or agent {ref!r} in the log")


async def _endpoint_stream(store: RedisEventStore, ref: str) -> str | None:
    """An endpoint's stream from its id or its name (the newest endpoint of that name,
    whoever owns it, destroyed ones included: an operator's tool)."""
    try:
        candidate = f"endpoint-{uuid.UUID(ref).hex}"
    except ValueError:
        candidate = None
    if candidate is not None:
        found = await store.stream_version(candidate) or await store.archived_stream(candidate)
        return candidate if found else None
    newest: tuple[int, str] | None = None
    for stream in await store.streams_named("endpoint-"):
        for created in await store.read_stream(stream, 1, 1):
            if getattr(created.data, "name", None) != ref:
                continue
            if newest is None or created.position_ms > newest[0]:
                newest = (created.position_ms, stream)
    return None if newest is None else newest[1]


async def _session_by_name(store: RedisEventStore, name: str) -> dict[str, Any] | None:
    """The newest session called ``name``, whoever owns it (an operator's tool)."""
    from projections.queries import ReadModels

    models = ReadModels(store)
    offset = 0
    while True:
        page = await models.sessions(offset=offset, limit=100)
        for record in page.items:
            if record.get("name") == name:
                return record
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return None


@app.command(help="One stream's history, with versions.")
@operator_command
def show(
    context: typer.Context,
    ref: Annotated[str, typer.Argument(help="a stream, a session's id or name, or an agent's id")],
    as_json: JsonFlag = False,
) -> None:
    async def run(store: RedisEventStore) -> None:
        from .history.asof import stream_history
        from .history.render import event_json, event_line

        stream = await _resolve_stream(store, ref)
        events = await stream_history(store, stream)
        if not events:
            raise KernelhubError(f"{stream} has no events")
        if as_json:
            print(json.dumps([event_json(e) for e in events], sort_keys=True))
            return
        print(f"{stream}: {len(events)} events, version {events[-1].version}")
        for event in events:
            print(event_line(event, colour=_colour()))

    with_store(installation_settings(context), run)


@app.command(
    help="Fold the whole log and check its invariants and its hash chain (exit 1: a violation)."
)
@operator_command
def verify(
    context: typer.Context,
    grace: Annotated[
        float, typer.Option(help="seconds an ended session's releases may still be on the way")
    ] = 10.0,
    from_checkpoint: Annotated[
        bool,
        typer.Option(
            "--from-checkpoint",
            help="only the hash chain, from the newest signed checkpoint (kh events checkpoint)",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    from .history.audit import CHECKPOINT_FILE, checkpoint_key, read_checkpoint_file

    settings = installation_settings(context)
    key = checkpoint_key(settings.master_key_path)
    records = read_checkpoint_file(settings.data_dir / CHECKPOINT_FILE)
    if from_checkpoint:
        exit_with(with_store(settings, partial(_verify_from_checkpoint, key, records, as_json)))
        return

    async def run(store: RedisEventStore) -> int:
        from events.archive import merged_entries

        from .history.verify import LogVerifier

        verifier = LogVerifier(
            store.codec,
            grace_ms=int(grace * 1000),
            checkpoint_key=key,
            file_checkpoints=records,
            head=await store.chain_head(),  # before the entries: its entry is among them
            judges_head=True,
        )
        async for position, fields in merged_entries(store):  # the archive too: the whole log
            verifier.feed(position, fields)
        violations = verifier.finish()
        chain = verifier.chain
        if as_json:
            print(
                json.dumps(
                    {
                        "events": verifier.events,
                        "chained": chain.chained,
                        "unchained": chain.unchained,
                        "checkpoints_signed": key is not None,
                        "ok": not violations,
                        "violations": [v.as_json() for v in violations],
                    },
                    sort_keys=True,
                )
            )
        else:
            for violation in violations:
                print(violation.line())
            verdict = "ok" if not violations else f"{len(violations)} violation(s)"
            before = f", {chain.unchained} before the chain" if chain.unchained else ""
            print(f"{verifier.events} events verified ({chain.chained} chained{before}): {verdict}")
            if key is None:
                print("kh: no master key here: checkpoint signatures not judged", file=sys.stderr)
        return 1 if violations else 0

    exit_with(with_store(settings, run))


async def _verify_from_checkpoint(
    key: bytes | None, records: list[dict[str, Any]], as_json: bool, store: RedisEventStore
) -> int:
    from .history.audit import newest_valid_checkpoint, verify_chain

    if key is None:
        raise KernelhubError("--from-checkpoint needs the master key (run on the installation)")
    start = newest_valid_checkpoint(key, records)
    if start is None:
        raise KernelhubError("no signed checkpoint to start from: run kh events checkpoint")
    chain, breaks, anchored = await verify_chain(store, start)
    problems = [f"chain      {b.position}  {b.stream} v{b.version}: {b.why}" for b in breaks]
    if not anchored:
        problems.insert(
            0,
            f"checkpoint {start['position']}: the entry no longer carries the signed link "
            "(removed or rewritten)",
        )
    if as_json:
        print(
            json.dumps(
                {
                    "from": start["position"],
                    "chained": chain.chained,
                    "ok": not problems,
                    "violations": problems,
                },
                sort_keys=True,
            )
        )
    else:
        for line in problems:
            print(line)
        verdict = "ok" if not problems else f"{len(problems)} violation(s)"
        print(f"{chain.chained} events after checkpoint {start['position']} verified: {verdict}")
    return 1 if problems else 0


@app.command(help="Sign the hash chain's head (a checkpoint verify can start from).")
@operator_command
def checkpoint(context: typer.Context, as_json: JsonFlag = False) -> None:
    from .history.audit import CHECKPOINT_FILE, checkpoint_key, make_checkpoint

    settings = installation_settings(context)
    key = checkpoint_key(settings.master_key_path)
    if key is None:
        raise KernelhubError(
            f"no master key at {settings.master_key_path}: checkpoints are signed with it"
        )

    async def run(store: RedisEventStore) -> None:
        try:
            record = await make_checkpoint(store, key, settings.data_dir / CHECKPOINT_FILE)
        except ValueError as exc:
            raise KernelhubError(str(exc)) from None
        _say(as_json, record, f"checkpoint {record['position']} {record['hash']} signed")

    with_store(settings, run)


@app.command(help="Who changed what: administrative events, with who asked and from where.")
@operator_command
def audit(
    context: typer.Context,
    who: Annotated[
        str | None, typer.Option(help="part of the initiator: email, access key, peer")
    ] = None,
    what: Annotated[
        str | None, typer.Option(help="an event type, or a prefix ending in * (keypair_*)")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="TIME|POSITION",
            help="from this on (2026-12-01T12:00:00Z, a position, or a while ago: 7d)",
        ),
    ] = None,
    about: Annotated[
        str | None, typer.Option(help="text the event's data mentions (bob@lab.org)")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    from .history.audit import AuditQuery, audit_trail

    for name, value in (("--who", who), ("--what", what), ("--about", about)):
        if value is not None and not 0 < len(value) <= 256:
            raise KernelhubError(f"{name}: 1 to 256 characters")

    async def run(store: RedisEventStore) -> None:
        from .history.positions import iso_ms

        since_ms = (await _cutoff(store, since)).ms if since else None
        query = AuditQuery(who=who, what=what, since_ms=since_ms, about=about)
        found = 0
        async for row in audit_trail(store, query):
            found += 1
            if as_json:
                print(json.dumps(row, sort_keys=True, default=str), flush=True)
                continue
            data = json.dumps(row["data"], sort_keys=True, default=str)
            print(
                f"{iso_ms(row['time'])}  {row['who'] or '?'}  {row['type']}  "
                f"{row['stream']}  {data[:300]}",
                flush=True,
            )
        if not as_json and not found:
            print("no administrative event matches", file=sys.stderr)

    with_store(installation_settings(context), run)


@app.command(help="The log as JSON lines (secrets redacted).")
@operator_command
def export(
    context: typer.Context,
    jsonl: Annotated[Path, typer.Option(metavar="FILE", show_default=False)],
    with_secrets: Annotated[
        bool,
        typer.Option("--with-secrets", help="keep the (encrypted) secrets: a backup to import"),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    async def run(store: RedisEventStore) -> None:
        from .history.transfer import export_log

        with jsonl.open("w", encoding="utf-8") as out:
            count = await export_log(
                store, out, with_secrets=with_secrets, progress=progress_bar("export")
            )
        _say(
            as_json,
            {"exported": count, "file": str(jsonl), "with_secrets": with_secrets},
            f"{count} events written to {jsonl}" + (" (with secrets)" if with_secrets else ""),
        )

    with_store(installation_settings(context), run)


@app.command("import", help="Load an export into an empty store.")
@operator_command
def import_(
    context: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    async def run(store: RedisEventStore) -> None:
        from projections.models import default_projections
        from projections.runtime import Projector

        from .history.transfer import ImportRefused, import_log

        if not file.is_file():
            raise KernelhubError(f"no file {file}")
        try:
            count = await import_log(store, file, progress=progress_bar("import"))
        except ImportRefused as exc:
            raise KernelhubError(f"import refused, nothing written: {exc}") from None
        projector = Projector(store, default_projections())
        names = list(projector.projections)
        await projector.rebuild_many(names, progress=progress_bar("rebuild"))
        await projector.wait_cleanup()
        _say(
            as_json,
            {"imported": count, "head": await store.head()},
            f"{count} events imported (head {await store.head()}); read models rebuilt",
        )

    with_store(installation_settings(context), run)


@app.command(help="Move long-ended sessions to compressed files.")
@operator_command
def archive(
    context: typer.Context,
    before: Annotated[
        str,
        typer.Option(
            metavar="TIME|POSITION",
            help="sessions ended at or before this (2026-12-01T12:00:00Z, 7d ago, a position)",
            show_default=False,
        ),
    ],
    dir_: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="where the files go (default $KH_DATA_DIR/archive)", show_default=False
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    settings = installation_settings(context)
    directory = dir_ or settings.data_dir / "archive"

    async def run(store: RedisEventStore) -> None:
        from .history.archive import archive_before
        from .history.audit import CHECKPOINT_FILE, checkpoint_key, make_checkpoint

        cutoff = await _cutoff(store, before)
        result = await archive_before(store, cutoff, directory)
        key = checkpoint_key(settings.master_key_path)
        if result.file is not None and key is not None and await store.chain_head():
            # the log's head signed as the archive leaves: verify --from-checkpoint can
            # start here without reading the files
            await make_checkpoint(store, key, settings.data_dir / CHECKPOINT_FILE)
        if result.file is None:
            _say(as_json, result.as_json(), f"nothing to archive ended before {cutoff.shown}")
            return
        freed = (result.memory_before - result.memory_after) / 2**20
        _say(
            as_json,
            result.as_json(),
            f"{result.sessions} sessions ({result.events} events) archived to {result.file}; "
            f"Redis memory {result.memory_before / 2**20:.1f} -> "
            f"{result.memory_after / 2**20:.1f} MiB ({freed:+.1f})",
        )

    with_store(settings, run)


# ---- kh replay, kh why -------------------------------------------------------------------------
class Replayed(StrEnum):
    session = "session"
    agent = "agent"
    cluster = "cluster"
    decisions = "decisions"


@history_app.command(
    help="The read models as they were at a past time or position (--as-of); or every"
    " recorded scheduling decision decided again (kh replay decisions [--from] [--to])."
)
@operator_command
def replay(
    what: Annotated[Replayed, typer.Argument(metavar="WHAT", show_default=False)],
    id_: Annotated[
        str | None,
        typer.Argument(
            metavar="[ID]", help="the session (id or name) or agent", show_default=False
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            metavar="TIME|POSITION",
            help="2026-12-01T12:00:00Z, 10m (ago) or a log position",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--from", metavar="TIME|POSITION", help="decisions: passes from here"),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--to", metavar="TIME|POSITION", help="decisions: passes up to here"),
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="decisions: one resource group's passes only")
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    if what is Replayed.decisions:
        if as_of is not None or id_ is not None:
            raise typer.BadParameter("kh replay decisions takes --from/--to, not --as-of or an id")
        with_store(
            installation_settings(data_dir=data_dir),
            partial(_replay_decisions, since=since, until=until, group=group, as_json=as_json),
        )
        return
    if since is not None or until is not None or group is not None:
        raise typer.BadParameter("--from, --to and --group are for kh replay decisions")
    if as_of is None:
        raise typer.BadParameter("needs a time or position", param_hint="--as-of")
    moment = as_of

    def need() -> str:
        if not id_:
            raise KernelhubError(f"kh replay ... {what.value} needs an id")
        return id_

    async def run(store: RedisEventStore) -> None:
        from .history.asof import agent_as_of, cluster_as_of, session_as_of

        cutoff = await _cutoff(store, moment)
        if what is Replayed.cluster:
            state: dict[str, Any] | None = await cluster_as_of(store, cutoff)
        elif what is Replayed.session:
            stream = await _resolve_stream(store, need())
            state = await session_as_of(store, stream.removeprefix("session-"), cutoff)
        else:
            state = await agent_as_of(store, need(), cutoff)
        if state is None:
            raise KernelhubError(f"{what.value} {id_} did not exist as of {cutoff.shown}")
        if as_json:
            print(json.dumps(state, sort_keys=True))
            return
        print(f"{what.value} as of {cutoff.shown}")
        for line in _summary(what.value, state):
            print(f"  {line}")

    with_store(installation_settings(data_dir=data_dir), run)


async def _replay_decisions(
    store: RedisEventStore,
    *,
    since: str | None,
    until: str | None,
    group: str | None,
    as_json: bool,
) -> None:
    """Every recorded pass run again; exit 1 when any decision comes out otherwise."""
    from .history.decisions import replay_decisions

    report = await replay_decisions(
        store,
        since=await _cutoff(store, since) if since else None,
        until=await _cutoff(store, until) if until else None,
        group=group,
    )
    if as_json:
        print(json.dumps(report.as_json(), sort_keys=True))
    else:
        print(
            f"{report.passes} passes replayed, {report.decisions} decisions:"
            f" {report.agreed} the same, {len(report.disagreements)} not"
            + (f", {len(report.unreplayable)} passes not replayable" if report.unreplayable else "")
        )
        for disagreement in report.disagreements:
            print(f"  {disagreement.line()}")
        for why in report.unreplayable:
            print(f"  not replayable: {why}")
    if not report.ok:
        raise typer.Exit(1)


@history_app.command(
    help="Fair share: each user's and project's usage, share and factor, and the pending ranking."
)
@operator_command
def fairshare(
    group: Annotated[str, typer.Option(help="the scaling group")] = "default",
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", metavar="TIME|POSITION", help="as it stood then (a time, position, 7d)"
        ),
    ] = None,
    half_life: Annotated[
        str | None, typer.Option(help="instead of the group's: a duration (7d, 12h)")
    ] = None,
    weight: Annotated[
        list[str] | None,
        typer.Option(help="instead of the group's: SLOT=CHARGE (repeat; cuda.device=10)"),
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    overrides: dict[str, Any] = {}
    if half_life is not None:
        if len(half_life) > 40:
            raise KernelhubError("--half-life: a duration like 7d or 12h")
        overrides["half_life"] = half_life
    if weight:
        if len(weight) > 64:
            raise KernelhubError("--weight: at most 64 slots")
        weights: dict[str, float] = {}
        for item in weight:
            slot, sep, value = item.partition("=")
            try:
                weights[slot.strip()] = float(value) if sep else float("nan")
            except ValueError:
                weights[slot.strip()] = float("nan")
        overrides["weights"] = weights
    if overrides:
        from actors.domain.scheduling.fairshare import FairShareConfig

        try:
            FairShareConfig.from_config(overrides)
        except ValueError as exc:
            raise KernelhubError(f"--half-life/--weight: {str(exc)[:200]}") from None

    async def run(store: RedisEventStore) -> None:
        from .history.fairshare import fairshare_report
        from .history.positions import parse_cutoff

        now_ms = await _now_ms(store)
        if as_of is None:
            cutoff, at_ms = parse_cutoff(await store.head(), now_ms), now_ms
        else:
            cutoff = await _cutoff(store, as_of)
            at_ms = cutoff.ms
        report = await fairshare_report(store, cutoff, at_ms, group[:200], overrides)
        if as_json:
            print(json.dumps(report, sort_keys=True))
            return
        note = "" if report["scheduler"] == "fair_share" else f" (it runs {report['scheduler']})"
        print(
            f"group {group}{note}, as of {report['as_of']}: half-life "
            f"{report['half_life_s'] / 3600:g}h, weights {report['weights']}"
        )
        print(f"{'':8} {'name':40} {'usage':>14} {'used':>7} {'share':>7} {'factor':>7}")
        for level, rows in (("user", report["users"]), ("project", report["projects"])):
            for name, f in rows.items():
                print(
                    f"{level:8} {name[:40]:40} {f['usage']:14.1f} {f['usage_share']:7.3f} "
                    f"{f['share']:7.3f} {f['factor']:7.3f}"
                )
        for row in report["pending"]:
            print(
                f"pending  #{row['rank']} {row['name'] or row['session']} ({row['owner']}) "
                f"priority {row['priority']:.3f}"
            )

    with_store(installation_settings(data_dir=data_dir), run)


@history_app.command(
    help="Pending sessions' estimated starts; --calibration: how right past estimates were."
)
@operator_command
def eta(
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibration", help="median absolute error and share within ±50% of the wait"
        ),
    ] = False,
    min_wait: Annotated[
        float, typer.Option(min=0, max=1e9, help="calibration: sessions that waited this long")
    ] = 60.0,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    async def run(store: RedisEventStore) -> None:
        from projections.queries import ReadModels

        from .history.eta import calibration

        models = ReadModels(store)
        if calibrate:
            records = []
            for offset in range(0, 100_000, 1000):  # the newest 100,000 sessions at most
                page = await models.sessions(offset=offset, limit=1000)
                records += page.items
                if len(page.items) < 1000:
                    break
            report = calibration(records, min_wait)
            if as_json:
                print(json.dumps(report, sort_keys=True))
                return
            if not report["judged"]:
                print(f"no session with an estimate waited {min_wait:g}s or more yet")
                return
            print(
                f"{report['judged']} sessions that waited {min_wait:g}s or more:"
                f" median absolute error {report['median_abs_error_s']}s,"
                f" {100 * report['within_50pct']:.0f}% within ±50% of the wait"
            )
            return
        pending = (
            await models.sessions(statuses=["PENDING"], limit=1000, newest_first=False)
        ).items
        shown = [
            {"id": r["id"], "name": r["name"], "estimate": r.get("start_estimate")} for r in pending
        ]
        if as_json:
            print(json.dumps(shown, sort_keys=True))
            return
        now_ms = await _now_ms(store)
        for row in shown:
            line = (
                _estimate_line(row["estimate"], now_ms) if row["estimate"] else "not estimated yet"
            )
            print(f"{row['id'][:8]} {row['name']}: {line}")

    with_store(installation_settings(data_dir=data_dir), run)


async def _start_estimate(store: RedisEventStore, session_id: str) -> dict[str, Any] | None:
    from projections.queries import ReadModels

    record = await ReadModels(store).session(session_id)
    estimate = (record or {}).get("start_estimate")
    return estimate if isinstance(estimate, dict) else None


def _rank_line(rank: dict[str, Any]) -> str:
    """``fair share: #3 of 7 (priority 0.250); ahead: a (AK1, 1.000), ...``."""
    ahead = ", ".join(
        f"{r['name'] or r['session']} ({r['owner']}, {r['priority']:.3f})" for r in rank["ahead"]
    )
    line = f"fair share: #{rank['rank']} of {rank['of']} (priority {rank['priority']:.3f})"
    return f"{line}; ahead: {ahead}" if ahead else f"{line}: next in line"


def _estimate_line(estimate: dict[str, Any], now_ms: int) -> str:
    """``expected to start at ... (in ~4m; between 2m and 9m), run times from history``."""
    from datetime import datetime

    def after(moment: str | None) -> str:
        if not moment:
            return "?"
        ms = datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp() * 1000
        seconds = max(0, int((ms - now_ms) / 1000))
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"

    if not estimate.get("at"):
        return "no start foreseen within the next 100 expected ends of running sessions"
    return (
        f"expected to start at {estimate['at']} (in ~{after(estimate['at'])};"
        f" between {after(estimate.get('earliest'))} and {after(estimate.get('latest'))}),"
        f" run times from {estimate.get('basis', 'default')}"
    )


def _summary(what: str, state: dict[str, Any]) -> list[str]:
    if what == "cluster":
        lines = [
            f"events folded {state['events']} (up to {state['last_position']})",
            f"sessions      {json.dumps(state['sessions'])}",
        ]
        for agent_id, agent in state["agents"].items():
            lines.append(
                f"agent {agent_id}: {agent['status']} occupied "
                f"{json.dumps(agent['occupied_slots'])} of "
                f"{json.dumps(agent['available_slots'])}"
            )
        return lines
    if what == "agent":
        return [
            f"status     {state['status']}",
            f"capacity   {json.dumps(state['available_slots'])}",
            f"occupied   {json.dumps(state['occupied_slots'])}",
            f"kernels    {len(state['holds'])}",
        ]
    return [
        f"{state['id']} ({state['name']}): {state['status']} {state['status_info']}".rstrip(),
        *(
            f"{at}  {status}"
            for status, at in sorted(state["status_history"].items(), key=lambda item: item[1])
        ),
        *(
            f"kernel {k['id'][:8]} on {k['agent']}: {k['status']}"
            for k in state["kernels"].values()
        ),
    ]


async def _decoded(store: RedisEventStore, stream: str) -> list[Any]:
    """A stream's events (live or archived), validated into their payload types."""
    from .history.asof import stream_history

    stored = await stream_history(store, stream)
    return [
        store.codec.decode_body(e.body, stream=e.stream, version=e.version, position=e.position)
        for e in stored
    ]


MAX_ROUTE_SESSIONS = 50
"""The most route sessions ``kh why <endpoint>`` reads (the newest routes'): an endpoint
that replaced replicas for months has had thousands."""


async def _why_endpoint(store: RedisEventStore, stream: str, as_json: bool) -> None:
    """An endpoint's replica history, each route's session told as ``kh why`` tells one."""
    from .history.endpoint_why import explain_endpoint, route_lines

    events = await _decoded(store, stream)
    if not events:
        raise KernelhubError(f"{stream} has no events")
    added = [str(e.data.session_id) for e in events if e.type == "endpoint_route_added"]
    told = added[-MAX_ROUTE_SESSIONS:]  # the newest routes' sessions: a bounded read
    sessions = {sid: await _decoded(store, f"session-{sid}") for sid in told}
    explanation = explain_endpoint(events, sessions, await _now_ms(store), read=set(told))
    if as_json:
        print(json.dumps(explanation.as_json(), sort_keys=True))
        return
    print(explanation.headline())
    for line in explanation.lines:
        print(f"  {line}")
    for route in explanation.routes:
        for line in route_lines(route):
            print(f"  {line}")


@history_app.command(
    help="Why a session waits or ended, or an endpoint's replica history, from the log."
)
@operator_command
def why(
    session: Annotated[
        str, typer.Argument(help="a session's or endpoint's id or name", show_default=False)
    ],
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    async def run(store: RedisEventStore) -> None:
        from .history.why import explain

        stream = await _resolve_stream(store, session)
        if stream.startswith("endpoint-"):
            await _why_endpoint(store, stream, as_json)
            return
        if not stream.startswith("session-"):
            raise KernelhubError(f"{session} is not a session or an endpoint")
        events = await _decoded(store, stream)
        if not events:
            raise KernelhubError(f"{stream} has no events")
        explanation = explain(events, await _now_ms(store))
        estimate = await _start_estimate(store, stream.removeprefix("session-"))
        if estimate and explanation.status == "PENDING":
            explanation.lines.append(_estimate_line(estimate, await _now_ms(store)))
        rank = None
        if explanation.status == "PENDING":
            from .history.fairshare import live_rank

            rank = await live_rank(store, stream.removeprefix("session-"), await _now_ms(store))
            if rank is not None:
                explanation.lines.append(_rank_line(rank))
        if as_json:
            shown = explanation.as_json()
            if explanation.status == "PENDING":
                shown["start_estimate"] = estimate
                shown["fair_share"] = rank
            print(json.dumps(shown, sort_keys=True))
            return
        name = f" ({explanation.name})" if explanation.name else ""
        print(
            f"session {explanation.session_id}{name} is {explanation.status} "
            f"since {explanation.since}"
        )
        for line in explanation.lines:
            print(f"  {line}")

    with_store(installation_settings(data_dir=data_dir), run)
