"""``kh admin ...``: running a lab from the command line, the operations of the official
client's ``backend.ai admin`` on the same ``POST /admin/gql`` schema, as the configured
keypair (``BACKEND_*`` or ``kh up``'s config file, like every client command).

Nouns, then verbs: ``kh admin user add``, ``kh admin sgroup associate``. Tables by default,
``--json`` everywhere; destructive commands (delete, purge, deactivate, dissociate, dealias)
ask first unless ``--yes``. The commands live in :mod:`.admin_people` (domains, projects,
users), :mod:`.admin_keys` (keypairs, policies, presets) and :mod:`.admin_infra` (scaling
groups, images, agents); what they share in :mod:`.admin_common`; the wire in
:mod:`kernelhub.sdk.admin`. The guide: docs/cli.md, "kh admin".
"""

from __future__ import annotations

import typer

from .admin_infra import agent_app, image_app, sgroup_app
from .admin_keys import keypair_app, policy_app, preset_app
from .admin_people import domain_app, project_app, user_app

__all__ = ["app"]

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    help="Administer users, projects, keypairs, policies, scaling groups, images and agents.",
    no_args_is_help=True,
)
for name, group in (
    ("domain", domain_app),
    ("project", project_app),
    ("user", user_app),
    ("keypair", keypair_app),
    ("policy", policy_app),
    ("preset", preset_app),
    ("sgroup", sgroup_app),
    ("image", image_app),
    ("agent", agent_app),
):
    app.add_typer(group, name=name)
