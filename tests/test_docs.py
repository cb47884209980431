"""The docs' words resolve: the deviations table names tests that exist, and every repository
path a page or the code names is there to open."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[1]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?((?:::\w+)+)`")
QUOTED = re.compile(r"`([^`\s]+)`")
TOP = ("actors/", "events/", "projections/", "kernelhub/", "tests/", "scripts/", "bench/", "docs/")
CODE_DIRS = ("actors", "events", "projections", "kernelhub", "tests", "bench", "scripts")
DOC_LINK = re.compile(r"\bdocs/([\w-]+\.md)")
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


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


def _repository_paths(text: str) -> set[str]:
    """The repository paths quoted in ``text`` (`actors/...`, `tests/x.py::test`): not image
    names (`kernelhub/python:3.11`), globs or placeholders."""
    found = set()
    for quoted in QUOTED.findall(text):
        path = quoted.split("::", 1)[0].rstrip(".,")
        if not path.startswith(TOP) or any(c in path for c in "*<>{}:$"):
            continue
        found.add(path)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_a_page_names_exists(page: Path) -> None:
    missing = sorted(p for p in _repository_paths(page.read_text()) if not (ROOT / p).exists())
    assert not missing, f"{page.name} names paths that are not in the repository: {missing}"


def test_every_docs_page_the_code_cites_exists() -> None:
    cited: dict[str, str] = {}
    for top in CODE_DIRS:
        for source in (ROOT / top).rglob("*"):
            if source.suffix not in (".py", ".sh", ".lua", ".toml") or ".venv" in source.parts:
                continue
            for name in DOC_LINK.findall(source.read_text(errors="replace")):
                cited.setdefault(name, str(source.relative_to(ROOT)))
    missing = {name: where for name, where in cited.items() if not (ROOT / "docs" / name).exists()}
    assert not missing, f"cited docs pages that do not exist: {missing}"
    assert "architecture.md" in {p.name for p in (ROOT / "docs").glob("*.md")}


UNOPENABLE = re.compile(
    r"design\.md|wire spec|seed API|API spec|spec §|§|seed-[a-z-]+\.md|manager-core|kernel spec|"
    r"later issues|plain class for now|comes with the write side"
)
"""Citations of the design notes and spec digests kernelhub was written from, which a reader
of the repository cannot open (docs/architecture.md and docs/upstream.md say it instead),
and lines that promise work to come."""


def test_no_citation_of_what_a_reader_cannot_open() -> None:
    found: dict[str, str] = {}
    for top in (*CODE_DIRS, "Makefile", "pyproject.toml", ".ci"):
        base = ROOT / top
        for source in [base] if base.is_file() else base.rglob("*"):
            if not source.is_file() or source.suffix not in (".py", ".sh", ".lua", ".toml", ""):
                continue
            name = str(source.relative_to(ROOT))
            if name == "tests/test_docs.py" or "__pycache__" in name:
                continue
            match = UNOPENABLE.search(source.read_text(errors="replace"))
            if match:
                found[name] = match.group(0)
    assert not found, f"cite docs/architecture.md or docs/upstream.md instead: {found}"
