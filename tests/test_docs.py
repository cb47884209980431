"""The deviations table promises a test per row: every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[1]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?((?:::\w+)+)`")


def test_every_test_named_in_the_deviations_table_exists() -> None:
    table = (ROOT / "docs" / "deviations.md").read_text()
    named = 0
    for row in (line for line in table.splitlines() if line.startswith("| ")):
        current: str | None = None
        for path, parts in REFERENCE.findall(row):
            current = path or current
            assert current is not None, f"a test named without its file: {parts}"
            source = (ROOT / current).read_text()
            for name in parts.strip(":").split("::"):
                assert re.search(rf"(def|class) {name}\b", source), f"{current}::{name} missing"
                named += 1
    assert named >= 20
