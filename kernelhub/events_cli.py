"""``kh events ...``, ``kh replay`` and ``kh why``: what happened, when and why, from the log.

Every command has ``--json``. Secrets are redacted everywhere except
``kh events export --with-secrets``. The commands read Redis only (``KH_REDIS_URL`` or the
embedded installation) and need no actor running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from events import RedisEventStore, StoredEvent
from events.archive import merged_entries
from projections.queries import ReadModels

from .errors import KernelhubError
from .history.archive import archive_before
from .history.asof import agent_as_of, cluster_as_of, session_as_of, stream_history
from .history.positions import Cutoff, parse_cutoff, position_before
from .history.render import event_json, event_line
from .history.transfer import ImportRefused, export_log, import_log
from .history.verify import LogVerifier
from .history.why import explain
from .projections_cli import progress_bar

__all__ = ["add_parsers", "run_events", "run_replay", "run_why"]

_STREAM_PREFIXES = ("session-", "agent-", "alloc-", "tenancy-", "image-", "config")
_PAGE = 2000


def _colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _print_event(event: StoredEvent, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event_json(event), sort_keys=True), flush=True)
    else:
        print(event_line(event, colour=_colour()), flush=True)


async def _now_ms(store: RedisEventStore) -> int:
    seconds, micros = await store.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def _cutoff(store: RedisEventStore, text: str) -> Cutoff:
    return parse_cutoff(text, await _now_ms(store))


# ---- kh events ------------------------------------------------------------------------------
async def _tail(store: RedisEventStore, args: argparse.Namespace) -> int:
    types = frozenset(args.type) if args.type else None

    def wanted(event: StoredEvent) -> bool:
        return (types is None or event.type in types) and (
            args.stream is None or event.stream == args.stream
        )

    if args.since:
        last = (await _cutoff(store, args.since)).after_for_since()
        while True:
            page = await store.read_stored(last, _PAGE)
            for event in page:
                if wanted(event):
                    _print_event(event, args.json)
            if page:
                last = page[-1].position
            if len(page) < _PAGE:
                break
    else:
        last = await store.head()
        recent = await _last_matching(store, wanted, args.lines)
        for event in recent:
            _print_event(event, args.json)
    if not args.follow:
        return 0
    streams = (lambda name: name == args.stream) if args.stream else None
    async for live in store.subscribe(last, types=types, streams=streams):
        stored = (await store.read_stored(position_before(live.position), 1))[0]
        _print_event(stored, args.json)
    return 0


async def _last_matching(store: RedisEventStore, wanted: Any, count: int) -> list[StoredEvent]:
    """The last ``count`` events ``wanted`` accepts, reading back from the head in pages."""
    found: list[StoredEvent] = []
    until = "+"
    while len(found) < count:
        entries = await store.redis.xrevrange(store.keys.log, max=until, min="-", count=_PAGE)
        if not entries:
            break
        decoded = [store.codec.decode_stored(_text(p), f or {}) for p, f in entries]
        found = [e for e in reversed(decoded) if wanted(e)] + found
        until = f"({_text(entries[-1][0])}"
        if len(entries) < _PAGE:
            break
    return found[-count:] if count else []


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
    raise KernelhubError(f"no stream, session or agent {ref!r} in the log")


async def _session_by_name(store: RedisEventStore, name: str) -> dict[str, Any] | None:
    """The newest session called ``name``, whoever owns it (an operator's tool)."""
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


async def _show(store: RedisEventStore, args: argparse.Namespace) -> int:
    stream = await _resolve_stream(store, args.ref)
    events = await stream_history(store, stream)
    if not events:
        raise KernelhubError(f"{stream} has no events")
    if args.json:
        print(json.dumps([event_json(e) for e in events], sort_keys=True))
        return 0
    print(f"{stream}: {len(events)} events, version {events[-1].version}")
    for event in events:
        print(event_line(event, colour=_colour()))
    return 0


async def _verify(store: RedisEventStore, args: argparse.Namespace) -> int:
    verifier = LogVerifier(store.codec, grace_ms=int(args.grace * 1000))
    async for position, fields in merged_entries(store):  # the archive too: the whole log
        verifier.feed(position, fields)
    violations = verifier.finish()
    if args.json:
        print(
            json.dumps(
                {
                    "events": verifier.events,
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
        print(f"{verifier.events} events verified: {verdict}")
    return 1 if violations else 0


async def _export(store: RedisEventStore, args: argparse.Namespace) -> int:
    path = Path(args.jsonl)
    with path.open("w", encoding="utf-8") as out:  # noqa: ASYNC230 (a CLI's own loop)
        count = await export_log(
            store, out, with_secrets=args.with_secrets, progress=progress_bar("export")
        )
    _say(
        args,
        {"exported": count, "file": str(path), "with_secrets": args.with_secrets},
        f"{count} events written to {path}" + (" (with secrets)" if args.with_secrets else ""),
    )
    return 0


async def _import(store: RedisEventStore, args: argparse.Namespace) -> int:
    from projections.models import default_projections
    from projections.runtime import Projector

    path = Path(args.file)
    if not path.is_file():  # noqa: ASYNC240 (a CLI's own loop)
        raise KernelhubError(f"no file {path}")
    try:
        count = await import_log(store, path, progress=progress_bar("import"))
    except ImportRefused as exc:
        raise KernelhubError(f"import refused, nothing written: {exc}") from None
    projector = Projector(store, default_projections())
    names = list(projector.projections)
    await projector.rebuild_many(names, progress=progress_bar("rebuild"))
    await projector.wait_cleanup()
    _say(
        args,
        {"imported": count, "head": await store.head()},
        f"{count} events imported (head {await store.head()}); read models rebuilt",
    )
    return 0


async def _archive(store: RedisEventStore, args: argparse.Namespace) -> int:
    cutoff = await _cutoff(store, args.before)
    directory = Path(args.dir) if args.dir else Path(args.archive_dir)
    result = await archive_before(store, cutoff, directory)
    if result.file is None:
        _say(args, result.as_json(), f"nothing to archive ended before {cutoff.shown}")
        return 0
    freed = (result.memory_before - result.memory_after) / 2**20
    _say(
        args,
        result.as_json(),
        f"{result.sessions} sessions ({result.events} events) archived to {result.file}; "
        f"Redis memory {result.memory_before / 2**20:.1f} -> {result.memory_after / 2**20:.1f} "
        f"MiB ({freed:+.1f})",
    )
    return 0


def _say(args: argparse.Namespace, facts: dict[str, Any], text: str) -> None:
    print(json.dumps(facts, sort_keys=True) if args.json else text)


async def run_events(store: RedisEventStore, args: argparse.Namespace) -> int:
    commands = {
        "tail": _tail,
        "show": _show,
        "verify": _verify,
        "export": _export,
        "import": _import,
        "archive": _archive,
    }
    return await commands[args.events_command](store, args)


# ---- kh replay, kh why -------------------------------------------------------------------------
async def run_replay(store: RedisEventStore, args: argparse.Namespace) -> int:
    cutoff = await _cutoff(store, args.as_of)
    if args.what == "cluster":
        state: dict[str, Any] | None = await cluster_as_of(store, cutoff)
    elif args.what == "session":
        stream = await _resolve_stream(store, _need(args))
        state = await session_as_of(store, stream.removeprefix("session-"), cutoff)
    else:
        state = await agent_as_of(store, _need(args), cutoff)
    if state is None:
        raise KernelhubError(f"{args.what} {args.id} did not exist as of {cutoff.shown}")
    if args.json:
        print(json.dumps(state, sort_keys=True))
        return 0
    print(f"{args.what} as of {cutoff.shown}")
    for line in _summary(args.what, state):
        print(f"  {line}")
    return 0


def _need(args: argparse.Namespace) -> str:
    if not args.id:
        raise KernelhubError(f"kh replay ... {args.what} needs an id")
    return str(args.id)


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


async def run_why(store: RedisEventStore, args: argparse.Namespace) -> int:
    stream = await _resolve_stream(store, args.session)
    if not stream.startswith("session-"):
        raise KernelhubError(f"{args.session} is not a session")
    stored = await stream_history(store, stream)
    if not stored:
        raise KernelhubError(f"{stream} has no events")
    events = [
        store.codec.decode_body(e.body, stream=e.stream, version=e.version, position=e.position)
        for e in stored
    ]
    explanation = explain(events, await _now_ms(store))
    if args.json:
        print(json.dumps(explanation.as_json(), sort_keys=True))
        return 0
    name = f" ({explanation.name})" if explanation.name else ""
    print(
        f"session {explanation.session_id}{name} is {explanation.status} since {explanation.since}"
    )
    for line in explanation.lines:
        print(f"  {line}")
    return 0


def add_parsers(sub: Any) -> None:
    events = sub.add_parser("events", help="the log: tail, show, verify, export, import")
    commands = events.add_subparsers(dest="events_command", metavar="COMMAND", required=True)
    tail = commands.add_parser("tail", help="the latest events, one line each")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.add_argument("--type", action="append", help="only this event type (repeatable)")
    tail.add_argument("--stream", help="only this stream (session-<id>, agent-<id>, ...)")
    tail.add_argument(
        "--since", help="from a time (2026-12-01T12:00:00Z), a while ago (10m) or a position"
    )
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many (without --since)")
    show = commands.add_parser("show", help="one stream's history, with versions")
    show.add_argument("ref", help="a stream, a session's id or name, or an agent's id")
    verify = commands.add_parser("verify", help="fold the whole log and check its invariants")
    verify.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds an ended session's releases may still be on the way",
    )
    export = commands.add_parser("export", help="the log as JSON lines (secrets redacted)")
    export.add_argument("--jsonl", required=True, metavar="FILE")
    export.add_argument(
        "--with-secrets",
        action="store_true",
        help="keep the (encrypted) secrets: a backup to import",
    )
    load = commands.add_parser("import", help="load an export into an empty store")
    load.add_argument("file")
    archive = commands.add_parser("archive", help="move long-ended sessions to compressed files")
    archive.add_argument(
        "--before",
        required=True,
        metavar="TIME|POSITION",
        help="sessions ended at or before this (2026-12-01T12:00:00Z, 7d ago, a position)",
    )
    archive.add_argument("--dir", help="where the files go (default $KH_DATA_DIR/archive)")
    for command in (tail, show, verify, export, load, archive):
        command.add_argument("--json", action="store_true")

    replay = sub.add_parser("replay", help="state as it was at a time or position")
    replay.add_argument(
        "--as-of",
        required=True,
        metavar="TIME|POSITION",
        help="2026-12-01T12:00:00Z, 10m (ago) or a log position",
    )
    replay.add_argument("what", choices=["session", "agent", "cluster"])
    replay.add_argument("id", nargs="?", help="the session (id or name) or agent")
    replay.add_argument("--json", action="store_true")

    why = sub.add_parser("why", help="why a session is pending, or why it ended")
    why.add_argument("session", help="its id or name")
    why.add_argument("--json", action="store_true")
