"""``kh``: one typer app. The client commands (``run``, ``ps``, ...:
:mod:`kernelhub.client_cli`) go through the HTTP API with the SDK; the operator's act on the
installation: ``up``, ``down`` and ``status`` (:mod:`.operator_cli`), the groups ``session``
(:mod:`.session_cli`), ``agent`` (:mod:`.agent_cli`), ``projections``
(:mod:`.projections_cli`) and ``events`` (:mod:`.events_cli`, with ``replay`` and ``why``),
and ``trace`` (:mod:`.trace_cli`). Their modules import the server's (Ray, the actors,
Redis) only when one of their commands runs, so ``kh ps`` starts quickly.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer

from . import (
    agent_cli,
    events_cli,
    operator_cli,
    projections_cli,
    session_cli,
    trace_cli,
    whatif_cli,
)
from .client_cli.admin import app as admin_app
from .client_cli.app import EXIT
from .client_cli.app import app as client_app
from .client_cli.service import app as service_app
from .client_cli.vfolder import app as vfolder_app
from .extras import server_extra_error

__all__ = ["app", "main"]

app = typer.Typer(
    name="kh",
    help="kernelhub: event-sourced compute sessions on Ray and Redis.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(client_app)  # run, ps, info, rm, logs, exec, upload, download, ls, app, watch
app.add_typer(operator_cli.app)  # up, down, status
app.add_typer(session_cli.app, name="session")
app.add_typer(agent_cli.app, name="agent")
app.add_typer(projections_cli.app, name="projections")
app.add_typer(events_cli.app, name="events")
app.add_typer(events_cli.history_app)  # replay, why
app.add_typer(trace_cli.app)  # trace
app.add_typer(whatif_cli.app)  # whatif, import-trace
app.add_typer(admin_app, name="admin")
app.add_typer(vfolder_app, name="vfolder")
app.add_typer(service_app, name="service")


CLIENT_GROUPS = ("admin", "vfolder", "service")
"""Groups that, like the client's commands, only talk to a gateway (``kh admin`` goes
through ``POST /admin/gql``, ``kh vfolder`` through ``/folders``, ``kh service`` through
``/services``, with the caller's keypair): no server extra needed."""


def _is_operator_command(root: Any, name: str) -> bool:
    """Every command but the client's acts on the installation, with the server's modules."""
    client = typer.main.get_command(client_app)
    if name in CLIENT_GROUPS:
        return False
    return name in getattr(root, "commands", {}) and name not in getattr(client, "commands", {})


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kh``; returns the exit code (usage errors: 2, with click's message)."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:  # the help, on stdout, and the usage exit code
        command.main(args=["--help"], prog_name="kh", standalone_mode=False)
        return EXIT["usage"]
    if _is_operator_command(command, args[0]) and (missing := server_extra_error(args[0])):
        print(f"kh: error: {missing}", file=sys.stderr)  # a client install: no server modules
        return EXIT["user"]
    try:
        result = command.main(args=args, prog_name="kh", standalone_mode=False)
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.Abort:
        return 130
    except typer.TyperException as error:  # click's usage errors (typer vendors click)
        show = getattr(error, "show", None)
        if show is not None:
            show()
        return int(getattr(error, "exit_code", EXIT["usage"]))
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
