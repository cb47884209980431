"""``kh agent drain|undrain ID``: stop (or resume) placing new sessions on an agent;
``kh agent start``: a worker node's agent (see :mod:`kernelhub.cluster`).

What runs there keeps running; the change is an ``agent_registered`` event, so it holds
across agent restarts. The agent is found in whichever actor hosts it: ``agent:<id>`` for
a real node, an ``agents-sim:<k>`` host for simulated ones.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Annotated

import typer

from .errors import KernelhubError
from .operator_cli import (
    ACCELERATORS_HELP,
    BackendChoice,
    accelerators_of,
    installation_settings,
    operator_command,
    operator_group,
    warn_unisolated,
)

__all__ = ["app", "set_schedulable"]

app = operator_group("Agents: start this node's agent, drain or undrain one.")
AgentId = Annotated[str, typer.Argument(metavar="AGENT_ID", show_default=False)]


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


def _set(context: typer.Context, agent_id: str, schedulable: bool) -> None:
    from . import cluster, embedded, ray_head

    settings = installation_settings(context)
    state = embedded.read_state(settings)
    joined = cluster.read_joined(settings) if state is None else None
    if joined is not None:  # kh up --address: the agents are on the workers
        ray_head.connect(joined.ray_address)
        names = [*joined.actors, f"agent:{agent_id}"]
    else:
        if state is None or not state.ray_address:
            raise KernelhubError("kernelhub's actors are not running: start them with `kh up`")
        ray_head.connect(state.ray_address)
        names = state.actors or []
    changed = set_schedulable(names, agent_id, schedulable)
    shown = "schedulable" if schedulable else "drained"
    print(f"{agent_id} {shown}" + ("" if changed else " (already)"))


@app.command(help="Place nothing new on the agent.")
@operator_command
def drain(context: typer.Context, agent_id: AgentId) -> None:
    _set(context, agent_id, False)


@app.command(help="Let the scheduler use the agent again.")
@operator_command
def undrain(context: typer.Context, agent_id: AgentId) -> None:
    _set(context, agent_id, True)


@app.command(help="This worker node's agent, on a cluster joined with `kh up --address`.")
@operator_command
def start(
    context: typer.Context,
    address: Annotated[
        str | None,
        typer.Option(
            help="the cluster's GCS address (default $KH_RAY_ADDRESS, else the cluster this "
            "node belongs to)",
            show_default=False,
        ),
    ] = None,
    agent_id: Annotated[
        str | None,
        typer.Option(help="default i-<hostname>; a node that returns keeps it", show_default=False),
    ] = None,
    node_id: Annotated[
        str | None,
        typer.Option(help="the Ray node to pin it to (default: this one)", show_default=False),
    ] = None,
    backend: Annotated[
        BackendChoice,
        typer.Option(help="how it runs kernels (default auto: Docker if it answers)"),
    ] = BackendChoice.auto,
    accelerator: Annotated[
        str, typer.Option(help=f"its accelerators: {ACCELERATORS_HELP} (default auto)")
    ] = "auto",
) -> None:
    from actors.agents.backends import resolve_backend_kind

    from . import cluster, unisolated

    settings = installation_settings(context)
    accelerators = accelerators_of(accelerator)
    kind = resolve_backend_kind(backend.value)
    agent, node, done = cluster.start_agent(
        settings,
        address or os.environ.get("KH_RAY_ADDRESS") or "auto",
        agent_id=agent_id,
        node_id=node_id,
        backend=kind,
        accelerators=accelerators,
    )
    print(f"agent {agent} {done} on node {node}")
    url = cluster.external_redis(settings)
    warn_unisolated(kind, asyncio.run(unisolated.record(url, settings.key_prefix, None)))
