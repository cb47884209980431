"""``kh session ...``: create, destroy, restart, exec, logs, show and list sessions on the
embedded stack.

Commands go to the owning ``sessions:<k>`` actor through the shard router; what is shown
comes from the read models, so ``show`` prints exactly what the log says (status history
included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from .errors import KernelhubError

__all__ = ["WRITES", "add_parser", "run_command"]

WRITES = frozenset({"create", "destroy", "restart", "exec", "logs"})
"""Subcommands that talk to the actors (the others read the projections only)."""
_TERMINAL = frozenset({"TERMINATED", "CANCELLED", "ERROR"})


def _router(store: Any) -> Any:
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


async def _wait_until(
    router: Any, session_id: uuid.UUID, wanted: frozenset[str], timeout: float
) -> str:
    status = str(await router.wait(session_id, timeout, wanted))
    if status not in wanted:
        raise KernelhubError(f"session {session_id} is still {status} after {timeout:.0f}s")
    return status


async def create(args: argparse.Namespace, store: Any, access_key: str) -> int:
    from actors.domain.bounds import known_slot_types, requested_slots
    from actors.domain.session import SessionType
    from actors.domain.tenancy import image_slot_limits
    from actors.tenancy.writer import load_tenancy
    from projections.queries import ReadModels

    router = _router(store)
    record = (await load_tenancy(store)).resolve_image(args.image)
    image = record["name"]  # alias -> canonical
    offered = {
        slot
        for agent in await ReadModels(store).agents()
        for slot in agent.get("available_slots") or {}
    }
    # the gateway's bounds: never mem/cpu 0 (a container without limits), only known slots
    slots = requested_slots(
        {"cpu": args.cpu, "mem": args.mem, **_resources(args)},
        image_slot_limits(record)[0],
        known_slot_types(offered),
        image=image,
    )
    kind = SessionType.BATCH if args.command else SessionType.INTERACTIVE
    session_id = await router.create(
        name=args.name,
        access_key=access_key,
        scaling_group="default",
        image=image,
        requested=[slots],
        session_type=kind,
        startup_command=args.command,
        dependencies=[uuid.UUID(d) for d in args.depends_on or ()],
    )
    print(session_id, flush=True)
    if args.wait:
        status = await _wait_until(
            router, session_id, frozenset({"RUNNING"}) | _TERMINAL, args.wait
        )
        print(f"{session_id} {status}")
    return 0


def _resources(args: argparse.Namespace) -> dict[str, str]:
    """``-r cuda.device=1`` (repeatable), as the official client's ``-r``; the amounts are
    parsed and bounded with ``--cpu`` and ``--mem`` (:mod:`actors.domain.bounds`)."""
    out: dict[str, str] = {}
    for item in args.resource or ():
        slot, sep, amount = item.partition("=")
        if not sep or not slot.strip() or not amount.strip():
            raise KernelhubError(f"-r {item!r}: use SLOT=AMOUNT, e.g. -r cuda.device=1")
        out[slot.strip()] = amount.strip()
    return out


async def destroy(args: argparse.Namespace, store: Any) -> int:
    router = _router(store)
    session_id = _session_id(args.session_id)
    await router.destroy(session_id, forced=args.forced, recursive=args.recursive)
    if args.wait:
        print(f"{session_id} {await _wait_until(router, session_id, _TERMINAL, args.wait)}")
    return 0


async def restart(args: argparse.Namespace, store: Any) -> int:
    router = _router(store)
    session_id = _session_id(args.session_id)
    await router.restart(session_id)
    if args.wait:
        status = await _wait_until(
            router, session_id, frozenset({"RUNNING"}) | _TERMINAL, args.wait
        )
        print(f"{session_id} {status}")
    return 0


async def execute(args: argparse.Namespace, store: Any) -> int:
    """Run code (``-c``) or a batch command (``--batch``) in a running session, printing
    its console as it comes; the exit code is the run's (0 for query-mode code)."""
    import sys

    router = _router(store)
    sid = _session_id(args.session_id)
    mode, code, options = (
        ("batch", "", {"exec": args.batch}) if args.batch else ("query", args.code, {})
    )
    result = await router.execution.execute(sid, None, mode, code, options)
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


async def logs(args: argparse.Namespace, store: Any) -> int:
    print(await _router(store).execution.logs(_session_id(args.session_id)), end="")
    return 0


def _session_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise KernelhubError(f"not a session id: {text!r}") from None


def describe(record: dict[str, Any], idle: dict[str, Any] | None = None) -> list[str]:
    lines = [
        f"session   {record['id']} ({record['name']}, {record['type']})",
        f"status    {record['status']} {record['status_info']}".rstrip(),
        f"owner     {record['access_key']}  group {record['scaling_group']}",
        f"slots     {json.dumps(record['requested_slots'])}",
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


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("session", help="create, destroy, restart, show and list sessions")
    commands = parser.add_subparsers(dest="session_command", metavar="COMMAND", required=True)
    create_p = commands.add_parser("create", help="enqueue a session (as the bootstrap admin)")
    create_p.add_argument("--name", default=f"s-{uuid.uuid4().hex[:6]}")
    create_p.add_argument("--image", default="python")
    create_p.add_argument("--cpu", default="1")
    create_p.add_argument("--mem", default="256m")
    create_p.add_argument(
        "-r",
        "--resource",
        action="append",
        metavar="SLOT=AMOUNT",
        help="another slot, e.g. -r cuda.device=1 (repeatable)",
    )
    create_p.add_argument("--command", help="a batch session's startup command")
    create_p.add_argument(
        "--depends-on",
        action="append",
        metavar="SESSION_ID",
        help="start only after this session succeeded (repeatable)",
    )
    create_p.add_argument("--wait", type=float, default=0, help="seconds to wait for RUNNING")
    destroy_p = commands.add_parser("destroy", help="destroy a session")
    destroy_p.add_argument("session_id")
    destroy_p.add_argument("--forced", action="store_true")
    destroy_p.add_argument(
        "--recursive", action="store_true", help="also destroy the sessions that depend on it"
    )
    destroy_p.add_argument("--wait", type=float, default=0, help="seconds to wait for the end")
    restart_p = commands.add_parser("restart", help="restart a running session's kernels")
    restart_p.add_argument("session_id")
    restart_p.add_argument("--wait", type=float, default=0, help="seconds to wait for RUNNING")
    exec_p = commands.add_parser("exec", help="run code or a command in a running session")
    exec_p.add_argument("session_id")
    what = exec_p.add_mutually_exclusive_group(required=True)
    what.add_argument("-c", "--code", help="Python code (query mode: state persists)")
    what.add_argument("--batch", metavar="COMMAND", help="a shell command (batch mode)")
    logs_p = commands.add_parser("logs", help="a session's kernel log (also after it ended)")
    logs_p.add_argument("session_id")
    show_p = commands.add_parser("show", help="a session with its status history")
    show_p.add_argument("session_id")
    show_p.add_argument("--json", action="store_true")
    list_p = commands.add_parser("list", help="sessions, newest first")
    list_p.add_argument("--status", action="append")
    list_p.add_argument("--limit", type=int, default=20)


async def run_command(
    args: argparse.Namespace, store: Any, access_key: str, idle: dict[str, Any] | None = None
) -> int:
    from actors.domain.idle import IdleConfig
    from actors.idle.facts import IdleFacts
    from projections.queries import ReadModels

    if args.session_command == "create":
        return await create(args, store, access_key)
    if args.session_command == "destroy":
        return await destroy(args, store)
    if args.session_command == "restart":
        return await restart(args, store)
    if args.session_command == "exec":
        return await execute(args, store)
    if args.session_command == "logs":
        return await logs(args, store)
    models = ReadModels(store)
    if args.session_command == "show":
        deadline = time.monotonic() + 5  # the projection may be a moment behind a fresh write
        record = await models.session(args.session_id)
        while record is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            record = await models.session(args.session_id)
        if record is None:
            raise KernelhubError(f"no session {args.session_id}")
        checks = await IdleFacts(store, IdleConfig.parse(idle or {})).report(record)
        record = {**record, "idle_checks": checks}
        print(
            json.dumps(record, indent=2, sort_keys=True)
            if args.json
            else "\n".join(describe(record, checks))
        )
        return 0
    page = await models.sessions(statuses=args.status, limit=args.limit)
    for record in page.items:
        print(f"{record['id']}  {record['name']:16} {record['status']:12} {record['created_at']}")
    print(f"({page.total} in all)")
    return 0
