"""The master key file: created once, whole, even when several processes start at once
(the tenancy and gateway actors do, and the loser used to die in its constructor)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from events.secrets import SecretBox

pytestmark = pytest.mark.unit

_KEYS = 300
"""Fresh key files each process races for: enough collisions to hit the window between
"it does not exist" and "create it", which one pair of processes rarely does."""


def _race(root: str, start: object, results: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    tokens = []
    for index in range(_KEYS):
        try:
            box = SecretBox.from_file(Path(root) / f"k{index}" / "master.key", create=True)
            tokens.append(box.encrypt("probe"))
        except Exception as exc:  # the old race: FileExistsError, or a half-written key
            tokens.append(f"failed: {exc!r}")
    results.put(tokens)  # type: ignore[attr-defined]


def test_processes_racing_to_create_the_key_all_get_the_same_one(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(target=_race, args=(str(tmp_path), start, results)) for _ in range(6)
    ]
    for worker in workers:
        worker.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    failures = [t for tokens in outcomes for t in tokens if t.startswith("failed")]
    assert not failures, failures[:3]
    for index in range(_KEYS):  # every process encrypted with the one key on disk
        path = tmp_path / f"k{index}" / "master.key"
        box = SecretBox.from_file(path)
        assert {box.decrypt(tokens[index]) for tokens in outcomes} == {"probe"}
        assert path.stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in path.parent.iterdir()) == ["master.key"]  # no temp left
