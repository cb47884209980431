"""The session-creation options ``kh run`` and ``kh session create`` share, named as the
official client's ``backend.ai run`` / ``session create`` name them, and their one
translation into the SDK's ``create_session`` keywords (:func:`sdk_options`).

Nothing is judged here that the server judges: ``--starts-at 30m``, an unknown
architecture, ``--assign-agent`` without superadmin rights or a ``--mount`` go to the
server as given and come back as its one-line refusal. What is refused here is only what
cannot be sent at all: a ``KEY=VALUE`` without ``=``, a port that is not a number, a
bootstrap script given twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "Architecture",
    "AssignAgent",
    "Bootstrap",
    "BootstrapScript",
    "CallbackUrl",
    "ClusterMode",
    "ClusterSize",
    "Depends",
    "Domain",
    "Env",
    "Group",
    "Mount",
    "OptionError",
    "Owner",
    "Preopen",
    "ResourceOpts",
    "ScalingGroup",
    "StartsAt",
    "Tag",
    "environ_of",
    "sdk_options",
]


class OptionError(ValueError):
    """An option that cannot be put into a request (a usage error, exit 2)."""


Env = Annotated[
    list[str] | None,
    typer.Option(
        "-e",
        "--env",
        metavar="KEY=VALUE",
        help="an environment variable in the kernel (repeatable; BACKENDAI_* stay the server's)",
        show_default=False,
    ),
]
BootstrapScript = Annotated[
    Path | None,
    typer.Option(
        "--bootstrap-script",
        metavar="FILE",
        help="a shell script run once in the kernel before it is RUNNING (its output: kh logs)",
        show_default=False,
    ),
]
Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        metavar="SCRIPT",
        help="the bootstrap script given inline instead of as a file",
        show_default=False,
    ),
]
Tag = Annotated[
    str | None,
    typer.Option("--tag", help="a free-form annotation (kh info shows it)", show_default=False),
]
CallbackUrl = Annotated[
    str | None,
    typer.Option(
        "--callback-url",
        metavar="URL",
        help="POSTed each status change of the session",
        show_default=False,
    ),
]
StartsAt = Annotated[
    str | None,
    typer.Option(
        "--starts-at",
        metavar="WHEN",
        help="a batch session waits until: ISO time (no zone: UTC) or relative (30s, 10m, 1h)",
        show_default=False,
    ),
]
ResourceOpts = Annotated[
    list[str] | None,
    typer.Option(
        "--resource-opts",
        metavar="KEY=VALUE",
        help="a resource option, e.g. shmem=64m (repeatable)",
        show_default=False,
    ),
]
Architecture = Annotated[
    str | None,
    typer.Option(
        "--arch",
        "--architecture",
        metavar="ARCH",
        help="the image's architecture, e.g. x86_64 (default: the server's)",
        show_default=False,
    ),
]
AssignAgent = Annotated[
    list[str] | None,
    typer.Option(
        "--assign-agent",
        metavar="AGENT[,AGENT...]",
        help="the agents to place the kernels on, in order (superadmin only)",
        show_default=False,
    ),
]
ScalingGroup = Annotated[
    str | None,
    typer.Option(
        "--scaling-group",
        "--sgroup",
        metavar="NAME",
        help="the scaling group (default: the server's choice)",
        show_default=False,
    ),
]
Preopen = Annotated[
    list[str] | None,
    typer.Option(
        "--preopen",
        metavar="PORT[,PORT...]",
        help="ports to reach later with kh app (repeatable)",
        show_default=False,
    ),
]
ClusterSize = Annotated[
    int, typer.Option("--cluster-size", min=1, metavar="N", help="kernels in the session")
]
ClusterMode = Annotated[
    str | None,
    typer.Option(
        "--cluster-mode",
        metavar="MODE",
        help="single-node or multi-node (default: single-node)",
        show_default=False,
    ),
]
Domain = Annotated[
    str | None,
    typer.Option(
        "-d", "--domain", metavar="NAME", help="default: the client's", show_default=False
    ),
]
Group = Annotated[
    str | None,
    typer.Option(
        "-g",
        "--group",
        metavar="NAME",
        help="the project (default: the client's)",
        show_default=False,
    ),
]
Owner = Annotated[
    str | None,
    typer.Option(
        "-o",
        "--owner",
        "--owner-access-key",
        metavar="ACCESS_KEY",
        help="create it for this keypair (admins)",
        show_default=False,
    ),
]
Depends = Annotated[
    list[str] | None,
    typer.Option(
        "--depends",
        "--depends-on",
        metavar="SESSION",
        help="start only after this session (an id or a name) succeeded (repeatable)",
        show_default=False,
    ),
]
Mount = Annotated[
    list[str] | None,
    typer.Option(
        "-m",
        "--mount",
        "-v",
        "--volume",
        metavar="NAME[=PATH]",
        help="a virtual folder to mount (sent; refused by this server until it has folders)",
        show_default=False,
    ),
]


def environ_of(items: list[str] | None) -> dict[str, str]:
    """``-e KEY=VALUE`` pairs: the value verbatim (spaces and ``=`` in it kept), as the
    official client sends it; a pair without ``=`` or a name cannot be sent."""
    environ: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"-e {item!r}: use KEY=VALUE")
        environ[key.strip()] = value
    return environ


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"{flag} {item!r}: use KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


def _listed(items: list[str] | None) -> list[str]:
    """``--x a,b --x c`` (the official client's comma lists, or repeated)."""
    return [part.strip() for item in items or () for part in item.split(",") if part.strip()]


def _ports(items: list[str] | None) -> list[int]:
    ports = []
    for part in _listed(items):
        if not part.isdigit():
            raise OptionError(f"--preopen {part!r}: a port number")
        ports.append(int(part))
    return ports


def _mounts(items: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """``NAME``, ``NAME=PATH`` or ``NAME:PATH``, as the official client splits them."""
    names: list[str] = []
    paths: dict[str, str] = {}
    for item in items or ():
        sep = "=" if "=" in item else ":" if ":" in item else None
        name, path = item.split(sep, 1) if sep else (item, None)
        if name not in names:
            names.append(name)
        if path is not None:
            paths[name] = path
    return names, paths


def _script(file: Path | None, inline: str | None) -> str | None:
    if file is not None and inline is not None:
        raise OptionError("give the bootstrap script as --bootstrap-script FILE or --bootstrap")
    if file is not None:
        return file.read_text()  # a missing file: an OSError, said in one line
    return inline


def sdk_options(
    *,
    env: list[str] | None = None,
    bootstrap_script: Path | None = None,
    bootstrap: str | None = None,
    tag: str | None = None,
    callback_url: str | None = None,
    starts_at: str | None = None,
    resource_opts: list[str] | None = None,
    architecture: str | None = None,
    assign_agent: list[str] | None = None,
    scaling_group: str | None = None,
    preopen: list[str] | None = None,
    cluster_size: int = 1,
    cluster_mode: str | None = None,
    domain: str | None = None,
    group: str | None = None,
    owner: str | None = None,
    depends: list[str] | None = None,
    mount: list[str] | None = None,
) -> dict[str, Any]:
    """The command line's options as ``create_session`` keywords: every one given goes
    into the request (the server honours it or refuses it by name)."""
    if cluster_mode is not None and cluster_mode not in ("single-node", "multi-node"):
        raise OptionError(f"--cluster-mode {cluster_mode!r}: single-node or multi-node")
    mounts, mount_map = _mounts(mount)
    return {
        "environ": environ_of(env),
        "bootstrap_script": _script(bootstrap_script, bootstrap),
        "tag": tag,
        "callback_url": callback_url,
        "starts_at": starts_at,
        "resource_opts": _pairs(resource_opts, "--resource-opts"),
        "architecture": architecture,
        "agent_list": _listed(assign_agent),
        "scaling_group": scaling_group,
        "preopen_ports": _ports(preopen),
        "cluster_size": cluster_size,
        "cluster_mode": cluster_mode,
        "domain": domain,
        "group": group,
        "owner_access_key": owner,
        "dependencies": list(depends or ()),
        "mounts": mounts,
        "mount_map": mount_map,
    }
