"""``kh``: the entry point. The client commands (``run``, ``ps``, ...:
:mod:`kernelhub.client_cli`) and the operator's (``up``, ``events``, ...:
:mod:`kernelhub.operator_cli`) under one help; the operator's modules (Ray, the actors) are
imported only when one of their commands runs, so ``kh ps`` starts quickly.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

__all__ = ["main"]

_OPERATOR_COMMANDS = {
    "up": "Start the embedded stack on 127.0.0.1 (Redis, Ray, agents, gateway).",
    "down": "Stop what `kh up` started.",
    "status": "The cluster at a glance (--json).",
    "session": "Sessions through the actors, without the HTTP API (create, show, ...).",
    "agent": "Agents: drain, undrain.",
    "projections": "The read models: status, rebuild, run.",
    "events": "The event log: tail, show, verify, export, import, archive.",
    "replay": "The read models as they were at a past time or position (--as-of).",
    "why": "Why a session waits or ended, from its events.",
    "trace": "Follow one API call (its X-Correlation-ID) through every actor and the log.",
}
"""The operator's commands, each with its own argparse parser (``kh up --help``)."""


def main(argv: Sequence[str] | None = None) -> int:
    from .client_cli.app import add_passthrough, app, run_app

    if not any(c.name in _OPERATOR_COMMANDS for c in app.registered_commands):
        for name, help_text in _OPERATOR_COMMANDS.items():
            add_passthrough(name, help_text, functools.partial(_operator_command, name))
    return run_app(argv)


def _operator_command(name: str, args: list[str]) -> int:
    from .operator_cli import operator_main

    return operator_main([name, *args])


if __name__ == "__main__":
    sys.exit(main())
