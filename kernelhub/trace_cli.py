"""``kh trace CORRELATION_ID [--component C] [--json]``: one API call through kernelhub.

The gateway answers every call with ``X-Correlation-ID``; the SDK keeps it on the session it
created (``session.correlation_id``) and on every :class:`~kernelhub.sdk.APIError`. This
command gathers, for that id, the log lines of every actor on every live node of the Ray
cluster (their stderr files, read through Ray's log API: a multi-node cluster needs no
shared disk) and the events in the log, and prints them as one timeline. Reading every
worker's log is a diagnostic's cost, not a query's: it grows with the logs kept.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .errors import KernelhubError
from .operator_cli import DataDir, installation_settings, operator_command, with_store

if TYPE_CHECKING:
    from events import RedisEventStore

    from .trace import TraceEntry

__all__ = ["app", "collect", "correlated_events"]

_PAGE = 5000


class Component(StrEnum):
    gateway = "gateway"
    sessions = "sessions"
    scheduler = "scheduler"
    agent = "agent"
    projector = "projector"
    reaper = "reaper"
    tenancy = "tenancy"
    events = "events"


app = typer.Typer(add_completion=False, rich_markup_mode=None)
"""``kh trace``: a top-level command (:mod:`kernelhub.cli` merges it)."""


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
    from .trace import event_entry, log_entries

    entries = [event_entry(e) for e in events]
    if ray_address:
        for _, text in _worker_logs(ray_address, unreadable):
            entries.extend(log_entries(text, correlation_id))
    return entries


@app.command(help="Follow one API call (its X-Correlation-ID) through every actor and the log.")
@operator_command
def trace(
    correlation_id: Annotated[
        str,
        typer.Argument(help="the id the gateway answered in X-Correlation-ID", show_default=False),
    ],
    component: Annotated[
        list[Component] | None,
        typer.Option(
            metavar="COMPONENT", help="only this component (repeatable)", show_default=False
        ),
    ] = None,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """The events from Redis; the actors' logs through Ray's log API on ``kh up``'s head
    (or ``KH_RAY_ADDRESS``, the GCS address of a cluster started otherwise)."""
    from . import cluster, embedded, ray_head

    settings = installation_settings(data_dir=data_dir)
    state = embedded.read_state(settings)
    joined = cluster.read_joined(settings)
    address = (
        os.environ.get("KH_RAY_ADDRESS")
        or (state.ray_address if state else None)
        or (joined.ray_address if joined else None)
    )
    if address:
        ray_head.use_env_for(address)
    components = [c.value for c in component or ()]

    async def run(store: RedisEventStore) -> None:
        await _trace(store, correlation_id, components, as_json, address)

    with_store(settings, run)


async def _trace(
    store: RedisEventStore,
    correlation_id: str,
    components: list[str],
    as_json: bool,
    ray_address: str | None,
) -> None:
    from .trace import render, timeline

    try:
        correlation_id = str(uuid.UUID(correlation_id))
    except ValueError:
        raise KernelhubError(
            f"{correlation_id!r} is not a correlation id (a UUID, as in X-Correlation-ID)"
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
    shown = timeline(entries, components)
    if not shown:
        where = f" from {', '.join(components)}" if components else ""
        raise KernelhubError(f"nothing{where} carries correlation id {correlation_id}")
    for entry in shown:
        print(
            json.dumps(entry.model_dump(mode="json"), sort_keys=True) if as_json else render(entry),
            flush=True,
        )
