"""``kh admin sgroup|image|agent ...``: the machines and what runs on them (scaling groups
and who may use them, images and their aliases, agents with their live slots), as
``backend.ai admin scaling-group|image|agent`` administer them.

A scaling group is opened to domains, projects and keypairs by associating it; a session may
use the union of those open to its domain, project and keypair.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .admin_common import (
    Column,
    JsonFlag,
    Limit,
    Offset,
    Yes,
    confirm,
    connected,
    field,
    handled,
    parse_json_object,
    print_listing,
    print_mutation,
    print_page,
    print_record,
    show,
)
from .app import usage

__all__ = ["agent_app", "image_app", "sgroup_app"]

sgroup_app = typer.Typer(help="Scaling groups and who may use them.", no_args_is_help=True)
image_app = typer.Typer(help="Images and their aliases.", no_args_is_help=True)
agent_app = typer.Typer(help="Agents and their slots.", no_args_is_help=True)

# ---- scaling groups ---------------------------------------------------------------------------
SGROUP_COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("ACTIVE", field("is_active")),
    ("PUBLIC", field("is_public")),
    ("SCHEDULER", field("scheduler")),
    ("DRIVER", field("driver")),
    ("DESCRIPTION", field("description")),
]
SCHEDULERS = ("fifo", "lifo", "drf", "mof", "fair_share")
Scheduler = Annotated[
    str | None, typer.Option("--scheduler", help="fifo, lifo, drf, mof or fair_share")
]
JsonOpts = Annotated[str | None, typer.Option(help="a JSON object")]
WsproxyAddr = Annotated[str | None, typer.Option("--wsproxy-addr", help="app proxy address")]
WsproxyToken = Annotated[str | None, typer.Option("--wsproxy-api-token")]


def _scheduler(value: str | None) -> str | None:
    if value is not None and value not in SCHEDULERS:
        usage(f"--scheduler {value!r}: one of {', '.join(SCHEDULERS)}")
    return value


def _opts(text: str | None, flag: str) -> dict[str, object] | None:
    return None if text is None else parse_json_object(text, flag)


@sgroup_app.command("list", help="List the scaling groups.")
@handled
def sgroup_list(as_json: JsonFlag = False) -> None:
    with connected() as admin:
        print_listing(SGROUP_COLUMNS, admin.scaling_groups(), as_json)


@sgroup_app.command("info", help="Show one scaling group.")
@handled
def sgroup_info(name: str, as_json: JsonFlag = False) -> None:
    with connected() as admin:
        print_record(admin.scaling_group(name), as_json)


@sgroup_app.command("add", help="Create a scaling group (open it to someone with associate).")
@handled
def sgroup_add(
    name: str,
    description: Annotated[str, typer.Option("-d", "--description")] = "",
    inactive: Annotated[bool, typer.Option("-i", "--inactive", help="created inactive")] = False,
    private: Annotated[
        bool, typer.Option("-p", "--private", help="hidden from users' session creation")
    ] = False,
    driver: Annotated[str, typer.Option("--driver")] = "static",
    driver_opts: JsonOpts = None,
    scheduler: Scheduler = None,
    scheduler_opts: JsonOpts = None,
    use_host_network: Annotated[bool, typer.Option("--use-host-network")] = False,
    wsproxy_addr: WsproxyAddr = None,
    wsproxy_api_token: WsproxyToken = None,
    as_json: JsonFlag = False,
) -> None:
    chosen = _scheduler(scheduler) or "fifo"
    driver_options = _opts(driver_opts, "--driver-opts")
    scheduler_options = _opts(scheduler_opts, "--scheduler-opts")
    with connected() as admin:
        answer = admin.create_scaling_group(
            name,
            description=description,
            is_active=not inactive,
            is_public=not private,
            driver=driver,
            driver_opts=driver_options,
            scheduler=chosen,
            scheduler_opts=scheduler_options,
            use_host_network=use_host_network,
            wsproxy_addr=wsproxy_addr,
            wsproxy_api_token=wsproxy_api_token,
        )
    print_mutation(answer, f"scaling group {name} created", as_json)


@sgroup_app.command("update", help="Change a scaling group (only what is given).")
@handled
def sgroup_update(
    name: str,
    description: Annotated[str | None, typer.Option("-d", "--description")] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive")] = None,
    public: Annotated[bool | None, typer.Option("--public/--private")] = None,
    driver: Annotated[str | None, typer.Option("--driver")] = None,
    driver_opts: JsonOpts = None,
    scheduler: Scheduler = None,
    scheduler_opts: JsonOpts = None,
    use_host_network: Annotated[
        bool | None, typer.Option("--use-host-network/--no-use-host-network")
    ] = None,
    wsproxy_addr: WsproxyAddr = None,
    wsproxy_api_token: WsproxyToken = None,
    as_json: JsonFlag = False,
) -> None:
    chosen = _scheduler(scheduler)
    driver_options = _opts(driver_opts, "--driver-opts")
    scheduler_options = _opts(scheduler_opts, "--scheduler-opts")
    with connected() as admin:
        answer = admin.update_scaling_group(
            name,
            description=description,
            is_active=active,
            is_public=public,
            driver=driver,
            driver_opts=driver_options,
            scheduler=chosen,
            scheduler_opts=scheduler_options,
            use_host_network=use_host_network,
            wsproxy_addr=wsproxy_addr,
            wsproxy_api_token=wsproxy_api_token,
        )
    print_mutation(answer, f"scaling group {name} updated", as_json)


@sgroup_app.command("delete", help="Remove a scaling group (and its associations).")
@handled
def sgroup_delete(name: str, yes: Yes = False, as_json: JsonFlag = False) -> None:
    confirm(f"delete scaling group {name}", yes)
    with connected() as admin:
        answer = admin.delete_scaling_group(name)
    print_mutation(answer, f"scaling group {name} deleted", as_json)


Domains = Annotated[list[str] | None, typer.Option("--domain", help="a domain (repeatable)")]
Projects = Annotated[
    list[str] | None, typer.Option("--project", help="a project's id or name (repeatable)")
]
Keypairs = Annotated[list[str] | None, typer.Option("--keypair", help="an access key (repeatable)")]
InDomain = Annotated[str | None, typer.Option("--in-domain", help="the domain of --project names")]


def _targets(
    domains: list[str] | None, projects: list[str] | None, keypairs: list[str] | None
) -> list[tuple[str, str]]:
    targets = [
        *(("domain", d) for d in domains or []),
        *(("project", p) for p in projects or []),
        *(("keypair", k) for k in keypairs or []),
    ]
    if not targets:
        usage("name at least one --domain, --project or --keypair")
    return targets


def _checked_in_domain(in_domain: str | None, projects: list[str] | None) -> None:
    if in_domain is not None and not projects:
        usage("--in-domain names the domain of --project names: give a --project")


@sgroup_app.command("associate", help="Open a scaling group to domains, projects or keypairs.")
@handled
def sgroup_associate(
    name: str,
    domain: Domains = None,
    project: Projects = None,
    keypair: Keypairs = None,
    in_domain: InDomain = None,
    as_json: JsonFlag = False,
) -> None:
    targets = _targets(domain, project, keypair)
    _checked_in_domain(in_domain, project)
    answers = []
    with connected() as admin:
        for kind, target in targets:
            ref = admin.project(target, in_domain)["id"] if kind == "project" else target
            answers.append(admin.associate_scaling_group(name, kind, str(ref)))
            if not as_json:
                print(f"scaling group {name} open to {kind} {target}")
    if as_json:
        print_listing([], answers, True)


@sgroup_app.command("dissociate", help="Close a scaling group to domains, projects or keypairs.")
@handled
def sgroup_dissociate(
    name: str,
    domain: Domains = None,
    project: Projects = None,
    keypair: Keypairs = None,
    in_domain: InDomain = None,
    yes: Yes = False,
    as_json: JsonFlag = False,
) -> None:
    targets = _targets(domain, project, keypair)
    _checked_in_domain(in_domain, project)
    named = ", ".join(f"{kind} {target}" for kind, target in targets)
    confirm(f"close scaling group {name} to {named}", yes)
    answers = []
    with connected() as admin:
        for kind, target in targets:
            ref = admin.project(target, in_domain)["id"] if kind == "project" else target
            answers.append(admin.dissociate_scaling_group(name, kind, str(ref)))
            if not as_json:
                print(f"scaling group {name} closed to {kind} {target}")
    if as_json:
        print_listing([], answers, True)


# ---- images -----------------------------------------------------------------------------------
IMAGE_COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("TAG", field("tag")),
    ("ARCH", field("architecture")),
    ("REGISTRY", field("registry")),
    ("ALIASES", field("aliases")),
    ("DIGEST", lambda r: show(r.get("digest"))[:19]),
]


@image_app.command("list", help="List the registered images.")
@handled
def image_list(
    operation: Annotated[bool, typer.Option("--operation", help="operational images only")] = False,
    as_json: JsonFlag = False,
) -> None:
    with connected() as admin:
        print_listing(IMAGE_COLUMNS, admin.images(operation=operation), as_json)


@image_app.command("alias", help="Name an image by an alias (e.g. python -> python:3.11).")
@handled
def image_alias(
    alias: str,
    target: Annotated[str, typer.Argument(help="the image it stands for")],
    arch: Annotated[str | None, typer.Option("--arch", help="the image's architecture")] = None,
    as_json: JsonFlag = False,
) -> None:
    with connected() as admin:
        answer = admin.alias_image(alias, target, architecture=arch)
    print_mutation(answer, f"alias {alias} -> {target}", as_json)


@image_app.command("dealias", help="Remove an image alias.")
@handled
def image_dealias(alias: str, yes: Yes = False, as_json: JsonFlag = False) -> None:
    confirm(f"remove alias {alias}", yes)
    with connected() as admin:
        answer = admin.dealias_image(alias)
    print_mutation(answer, f"alias {alias} removed", as_json)


# ---- agents -----------------------------------------------------------------------------------
AGENT_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("STATUS", field("status")),
    ("SCALING GROUP", field("scaling_group")),
    ("AVAILABLE", field("available_slots")),
    ("OCCUPIED", field("occupied_slots")),
]


@agent_app.command("list", help="List agents (ALIVE unless --status) with their slots.")
@handled
def agent_list(
    status: Annotated[str, typer.Option(help="ALIVE, LOST, RESTARTING or TERMINATED")] = "ALIVE",
    scaling_group: Annotated[str | None, typer.Option("--scaling-group")] = None,
    filter_: Annotated[str | None, typer.Option("--filter")] = None,
    order: Annotated[str | None, typer.Option("--order")] = None,
    limit: Limit = 20,
    offset: Offset = 0,
    as_json: JsonFlag = False,
) -> None:
    with connected() as admin:
        page = admin.agents(
            status=status,
            scaling_group=scaling_group,
            filter=filter_,
            order=order,
            limit=limit,
            offset=offset,
        )
    print_page(AGENT_COLUMNS, page, as_json)


@agent_app.command("info", help="Show one agent.")
@handled
def agent_info(agent_id: str, as_json: JsonFlag = False) -> None:
    with connected() as admin:
        print_record(admin.agent(agent_id), as_json)
