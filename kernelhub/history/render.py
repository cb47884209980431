"""One readable line per event (``kh events tail``, ``kh events show``), or one JSON object.

The line shows the time (the log's clock), the stream, the version, the type and the
fields worth reading: scalars as they are (ids shortened to 8 characters), lists by their
length, and small flat objects inline. Secrets are always redacted: a tail is for
watching, never for copying keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from events import StoredEvent, canonical_dumps
from events.catalogue import redact

from .positions import iso_ms

__all__ = ["event_json", "event_line", "short_stream"]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_COLOURS = {"session": "32", "kernel": "36", "agent": "33", "alloc": "35"}
_ALARMS = ("cancelled", "failure", "failed", "error", "terminated")
_SKIP = frozenset({"spec", "creation_info"})
"""Fields too large for a line (``kh events show --json`` has them whole)."""


def _short(value: Any) -> str:
    if isinstance(value, str):
        if _UUID.match(value):
            return value[:8]
        return value if len(value) <= 48 else value[:45] + "..."
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value)


def _field(name: str, value: Any) -> str | None:
    if name in _SKIP:
        return None
    if isinstance(value, list):
        return f"{name}=[{len(value)}]"
    if isinstance(value, dict):
        flat = [(k, v) for k, v in value.items() if not isinstance(v, dict | list)]
        if not value or len(flat) != len(value) or len(flat) > 4:
            return f"{name}={{{len(value)}}}"
        return f"{name}={{{','.join(f'{k}={_short(v)}' for k, v in flat)}}}"
    return f"{name}={_short(value)}"


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if colour else text


def short_stream(stream: str) -> str:
    """A stream named by a UUID, shortened for a line (``session-0d7aba72``)."""
    kind, _, name = stream.partition("-")
    return f"{kind}-{name[:8]}" if _UUID.match(name) else stream


def event_line(event: StoredEvent, *, colour: bool = False) -> str:
    data = redact(event.type, event.data)
    own = event.stream.partition("-")[2]
    fields = [
        f
        for k, v in sorted(data.items())
        if not (k == "session_id" and str(v) == own) and (f := _field(k, v))
    ]
    kind = event.type.split("_", 1)[0]
    code = "31" if event.type.endswith(_ALARMS) else _COLOURS.get(kind, "34")
    stream = short_stream(event.stream)
    by = initiator_text(event.body.get("initiator"))
    return "  ".join(
        [
            _paint(iso_ms(event.position_ms), "2", colour),
            f"{stream:18}",
            f"v{event.version:<3}",
            _paint(f"{event.type:26}", code, colour),
            " ".join(fields),
            _paint(f"by={by}", "2", colour) if by else "",
        ]
    ).rstrip()


def initiator_text(initiator: Any) -> str | None:
    """Who asked for an event, in one token: ``root@lab.org/AKIA...@127.0.0.1`` (the
    envelope's ``initiator``; ``None`` for events no one asked for through the API)."""
    if not isinstance(initiator, dict):
        return None
    who = "/".join(str(initiator[k]) for k in ("email", "access_key") if initiator.get(k))
    peer = initiator.get("peer")
    return f"{who or 'unknown'}@{peer}" if peer else who or None


def event_json(
    event: StoredEvent, *, with_secrets: bool = False, fields: Mapping[Any, Any] | None = None
) -> dict[str, Any]:
    """The event as the log holds it (``position``, ``stream``, ``version``, ``body``),
    secrets redacted unless asked for: the export format and ``--json``. Given the entry's
    raw ``fields``, its hash-chain link too (``chain``), and, with secrets, the body's
    stored bytes when they are not the body's canonical form (an event an upcaster read:
    the link is over the bytes as stored, so a copy keeps them)."""
    body = dict(event.body)
    if not with_secrets:
        body["data"] = redact(event.type, event.data)
    entry: dict[str, Any] = {
        "position": event.position,
        "stream": event.stream,
        "version": event.version,
        "time": iso_ms(event.position_ms),
        "body": body,
    }
    if fields is not None:
        link = fields.get(b"h", fields.get("h"))
        if link is not None:
            entry["chain"] = link.decode() if isinstance(link, bytes) else str(link)
        raw = fields.get(b"e", fields.get("e"))
        stored = raw.decode() if isinstance(raw, bytes) else str(raw)
        if with_secrets and stored != canonical_dumps(body):
            entry["stored_body"] = stored
    return entry
