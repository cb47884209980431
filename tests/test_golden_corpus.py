"""The golden corpus: stored events of every type that the current code must still read.

Each file is a log entry as it sits in Redis. If a change makes one of them undecodable, or
changes the bytes an event encodes to, old logs would break: add an upcaster instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from events import PAYLOAD_TYPES, NewEvent, canonical_dumps, default_codec

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).parent / "fixtures" / "events"
FILES = sorted(CORPUS.glob("*.json"))


def test_every_catalogue_type_has_a_golden_file() -> None:
    covered = {json.loads(path.read_text())["body"]["type"] for path in FILES}
    missing = set(PAYLOAD_TYPES) - covered
    assert not missing, f"add golden files with scripts/add_golden_events.py: {sorted(missing)}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_golden_event_decodes_and_re_encodes_to_the_same_bytes(path: Path) -> None:
    entry = json.loads(path.read_text())
    stored_body = canonical_dumps(entry["body"])
    fields = {
        b"s": entry["stream"].encode(),
        b"v": str(entry["version"]).encode(),
        b"e": stored_body.encode(),
    }
    event = default_codec.decode(entry["position"], fields)
    assert event.type == entry["body"]["type"]
    assert (event.stream, event.version, event.position) == (
        entry["stream"],
        entry["version"],
        entry["position"],
    )
    if event.schema_version == entry["body"]["schema_version"]:
        rewritten = NewEvent(**event.model_dump(include=set(NewEvent.model_fields)))
        assert default_codec.encode(rewritten) == stored_body
