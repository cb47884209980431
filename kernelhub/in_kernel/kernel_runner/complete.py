"""Code completion against the live namespace. Unlike upstream's base runner (which never
answers, leaving the agent waiting forever), every request gets a ``completion`` reply,
possibly empty."""

from __future__ import annotations

import keyword
import pkgutil
import re
import rlcompleter
import sys
from typing import Any

_IMPORT = re.compile(r"^\s*(?:import|from)\s+([\w.]*)$")
_FROM_IMPORT = re.compile(r"^\s*from\s+([\w.]+)\s+import\s+(?:.*,\s*)?(\w*)$")
_TOKEN = re.compile(r"[\w.]*$")
_LIMIT = 200


def complete(namespace: dict[str, Any], request: dict[str, Any]) -> list[str]:
    """Completions for the text before the cursor: ``options.line`` up to ``options.col``
    when given (the API's shape), else ``code``."""
    options = request.get("options") or {}
    text = str(request.get("code") or "")
    line = options.get("line")
    if isinstance(line, str) and line:
        col = options.get("col")
        text = line[: int(col)] if isinstance(col, int) and 0 <= col <= len(line) else line
    text = text.splitlines()[-1] if text.splitlines() else ""
    try:
        matches = _complete(namespace, text)
    except Exception:  # completion must never take the runner down
        matches = []
    return sorted(dict.fromkeys(matches))[:_LIMIT]


def _complete(namespace: dict[str, Any], text: str) -> list[str]:
    found = _FROM_IMPORT.match(text)
    if found:
        module = sys.modules.get(found.group(1))
        names = dir(module) if module is not None else _submodules(found.group(1) + ".")
        return [
            n.rsplit(".", 1)[-1] for n in names if n.rsplit(".", 1)[-1].startswith(found.group(2))
        ]
    found = _IMPORT.match(text)
    if found:
        return _submodules(found.group(1))
    token = _TOKEN.search(text)
    prefix = token.group(0) if token else ""
    completer = rlcompleter.Completer(namespace)
    matches = []
    for state in range(_LIMIT):
        match = completer.complete(prefix, state)
        if match is None:
            break
        matches.append(match.rstrip("(").rstrip())
    if not prefix:
        return []
    return [m for m in matches if m not in keyword.kwlist or m.startswith(prefix)]


def _submodules(prefix: str) -> list[str]:
    """Importable module names starting with ``prefix`` (dotted: below an imported package)."""
    if "." in prefix:
        package_name, _, rest = prefix.rpartition(".")
        package = sys.modules.get(package_name)
        path = getattr(package, "__path__", None)
        if path is None:
            return []
        return [
            package_name + "." + m.name
            for m in pkgutil.iter_modules(path)
            if m.name.startswith(rest)
        ]
    names = set(sys.builtin_module_names)
    names.update(m.name for m in pkgutil.iter_modules())
    return [
        n
        for n in names
        if (n.startswith(prefix) and not n.startswith("_"))
        or (prefix.startswith("_") and n.startswith(prefix))
    ]
