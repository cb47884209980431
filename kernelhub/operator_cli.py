"""The operator's ``kh`` commands on the installation as a whole (``up``, ``down``,
``status``), and what every operator command shares: ``--data-dir``, the installation's
settings and Redis, errors as one line (:func:`operator_command`). The operator's groups
have modules of their own (:mod:`.session_cli`, :mod:`.agent_cli`, :mod:`.projections_cli`,
:mod:`.events_cli`, :mod:`.trace_cli`); :mod:`kernelhub.cli` puts them, and the client
commands, under one typer app.

The server's modules (Redis, Ray, the actors) are imported when a command runs, never when
``kh`` starts, so ``kh ps`` starts quickly. Every failure a user can cause ends in one line
on stderr and exit 1, never a traceback (``KH_DEBUG=1`` shows the traceback for bug
reports); ``kh status`` exits 3 when nothing runs and 4 when only part of the embedded
stack does (``kh up`` repairs it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from .errors import KernelhubError

if TYPE_CHECKING:
    from events import RedisEventStore

    from . import embedded
    from .bootstrap import Bootstrap
    from .config import Settings

__all__ = [
    "DataDir",
    "JsonFlag",
    "app",
    "exit_with",
    "installation_settings",
    "on_store",
    "operator_command",
    "operator_group",
    "redis_url",
    "with_store",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="state directory (default $KH_DATA_DIR)", show_default=False),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="print the result as JSON")]
_DATA_DIR = "kh.data_dir"


# ---- what every operator command shares ---------------------------------------------------
def operator_command(command: F) -> F:
    """Logging at ``KH_LOG_LEVEL`` (default WARNING); a failure a user can cause as one line
    on stderr and exit 1 (``KH_DEBUG=1``: the traceback); Ctrl-C 130; a reader that left
    (``| head``) 141."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .logging import configure_logging

        configure_logging(os.environ.get("KH_LOG_LEVEL", "WARNING"))
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `kh ... | head`: the reader left; not an error to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except Exception as exc:
            message = _message(exc)
            if message is None or os.environ.get("KH_DEBUG"):
                raise
            print(f"kh: error: {message}", file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _message(exc: Exception) -> str | None:
    """The line to show for a failure a user can cause (None: a bug, shown as one)."""
    from actors.domain.errors import DomainError
    from events import EventStoreError
    from events.secrets import SecretError
    from events.server import ServerError

    from .sdk.errors import KernelhubSDKError

    if isinstance(exc, KernelhubError | EventStoreError | SecretError):
        return str(exc)
    if isinstance(exc, KernelhubSDKError):  # the HTTP API's refusal, as the client commands say it
        return " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, DomainError):
        return exc.msg or exc.title
    if isinstance(exc, ServerError):
        return f"Redis: {exc}"
    if isinstance(exc, ValueError):  # pydantic ValidationError is a ValueError: bad settings
        lines = str(exc).splitlines()
        detail = f" ({lines[1].strip()}: {lines[2].strip()})" if len(lines) > 2 else ""
        return f"invalid configuration: {exc}".splitlines()[0] + detail
    return None


def operator_group(help_text: str) -> typer.Typer:
    """A group of operator commands (``kh session ...``) with the group's ``--data-dir``
    (``kh session --data-dir D list``)."""
    group = typer.Typer(
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @group.callback()
    def options(context: typer.Context, data_dir: DataDir = None) -> None:
        context.meta[_DATA_DIR] = data_dir

    return group


def installation_settings(
    context: typer.Context | None = None, data_dir: Path | None = None, **overrides: Any
) -> Settings:
    """The installation's settings: ``KH_*`` variables, then the command's options
    (``--data-dir``: the command's, else its group's)."""
    from .config import Settings

    if data_dir is None and context is not None:
        data_dir = context.meta.get(_DATA_DIR)
    return Settings.from_env(data_dir=data_dir, **overrides)


def redis_url(settings: Settings) -> str:
    """``KH_REDIS_URL``, else the embedded installation's."""
    from . import embedded

    if settings.redis_url:
        return settings.redis_url
    state = embedded.read_state(settings)
    if state is None:
        raise KernelhubError("kernelhub is not running: start it with `kh up` or set KH_REDIS_URL")
    return state.redis_url


def with_store(settings: Settings, run: Callable[[RedisEventStore], Awaitable[T]]) -> T:
    """``run(store)`` against the installation's log (no actors needed)."""
    return on_store(redis_url(settings), settings.key_prefix, run)


def on_store(url: str, prefix: str, run: Callable[[RedisEventStore], Awaitable[T]]) -> T:
    """``run(store)`` against the log at ``url``, the store closed afterwards."""
    from events import RedisEventStore

    async def go() -> T:
        store = RedisEventStore.from_url(url, prefix=prefix)
        try:
            return await run(store)
        finally:
            await store.close()

    return asyncio.run(go())


def exit_with(code: int) -> None:
    """A command's non-zero exit code (0: it returns as usual)."""
    if code:
        raise typer.Exit(code)


# ---- kh up, kh down, kh status ------------------------------------------------------------
app = typer.Typer(add_completion=False, rich_markup_mode=None)
"""``up``, ``down`` and ``status``: top-level commands (:mod:`kernelhub.cli` merges them)."""


class DurabilityChoice(StrEnum):
    """``events.Durability``'s values (a test keeps them equal), without importing the
    event store when ``kh`` starts."""

    always = "always"
    everysec = "everysec"


class BackendChoice(StrEnum):
    """``actors.agents.backends.BACKEND_KINDS`` (a test keeps them equal)."""

    auto = "auto"
    docker = "docker"
    process = "process"
    sim = "sim"


ACCELERATORS_HELP = "auto, none, nvml, nvml:shares, sim, sim:<devices>, sim:<devices>:shares"
"""``actors.agents.accelerators.ACCELERATOR_CHOICES`` (a test keeps them equal)."""


async def _log_facts(url: str, prefix: str) -> dict[str, Any]:
    from events import RedisEventStore

    store = RedisEventStore.from_url(url, prefix=prefix)
    try:
        await store.check_server()
        info = await store.server_info()
        return {
            "events": await store.log_length(),
            "head": await store.head(),
            "redis_version": info.get("redis_version"),
            "used_memory_human": info.get("used_memory_human"),
            "appendfsync": await store.appendfsync(),
        }
    finally:
        await store.close()


async def _prepare(settings: Settings, url: str) -> Bootstrap:
    """Durability on the server, then the idempotent tenancy bootstrap."""
    from events import RedisEventStore
    from events.secrets import SecretBox

    from .bootstrap import bootstrap

    store = RedisEventStore.from_url(url, prefix=settings.key_prefix)
    try:
        await store.check_server(settings.durability)
        box = SecretBox.from_file(settings.master_key_path, create=True)
        return await bootstrap(store, box)
    finally:
        await store.close()


def _abbreviated(names: Sequence[str], most: int = 10) -> list[str]:
    """Actor names for one line: a thousand simulated agents' hosts are not listed."""
    return list(names[:most]) + ([f"... {len(names) - most} more"] if len(names) > most else [])


def _print_connect(
    settings: Settings, state: embedded.EmbeddedState, facts: dict[str, Any], keys: Bootstrap
) -> None:
    from actors.gateway import API_VERSION

    print(f"  redis      {state.redis_url}")
    print(
        f"             redis-server {facts['redis_version']} ({state.redis_binary}), "
        f"pid {state.redis_pid}, appendfsync {facts['appendfsync']}, noeviction"
    )
    if state.supervisor_pid:
        print(f"             restarted when it dies by supervisor pid {state.supervisor_pid}")
    print(f"  data dir   {settings.data_dir}")
    print(f"  log        {facts['events']} events, head {facts['head']}")
    if state.ray_address:
        print(f"  ray        {state.ray_address} (pid {state.ray_pid})")
        print(f"  dashboard  {state.dashboard_url} (token: ray get-auth-token)")
        if state.metrics_url:
            print(f"  metrics    {state.metrics_url} (Prometheus; docs/metrics.md)")
        actors = ", ".join(_abbreviated(state.actors or []))
        print(f"  actors     {actors} ({state.backend} backend)")
    if state.endpoint:
        print(f"  gateway    {state.endpoint} (Backend.AI API {API_VERSION})")
    print(f"  admin      {keys.access_key} (also in {settings.client_config_path})")
    print()
    print("Connect (the Backend.AI client, the SDK and kh read these):")
    if state.endpoint:
        print(f"export BACKEND_ENDPOINT={state.endpoint}")
        print("export BACKEND_ENDPOINT_TYPE=api")
    print(f"export BACKEND_ACCESS_KEY={keys.access_key}")
    print(f"export BACKEND_SECRET_KEY={keys.secret_key}")
    print(f"export KH_REDIS_URL={state.redis_url}")
    print(f"export KH_DATA_DIR={settings.data_dir}")
    print()
    print("Try: kh session create --wait 60    Status: kh status    Stop: kh down")


def accelerators_of(text: str) -> list[dict[str, Any]]:
    """``--accelerator``'s value as the agents take it (a bad one: one line, exit 1)."""
    from actors.agents.accelerators import accelerator_option

    try:
        return accelerator_option(text)
    except ValueError as exc:
        raise KernelhubError(str(exc)) from None


def warn_unisolated(backend: str | None, allowed: bool) -> None:
    from . import unisolated

    line = unisolated.warning(backend, allowed)
    if line is not None:
        print(line, file=sys.stderr, flush=True)


def _join(settings: Settings, address: str, shards: int, asked: bool | None) -> None:
    """``kh up --address``: the head's actors on an existing cluster, the log in the
    external Redis (``KH_REDIS_URL``)."""
    from . import cluster, unisolated
    from .bootstrap import write_client_config

    url = cluster.external_redis(settings)
    keys = asyncio.run(_prepare(settings, url))
    asyncio.run(unisolated.record(url, settings.key_prefix, asked))
    joined = cluster.join(settings, address, shards=shards)
    write_client_config(settings.client_config_path, keys, joined.endpoint)
    where = (
        "on the kernelhub_head node"
        if joined.pinned
        else "anywhere (no node offers kernelhub_head)"
    )
    print(f"kernelhub joined the Ray cluster at {joined.ray_address}")
    print(f"  redis      {joined.redis_url}")
    print(f"  actors     {' '.join(_abbreviated(joined.actors))} ({where})")
    print(f"  gateway    {joined.endpoint}")
    print(f"  client     {settings.client_config_path}")
    print("Start an agent on each worker node:")
    print(f"  KH_REDIS_URL={joined.redis_url} kh agent start --address {joined.ray_address}")


@app.command(help="Start the embedded stack on 127.0.0.1 (Redis, Ray, agents, gateway).")
@operator_command
def up(
    data_dir: DataDir = None,
    redis_port: Annotated[
        int | None,
        typer.Option(help="TCP port for Redis (0: free); default: socket", show_default=False),
    ] = None,
    durability: Annotated[
        DurabilityChoice | None,
        typer.Option(
            help="appendfsync: always (acknowledged = durable) or everysec (default)",
            show_default=False,
        ),
    ] = None,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="stay attached; Ctrl-C stops")
    ] = False,
    backend: Annotated[
        BackendChoice,
        typer.Option(
            help="how agents run kernels (default auto: Docker when a daemon answers, else "
            "local processes)"
        ),
    ] = BackendChoice.auto,
    agents: Annotated[int, typer.Option(help="simulated agents (with --backend sim)")] = 1,
    accelerator: Annotated[
        str,
        typer.Option(
            help=f"the agent's accelerators: {ACCELERATORS_HELP} (default auto: NVIDIA GPUs "
            "when NVML finds any)"
        ),
    ] = "auto",
    address: Annotated[
        str | None,
        typer.Option(
            help="join this Ray cluster (its GCS address, host:port) instead of starting the "
            "embedded stack; needs KH_REDIS_URL",
            show_default=False,
        ),
    ] = None,
    shards: Annotated[
        int, typer.Option(help="session shards (fixed at install: later values are ignored)")
    ] = 2,
    allow_unisolated: Annotated[
        bool | None,
        typer.Option(
            "--allow-unisolated/--no-allow-unisolated",
            help="let every user's sessions run on agents that do not isolate kernels (the "
            "process backend: the operator's uid, on the host); default: only the "
            "superadmin's. Recorded in the installation; $KH_ALLOW_UNISOLATED=1/0 does the same",
            show_default=False,
        ),
    ] = None,
) -> None:
    from actors.agents.backends import resolve_backend_kind

    from . import embedded, unisolated
    from .bootstrap import write_client_config

    settings = installation_settings(
        data_dir=data_dir,
        redis_port=redis_port,
        durability=durability.value if durability else None,
    )
    asked = unisolated.opt_in_asked(allow_unisolated, os.environ)
    if address:
        _join(settings, address, shards, asked)
        return
    if settings.redis_url:
        running = embedded.read_state(settings)
        if running is None or running.redis_url != settings.redis_url:
            raise KernelhubError(
                "KH_REDIS_URL points at an external Redis; `kh up` runs the embedded one: unset it"
            )
    accelerators = accelerators_of(accelerator)
    with embedded.locked(settings):  # a second `kh up` waits: never two heads
        state, done = embedded.up(settings)
        keys = asyncio.run(_prepare(settings, state.redis_url))
        allowed = asyncio.run(unisolated.record(state.redis_url, settings.key_prefix, asked))
        state, ray_done = embedded.start_ray(
            settings,
            state,
            backend=resolve_backend_kind(backend.value),
            agents=agents,
            shards=shards,
            accelerators=accelerators,
        )
    write_client_config(settings.client_config_path, keys, state.endpoint)
    facts = asyncio.run(_log_facts(state.redis_url, settings.key_prefix))
    repaired = [step for step in done + ray_done if step != "started"]
    if repaired:
        print(f"kernelhub is up (repaired: {', '.join(repaired)})")
    else:
        print("kernelhub is up" + ("" if "started" in done else " (already running)"))
    _print_connect(settings, state, facts, keys)
    warn_unisolated(state.backend, allowed)
    if foreground:
        print("Running in the foreground: Ctrl-C stops it.", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        embedded.down(settings)
        print("kernelhub is down")


@app.command(help="Stop what `kh up` started (all of it, also when half of it died).")
@operator_command
def down(data_dir: DataDir = None) -> None:
    from . import cluster, embedded

    settings = installation_settings(data_dir=data_dir)
    if embedded.down(settings) is not None:
        print("kernelhub is down")
        return
    left = cluster.leave(settings)
    if left is not None:
        joined, killed = left
        print(
            f"kernelhub's {len(killed)} actors stopped on the Ray cluster at "
            f"{joined.ray_address} (the cluster, Redis and the log stay)"
        )
        return
    print(f"nothing was running (data dir {settings.data_dir})")


@app.command(help="The cluster at a glance (exit 3: nothing runs; 4: part of it runs).")
@operator_command
def status(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    from . import cluster, ray_head
    from . import status as status_view

    settings = installation_settings(data_dir=data_dir)
    url = settings.redis_url
    health = status_view.own_health(settings)  # kh up's own, also under its exported URL
    if health is not None and health.verdict == "degraded":
        if as_json:
            print(json.dumps(status_view.degraded_report(health), sort_keys=True))
        else:
            print("\n".join(status_view.render_degraded(health)))
        raise typer.Exit(4)
    state = health.state if health is not None else None
    if state:
        url = state.redis_url
    if not url:
        if as_json:
            print(json.dumps({"running": False, "data_dir": str(settings.data_dir)}))
        else:
            print(f"kernelhub is not running (data dir {settings.data_dir}); start it: kh up")
        raise typer.Exit(3)
    facts = asyncio.run(_log_facts(url, settings.key_prefix))
    report: dict[str, Any] = {
        "running": True,
        "redis_url": url,
        "data_dir": str(settings.data_dir),
        **facts,
        **on_store(url, settings.key_prefix, status_view.cluster_summary),
    }
    if state and health is not None:
        report["redis_pid"] = health.log_server.pid
        report["supervisor_pid"] = health.log_server.supervisor_pid
        report["redis_restarts"] = health.log_server.restarts
        report["stack"] = health.to_json()
        report["ray_address"] = state.ray_address
        if state.dashboard_url:
            os.environ.update(ray_head.RAY_ENV)  # the token mode, before Ray is imported
            report["dashboard_url"] = state.dashboard_url
            report["metrics_url"] = state.metrics_url
            report["actors"] = status_view.kernelhub_actors(state.dashboard_url)
    elif (joined := cluster.read_joined(settings)) is not None:  # kh up --address
        ray_head.use_env_for(joined.ray_address)
        report["ray_address"] = joined.ray_address
        report["actors"] = status_view.kernelhub_actors(joined.ray_address)
    if as_json:
        print(json.dumps(report, sort_keys=True))
    else:
        print("\n".join(status_view.render(report)))
