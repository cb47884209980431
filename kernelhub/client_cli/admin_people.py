"""``kh admin domain|project|user ...``: who is in the lab (23.03's domains, groups and users,
as ``backend.ai admin domain|group|user`` administers them).

A project is named by its id or its name (``--domain`` tells same-named ones apart); a user by
e-mail. Deleting deactivates (the record stays, sign-in and keypairs stop); purging removes.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from ..sdk.admin import Admin
from .admin_common import (
    Column,
    Force,
    JsonFlag,
    Limit,
    Offset,
    Yes,
    confirm,
    connected,
    default_domain,
    field,
    handled,
    new_password,
    parse_json_object,
    parse_slots,
    print_listing,
    print_mutation,
    print_page,
    print_record,
    show,
    split_list,
)
from .app import usage

__all__ = ["domain_app", "project_app", "user_app"]

domain_app = typer.Typer(help="Domains (superadmin).", no_args_is_help=True)
project_app = typer.Typer(help="Projects (23.03's groups) and their members.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)

Slots = Annotated[
    str | None,
    typer.Option(
        "--total-resource-slots", help="a cap, e.g. cpu=8,mem=32g,cuda.device=2 (or JSON)"
    ),
]
VfolderHosts = Annotated[
    str | None, typer.Option("--allowed-vfolder-hosts", help="a JSON object: host -> permissions")
]
Description = Annotated[str | None, typer.Option("-d", "--description")]
Active = Annotated[bool | None, typer.Option("--active/--inactive", help="(de)activate")]
DomainOpt = Annotated[
    str | None, typer.Option("--domain", help="the domain (default: BACKEND_DOMAIN or default)")
]
ProjectRef = Annotated[str, typer.Argument(help="the project's id or name", metavar="PROJECT")]


def _slots(text: str | None) -> dict[str, str] | None:
    return None if text is None else parse_slots(text, "--total-resource-slots")


def _hosts(text: str | None) -> dict[str, object] | None:
    return None if text is None else parse_json_object(text, "--allowed-vfolder-hosts")


# ---- domains ----------------------------------------------------------------------------------
DOMAIN_COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("ACTIVE", field("is_active")),
    ("SLOTS", field("total_resource_slots")),
    ("REGISTRIES", field("allowed_docker_registries")),
    ("DESCRIPTION", field("description")),
    ("CREATED", field("created_at")),
]


@domain_app.command("list", help="List the domains.")
@handled
def domain_list(as_json: JsonFlag = False) -> None:
    with connected() as admin:
        print_listing(DOMAIN_COLUMNS, admin.domains(), as_json)


@domain_app.command("info", help="Show one domain.")
@handled
def domain_info(name: str, as_json: JsonFlag = False) -> None:
    with connected() as admin:
        print_record(admin.domain(name), as_json)


@domain_app.command("add", help="Create a domain.")
@handled
def domain_add(
    name: str,
    description: Annotated[str, typer.Option("-d", "--description")] = "",
    inactive: Annotated[bool, typer.Option("-i", "--inactive", help="created inactive")] = False,
    total_resource_slots: Slots = None,
    allowed_docker_registries: Annotated[
        str | None, typer.Option(help="registries its images may come from, comma-separated")
    ] = None,
    allowed_vfolder_hosts: VfolderHosts = None,
    as_json: JsonFlag = False,
) -> None:
    with connected() as admin:
        answer = admin.create_domain(
            name,
            description=description,
            is_active=not inactive,
            total_resource_slots=_slots(total_resource_slots),
            allowed_docker_registries=split_list(allowed_docker_registries),
            allowed_vfolder_hosts=_hosts(allowed_vfolder_hosts),
        )
    print_mutation(answer, f"domain {name} created", as_json)


@domain_app.command("update", help="Change a domain (only what is given).")
@handled
def domain_update(
    name: str,
    description: Description = None,
    active: Active = None,
    total_resource_slots: Slots = None,
    allowed_docker_registries: Annotated[
        str | None, typer.Option(help="registries its images may come from, comma-separated")
    ] = None,
    allowed_vfolder_hosts: VfolderHosts = None,
    as_json: JsonFlag = False,
) -> None:
    with connected() as admin:
        answer = admin.update_domain(
            name,
            description=description,
            is_active=active,
            total_resource_slots=_slots(total_resource_slots),
            allowed_docker_registries=split_list(allowed_docker_registries),
            allowed_vfolder_hosts=_hosts(allowed_vfolder_hosts),
        )
    print_mutation(answer, f"domain {name} updated", as_json)


@domain_app.command("delete", help="Deactivate a domain (purge removes it).")
@handled
def domain_delete(name: str, yes: Yes = False, as_json: JsonFlag = False) -> None:
    confirm(f"deactivate domain {name}", yes)
    with connected() as admin:
        answer = admin.delete_domain(name)
    print_mutation(answer, f"domain {name} deactivated", as_json)


@domain_app.command("purge", help="Remove a domain for good.")
@handled
def domain_purge(name: str, yes: Yes = False, as_json: JsonFlag = False) -> None:
    confirm(f"purge domain {name} (cannot be undone)", yes)
    with connected() as admin:
        answer = admin.purge_domain(name)
    print_mutation(answer, f"domain {name} purged", as_json)


# ---- projects ---------------------------------------------------------------------------------
PROJECT_COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("ID", field("id")),
    ("DOMAIN", field("domain_name")),
    ("ACTIVE", field("is_active")),
    ("SLOTS", field("total_resource_slots")),
    ("DESCRIPTION", field("description")),
]


@project_app.command("list", help="List projects (of one domain with --domain).")
@handled
def project_list(domain: DomainOpt = None, as_json: JsonFlag = False) -> None:
    with connected() as admin:
        print_listing(PROJECT_COLUMNS, admin.projects(domain), as_json)


@project_app.command("info", help="Show one project.")
@handled
def project_info(ref: ProjectRef, domain: DomainOpt = None, as_json: JsonFlag = False) -> None:
    with connected() as admin:
        print_record(admin.project(ref, domain), as_json)


@project_app.command("add", help="Create a project in a domain.")
@handled
def project_add(
    name: str,
    domain: DomainOpt = None,
    description: Annotated[str, typer.Option("-d", "--description")] = "",
    inactive: Annotated[bool, typer.Option("-i", "--inactive", help="created inactive")] = False,
    total_resource_slots: Slots = None,
    allowed_vfolder_hosts: VfolderHosts = None,
    as_json: JsonFlag = False,
) -> None:
    slots, hosts = _slots(total_resource_slots), _hosts(allowed_vfolder_hosts)
    with connected() as admin:
        answer = admin.create_project(
            domain or default_domain(),
            name,
            description=description,
            is_active=not inactive,
            total_resource_slots=slots,
            allowed_vfolder_hosts=hosts,
        )
    made = answer.get("group") or {}
    print_mutation(answer, f"project {name} created ({show(made.get('id'))})", as_json)


@project_app.command("update", help="Change a project (only what is given).")
@handled
def project_update(
    ref: ProjectRef,
    domain: DomainOpt = None,
    name: Annotated[str | None, typer.Option("-n", "--name", help="a new name")] = None,
    description: Description = None,
    active: Active = None,
    total_resource_slots: Slots = None,
    allowed_vfolder_hosts: VfolderHosts = None,
    as_json: JsonFlag = False,
) -> None:
    slots, hosts = _slots(total_resource_slots), _hosts(allowed_vfolder_hosts)
    with connected() as admin:
        project = admin.project(ref, domain)
        answer = admin.update_project(
            project["id"],
            name=name,
            description=description,
            is_active=active,
            total_resource_slots=slots,
            allowed_vfolder_hosts=hosts,
        )
    print_mutation(answer, f"project {project['name']} updated", as_json)


@project_app.command("delete", help="Deactivate a project (purge removes it).")
@handled
def project_delete(
    ref: ProjectRef, domain: DomainOpt = None, yes: Yes = False, as_json: JsonFlag = False
) -> None:
    confirm(f"deactivate project {ref}", yes)
    with connected() as admin:
        answer = admin.delete_project(admin.project(ref, domain)["id"])
    print_mutation(answer, f"project {ref} deactivated", as_json)


@project_app.command("purge", help="Remove a project for good.")
@handled
def project_purge(
    ref: ProjectRef, domain: DomainOpt = None, yes: Yes = False, as_json: JsonFlag = False
) -> None:
    confirm(f"purge project {ref} (cannot be undone)", yes)
    with connected() as admin:
        answer = admin.purge_project(admin.project(ref, domain)["id"])
    print_mutation(answer, f"project {ref} purged", as_json)


Members = Annotated[list[str], typer.Argument(help="users' e-mails or ids", metavar="USERS...")]


def _user_ids(admin: Admin, users: list[str]) -> list[str]:
    """Each e-mail as the user's id (ids as they are)."""
    ids = []
    for user in users:
        try:
            ids.append(str(uuid.UUID(user)))
        except ValueError:
            ids.append(str(admin.user(user)["uuid"]))
    return ids


@project_app.command("add-member", help="Add users to a project.")
@handled
def project_add_member(
    ref: ProjectRef, users: Members, domain: DomainOpt = None, as_json: JsonFlag = False
) -> None:
    with connected() as admin:
        project = admin.project(ref, domain)
        answer = admin.add_members(project["id"], _user_ids(admin, users))
    print_mutation(answer, f"{len(users)} added to project {project['name']}", as_json)


@project_app.command("remove-member", help="Remove users from a project.")
@handled
def project_remove_member(
    ref: ProjectRef, users: Members, domain: DomainOpt = None, as_json: JsonFlag = False
) -> None:
    with connected() as admin:
        project = admin.project(ref, domain)
        answer = admin.remove_members(project["id"], _user_ids(admin, users))
    print_mutation(answer, f"{len(users)} removed from project {project['name']}", as_json)


# ---- users ------------------------------------------------------------------------------------
USER_COLUMNS: list[Column] = [
    ("EMAIL", field("email")),
    ("USERNAME", field("username")),
    ("ROLE", field("role")),
    ("STATUS", field("status")),
    ("DOMAIN", field("domain_name")),
    ("PROJECTS", field("groups")),
    ("ID", field("uuid")),
]
ROLES = ("user", "admin", "superadmin", "monitor")
STATUSES = ("active", "inactive", "deleted", "before-verification")
Role = Annotated[str | None, typer.Option("--role", help="user, admin, superadmin or monitor")]
Status = Annotated[
    str | None, typer.Option("--status", help="active, inactive, deleted, before-verification")
]
Password = Annotated[
    str | None,
    typer.Option("--password", help="the password (else asked twice, without echo)"),
]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from stdin's first line")
]
Projects = Annotated[
    list[str] | None, typer.Option("--project", help="a project to join (id or name; repeatable)")
]
ClientIps = Annotated[
    str | None, typer.Option("--allowed-client-ip", help="CIDRs it may sign in from, comma-sep.")
]


def _checked(value: str | None, allowed: tuple[str, ...], flag: str) -> str | None:
    if value is not None and value not in allowed:
        usage(f"{flag} {value!r}: one of {', '.join(allowed)}")
    return value


@user_app.command("list", help="List users (a page; --filter/--order as the official client).")
@handled
def user_list(
    status: Status = None,
    project: Annotated[str | None, typer.Option("--project", help="members of one")] = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="one domain's (and --project's domain)")
    ] = None,
    filter_: Annotated[
        str | None, typer.Option("--filter", help="e.g. 'email ilike \"%@lab\"'")
    ] = None,
    order: Annotated[str | None, typer.Option("--order", help="e.g. -created_at")] = None,
    limit: Limit = 20,
    offset: Offset = 0,
    as_json: JsonFlag = False,
) -> None:
    _checked(status, STATUSES, "--status")
    with connected() as admin:
        project_id = None if project is None else admin.project(project, domain)["id"]
        page = admin.users(
            status=status,
            project_id=project_id,
            domain=domain,
            filter=filter_,
            order=order,
            limit=limit,
            offset=offset,
        )
    print_page(USER_COLUMNS, page, as_json)


@user_app.command("info", help="Show a user (yourself without EMAIL).")
@handled
def user_info(
    email: Annotated[str | None, typer.Argument(help="the user's e-mail")] = None,
    as_json: JsonFlag = False,
) -> None:
    with connected() as admin:
        print_record(admin.user(email), as_json)


@user_app.command("add", help="Create a user (the password is asked for unless given).")
@handled
def user_add(
    email: str,
    domain: DomainOpt = None,
    password: Password = None,
    password_stdin: PasswordStdin = False,
    username: Annotated[str | None, typer.Option("-u", "--username")] = None,
    full_name: Annotated[str | None, typer.Option("-n", "--full-name")] = None,
    role: Role = None,
    status: Status = None,
    need_password_change: Annotated[
        bool, typer.Option("--need-password-change", help="must change it at first sign-in")
    ] = False,
    description: Annotated[str, typer.Option("--description")] = "",
    allowed_client_ip: ClientIps = None,
    project: Projects = None,
    as_json: JsonFlag = False,
) -> None:
    _checked(role, ROLES, "--role")
    _checked(status, STATUSES, "--status")
    secret = new_password(password, password_stdin)
    in_domain = domain or default_domain()
    with connected() as admin:
        project_ids = [admin.project(p, in_domain)["id"] for p in project or []]
        answer = admin.create_user(
            in_domain,
            email,
            secret,
            username=username,
            full_name=full_name,
            role=role or "user",
            status=status or "active",
            need_password_change=need_password_change,
            description=description,
            allowed_client_ip=split_list(allowed_client_ip),
            project_ids=project_ids or None,
        )
    made = answer.get("user") or {}
    done = (
        f"user {email} created ({show(made.get('uuid'))}), with a keypair under the default"
        f" policy (kh admin keypair list --user {email})"
    )
    print_mutation(answer, done, as_json)


@user_app.command("update", help="Change a user (only what is given).")
@handled
def user_update(
    email: str,
    password: Password = None,
    password_stdin: PasswordStdin = False,
    password_prompt: Annotated[
        bool, typer.Option("--password-prompt", help="type a new password (twice, no echo)")
    ] = False,
    username: Annotated[str | None, typer.Option("-u", "--username")] = None,
    full_name: Annotated[str | None, typer.Option("-n", "--full-name")] = None,
    role: Role = None,
    status: Status = None,
    need_password_change: Annotated[
        bool | None, typer.Option("--need-password-change/--no-need-password-change")
    ] = None,
    description: Description = None,
    allowed_client_ip: ClientIps = None,
    as_json: JsonFlag = False,
) -> None:
    _checked(role, ROLES, "--role")
    _checked(status, STATUSES, "--status")
    secret = None
    if password is not None or password_stdin or password_prompt:
        if password_prompt and (password is not None or password_stdin):
            usage("--password-prompt goes alone (not with --password or --password-stdin)")
        secret = new_password(password, password_stdin)
    with connected() as admin:
        answer = admin.update_user(
            email,
            password=secret,
            username=username,
            full_name=full_name,
            role=role,
            status=status,
            need_password_change=need_password_change,
            description=description,
            allowed_client_ip=split_list(allowed_client_ip),
        )
    print_mutation(answer, f"user {email} updated", as_json)


@user_app.command("delete", help="Deactivate a user (purge removes them).")
@handled
def user_delete(
    email: str, force: Force = False, yes: Yes = False, as_json: JsonFlag = False
) -> None:
    confirm(f"deactivate user {email}", yes)
    with connected() as admin:
        answer = admin.delete_user(email, force=force)
    print_mutation(answer, f"user {email} deactivated", as_json)


@user_app.command("purge", help="Remove a user and their keypairs for good.")
@handled
def user_purge(
    email: str, force: Force = False, yes: Yes = False, as_json: JsonFlag = False
) -> None:
    confirm(f"purge user {email} and their keypairs (cannot be undone)", yes)
    with connected() as admin:
        answer = admin.purge_user(email, force=force)
    print_mutation(answer, f"user {email} purged", as_json)
