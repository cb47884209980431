"""``kh agent drain|undrain ID``: stop (or resume) placing new sessions on an agent;
``kh agent start``: a worker node's agent (see :mod:`kernelhub.cluster`).

What runs there keeps running; the change is an ``agent_registered`` event, so it holds
across agent restarts. The agent is found in whichever actor hosts it: ``agent:<id>`` for
a real node, an ``agents-sim:<k>`` host for simulated ones.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from actors.agents.accelerators import ACCELERATOR_CHOICES
from actors.agents.backends import BACKEND_KINDS

from .errors import KernelhubError

__all__ = ["add_parser", "set_schedulable"]


def set_schedulable(actor_names: Sequence[str], agent_id: str, schedulable: bool) -> bool:
    """Returns whether the flag changed (False: it was already so)."""
    import ray

    from actors.hosts import NAMESPACE

    candidates = [n for n in actor_names if n == f"agent:{agent_id}"]
    candidates += [n for n in actor_names if n.startswith("agents-sim:")]
    for name in candidates:
        try:
            host = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            continue
        if agent_id in ray.get(host.agent_ids.remote()):
            return bool(ray.get(host.set_schedulable.remote(agent_id, schedulable)))
    raise KernelhubError(f"no agent {agent_id!r} in this installation")


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("agent", help="start this node's agent, drain or undrain one")
    commands = parser.add_subparsers(dest="agent_command", metavar="COMMAND", required=True)
    for name, text in (
        ("drain", "place nothing new on the agent"),
        ("undrain", "let the scheduler use the agent again"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("agent_id")
    start = commands.add_parser(
        "start", help="this worker node's agent, on a cluster joined with `kh up --address`"
    )
    start.add_argument(
        "--address",
        help="the cluster's GCS address (default $KH_RAY_ADDRESS, "
        "else the cluster this node belongs to)",
    )
    start.add_argument("--agent-id", help="default i-<hostname>; a node that returns keeps it")
    start.add_argument("--node-id", help="the Ray node to pin it to (default: this one)")
    start.add_argument(
        "--backend",
        choices=list(BACKEND_KINDS),
        default="auto",
        help="how it runs kernels (default auto: Docker if it answers)",
    )
    start.add_argument(
        "--accelerator",
        default="auto",
        help=f"its accelerators: {ACCELERATOR_CHOICES} (default auto)",
    )


def run_command(args: argparse.Namespace, actor_names: Sequence[str]) -> int:
    wanted = args.agent_command == "undrain"
    changed = set_schedulable(actor_names, args.agent_id, wanted)
    state = "schedulable" if wanted else "drained"
    print(f"{args.agent_id} {state}" + ("" if changed else " (already)"))
    return 0
