"""The shape the code keeps (issue 27): every Redis key is spelled in ``events/keys.py``, and
nothing outside ``events/`` touches a Redis client (the store gives each thing kept beside
the log a named home: clock, telemetry, idle activity, follower positions, install facts,
read-model storage, rate limits).

Pure source checks: no Redis, no Ray.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from events.keys import GENERATION_SEGMENTS, TOP_SEGMENTS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actors", "events", "kernelhub", "projections")
"""The product's code. ``bench/`` is outside on purpose (its baselines are raw ``XADD`` and raw
reads, measured against the store), and so is ``tests/`` (some read the Redis layout
directly, to check it is the one the store promises)."""
KEYS_MODULE = ROOT / "events" / "keys.py"

RAW_CLIENT_ALLOWED: dict[str, str] = {}
"""Files outside ``events/`` allowed a raw Redis client, with why (none, and so it stays)."""

_SEGMENTS = "|".join(sorted({*TOP_SEGMENTS, *GENERATION_SEGMENTS}, key=len, reverse=True))
_HOLE = "\x00"
"""Stands for an f-string's formatted value in the text a literal is matched against."""
_KEY_PATTERNS = (
    # "<prefix>:<segment>..." or ":<segment>": a key built on a prefix
    re.compile(rf"^(?:[A-Za-z0-9_]+|{_HOLE})?:(?:{_SEGMENTS})(?::|$)"),
    # "i:..." / "r:...": a key relative to a projection generation
    re.compile(r"^[ir]:"),
)


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the constants that are docstrings (module, class, function, attribute)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for statement in body:
            if (
                isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)
            ):
                found.add(id(statement.value))
    return found


def _literal_texts(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string literal that is not a docstring; an f-string's text has
    each formatted value replaced by a hole."""
    skip = _docstrings(tree)
    inside_fstrings: set[int] = set()
    texts: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside_fstrings.add(id(value))
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                else:
                    parts.append(_HOLE)
            texts.append((node.lineno, "".join(parts)))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and id(node) not in inside_fstrings
        ):
            texts.append((node.lineno, node.value))
    return texts


def key_literals(source: str, name: str) -> list[str]:
    """``name:line: text`` of each string literal in ``source`` shaped like a Redis key."""
    return [
        f"{name}:{line}: {text.replace(_HOLE, '{…}')!r}"
        for line, text in _literal_texts(ast.parse(source, filename=name))
        if any(pattern.search(text) for pattern in _KEY_PATTERNS)
    ]


def raw_client_uses(source: str, name: str) -> list[str]:
    """``name:line: what`` of each import of the Redis client library and each ``.redis``
    attribute (the store's raw client) in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "redis" or alias.name.startswith("redis."):
                    found.append(f"{name}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and (module == "redis" or module.startswith("redis.")):
                found.append(f"{name}:{node.lineno}: from {module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr == "redis":
            found.append(f"{name}:{node.lineno}: .redis")
    return found


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_no_redis_key_literal_outside_events_keys() -> None:
    found = [
        hit
        for path in _sources()
        if path != KEYS_MODULE
        for hit in key_literals(_read(path), _relative(path))
    ]
    assert not found, "Redis keys are spelled in events/keys.py only:\n" + "\n".join(found)


def test_no_raw_redis_client_outside_events() -> None:
    found = [
        hit
        for path in _sources()
        if not _relative(path).startswith("events/") and _relative(path) not in RAW_CLIENT_ALLOWED
        for hit in raw_client_uses(_read(path), _relative(path))
    ]
    assert not found, (
        "outside events/ the store's named homes are used, never a Redis client:\n"
        + "\n".join(found)
    )


@pytest.mark.parametrize(
    "source",
    [
        'key = f"{prefix}:i:status:{status}"',
        'key = prefix + ":ckpt"',
        'key = self._prefix(name, generation) + ":meta"',
        'keys = [f"{self.prefix}:ratelimit:{access_key}", f"{self.prefix}:ratelimit:seq"]',
        'entries = {("i:all", sid): 0}',
        'entries = {(f"i:sg:{group}", sid): 0}',
        'key = "kh:gateway:port"',
        'key = f"{p}:logs:{kernel}"',
        'raw = await redis.hget(f"{prefix}:r:{kind}", record_id)',
    ],
)
def test_the_key_check_catches_a_literal(source: str) -> None:
    """What the check finds: key literals the code held before issue 27."""
    assert key_literals(source, "probe.py"), f"{source!r} went unnoticed"


@pytest.mark.parametrize(
    "source",
    [
        "import redis",
        "import redis.asyncio as aioredis",
        "from redis.exceptions import WatchError",
        "value = await store.redis.get(key)",
        "pipe = self.store.redis.pipeline(transaction=False)",
    ],
)
def test_the_client_check_catches_a_use(source: str) -> None:
    assert raw_client_uses(source, "probe.py"), f"{source!r} went unnoticed"


def test_ordinary_strings_are_not_keys() -> None:
    """Stream names, positions, scopes and log messages pass."""
    source = (
        'a = f"session-{sid}"\nb = "0-0"\nc = f"keypair:{ak}"\nd = "projection halted"\n'
        'e = f"{name}: {reason}"\nf = "image:latest"\ng = "redis://127.0.0.1:6379/0"\n'
        'def h():\n    """Keys ``<p>:idle:due`` and ``i:all`` named in a docstring."""\n'
    )
    assert key_literals(source, "probe.py") == []
    assert (
        raw_client_uses("from .store import RedisEventStore\nurl = settings.redis_url\n", "p") == []
    )
