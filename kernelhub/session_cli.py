"""``kh session ...``: create, destroy, show and list sessions on the embedded stack.

Commands go to the ``sessions:0`` actor; what is shown comes from the read models, so
``show`` prints exactly what the log says (status history included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from decimal import Decimal
from typing import Any

from .errors import KernelhubError

__all__ = ["add_parser", "run_command"]

_TERMINAL = {"TERMINATED", "CANCELLED", "ERROR"}


def _sessions_actor() -> Any:
    import ray

    try:
        return ray.get_actor("sessions:0", namespace="kernelhub")
    except ValueError:
        raise KernelhubError(
            "the sessions actor is not running: start kernelhub with `kh up`"
        ) from None


def _wait(actor: Any, session_id: str, wanted: set[str], timeout: float) -> str:
    import ray

    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = ray.get(actor.status.remote(session_id))
        if status in wanted:
            return str(status)
        time.sleep(0.1)
    raise KernelhubError(f"session {session_id} is still {status} after {timeout:.0f}s")


def create(args: argparse.Namespace, access_key: str) -> int:
    import ray

    from actors.domain.session import SessionType
    from actors.domain.sizes import parse_size
    from actors.domain.slots import ResourceSlot

    actor = _sessions_actor()
    slots = ResourceSlot(cpu=Decimal(args.cpu), mem=parse_size(args.mem))
    kind = SessionType.BATCH if args.command else SessionType.INTERACTIVE
    session_id = ray.get(actor.create.remote(
        name=args.name, access_key=access_key, scaling_group="default", image=args.image,
        requested=[slots], session_type=kind, startup_command=args.command,
        command_id=uuid.uuid4(),
    ))  # fmt: skip
    print(session_id)
    if args.wait:
        status = _wait(actor, session_id, {"RUNNING"} | _TERMINAL, args.wait)
        print(f"{session_id} {status}")
    return 0


def destroy(args: argparse.Namespace) -> int:
    import ray

    actor = _sessions_actor()
    ray.get(actor.destroy.remote(args.session_id, args.forced, None, str(uuid.uuid4())))
    if args.wait:
        print(f"{args.session_id} {_wait(actor, args.session_id, _TERMINAL, args.wait)}")
    return 0


def describe(record: dict[str, Any]) -> list[str]:
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
        lines.append(f"kernel    {kernel['id']} {kernel['cluster_hostname']} on {kernel['agent']}: "
                     f"{kernel['status']} {kernel['status_info']}".rstrip())  # fmt: skip
    return lines


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("session", help="create, destroy, show and list sessions")
    commands = parser.add_subparsers(dest="session_command", metavar="COMMAND", required=True)
    create_p = commands.add_parser("create", help="enqueue a session (as the bootstrap admin)")
    create_p.add_argument("--name", default=f"s-{uuid.uuid4().hex[:6]}")
    create_p.add_argument("--image", default="python")
    create_p.add_argument("--cpu", default="1")
    create_p.add_argument("--mem", default="256m")
    create_p.add_argument("--command", help="a batch session's startup command")
    create_p.add_argument("--wait", type=float, default=0, help="seconds to wait for RUNNING")
    destroy_p = commands.add_parser("destroy", help="destroy a session")
    destroy_p.add_argument("session_id")
    destroy_p.add_argument("--forced", action="store_true")
    destroy_p.add_argument("--wait", type=float, default=0, help="seconds to wait for the end")
    show_p = commands.add_parser("show", help="a session with its status history")
    show_p.add_argument("session_id")
    show_p.add_argument("--json", action="store_true")
    list_p = commands.add_parser("list", help="sessions, newest first")
    list_p.add_argument("--status", action="append")
    list_p.add_argument("--limit", type=int, default=20)


async def run_command(args: argparse.Namespace, store: Any, access_key: str) -> int:
    from projections.queries import ReadModels

    models = ReadModels(store)
    if args.session_command == "show":
        deadline = time.monotonic() + 5  # the projection may be a moment behind a fresh write
        record = await models.session(args.session_id)
        while record is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            record = await models.session(args.session_id)
        if record is None:
            raise KernelhubError(f"no session {args.session_id}")
        print(
            json.dumps(record, indent=2, sort_keys=True)
            if args.json
            else "\n".join(describe(record))
        )
        return 0
    page = await models.sessions(statuses=args.status, limit=args.limit)
    for record in page.items:
        print(f"{record['id']}  {record['name']:16} {record['status']:12} {record['created_at']}")
    print(f"({page.total} in all)")
    return 0
