"""The operator's ``kh`` commands (``up``, ``down``, ``status``, ``session``, ``agent``,
``projections``, ``events``, ``replay``, ``why``, ``trace``) on argparse;
:mod:`kernelhub.cli` is the entry point that puts them under one help with the client
commands.

Every failure a user can cause ends in one line on stderr and a non-zero exit, never a
traceback (``KH_DEBUG=1`` shows the traceback for bug reports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from actors.agents.accelerators import ACCELERATOR_CHOICES, accelerator_option
from actors.agents.backends import BACKEND_KINDS, resolve_backend_kind
from actors.domain.errors import DomainError
from actors.gateway import API_VERSION
from events import Durability, EventStoreError, RedisEventStore
from events.secrets import SecretBox, SecretError

from . import (
    agent_cli,
    cluster,
    embedded,
    events_cli,
    projections_cli,
    ray_head,
    session_cli,
    trace_cli,
    unisolated,
)
from . import status as status_view
from .bootstrap import Bootstrap, bootstrap, write_client_config
from .config import Settings
from .errors import KernelhubError
from .logging import configure_logging

__all__ = ["operator_main"]


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        data_dir=getattr(args, "data_dir", None),
        redis_port=getattr(args, "redis_port", None),
        durability=getattr(args, "durability", None),
    )


async def _log_facts(url: str, prefix: str) -> dict[str, Any]:
    store = RedisEventStore.from_url(url, prefix=prefix)
    try:
        await store.check_server()
        info = await store.redis.info()
        config = await store.redis.config_get("appendfsync")
        return {
            "events": await store.log_length(),
            "head": await store.head(),
            "redis_version": info.get("redis_version"),
            "used_memory_human": info.get("used_memory_human"),
            "appendfsync": next(iter(config.values()), None),
        }
    finally:
        await store.close()


async def _prepare(settings: Settings, url: str) -> Bootstrap:
    """Durability on the server, then the idempotent tenancy bootstrap."""
    store = RedisEventStore.from_url(url, prefix=settings.key_prefix)
    try:
        await store.check_server(settings.durability)
        box = SecretBox.from_file(settings.master_key_path, create=True)
        return await bootstrap(store, box)
    finally:
        await store.close()


def _abbreviated(names: Sequence[str], most: int = 8) -> list[str]:
    """Actor names for one line: a thousand simulated agents' hosts are not listed."""
    return list(names[:most]) + ([f"... {len(names) - most} more"] if len(names) > most else [])


def _print_connect(
    settings: Settings, state: embedded.EmbeddedState, facts: dict[str, Any], keys: Bootstrap
) -> None:
    print(f"  redis      {state.redis_url}")
    print(
        f"             redis-server {facts['redis_version']} ({state.redis_binary}), "
        f"pid {state.redis_pid}, appendfsync {facts['appendfsync']}, noeviction"
    )
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


def _join(args: argparse.Namespace, settings: Settings, asked: bool | None) -> int:
    """``kh up --address``: the head's actors on an existing cluster, the log in the
    external Redis (``KH_REDIS_URL``)."""
    url = cluster.external_redis(settings)
    keys = asyncio.run(_prepare(settings, url))
    asyncio.run(unisolated.record(url, settings.key_prefix, asked))
    joined = cluster.join(settings, args.address, shards=args.shards)
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
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    asked = unisolated.opt_in_asked(args.allow_unisolated, os.environ)
    if args.address:
        return _join(args, settings, asked)
    if settings.redis_url:
        running = embedded.read_state(settings)
        if running is None or running.redis_url != settings.redis_url:
            raise KernelhubError(
                "KH_REDIS_URL points at an external Redis; `kh up` runs the embedded one: unset it"
            )
    state, started = embedded.up(settings)
    keys = asyncio.run(_prepare(settings, state.redis_url))
    allowed = asyncio.run(unisolated.record(state.redis_url, settings.key_prefix, asked))
    try:
        accelerators = accelerator_option(args.accelerator)
    except ValueError as exc:
        raise KernelhubError(str(exc)) from None
    state = embedded.start_ray(
        settings,
        state,
        backend=resolve_backend_kind(args.backend),
        agents=args.agents,
        shards=args.shards,
        accelerators=accelerators,
    )
    write_client_config(settings.client_config_path, keys, state.endpoint)
    facts = asyncio.run(_log_facts(state.redis_url, settings.key_prefix))
    print("kernelhub is up" + ("" if started else " (already running)"))
    _print_connect(settings, state, facts, keys)
    _warn_unisolated(state.backend, allowed)
    if args.foreground:
        print("Running in the foreground: Ctrl-C stops it.", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        embedded.down(settings)
        print("kernelhub is down")
    return 0


def _warn_unisolated(backend: str | None, allowed: bool) -> None:
    line = unisolated.warning(backend, allowed)
    if line is not None:
        print(line, file=sys.stderr, flush=True)


def cmd_down(args: argparse.Namespace) -> int:
    settings = _settings(args)
    state = embedded.down(settings)
    if state is not None:
        print("kernelhub is down")
        return 0
    left = cluster.leave(settings)
    if left is not None:
        joined, killed = left
        print(
            f"kernelhub's {len(killed)} actors stopped on the Ray cluster at "
            f"{joined.ray_address} (the cluster, Redis and the log stay)"
        )
        return 0
    print(f"nothing was running (data dir {settings.data_dir})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    url = settings.redis_url
    state = None if url else embedded.read_state(settings)
    if state:
        url = state.redis_url
    if not url:
        if args.json:
            print(json.dumps({"running": False, "data_dir": str(settings.data_dir)}))
        else:
            print(f"kernelhub is not running (data dir {settings.data_dir}); start it: kh up")
        return 3
    facts = asyncio.run(_log_facts(url, settings.key_prefix))
    report = {
        "running": True,
        "redis_url": url,
        "data_dir": str(settings.data_dir),
        **facts,
        **asyncio.run(_cluster(url, settings.key_prefix)),
    }
    if state:
        report["redis_pid"] = state.redis_pid
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
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print("\n".join(status_view.render(report)))
    return 0


async def _cluster(url: str, prefix: str) -> dict[str, Any]:
    store = RedisEventStore.from_url(url, prefix=prefix)
    try:
        return await status_view.cluster_summary(store)
    finally:
        await store.close()


def _redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    state = embedded.read_state(settings)
    if state is None:
        raise KernelhubError("kernelhub is not running: start it with `kh up` or set KH_REDIS_URL")
    return state.redis_url


def cmd_projections(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def go() -> int:
        store = RedisEventStore.from_url(_redis_url(settings), prefix=settings.key_prefix)
        try:
            return await projections_cli.run_command(store, args)
        finally:
            await store.close()

    return asyncio.run(go())


def _with_store(args: argparse.Namespace, run: Any) -> int:
    """Run ``run(store, args)`` against the installation's Redis (no actors needed)."""
    settings = _settings(args)
    args.archive_dir = str(settings.data_dir / "archive")

    async def go() -> int:
        store = RedisEventStore.from_url(_redis_url(settings), prefix=settings.key_prefix)
        try:
            return int(await run(store, args))
        finally:
            await store.close()

    return asyncio.run(go())


def cmd_events(args: argparse.Namespace) -> int:
    return _with_store(args, events_cli.run_events)


def cmd_replay(args: argparse.Namespace) -> int:
    return _with_store(args, events_cli.run_replay)


def cmd_why(args: argparse.Namespace) -> int:
    return _with_store(args, events_cli.run_why)


def cmd_trace(args: argparse.Namespace) -> int:
    """The events from Redis; the actors' logs through Ray's log API on ``kh up``'s head
    (or ``KH_RAY_ADDRESS``, the GCS address of a cluster started otherwise)."""
    settings = _settings(args)
    state = embedded.read_state(settings)
    joined = cluster.read_joined(settings)
    address = (
        os.environ.get("KH_RAY_ADDRESS")
        or (state.ray_address if state else None)
        or (joined.ray_address if joined else None)
    )
    if address:
        ray_head.use_env_for(address)
    return _with_store(args, lambda store, a: trace_cli.run_trace(store, a, address))


def cmd_agent(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.agent_command == "start":
        try:
            accelerators = accelerator_option(args.accelerator)
        except ValueError as exc:
            raise KernelhubError(str(exc)) from None
        address = args.address or os.environ.get("KH_RAY_ADDRESS") or "auto"
        kind = resolve_backend_kind(args.backend)
        agent, node, done = cluster.start_agent(
            settings,
            address,
            agent_id=args.agent_id,
            node_id=args.node_id,
            backend=kind,
            accelerators=accelerators,
        )
        print(f"agent {agent} {done} on node {node}")
        url = cluster.external_redis(settings)
        _warn_unisolated(kind, asyncio.run(unisolated.record(url, settings.key_prefix, None)))
        return 0
    state = embedded.read_state(settings)
    joined = cluster.read_joined(settings) if state is None else None
    if joined is not None:  # kh up --address: the agents are on the workers
        ray_head.connect(joined.ray_address)
        return agent_cli.run_command(args, [*joined.actors, f"agent:{args.agent_id}"])
    if state is None or not state.ray_address:
        raise KernelhubError("kernelhub's actors are not running: start them with `kh up`")
    ray_head.connect(state.ray_address)
    return agent_cli.run_command(args, state.actors or [])


def cmd_session(args: argparse.Namespace) -> int:
    settings = _settings(args)
    url = _redis_url(settings)
    access_key = _admin_access_key(settings)
    if args.session_command in session_cli.WRITES:
        state = embedded.read_state(settings)
        if state is None or not state.ray_address:
            raise KernelhubError("kernelhub's actors are not running: start them with `kh up`")
        ray_head.connect(state.ray_address)

    async def go() -> int:
        store = RedisEventStore.from_url(url, prefix=settings.key_prefix)
        try:
            return await session_cli.run_command(args, store, access_key, settings.idle)
        finally:
            await store.close()

    return asyncio.run(go())


def _admin_access_key(settings: Settings) -> str:
    """The keypair `kh up` wrote for this installation (reading it changes nothing)."""
    try:
        with open(settings.client_config_path, "rb") as handle:
            return str(tomllib.load(handle)["access_key"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        raise KernelhubError(
            f"no admin keypair in {settings.client_config_path}: run `kh up` first"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kh", description="kernelhub: event-sourced compute sessions on Ray and Redis"
    )
    parser.add_argument("--log-level", default=os.environ.get("KH_LOG_LEVEL", "WARNING"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", type=Path, help="state directory (default $KH_DATA_DIR)")
        return p

    up = with_data_dir(sub.add_parser("up", help="start the embedded stack on 127.0.0.1"))
    up.add_argument("--redis-port", type=int, help="TCP port for Redis (0: free); default: socket")
    up.add_argument(
        "--durability",
        choices=[d.value for d in Durability],
        help="appendfsync: always (acknowledged = durable) or everysec (default)",
    )
    up.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops")
    up.add_argument(
        "--backend",
        choices=list(BACKEND_KINDS),
        default="auto",
        help="how agents run kernels (default auto: Docker when a daemon answers, else local "
        "processes)",
    )
    up.add_argument("--agents", type=int, default=1, help="simulated agents (with --backend sim)")
    up.add_argument(
        "--accelerator",
        default="auto",
        help=f"the agent's accelerators: {ACCELERATOR_CHOICES} (default auto: NVIDIA GPUs when "
        "NVML finds any)",
    )
    up.add_argument(
        "--address",
        help="join this Ray cluster (its GCS address, host:port) "
        "instead of starting the embedded stack; needs KH_REDIS_URL",
    )
    up.add_argument(
        "--shards",
        type=int,
        default=2,
        help="session shards (fixed at install: later values are ignored)",
    )
    up.add_argument(
        "--allow-unisolated",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let every user's sessions run on agents that do not isolate kernels (the process "
        "backend: the operator's uid, on the host); default: only the superadmin's. Recorded "
        f"in the installation; ${unisolated.ENV}=1/0 does the same",
    )
    up.set_defaults(func=cmd_up)

    down = with_data_dir(sub.add_parser("down", help="stop what `kh up` started"))
    down.set_defaults(func=cmd_down)

    status = with_data_dir(sub.add_parser("status", help="is it running, and how is the log"))
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    session_cli.add_parser(sub)
    sub.choices["session"].set_defaults(func=cmd_session)
    with_data_dir(sub.choices["session"])

    agent_cli.add_parser(sub)
    sub.choices["agent"].set_defaults(func=cmd_agent)
    with_data_dir(sub.choices["agent"])

    projections_cli.add_parser(sub)
    sub.choices["projections"].set_defaults(func=cmd_projections)
    with_data_dir(sub.choices["projections"])

    with_data_dir(trace_cli.add_parser(sub)).set_defaults(func=cmd_trace)

    events_cli.add_parsers(sub)
    for name, func in (("events", cmd_events), ("replay", cmd_replay), ("why", cmd_why)):
        sub.choices[name].set_defaults(func=func)
        with_data_dir(sub.choices[name])
    return parser


def operator_main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level)
    try:
        return int(args.func(args))
    except (KernelhubError, EventStoreError, SecretError) as exc:
        return _fail(str(exc))
    except DomainError as exc:
        return _fail(exc.msg or exc.title)
    except redis.exceptions.RedisError as exc:
        return _fail(f"Redis: {exc}")
    except ValueError as exc:  # pydantic ValidationError is a ValueError: bad settings
        return _fail(f"invalid configuration: {exc}".splitlines()[0] + _first_detail(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kh ... | head`: the reader left; not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _first_detail(exc: Exception) -> str:
    lines = str(exc).splitlines()
    return f" ({lines[1].strip()}: {lines[2].strip()})" if len(lines) > 2 else ""


def _fail(message: str) -> int:
    if os.environ.get("KH_DEBUG"):
        raise
    print(f"kh: error: {message}", file=sys.stderr)
    return 1
