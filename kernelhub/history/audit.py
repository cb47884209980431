"""``kh events checkpoint``, ``kh events verify --from-checkpoint`` and ``kh events audit``:
the log as an audit trail no one can quietly edit (docs/audit.md).

Checkpoints are signed here, on the host, with a key derived from the master key (which
never enters Redis), and kept twice: as a ``log_checkpointed`` event (so the log shows
them) and as a line of ``$KH_DATA_DIR/log-checkpoints.jsonl`` (so deleting them from Redis
is seen). The event goes first: a checkpoint in the file but not in the log is a finding,
one in the log but not in the file is only a crash between the two writes.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events import NewEvent, RedisEventStore, position_key
from events.archive import merged_entries
from events.catalogue import LogCheckpointed, redact
from events.chain import CHECKPOINT_KEY_PURPOSE, ChainBreak, ChainVerifier, sign_checkpoint
from events.chain import signature_holds as _holds
from events.secrets import SecretBox, SecretError

from .positions import position_before
from .render import initiator_text

__all__ = [
    "AUDIT_STREAM",
    "CHECKPOINT_FILE",
    "AuditQuery",
    "audit_trail",
    "checkpoint_key",
    "make_checkpoint",
    "newest_valid_checkpoint",
    "read_checkpoint_file",
    "verify_chain",
]

AUDIT_STREAM = "audit"
"""The stream ``log_checkpointed`` events go to (written by the operator's ``kh``)."""
CHECKPOINT_FILE = "log-checkpoints.jsonl"
MAX_CHECKPOINT_LINES = 1_000_000
MAX_CHECKPOINT_LINE = 1024
_POSITION = re.compile(r"^\d{1,20}-\d{1,20}$")


def checkpoint_key(master_key_path: Path) -> bytes | None:
    """The checkpoints' signing key, or None where there is no master key to derive it
    from (a host that is not the installation's)."""
    try:
        return SecretBox.from_file(master_key_path).derive(CHECKPOINT_KEY_PURPOSE)
    except SecretError:
        return None


def read_checkpoint_file(path: Path) -> list[dict[str, Any]]:
    """The file's checkpoints; a line that is not one is kept as a record whose signature
    cannot hold (the verifier names it), not skipped."""
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    with path.open("rb") as source:
        for number, raw in enumerate(source, 1):
            if number > MAX_CHECKPOINT_LINES:
                break
            try:
                record = json.loads(raw[:MAX_CHECKPOINT_LINE])
                if not isinstance(record, dict) or not _POSITION.match(str(record["position"])):
                    raise ValueError("not a checkpoint")
            except (ValueError, KeyError):
                record = {"position": f"line-{number}", "hash": "", "signature": ""}
            records.append(record)
    return records


async def make_checkpoint(store: RedisEventStore, key: bytes, file: Path) -> dict[str, str]:
    """Sign the chain's head: the event in the log, then the line in the file (fsync'd)."""
    head = await store.chain_head()
    if head is None:
        raise ValueError("the log has no chained entry yet: nothing to sign")
    record = sign_checkpoint(key, *head)
    payload = LogCheckpointed(**record)
    command = uuid.uuid5(uuid.NAMESPACE_URL, f"kernelhub-checkpoint:{head[0]}:{head[1]}")
    event = NewEvent.for_command(command, 0, payload, actor="kh events checkpoint")
    await store.append(AUDIT_STREAM, [event], None)  # a retry of the same head: a duplicate
    file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as out:
        out.write(json.dumps(record, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return record


def newest_valid_checkpoint(
    key: bytes | None, records: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The latest checkpoint of the file whose signature holds."""
    if key is None:
        return None
    valid = [r for r in records if _POSITION.match(str(r["position"])) and _holds(key, r)]
    return max(valid, key=lambda r: position_key(str(r["position"])), default=None)


async def verify_chain(
    store: RedisEventStore, start: Mapping[str, Any] | None
) -> tuple[ChainVerifier, list[ChainBreak], bool]:
    """The chain alone, from ``start`` (a checkpoint) or the first entry: the verifier (its
    counts), the breaks (the log's end against the chain's head too), and whether the
    checkpoint's own entry still carries the signed link. The checkpoint's entry is judged
    with the rest: the walk starts at the entry before it."""
    head = await store.chain_head()  # before the entries: its entry is among them
    begin = None
    after = None
    if start is not None:
        position = str(start["position"])
        before = await _entry_before(store, position)
        if before is not None:
            link = before[1].get(b"h", before[1].get("h"))
            text = link.decode() if isinstance(link, bytes) else str(link or "")
            begin, after = (before[0], text), position_before(before[0])
        else:
            after = position_before(position)
    chain = ChainVerifier(begin)
    if head is not None:
        chain.watch({head[0]})
    breaks: list[ChainBreak] = []
    anchored = start is None
    async for position, fields in merged_entries(store, after=after):
        if start is not None and position == str(start["position"]):
            link = fields.get(b"h", fields.get("h"))
            text = link.decode() if isinstance(link, bytes) else link
            anchored = text == str(start["hash"])
        broken = chain.feed(position, fields)
        if broken is not None:
            breaks.append(broken)
    cut = chain.judge_head(head)
    if cut is not None:
        breaks.append(cut)
    return chain, breaks, anchored


async def _entry_before(
    store: RedisEventStore, position: str
) -> tuple[str, Mapping[Any, Any]] | None:
    """The log's entry just before ``position``, live or archived."""
    from events.archive import archived_entries

    live = await store.read_raw_backwards(position, 1)
    found = live[0] if live else None
    files = await store.archive_files()
    for entry in archived_entries(files, until=position_before(position)):
        if found is None or position_key(entry[0]) > position_key(found[0]):
            found = entry
    return found


@dataclass(frozen=True)
class AuditQuery:
    """``kh events audit``'s filters (all optional; every one given must hold)."""

    who: str | None = None
    """A part of the initiator: email, access key, user id or peer address."""
    what: str | None = None
    """An event type, or a prefix of one ending in ``*`` (``keypair_*``)."""
    since_ms: int | None = None
    about: str | None = None
    """Text the event's (redacted) data or stream mentions (``bob@lab.org``)."""

    def matches_type(self, kind: str) -> bool:
        if self.what is None:
            return True
        if self.what.endswith("*"):
            return kind.startswith(self.what[:-1])
        return kind == self.what


async def audit_trail(store: RedisEventStore, query: AuditQuery) -> AsyncIterator[dict[str, Any]]:
    """Every administrative event (one someone asked for: it names its initiator) that
    the query matches, in log order, archive included, secrets redacted."""
    after = position_before(f"{query.since_ms}-0") if query.since_ms else None
    async for position, fields in merged_entries(store, after=after):
        event = store.codec.decode_stored(position, fields)
        initiator = event.body.get("initiator")
        if not isinstance(initiator, dict) or not query.matches_type(event.type):
            continue
        if query.who is not None:
            values = [str(v) for v in initiator.values() if v is not None]
            if not any(query.who.lower() in v.lower() for v in values):
                continue
        data = redact(event.type, event.data)
        if query.about is not None:
            text = event.stream + " " + json.dumps(data, sort_keys=True)
            if query.about.lower() not in text.lower():
                continue
        yield {
            "position": event.position,
            "time": event.position_ms,
            "who": initiator_text(initiator),
            "initiator": initiator,
            "type": event.type,
            "stream": event.stream,
            "data": data,
        }
