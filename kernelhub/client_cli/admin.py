"""``kh admin ...``: running a lab from the command line (placeholder until it lands)."""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    help="Administer users, projects, keypairs, policies, scaling groups, images and agents.",
    no_args_is_help=True,
)
