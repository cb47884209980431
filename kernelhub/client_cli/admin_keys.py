"""``kh admin keypair|policy|preset ...``: how people get in and how much they may use
(keypairs, keypair resource policies and resource presets, as ``backend.ai admin keypair``
and ``keypair-resource-policy`` administer them).

A keypair's secret key is printed once, when it is issued; listings never show it.
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
    parse_duration,
    parse_json_object,
    parse_size,
    parse_slots,
    print_json,
    print_listing,
    print_mutation,
    print_page,
    print_record,
)
from .app import usage
from .units import format_size

__all__ = ["keypair_app", "policy_app", "preset_app"]

keypair_app = typer.Typer(help="Keypairs (access and secret keys).", no_args_is_help=True)
policy_app = typer.Typer(help="Keypair resource policies (limits).", no_args_is_help=True)
preset_app = typer.Typer(help="Resource presets (superadmin).", no_args_is_help=True)

AccessKey = Annotated[str, typer.Argument(help="the access key", metavar="ACCESS_KEY")]

# ---- keypairs ---------------------------------------------------------------------------------
KEYPAIR_COLUMNS: list[Column] = [
    ("ACCESS KEY", field("access_key")),
    ("USER", field("user_id")),
    ("ACTIVE", field("is_active")),
    ("ADMIN", field("is_admin")),
    ("POLICY", field("resource_policy")),
    ("RATE LIMIT", field("rate_limit")),
    ("CREATED", field("created_at")),
]


@keypair_app.command("list", help="List keypairs (a page; --filter/--order as the official).")
@handled
def keypair_list(
    user: Annotated[str | None, typer.Option("--user", help="one user's (e-mail)")] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive", help="only those")] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="one domain's")] = None,
    filter_: Annotated[str | None, typer.Option("--filter")] = None,
    order: Annotated[str | None, typer.Option("--order", help="e.g. -created_at")] = None,
    limit: Limit = 20,
    offset: Offset = 0,
    as_json: JsonFlag = False,
) -> None:
    with connected() as admin:
        page = admin.keypairs(
            email=user,
            is_active=active,
            domain=domain,
            filter=filter_,
            order=order,
            limit=limit,
            offset=offset,
        )
    print_page(KEYPAIR_COLUMNS, page, as_json)


@keypair_app.command("info", help="Show a keypair (yours without ACCESS_KEY); no secret key.")
@handled
def keypair_info(
    access_key: Annotated[str | None, typer.Argument(help="the access key")] = None,
    as_json: JsonFlag = False,
) -> None:
    with connected() as admin:
        print_record(admin.keypair(access_key), as_json)


@keypair_app.command("add", help="Issue a keypair for a user; prints its secret key, once.")
@handled
def keypair_add(
    user: Annotated[str, typer.Argument(help="the user's e-mail", metavar="EMAIL")],
    policy: Annotated[str, typer.Option("--policy", help="its resource policy")] = "default",
    is_admin: Annotated[bool, typer.Option("-a", "--admin", help="an admin keypair")] = False,
    inactive: Annotated[bool, typer.Option("-i", "--inactive", help="issued inactive")] = False,
    rate_limit: Annotated[int, typer.Option("-r", "--rate-limit", min=1, help="per 15 min")] = 5000,
    as_json: JsonFlag = False,
) -> None:
    with connected() as admin:
        answer = admin.create_keypair(
            user,
            resource_policy=policy,
            is_active=not inactive,
            is_admin=is_admin,
            rate_limit=rate_limit,
        )
    keys = answer.get("keypair") or {}
    if as_json:
        print_json({"access_key": keys.get("access_key"), "secret_key": keys.get("secret_key")})
        return
    print(f"access key  {keys.get('access_key')}")
    print(f"secret key  {keys.get('secret_key')}")
    print("(the secret key is shown this once: keep it now)")


@keypair_app.command("update", help="Change a keypair (only what is given).")
@handled
def keypair_update(
    access_key: AccessKey,
    policy: Annotated[str | None, typer.Option("--policy", help="its resource policy")] = None,
    is_admin: Annotated[bool | None, typer.Option("--admin/--no-admin")] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive")] = None,
    rate_limit: Annotated[int | None, typer.Option("-r", "--rate-limit", min=1)] = None,
    as_json: JsonFlag = False,
) -> None:
    with connected() as admin:
        answer = admin.update_keypair(
            access_key,
            is_active=active,
            is_admin=is_admin,
            resource_policy=policy,
            rate_limit=rate_limit,
        )
    print_mutation(answer, f"keypair {access_key} updated", as_json)


@keypair_app.command("activate", help="Let a keypair sign requests again.")
@handled
def keypair_activate(access_key: AccessKey, as_json: JsonFlag = False) -> None:
    with connected() as admin:
        answer = admin.activate_keypair(access_key)
    print_mutation(answer, f"keypair {access_key} activated", as_json)


@keypair_app.command("deactivate", help="Refuse a keypair's requests from now on.")
@handled
def keypair_deactivate(access_key: AccessKey, yes: Yes = False, as_json: JsonFlag = False) -> None:
    confirm(f"deactivate keypair {access_key}", yes)
    with connected() as admin:
        answer = admin.deactivate_keypair(access_key)
    print_mutation(answer, f"keypair {access_key} deactivated", as_json)


@keypair_app.command("delete", help="Remove a keypair for good.")
@handled
def keypair_delete(access_key: AccessKey, yes: Yes = False, as_json: JsonFlag = False) -> None:
    confirm(f"delete keypair {access_key} (cannot be undone)", yes)
    with connected() as admin:
        answer = admin.delete_keypair(access_key)
    print_mutation(answer, f"keypair {access_key} deleted", as_json)


# ---- keypair resource policies ----------------------------------------------------------------
POLICY_COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("SLOTS", field("total_resource_slots")),
    ("SESSIONS", field("max_concurrent_sessions")),
    ("CONTAINERS/SESSION", field("max_containers_per_session")),
    ("IDLE TIMEOUT", field("idle_timeout")),
    ("EXEC TIMEOUT", field("exec_timeout_s")),
    ("CREATED", field("created_at")),
]
Slots = Annotated[
    str | None,
    typer.Option("--total-resource-slots", help="e.g. cpu=4,mem=8g,cuda.device=1 (or JSON)"),
]
Seconds = Annotated[str | None, typer.Option(help="seconds, or 30m, 2h, 1d")]
Count = Annotated[int | None, typer.Option(min=0)]
Unspecified = Annotated[
    str | None,
    typer.Option(help="slots the policy does not name: LIMITED (none) or UNLIMITED"),
]


class PolicyOptions:
    """The policy options as the schema takes them (parsed once for add and update)."""

    def __init__(
        self,
        total_resource_slots: str | None,
        default_for_unspecified: str | None,
        idle_timeout: str | None,
        exec_timeout: str | None,
        max_session_lifetime: str | None,
        max_vfolder_size: str | None,
        allowed_vfolder_hosts: str | None,
    ) -> None:
        if default_for_unspecified not in (None, "LIMITED", "UNLIMITED"):
            usage(f"--default-for-unspecified {default_for_unspecified!r}: LIMITED or UNLIMITED")
        self.slots = (
            None
            if total_resource_slots is None
            else parse_slots(total_resource_slots, "--total-resource-slots")
        )
        self.unspecified = default_for_unspecified
        self.idle = _whole_seconds(idle_timeout, "--idle-timeout")
        self.lifetime = _whole_seconds(max_session_lifetime, "--max-session-lifetime")
        self.exec = None if exec_timeout is None else parse_duration(exec_timeout, "--exec-timeout")
        if self.exec is not None and self.exec <= 0:
            usage("--exec-timeout: more than 0 seconds")
        self.vfolder_size = (
            None if max_vfolder_size is None else parse_size(max_vfolder_size, "--max-vfolder-size")
        )
        self.hosts = (
            None
            if allowed_vfolder_hosts is None
            else parse_json_object(allowed_vfolder_hosts, "--allowed-vfolder-hosts")
        )


def _whole_seconds(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    seconds = parse_duration(text, flag)
    if seconds != int(seconds):
        usage(f"{flag} {text!r}: whole seconds")
    return int(seconds)


@policy_app.command("list", help="List the keypair resource policies.")
@handled
def policy_list(as_json: JsonFlag = False) -> None:
    with connected() as admin:
        print_listing(POLICY_COLUMNS, admin.policies(), as_json)


@policy_app.command("info", help="Show one keypair resource policy.")
@handled
def policy_info(name: str, as_json: JsonFlag = False) -> None:
    with connected() as admin:
        print_record(admin.policy(name), as_json)


@policy_app.command("add", help="Create a keypair resource policy (the official defaults).")
@handled
def policy_add(
    name: str,
    total_resource_slots: Slots = None,
    max_concurrent_sessions: Annotated[int, typer.Option(min=0)] = 30,
    max_containers_per_session: Annotated[int, typer.Option(min=1)] = 1,
    idle_timeout: Annotated[str, typer.Option(help="seconds, or 30m, 2h")] = "1800",
    exec_timeout: Seconds = None,
    max_session_lifetime: Annotated[str, typer.Option(help="0: unlimited")] = "0",
    default_for_unspecified: Unspecified = "UNLIMITED",
    max_vfolder_count: Annotated[int, typer.Option(min=0)] = 10,
    max_vfolder_size: Annotated[str, typer.Option(help="bytes or 10g; 0: unlimited")] = "0",
    allowed_vfolder_hosts: Annotated[str | None, typer.Option(help="a JSON object")] = None,
    as_json: JsonFlag = False,
) -> None:
    options = PolicyOptions(
        total_resource_slots,
        default_for_unspecified,
        idle_timeout,
        exec_timeout,
        max_session_lifetime,
        max_vfolder_size,
        allowed_vfolder_hosts,
    )
    with connected() as admin:
        answer = admin.create_policy(
            name,
            default_for_unspecified=options.unspecified or "UNLIMITED",
            total_resource_slots=options.slots,
            max_session_lifetime=options.lifetime or 0,
            max_concurrent_sessions=max_concurrent_sessions,
            max_containers_per_session=max_containers_per_session,
            max_vfolder_count=max_vfolder_count,
            max_vfolder_size=options.vfolder_size or 0,
            idle_timeout=options.idle if options.idle is not None else 1800,
            allowed_vfolder_hosts=options.hosts,
            exec_timeout=options.exec,
        )
    print_mutation(answer, f"policy {name} created", as_json)


@policy_app.command("update", help="Change a keypair resource policy (only what is given).")
@handled
def policy_update(
    name: str,
    total_resource_slots: Slots = None,
    max_concurrent_sessions: Count = None,
    max_containers_per_session: Annotated[int | None, typer.Option(min=1)] = None,
    idle_timeout: Seconds = None,
    exec_timeout: Seconds = None,
    max_session_lifetime: Seconds = None,
    default_for_unspecified: Unspecified = None,
    max_vfolder_count: Count = None,
    max_vfolder_size: Annotated[str | None, typer.Option(help="bytes or 10g")] = None,
    allowed_vfolder_hosts: Annotated[str | None, typer.Option(help="a JSON object")] = None,
    as_json: JsonFlag = False,
) -> None:
    options = PolicyOptions(
        total_resource_slots,
        default_for_unspecified,
        idle_timeout,
        exec_timeout,
        max_session_lifetime,
        max_vfolder_size,
        allowed_vfolder_hosts,
    )
    with connected() as admin:
        answer = admin.update_policy(
            name,
            default_for_unspecified=options.unspecified,
            total_resource_slots=options.slots,
            max_session_lifetime=options.lifetime,
            max_concurrent_sessions=max_concurrent_sessions,
            max_containers_per_session=max_containers_per_session,
            max_vfolder_count=max_vfolder_count,
            max_vfolder_size=options.vfolder_size,
            idle_timeout=options.idle,
            allowed_vfolder_hosts=options.hosts,
            exec_timeout=options.exec,
        )
    print_mutation(answer, f"policy {name} updated", as_json)


@policy_app.command("delete", help="Remove a keypair resource policy (none may use it).")
@handled
def policy_delete(name: str, yes: Yes = False, as_json: JsonFlag = False) -> None:
    confirm(f"delete policy {name}", yes)
    with connected() as admin:
        answer = admin.delete_policy(name)
    print_mutation(answer, f"policy {name} deleted", as_json)


# ---- resource presets -------------------------------------------------------------------------
PRESET_COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("SLOTS", field("resource_slots")),
    ("SHARED MEMORY", lambda r: format_size(r["shared_memory"]) if r.get("shared_memory") else ""),
    ("SCALING GROUP", field("scaling_group_name")),
]
PresetSlots = Annotated[str, typer.Option("--slots", help="e.g. cpu=2,mem=4g,cuda.device=1")]
SharedMemory = Annotated[str | None, typer.Option("--shared-memory", help="e.g. 64m")]


def _shared(text: str | None) -> str | None:
    return None if text is None else str(parse_size(text, "--shared-memory"))


@preset_app.command("list", help="List the resource presets.")
@handled
def preset_list(as_json: JsonFlag = False) -> None:
    with connected() as admin:
        print_listing(PRESET_COLUMNS, admin.presets(), as_json)


@preset_app.command("add", help="Create a resource preset.")
@handled
def preset_add(
    name: str,
    slots: PresetSlots,
    shared_memory: SharedMemory = None,
    scaling_group: Annotated[
        str | None, typer.Option("--scaling-group", help="only offered in this one")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    resource_slots = parse_slots(slots, "--slots")
    with connected() as admin:
        answer = admin.create_preset(
            name, resource_slots, shared_memory=_shared(shared_memory), scaling_group=scaling_group
        )
    print_mutation(answer, f"preset {name} created", as_json)


@preset_app.command("update", help="Change a resource preset (only what is given).")
@handled
def preset_update(
    name: str,
    slots: Annotated[str | None, typer.Option("--slots", help="e.g. cpu=2,mem=4g")] = None,
    shared_memory: SharedMemory = None,
    as_json: JsonFlag = False,
) -> None:
    resource_slots = None if slots is None else parse_slots(slots, "--slots")
    with connected() as admin:
        answer = admin.update_preset(
            name, resource_slots=resource_slots, shared_memory=_shared(shared_memory)
        )
    print_mutation(answer, f"preset {name} updated", as_json)


@preset_app.command("delete", help="Remove a resource preset.")
@handled
def preset_delete(name: str, yes: Yes = False, as_json: JsonFlag = False) -> None:
    confirm(f"delete preset {name}", yes)
    with connected() as admin:
        answer = admin.delete_preset(name)
    print_mutation(answer, f"preset {name} deleted", as_json)
