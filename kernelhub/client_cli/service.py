"""``kh service ...``: model serving from the command line, the official client's
``backend.ai service`` commands on the same ``/services`` API, as the configured keypair,
plus ``call`` (a request to the served model) and ``create --wait``.

An endpoint is named by its id or its name. Tables by default, ``--json`` everywhere (the
gateway's answer as it came); errors are one line on stderr with an exit code (docs/cli.md).
The wire is :mod:`kernelhub.sdk.services`; the guide docs/serving.md.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ..sdk import Client, ClientConfig
from ..sdk.services import ClusterMode, Services
from . import create_options as opts
from .admin_common import (
    Column,
    JsonFlag,
    field,
    handled,
    print_json,
    print_listing,
    print_table,
    show,
)
from .app import usage
from .terminal import Feedback

__all__ = ["app"]

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    help="Model serving: endpoints of inference sessions behind one URL (create, scale, ...).",
    no_args_is_help=True,
)

Ref = Annotated[str, typer.Argument(help="the endpoint's name or id", metavar="ENDPOINT")]
RouteRef = Annotated[str, typer.Argument(help="a route's id (kh service info)", metavar="ROUTE")]

COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("ID", field("id")),
    ("ROUTES", field("active_route_count")),
    ("DESIRED", field("desired_session_count")),
    ("PUBLIC", field("is_public")),
    ("URL", field("service_endpoint")),
]
ROUTE_COLUMNS: list[Column] = [
    ("ROUTE", field("route_id")),
    ("SESSION", field("session_id")),
    ("STATUS", field("status")),
    ("RATIO", field("traffic_ratio")),
]


@contextmanager
def connected() -> Iterator[Services]:
    with Client(ClientConfig.load()) as client:
        yield Services(client)


def _done(text: str, as_json: bool, answer: object) -> None:
    if as_json:
        print_json(answer)
    else:
        print(text)


def _print_info(info: dict[str, Any], as_json: bool) -> None:
    """An endpoint: its fields one a line, then its routes as a table."""
    if as_json:
        print_json(info)
        return
    routes = list(info.get("active_routes") or ())
    shown = {k: v for k, v in info.items() if k != "active_routes"}
    width = max((len(k) for k in shown), default=0)
    for key, value in shown.items():
        print(f"{key.replace('_', ' '):{width}}  {show(value)}".rstrip())
    if routes:
        print()
        print_table(ROUTE_COLUMNS, routes)
    else:
        print("(no routes yet)")


def _cluster_mode(value: str | None) -> ClusterMode | None:
    if value is None or value in ("single-node", "multi-node"):
        return value  # type: ignore[return-value]
    usage(f"--cluster-mode {value!r}: single-node or multi-node")


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            usage(f"{flag} {item!r}: use KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


@app.command("create", help="Serve a model folder with COUNT inference sessions of IMAGE.")
@handled
def create(
    image: Annotated[str, typer.Argument(help="the image or alias, e.g. python", metavar="IMAGE")],
    model: Annotated[
        str, typer.Argument(help="the model folder's name or id", metavar="MODEL_FOLDER")
    ],
    count: Annotated[int, typer.Argument(help="replicas to start", metavar="COUNT", min=0)],
    name: Annotated[
        str | None, typer.Option("-t", "-n", "--name", help="the endpoint's name")
    ] = None,
    model_version: Annotated[
        int | None, typer.Option("--model-version", metavar="N", help="the folder's version")
    ] = None,
    model_mount_destination: Annotated[
        str | None,
        typer.Option(
            "--model-mount-destination",
            metavar="PATH",
            help="where the folder is mounted (default /models)",
            show_default=False,
        ),
    ] = None,
    env: opts.Env = None,
    startup_command: Annotated[
        str | None,
        typer.Option(
            "-c",
            "--startup-command",
            metavar="COMMAND",
            help="sent as given (the model definition says how the model starts)",
            show_default=False,
        ),
    ] = None,
    resource: Annotated[
        list[str] | None,
        typer.Option(
            "-r",
            "--resources",
            metavar="SLOT=AMOUNT",
            help="per replica, e.g. -r cpu=1 -r mem=1g (repeatable)",
        ),
    ] = None,
    resource_opts: opts.ResourceOpts = None,
    cluster_size: opts.ClusterSize = 1,
    cluster_mode: opts.ClusterMode = None,
    domain: opts.Domain = None,
    group: Annotated[
        str | None,
        typer.Option("-g", "-p", "--group", "--project", metavar="NAME", help="the project"),
    ] = None,
    bootstrap_script: opts.BootstrapScript = None,
    tag: opts.Tag = None,
    architecture: opts.Architecture = None,
    scaling_group: opts.ScalingGroup = None,
    owner: opts.Owner = None,
    public: Annotated[
        bool,
        typer.Option("--public", "--expose-to-public", help="callers need no token"),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="return once COUNT routes are HEALTHY")
    ] = False,
    max_wait: Annotated[
        float, typer.Option("--max-wait", help="with --wait: seconds (0: no limit); exit 4 after")
    ] = 0,
    as_json: JsonFlag = False,
) -> None:
    try:
        environ = opts.environ_of(env)
    except opts.OptionError as error:
        usage(str(error))
    script = bootstrap_script.read_text() if bootstrap_script is not None else None
    with connected() as services:
        answer = services.create(
            image,
            model,
            count,
            name=name,
            model_version=model_version,
            model_mount_destination=model_mount_destination,
            environ=environ,
            startup_command=startup_command,
            resources=_pairs(resource, "-r"),
            resource_opts=_pairs(resource_opts, "--resource-opts"),
            cluster_size=cluster_size,
            cluster_mode=_cluster_mode(cluster_mode),
            domain=domain,
            group=group,
            bootstrap_script=script,
            tag=tag,
            architecture=architecture,
            scaling_group=scaling_group,
            owner_access_key=owner,
            open_to_public=public,
        )
        if wait and count > 0:
            feedback = Feedback(quiet=as_json)
            feedback.note(f"∙ endpoint {answer['name']} created; waiting for {count} HEALTHY")
            answer = services.wait_healthy(answer["endpoint_id"], count, timeout=max_wait or None)
    if as_json:
        print_json(answer)
        return
    print(f'endpoint "{answer["name"]}" created ({answer["endpoint_id"]})')
    print(f"url: {answer.get('service_endpoint')}")
    if not answer.get("is_public"):
        print(f"private: callers need a token (kh service generate-token {answer['name']} 1d)")


@app.command("list", help="The endpoints you may see.")
@handled
def list_(
    name: Annotated[str | None, typer.Option("--name", help="only those of this name")] = None,
    as_json: JsonFlag = False,
) -> None:
    with connected() as services:
        print_listing(COLUMNS, services.list(name=name), as_json)


@app.command("info", help="An endpoint and its routes (their sessions, status and ratio).")
@handled
def info(ref: Ref, as_json: JsonFlag = False) -> None:
    with connected() as services:
        _print_info(services.info(ref), as_json)


@app.command("get-endpoint", help="The URL callers send requests to.")
@handled
def get_endpoint(ref: Ref, as_json: JsonFlag = False) -> None:
    with connected() as services:
        url = services.get_endpoint(ref)
    _done(url, as_json, {"service_endpoint": url})


@app.command("scale", help="Ask for COUNT replicas (they start or drain in the background).")
@handled
def scale(
    ref: Ref,
    count: Annotated[int, typer.Argument(help="replicas wanted", metavar="COUNT", min=0)],
    as_json: JsonFlag = False,
) -> None:
    with connected() as services:
        answer = services.scale(ref, count)
    _done(
        f"scaling {ref}: {answer.get('current_route_count')} routes now, "
        f"{answer.get('target_count')} wanted",
        as_json,
        answer,
    )


@app.command("sync", help="Probe every route now and reconcile now.")
@handled
def sync(ref: Ref, as_json: JsonFlag = False) -> None:
    with connected() as services:
        answer = services.sync(ref)
    _done("synced", as_json, answer)


@app.command("update-traffic-ratio", help="One route's share of the traffic (0 to 1).")
@handled
def update_traffic_ratio(
    ref: Ref,
    route: RouteRef,
    ratio: Annotated[float, typer.Argument(help="0 to 1", metavar="RATIO")],
    as_json: JsonFlag = False,
) -> None:
    with connected() as services:
        answer = services.update_traffic_ratio(ref, route, ratio)
    _done(f"route {route} now takes ratio {ratio:g}", as_json, answer)


@app.command("downscale-route", help="Scale down by one, draining this route.")
@handled
def downscale_route(ref: Ref, route: RouteRef, as_json: JsonFlag = False) -> None:
    with connected() as services:
        answer = services.downscale_route(ref, route)
    _done(f"route {route} is draining", as_json, answer)


@app.command("generate-token", help="A token for callers of a private endpoint.")
@handled
def generate_token(
    ref: Ref,
    duration: Annotated[
        str | None,
        typer.Argument(help="how long it is valid: 30m, 2h, 3d, ...", metavar="[DURATION]"),
    ] = None,
    valid_until: Annotated[
        int | None,
        typer.Option("--valid-until", metavar="UNIX_SECONDS", help="instead of DURATION"),
    ] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="(the token alone is printed)")] = (
        False
    ),
    as_json: JsonFlag = False,
) -> None:
    if (duration is None) == (valid_until is None):
        usage("give DURATION (e.g. 2h) or --valid-until UNIX_SECONDS")
    with connected() as services:
        token = services.generate_token(ref, duration, valid_until=valid_until)
    _done(token, as_json, {"token": token})


@app.command("rm", help="Remove an endpoint: its routes drain, their sessions end, then it goes.")
@handled
def rm(
    refs: Annotated[list[str], typer.Argument(metavar="ENDPOINT...")], as_json: JsonFlag = False
) -> None:
    removed = []
    with connected() as services:
        for ref in refs:
            endpoint_id = services.resolve(ref)
            services.delete(endpoint_id)
            removed.append(str(endpoint_id))
            if not as_json:
                print(f"removing {ref} (its routes drain first)")
    if as_json:
        print_json({"removed": removed})


@app.command("call", help="Send one request to the served model and print its answer.")
@handled
def call(
    ref: Ref,
    path: Annotated[str, typer.Argument(help="under the endpoint's URL", metavar="[PATH]")] = "",
    method: Annotated[str, typer.Option("-X", "--method", help="the HTTP method")] = "GET",
    data: Annotated[
        str | None,
        typer.Option("-d", "--data", help="the request body (@FILE: a file's bytes)"),
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("-H", "--header", metavar="NAME: VALUE")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="for a private endpoint (generate-token)")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    headers: dict[str, str] = {}
    for item in header or ():
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            usage(f"-H {item!r}: use 'Name: value'")
        headers[key.strip()] = value.strip()
    body: bytes | None = None
    if data is not None:
        body = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
    with connected() as services:
        response = services.call(
            ref, path, method=method.upper(), token=token, content=body, headers=headers
        )
    if as_json:
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = response.text
        print_json({"status": response.status_code, "body": parsed})
    else:
        sys.stdout.write(response.text)
        if response.text and not response.text.endswith("\n"):
            sys.stdout.write("\n")
    if response.status_code >= 400:
        print(f"kh: the model answered {response.status_code}", file=sys.stderr)
        raise typer.Exit(1)
