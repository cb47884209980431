"""Kernel backends: how an agent turns a scheduled kernel into something running.

One small interface (:mod:`.base`), several implementations: ``sim`` (delays only, for
scale and tests, :mod:`.sim`), ``process`` (a local subprocess per kernel, :mod:`.process`)
and ``docker`` (a container per kernel, :mod:`.docker`). Here: the backends by name
(``sim``, ``process``, ``docker``, or ``auto``), what ``kh up`` and the agent hosts are
configured with. The Docker module (and aiodocker) is imported only where Docker is asked
for.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ...domain.isolation import UNISOLATED
from ..vfolder_mounts import default_volume_root
from .base import Backend
from .process import ProcessBackend
from .sim import SimBackend

__all__ = ["BACKEND_KINDS", "isolation_of", "make_backend", "resolve_backend_kind"]

BACKEND_KINDS = ("auto", "docker", "process", "sim")


def resolve_backend_kind(kind: str, docker_url: str | None = None) -> str:
    """``auto``: Docker when a daemon answers, else local processes (docs/architecture.md,
    The embedded stack and Docker)."""
    if kind != "auto":
        return kind
    from .docker import docker_answers  # aiodocker only where Docker is asked about

    return "docker" if asyncio.run(docker_answers(docker_url)) else "process"


def make_backend(kind: str, work_root: str | Path, agent_id: str, **options: Any) -> Backend:
    """The backend ``kind`` with kernels under ``<work_root>/<agent_id>``. Its virtual
    folders' volume root is ``volume_root`` when given, else ``$KH_VFOLDER_ROOT``, else
    ``vfolders`` beside ``work_root`` (``kh up`` puts kernels in ``<data dir>/kernels``, so
    that is ``<data dir>/vfolders``, where the gateway puts folders by default)."""
    root = Path(work_root) / agent_id
    if kind in ("docker", "process"):
        options.setdefault("volume_root", default_volume_root(Path(work_root).parent))
    if kind == "docker":
        from .docker import DockerBackend

        return DockerBackend(root, owner=agent_id, **options)
    if kind == "process":
        return ProcessBackend(root, **options)
    if kind == "sim":
        return SimBackend(**options)
    raise ValueError(f"unknown backend {kind!r} (one of {', '.join(BACKEND_KINDS[1:])})")


def isolation_of(backend: Backend) -> str:
    """What a backend isolates, as its agent registers it (its class says; one that does not
    is not trusted to isolate)."""
    return str(getattr(backend, "isolation", UNISOLATED))
