"""Which optional parts are installed: ``pip install kernelhub`` is the client (the SDK and
``kh``'s client commands); ``pip install 'kernelhub[server]'`` adds what ``kh up`` and the
operator's commands need (Ray, Redis, Docker's client, ...). Standard library only, so ``kh``
can tell a client install apart before it imports any server module."""

from __future__ import annotations

import importlib.util

__all__ = ["SERVER_EXTRA_HINT", "SERVER_MODULES", "missing_server_module", "server_extra_error"]

SERVER_EXTRA_HINT = "pip install 'kernelhub[server]'"
SERVER_MODULES = ("ray", "redis", "structlog", "aiodocker", "graphql", "cryptography")
"""The modules the server imports unconditionally, each from a distribution of the ``server``
extra (``pyproject.toml``; ``tests/test_client_install.py`` keeps the two in step)."""


def missing_server_module() -> str | None:
    """The first server module that cannot be imported here, or None (the extra is in)."""
    for name in SERVER_MODULES:
        if importlib.util.find_spec(name) is None:
            return name
    return None


def server_extra_error(command: str) -> str | None:
    """One line for ``kh <command>`` when the server extra is missing, else None."""
    if missing_server_module() is None:
        return None
    return f"kh {command} needs the server extra: {SERVER_EXTRA_HINT}"
