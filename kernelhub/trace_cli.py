"""``kh trace CORRELATION_ID [--component C] [--json]``: one API call through kernelhub.

The gateway answers every call with ``X-Correlation-ID``; the SDK keeps it on the session it
created (``session.correlation_id``) and on every :class:`~kernelhub.sdk.APIError`. This
command gathers, for that id, the log lines of every actor on every live node of the Ray
cluster (their stderr files, read through Ray's log API: a multi-node cluster needs no
shared disk) and the events in the log, and prints them as one timeline. Reading every
worker's log is a diagnostic's cost, not a query's: it grows with the logs kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Iterator
from typing import Any

from events import RedisEventStore

from .errors import KernelhubError
from .trace import TraceEntry, event_entry, log_entries, render, timeline

__all__ = ["add_parser", "collect", "correlated_events", "run_trace"]

_PAGE = 5000
COMPONENTS = (
    "gateway",
    "sessions",
    "scheduler",
    "agent",
    "projector",
    "reaper",
    "tenancy",
    "events",
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "trace", help="follow one API call (its X-Correlation-ID) through every actor and the log"
    )
    parser.add_argument("correlation_id", help="the id the gateway answered in X-Correlation-ID")
    parser.add_argument(
        "--component",
        action="append",
        choices=COMPONENTS,
        default=[],
        help="only this component (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _worker_logs(ray_address: str, unreadable: list[str]) -> Iterator[tuple[str, str]]:
    """(node id, text) of every Ray worker's stderr on every live node (``ray_address``: the
    GCS address; the API finds the dashboard from it). A node whose log agent does not
    answer is named in ``unreadable`` and skipped: the rest of the trace still stands."""
    from ray.util.state import get_log, list_logs, list_nodes

    for node in list_nodes(
        address=ray_address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False
    ):
        try:
            files = list_logs(address=ray_address, node_id=node.node_id, glob_filter="worker-*.err")
        except Exception as exc:
            unreadable.append(f"{node.node_id[:12]} ({str(exc).splitlines()[0][:120]})")
            continue
        for name in files.get("worker_err", []):
            try:
                text = "".join(
                    get_log(
                        address=ray_address, node_id=node.node_id, filename=name, errors="replace"
                    )
                )
            except Exception:  # a worker's file rotated or removed meanwhile
                continue
            yield node.node_id, text


async def correlated_events(store: RedisEventStore, correlation_id: str) -> list[Any]:
    """The events whose envelope names ``correlation_id``: the raw log is scanned for the
    id's text first, so only the few that can match are decoded."""
    needle = correlation_id.encode()
    found = []
    after = "0-0"
    while True:
        page = await store.read_raw(after, _PAGE)
        for position, fields in page:
            body = fields.get(b"e") or fields.get("e") or b""
            raw = body.encode() if isinstance(body, str) else bytes(body)
            if needle in raw:
                event = store.codec.decode_stored(position, fields)
                if event.body.get("correlation_id") == correlation_id:
                    found.append(event)
        if len(page) < _PAGE:
            return found
        after = page[-1][0]


def collect(
    ray_address: str | None, events: list[Any], correlation_id: str, unreadable: list[str]
) -> list[TraceEntry]:
    entries = [event_entry(e) for e in events]
    if ray_address:
        for _, text in _worker_logs(ray_address, unreadable):
            entries.extend(log_entries(text, correlation_id))
    return entries


async def run_trace(
    store: RedisEventStore, args: argparse.Namespace, ray_address: str | None
) -> int:
    try:
        correlation_id = str(uuid.UUID(args.correlation_id))
    except ValueError:
        raise KernelhubError(
            f"{args.correlation_id!r} is not a correlation id (a UUID, as in X-Correlation-ID)"
        ) from None
    events = await correlated_events(store, correlation_id)
    unreadable: list[str] = []
    try:
        entries = collect(ray_address, events, correlation_id, unreadable)
    except Exception as exc:  # no dashboard at all
        raise KernelhubError(
            f"Ray's log API at {ray_address} did not answer: {str(exc).splitlines()[0]}"
        ) from None
    for node in unreadable:
        print(f"kh: note: the logs of node {node} could not be read", file=sys.stderr)
    if not ray_address:
        print(
            "kh: note: no Ray cluster known (kh up, or KH_RAY_ADDRESS): events only",
            file=sys.stderr,
        )
    shown = timeline(entries, args.component)
    if not shown:
        where = f" from {', '.join(args.component)}" if args.component else ""
        raise KernelhubError(f"nothing{where} carries correlation id {correlation_id}")
    for entry in shown:
        print(
            json.dumps(entry.model_dump(mode="json"), sort_keys=True)
            if args.json
            else render(entry),
            flush=True,
        )
    return 0
