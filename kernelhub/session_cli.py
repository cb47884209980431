"""``kh session ...``: create, destroy, restart, exec, logs, show and list sessions on the
embedded stack, as the installation's admin.

``create`` goes through the HTTP API with the SDK, as ``kh run`` does (one path creates
sessions: the gateway's checks, bounds and names hold for it too), with the admin keypair
``kh up`` wrote. ``destroy``, ``restart``, ``exec`` and ``logs`` go to the owning
``sessions:<k>`` actor through the shard router; what is shown comes from the read models,
so ``show`` prints exactly what the log says (status history included).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .client_cli import create_options as opts
from .client_cli.units import format_slots
from .errors import KernelhubError
from .operator_cli import (
    JsonFlag,
    exit_with,
    installation_settings,
    on_store,
    operator_command,
    operator_group,
    redis_url,
    with_store,
)

if TYPE_CHECKING:
    from events import RedisEventStore

    from .config import Settings
    from .sdk import Client

__all__ = ["app", "describe"]

app = operator_group("Sessions as the admin: create, destroy, restart, exec, logs, show, list.")
_TERMINAL = frozenset({"TERMINATED", "CANCELLED", "ERROR"})
_STARTED = frozenset({"RUNNING"}) | _TERMINAL
_POLL_S = 0.25
SessionId = Annotated[str, typer.Argument(help="the session's id", metavar="SESSION_ID")]
Wait = Annotated[float, typer.Option(help="seconds to wait for RUNNING")]


# ---- create: through the HTTP API -----------------------------------------------------------
def _admin_client(settings: Settings) -> Client:
    """The SDK with the keypair (and endpoint) ``kh up`` wrote for this installation; the
    ``BACKEND_*`` variables, a user's, are not read."""
    from .sdk import Client, ClientConfig
    from .sdk.errors import ConfigurationError

    try:
        config = ClientConfig.load(environ={}, config_file=settings.client_config_path)
    except ConfigurationError:
        raise KernelhubError(
            f"no admin keypair in {settings.client_config_path}: run `kh up` first"
        ) from None
    return Client(config)


def _resources(items: list[str] | None) -> dict[str, str]:
    """``-r cuda.device=1`` (repeatable), as the official client's ``-r``; the gateway
    parses and bounds the amounts with ``--cpu`` and ``--mem`` (:mod:`actors.domain.bounds`)."""
    out: dict[str, str] = {}
    for item in items or ():
        slot, sep, amount = item.partition("=")
        if not sep or not slot.strip() or not amount.strip():
            raise KernelhubError(f"-r {item!r}: use SLOT=AMOUNT, e.g. -r cuda.device=1")
        out[slot.strip()] = amount.strip()
    return out


@app.command(help="Enqueue a session as the admin, through the HTTP API (as kh run does).")
@operator_command
def create(
    context: typer.Context,
    name: Annotated[
        str | None,
        typer.Option(help="4-64 characters (default s-<6 hex digits>)", show_default=False),
    ] = None,
    image: Annotated[str, typer.Option(help="an image or alias in the catalogue")] = "python",
    cpu: Annotated[str, typer.Option()] = "1",
    mem: Annotated[
        str | None,
        typer.Option(
            help="e.g. 512m (default: the image's minimum, raised by a --resource-opts shmem)",
            show_default=False,
        ),
    ] = None,
    resource: Annotated[
        list[str] | None,
        typer.Option(
            "-r",
            "--resource",
            metavar="SLOT=AMOUNT",
            help="another slot, e.g. -r cuda.device=1 (repeatable)",
            show_default=False,
        ),
    ] = None,
    command: Annotated[
        str | None,
        typer.Option(help="a batch session's startup command", show_default=False),
    ] = None,
    depends_on: opts.Depends = None,
    env: opts.Env = None,
    bootstrap_script: opts.BootstrapScript = None,
    bootstrap: opts.Bootstrap = None,
    tag: opts.Tag = None,
    callback_url: opts.CallbackUrl = None,
    starts_at: opts.StartsAt = None,
    resource_opts: opts.ResourceOpts = None,
    architecture: opts.Architecture = None,
    assign_agent: opts.AssignAgent = None,
    scaling_group: opts.ScalingGroup = None,
    preopen: opts.Preopen = None,
    cluster_size: opts.ClusterSize = 1,
    cluster_mode: opts.ClusterMode = None,
    domain: opts.Domain = None,
    group: opts.Group = None,
    owner: opts.Owner = None,
    mount: opts.Mount = None,
    wait: Wait = 0,
) -> None:
    """Every option goes into the request (:func:`kernelhub.client_cli.create_options.sdk_options`);
    one the server does not honour comes back as its one-line refusal, exit 1."""
    settings = installation_settings(context)
    resources: dict[str, str | int | float] = {"cpu": cpu, **_resources(resource)}
    if mem is not None:  # else the gateway asks the image's minimum, shmem included
        resources["mem"] = mem
    try:
        options = opts.sdk_options(
            env=env,
            bootstrap_script=bootstrap_script,
            bootstrap=bootstrap,
            tag=tag,
            callback_url=callback_url,
            starts_at=starts_at,
            resource_opts=resource_opts,
            architecture=architecture,
            assign_agent=assign_agent,
            scaling_group=scaling_group,
            preopen=preopen,
            cluster_size=cluster_size,
            cluster_mode=cluster_mode,
            domain=domain,
            group=group,
            owner=owner,
            depends=depends_on,
            mount=mount,
        )
    except (opts.OptionError, OSError) as error:
        raise KernelhubError(str(error)) from None
    with _admin_client(settings) as client:
        session = client.create_session(
            image,
            name=name or f"s-{uuid.uuid4().hex[:6]}",
            type="batch" if command else "interactive",
            resources=resources,
            startup_command=command,
            wait=False,
            **options,
        )
        print(session.id, flush=True)
        if wait:
            deadline = time.monotonic() + wait
            while (status := session.refresh().status) not in _STARTED:
                if time.monotonic() >= deadline:
                    raise KernelhubError(
                        f"session {session.id} is still {status} after {wait:.0f}s"
                    )
                time.sleep(_POLL_S)
            print(f"{session.id} {status}")


# ---- destroy, restart, exec, logs: the shard actors -------------------------------------------
def _router(store: RedisEventStore) -> Any:
    import ray

    from actors.hosts import NAMESPACE
    from actors.sessions.routing import ShardRouter

    shards: list[Any] = []  # sessions:0 .. sessions:<N-1>, N fixed at install
    while True:
        try:
            shards.append(ray.get_actor(f"sessions:{len(shards)}", namespace=NAMESPACE))
        except ValueError:
            break
    if not shards:
        raise KernelhubError("the session actors are not running: start kernelhub with `kh up`")
    router = ShardRouter(store, shards)
    router.namespace = NAMESPACE
    return router


def _on_actors(context: typer.Context, run: Any) -> int:
    """``run(router)`` against the installation's session actors."""
    from . import embedded, ray_head

    settings = installation_settings(context)
    url = redis_url(settings)
    state = embedded.read_state(settings)
    if state is None or not state.ray_address:
        raise KernelhubError("kernelhub's actors are not running: start them with `kh up`")
    ray_head.connect(state.ray_address)

    async def go(store: RedisEventStore) -> int:
        return int(await run(_router(store)))

    return on_store(url, settings.key_prefix, go)


async def _wait_until(
    router: Any, session_id: uuid.UUID, wanted: frozenset[str], timeout: float
) -> str:
    status = str(await router.wait(session_id, timeout, wanted))
    if status not in wanted:
        raise KernelhubError(f"session {session_id} is still {status} after {timeout:.0f}s")
    return status


def _session_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise KernelhubError(f"not a session id: {text!r}") from None


@app.command(help="Destroy a session.")
@operator_command
def destroy(
    context: typer.Context,
    session_id: SessionId,
    forced: Annotated[bool, typer.Option("--forced")] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive", help="also destroy the sessions that depend on it")
    ] = False,
    wait: Annotated[float, typer.Option(help="seconds to wait for the end")] = 0,
) -> None:
    sid = _session_id(session_id)

    async def run(router: Any) -> int:
        from actors.domain.commands.sessions import DestroySession

        command = DestroySession(session_id=sid, forced=forced)
        await router.handle(command)
        if recursive:
            await router.destroy_dependants(command)
        if wait:
            print(f"{sid} {await _wait_until(router, sid, _TERMINAL, wait)}")
        return 0

    _on_actors(context, run)


@app.command(help="Restart a running session's kernels.")
@operator_command
def restart(context: typer.Context, session_id: SessionId, wait: Wait = 0) -> None:
    sid = _session_id(session_id)

    async def run(router: Any) -> int:
        from actors.domain.commands.sessions import RestartSession

        await router.handle(RestartSession(session_id=sid))
        if wait:
            print(f"{sid} {await _wait_until(router, sid, _STARTED, wait)}")
        return 0

    _on_actors(context, run)


@app.command("exec", help="Run code or a command in a running session (exit: the run's).")
@operator_command
def exec_(
    context: typer.Context,
    session_id: SessionId,
    code: Annotated[
        str | None,
        typer.Option(
            "-c", "--code", help="Python code (query mode: state persists)", show_default=False
        ),
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(metavar="COMMAND", help="a shell command (batch mode)", show_default=False),
    ] = None,
) -> None:
    """Its console printed as it comes; the exit code is the run's (0 for query-mode code)."""
    import sys

    if (code is None) == (batch is None):
        print("kh: error: give exactly one of -c CODE and --batch COMMAND", file=sys.stderr)
        raise typer.Exit(2)
    sid = _session_id(session_id)
    mode, text, options = ("batch", "", {"exec": batch}) if batch else ("query", code, {})

    async def run(router: Any) -> int:
        result = await router.execution.execute(sid, None, mode, text, options)
        while True:
            for kind, data in result["console"]:
                stream = sys.stderr if kind == "stderr" else sys.stdout
                stream.write(data if kind in ("stdout", "stderr") else f"[{kind}] {data}\n")
                stream.flush()
            if result["status"] == "finished":
                return int(result["exitCode"] or 0)
            if result["status"] == "exec-timeout":
                raise KernelhubError("the execution timed out")
            if result["status"] == "waiting-input":
                reply = sys.stdin.readline().rstrip("\n")
                result = await router.execution.execute(sid, result["runId"], "input", reply)
            else:
                result = await router.execution.execute(sid, result["runId"], "continue")

    exit_with(_on_actors(context, run))


@app.command(help="A session's kernel log (also after it ended).")
@operator_command
def logs(context: typer.Context, session_id: SessionId) -> None:
    sid = _session_id(session_id)

    async def run(router: Any) -> int:
        print(await router.execution.logs(sid), end="")
        return 0

    _on_actors(context, run)


# ---- show, list: the read models --------------------------------------------------------------
@app.command(help="A session with its status history.")
@operator_command
def show(context: typer.Context, session_id: SessionId, as_json: JsonFlag = False) -> None:
    settings = installation_settings(context)

    async def run(store: RedisEventStore) -> int:
        from actors.domain.idle import IdleConfig
        from actors.idle.facts import IdleFacts
        from projections.queries import ReadModels

        models = ReadModels(store)
        deadline = time.monotonic() + 5  # the projection may be a moment behind a fresh write
        record = await models.session(session_id)
        while record is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            record = await models.session(session_id)
        if record is None:
            raise KernelhubError(f"no session {session_id}")
        checks = await IdleFacts(store, IdleConfig.parse(settings.idle or {})).report(record)
        record = {**record, "idle_checks": checks}
        print(
            json.dumps(record, indent=2, sort_keys=True)
            if as_json
            else "\n".join(describe(record, checks))
        )
        return 0

    with_store(settings, run)


@app.command("list", help="Sessions, newest first.")
@operator_command
def list_(
    context: typer.Context,
    status: Annotated[list[str] | None, typer.Option(show_default=False)] = None,
    limit: Annotated[int, typer.Option()] = 20,
) -> None:
    async def run(store: RedisEventStore) -> int:
        from projections.queries import ReadModels

        page = await ReadModels(store).sessions(statuses=status, limit=limit)
        for record in page.items:
            print(
                f"{record['id']}  {record['name']:16} {record['status']:12} {record['created_at']}"
            )
        print(f"({page.total} in all)")
        return 0

    with_store(installation_settings(context), run)


def describe(record: dict[str, Any], idle: dict[str, Any] | None = None) -> list[str]:
    lines = [
        f"session   {record['id']} ({record['name']}, {record['type']})",
        f"status    {record['status']} {record['status_info']}".rstrip(),
        f"owner     {record['access_key']}  group {record['scaling_group']}",
        f"slots     {format_slots(record['requested_slots'])}",
        "history",
    ]
    for status, at in sorted(record["status_history"].items(), key=lambda item: item[1]):
        lines.append(f"  {at}  {status}")
    for kernel in record["kernels"].values():
        lines.append(
            f"kernel    {kernel['id']} {kernel['cluster_hostname']} on {kernel['agent']}: "
            f"{kernel['status']} {kernel['status_info']}".rstrip()
        )
    if record.get("last_activity"):
        lines.append(f"activity  last noted {_iso(record['last_activity'])}")
    for checker, report in sorted((idle or {}).items()):
        lines.append(f"idle      {checker}: {_remaining(report)}")
    return lines


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _remaining(report: dict[str, Any]) -> str:
    """``idle in 4m 10s`` style, as a user reads it (judged when asked)."""
    left = report.get("remaining")
    if left is None:
        return "not measured"
    if left < 0:
        return "expired"
    minutes, seconds = divmod(int(left), 60)
    when = f"{minutes}m {seconds}s" if minutes else f"{seconds}s"
    kind = "grace period ends" if report.get("remaining_time_type") == "grace_period" else "in"
    return f"{kind} {when}"
