"""``kh events export`` / ``kh events import``: the log as JSON lines, and back.

Each line is one entry as the log holds it: ``{"position", "stream", "version", "time",
"body"}``, the golden corpus's shape. Secrets are redacted (``***``) unless
``--with-secrets`` is given. A backup needs them, and it holds only ciphertext: the master
key never leaves ``$KH_DATA_DIR``.

Import goes into an **empty** store and keeps every position, so checkpoints, references and
"as of" answers mean the same afterwards. The whole file is checked before anything is
written:
- every line decodes with the current code;
- each stream's versions are contiguous;
- positions increase;
- no line is redacted.

A bad file loses nothing: the store stays empty. The writes then copy what an append
leaves: the log entry, the stream's index and the event-id record, in batches.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from events import RedisEventStore, position_key
from events.archive import entry_fields, merged_entries
from events.catalogue import SECRET_FIELDS
from events.secrets import REDACTED

from .render import event_json

__all__ = ["ImportRefused", "export_log", "import_log"]

_PAGE = 2000
Progress = Callable[[int, int], None]


class ImportRefused(Exception):
    """The file cannot be imported (named line and why); nothing was written."""


async def export_log(
    store: RedisEventStore,
    out: TextIO,
    *,
    with_secrets: bool = False,
    progress: Progress | None = None,
) -> int:
    """Write every event, in log order (the archived ones in their place), one JSON
    object per line; how many."""
    files = await store.archive_files()
    total = await store.log_length() + sum(f.events for f in files)
    done = 0
    async for position, fields in merged_entries(store):
        event = store.codec.decode_stored(position, fields)
        entry = event_json(event, with_secrets=with_secrets, fields=fields)
        out.write(json.dumps(entry, sort_keys=True))
        out.write("\n")
        done += 1
        if progress and (done % _PAGE == 0 or done == total):
            progress(done, total)
    if progress and done != total:
        progress(done, done)
    return done


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as source:
        for number, text in enumerate(source, 1):
            if not text.strip():
                continue
            try:
                entry = json.loads(text)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                raise ImportRefused(f"line {number}: not a JSON object ({exc})") from None
            yield number, entry


def _fields(entry: dict[str, Any]) -> dict[Any, Any]:
    return entry_fields(entry)


def _check(store: RedisEventStore, path: Path) -> int:
    """Every line decodes and fits; the number of events."""
    versions: dict[str, int] = {}
    last = (0, 0)
    count = 0
    for number, entry in _lines(path):
        try:
            position = str(entry["position"])
            event = store.codec.decode(position, _fields(entry))
        except (KeyError, TypeError) as exc:
            raise ImportRefused(f"line {number}: missing {exc}") from None
        except ValueError as exc:
            raise ImportRefused(f"line {number}: {exc}") from None
        if position_key(position) <= last:
            raise ImportRefused(f"line {number}: position {position} does not follow the last")
        last = position_key(position)
        if event.version != versions.get(event.stream, 0) + 1:
            raise ImportRefused(
                f"line {number}: {event.stream} version {event.version} where "
                f"{versions.get(event.stream, 0) + 1} was next"
            )
        versions[event.stream] = event.version
        secret = SECRET_FIELDS.get(event.type) or ()
        data = event.data.data_dict()  # what will be stored (a line's stored_body, if any)
        body = entry.get("body")
        if not isinstance(body, dict) or str(event.event_id) != str(body.get("event_id")):
            raise ImportRefused(f"line {number}: its stored bytes are another event's")
        if any(data.get(name) == REDACTED for name in secret):
            raise ImportRefused(
                f"line {number}: {event.type} has its secrets redacted: import "
                "an export made with --with-secrets"
            )
        count += 1
    return count


async def _batches(path: Path) -> AsyncIterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for _, entry in _lines(path):
        batch.append(entry)
        if len(batch) == _PAGE:
            yield batch
            batch = []
    if batch:
        yield batch


async def import_log(store: RedisEventStore, path: Path, progress: Progress | None = None) -> int:
    """Load an export into an empty store, positions kept; how many events."""
    if await store.log_length():
        raise ImportRefused("the store already holds a log: import goes into an empty one")
    total = _check(store, path)
    done = 0
    async for batch in _batches(path):
        await store.import_entries(
            [
                (
                    str(entry["position"]),
                    str(entry["stream"]),
                    entry["version"],
                    entry["body"]["event_id"],
                    _fields(entry),
                )
                for entry in batch
            ]
        )
        done += len(batch)
        if progress:
            progress(done, total)
    await store.restore_chain_head()
    return done
