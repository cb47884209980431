"""Where a session's virtual folders appear in its kernels: the rules, pure.

A session asks for folders by name (``config.mounts``) and may say where each goes
(``config.mount_map``: name -> path). Each lands at a *kernel path*: ``/home/work/<name>`` by
default, else the mapped path. The kernel path ends up in a Docker bind mount's target, in
a symlink's name on the process backend and in a comma-separated environment variable,
and the gateway writes it to the log for ever, so it is checked here before anything else
sees it (and checked again by the agent, which reads the log: :func:`kernel_paths`).

The rules (23.03's, made strict where 23.03 is loose; docs/vfolders.md):

- at most :data:`MAX_MOUNTS` folders; a name given twice is one mount (the official client
  appends ``BACKEND_VFOLDER_MOUNTS`` to ``-m``, so a folder named in both comes twice);
- a name is a folder name (no subpath: ``data/sub`` is refused, since a subpath is a path
  inside a tenant's tree, and binding it would follow whatever symlink the tenant put
  there, onto the host);
- a mapped path is relative (to ``/home/work``) or absolute under ``/home/work`` (23.03
  strips the ``/home/work/`` prefix the same way), made of plain components
  (:data:`_COMPONENT`: no ``..``, no ``:`` or ``,`` that would split a bind spec or the
  variable, no control characters); never ``/home/work`` itself, never a name the runner
  or the image's tools use (:data:`RESERVED`), never one of the mounted folders' own names
  (23.03's "alias cannot be an existing folder name"), and no two mounts nest;
- a ``mount_map`` entry for a name not in ``mounts`` is refused: 23.03 ignores it, which
  would drop an option silently.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from .errors import InvalidAPIParameters

__all__ = [
    "MAX_KERNEL_PATH",
    "MAX_MOUNTS",
    "RESERVED",
    "SYSTEM_DIRS",
    "WORK_DIR",
    "MountPlan",
    "in_work_dir",
    "kernel_path_of",
    "kernel_paths",
    "model_mount_path",
    "mount_plan",
    "place",
    "vfolder_mount_spec",
]

WORK_DIR = PurePosixPath("/home/work")
MAX_MOUNTS = 16
"""Folders one session may mount (each is a bind mount per kernel and a record in the
session's creation event)."""
MAX_KERNEL_PATH = 512
MAX_DEPTH = 8
_COMPONENT = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
RESERVED = frozenset(
    {".logs", ".terminfo", ".jupyter", ".tmux.conf", ".ssh", ".local", ".config", ".cache"}
)
"""First components under ``/home/work`` no folder may take: ``.logs`` is where the runner
keeps batch logs; the rest are 23.03's reserved names and what shells and tools keep in
the home directory (a folder mounted over ``.ssh`` would replace the session's keys)."""
_RESERVED_PATTERNS = (re.compile(r"^\.[a-z0-9]+rc$"), re.compile(r"^\.[a-z0-9]+_profile$"))
"""23.03's ``RESERVED_VFOLDER_PATTERNS``: dotfiles a shell reads at start (``.bashrc``)."""


SYSTEM_DIRS = frozenset(
    {"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "opt", "proc",
     "root", "run", "sbin", "sys", "tmp", "usr", "var"}
)  # fmt: skip
"""Top directories of an image a model folder may not cover (the runner, the image's tools
and users' homes live there); ``/home/work/...`` follows the work dir's own rules."""


@dataclass(frozen=True)
class MountPlan:
    """One folder a create asks for, before it is resolved: how it was named (a name, or
    an id) and its mapped kernel path (None: ``/home/work/<the folder's name>``)."""

    ref: str
    kernel_path: str | None


def _refuse(field: str, message: str) -> InvalidAPIParameters:
    return InvalidAPIParameters(f"{field}: {message}")


def kernel_path_of(alias: str | None, name: str, field: str = "config.mount_map") -> str:
    """The kernel path of folder ``name`` mapped to ``alias`` (None: not mapped): absolute,
    normalised, strictly under ``/home/work``. Refuses (400, naming ``field``) anything else."""
    raw = name if alias is None else alias
    if not isinstance(raw, str) or not raw.strip():
        raise _refuse(field, "a mount path cannot be empty")
    if len(raw) > MAX_KERNEL_PATH:
        raise _refuse(field, f"a mount path is at most {MAX_KERNEL_PATH} characters")
    text = raw
    if text.startswith("/"):
        if text.rstrip("/") == str(WORK_DIR):
            raise _refuse(field, f"{raw!r} is the work directory itself: name a folder in it")
        if not text.startswith(f"{WORK_DIR}/"):
            raise _refuse(field, f"{raw!r} is not under {WORK_DIR}")
        text = text[len(f"{WORK_DIR}/") :]
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if not parts:
        raise _refuse(field, f"{raw!r} is the work directory itself: name a folder in it")
    if len(parts) > MAX_DEPTH:
        raise _refuse(field, f"{raw!r} is more than {MAX_DEPTH} directories deep")
    for part in parts:
        if part == ".." or not _COMPONENT.match(part):
            raise _refuse(
                field,
                f"{raw!r}: each part of a mount path is 1-128 letters, digits, '_', '-' or "
                "'.', and never '..'",
            )
    first = parts[0]
    if first in RESERVED or any(p.match(first) for p in _RESERVED_PATTERNS):
        raise _refuse(field, f"{raw!r}: {first} is reserved for internal path")
    return str(WORK_DIR.joinpath(*parts))


def _nested(a: str, b: str) -> bool:
    return a == b or PurePosixPath(a).is_relative_to(b) or PurePosixPath(b).is_relative_to(a)


def _check_overlaps(mounts: Sequence[tuple[str, str]], field: str) -> None:
    """No two ``(name, kernel path)`` at the same place or one inside the other."""
    for i, (name, path) in enumerate(mounts):
        for other, other_path in mounts[i + 1 :]:
            if _nested(path, other_path):
                raise _refuse(
                    field,
                    f"the mount path of {name!r} ({path}) overlaps {other!r}'s ({other_path})",
                )


def mount_plan(
    mounts: Sequence[str] | None, mount_map: Mapping[str, str] | None
) -> list[MountPlan]:
    """The folders a create asks for, in the order named, each mapped path made a kernel
    path; refuses (400 naming the field) what the rules above forbid. Pure: which folder
    each name is, and whether it may be mounted, is the gateway's next step
    (:func:`place` then finishes the kernel paths)."""
    refs: list[str] = []
    for i, ref in enumerate(mounts or ()):
        field = f"config.mounts[{i}]"
        if not isinstance(ref, str) or not ref:
            raise _refuse(field, "a folder name is a non-empty string")
        if "/" in ref:
            raise _refuse(
                field, f"{ref[:80]!r}: subpath mounts are not supported (mount the whole folder)"
            )
        if not _FOLDER_NAME.match(ref):
            raise _refuse(field, f"{ref[:80]!r} is not a folder name")
        if ref not in refs:
            refs.append(ref)
    if len(refs) > MAX_MOUNTS:
        raise _refuse("config.mounts", f"at most {MAX_MOUNTS} folders, not {len(refs)}")
    mapped = dict(mount_map or {})
    for key in mapped:
        if key not in refs:
            raise _refuse(
                f"config.mount_map.{str(key)[:80]}",
                "this folder is not in config.mounts (name it there too, as `-m NAME=PATH` does)",
            )
    if len(mapped.values()) != len(set(mapped.values())):
        raise _refuse("config.mount_map", "Duplicate alias folder name exists.")
    plans = [
        MountPlan(
            ref,
            kernel_path_of(mapped[ref], ref, f"config.mount_map.{ref}") if ref in mapped else None,
        )
        for ref in refs
    ]
    _check_overlaps(  # the mapped ones now: before any folder is looked up
        [(p.ref, p.kernel_path) for p in plans if p.kernel_path is not None], "config.mount_map"
    )
    return plans


def place(plans: Sequence[MountPlan], names: Sequence[str]) -> list[str]:
    """The kernel path of each planned folder, ``names`` being the folders' names as
    resolved (a folder named by its id lands at ``/home/work/<its name>``, as 23.03): a
    mapped path may not be another mounted folder's name (23.03's "Alias name cannot be
    set to an existing folder name"), and no two kernel paths nest."""
    paths = []
    for plan, name in zip(plans, names, strict=True):
        if plan.kernel_path is None:
            paths.append(kernel_path_of(None, name, f"config.mounts.{name}"))
            continue
        relative = str(PurePosixPath(plan.kernel_path).relative_to(WORK_DIR))
        if relative != name and relative in names:
            raise _refuse(
                f"config.mount_map.{plan.ref}",
                f"Alias name cannot be set to an existing folder name: {relative}",
            )
        paths.append(plan.kernel_path)
    _check_overlaps(list(zip(names, paths, strict=True)), "config.mount_map")
    return paths


def model_mount_path(value: str, field: str = "config.model_mount_destination") -> str:
    """Where an inference replica mounts its model folder (23.3.5: ``/models`` by default):
    under ``/home/work`` by :func:`kernel_path_of`'s rules, else an absolute path of plain
    components, normalised, not ``/`` and not over :data:`SYSTEM_DIRS`. Only a model folder,
    read-only, may land outside the work dir (the agent checks that again)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise _refuse(field, "an absolute path, e.g. /models")
    if value == str(WORK_DIR) or value.startswith(f"{WORK_DIR}/"):
        return kernel_path_of(value, value, field)
    parts = [part for part in value.split("/") if part not in ("", ".")]
    if not parts or len(parts) > MAX_DEPTH or len(value) > 256:
        raise _refuse(field, f"a directory 1-{MAX_DEPTH} levels under /, e.g. /models")
    for part in parts:
        if part == ".." or not _COMPONENT.match(part):
            raise _refuse(
                field, "each part is 1-128 letters, digits, '_', '-' or '.', and never '..'"
            )
    if parts[0] in SYSTEM_DIRS:
        raise _refuse(field, f"/{parts[0]} belongs to the image: choose another place")
    return "/" + "/".join(parts)


def vfolder_mount_spec(
    name: str,
    folder_id: uuid.UUID,
    host_path: str,
    kernel_path: str,
    mount_perm: str,
    usage_mode: str,
) -> dict[str, str]:
    """One mount as a session's creation event carries it (23.03's ``VFolderMountSpec``
    JSON): ``vfid`` the folder id's hex, ``vfsubpath`` always ``"."`` (no subpaths). Its one
    author: a session's create (:mod:`actors.gateway.mounts`) and a replica's
    (:mod:`actors.endpoints.replicas`) both build it here."""
    return {
        "name": name,
        "vfid": folder_id.hex,
        "vfsubpath": ".",
        "host_path": host_path,
        "kernel_path": kernel_path,
        "mount_perm": mount_perm,
        "usage_mode": usage_mode,
    }


def in_work_dir(path: str) -> bool:
    return path.startswith(f"{WORK_DIR}/")


def kernel_paths(paths: Sequence[str], outside_allowed: Sequence[bool] = ()) -> list[str]:
    """The agent's check of kernel paths read from the log (the log is only as honest as
    whatever wrote it): each as :func:`kernel_path_of` makes it (or, where
    ``outside_allowed`` says so — a read-only model folder — as :func:`model_mount_path`
    does), none overlapping. Raises
    :class:`InvalidAPIParameters` on the first that is not."""
    checked = []
    allowed = list(outside_allowed) + [False] * (len(paths) - len(outside_allowed))
    for path, outside in zip(paths, allowed, strict=True):
        if outside and not in_work_dir(path):
            if model_mount_path(path, "mount") != path:
                raise _refuse("mount", f"{path[:80]!r} is not a normalised mount path")
            checked.append(path)
            continue
        if kernel_path_of(path, path, "mount") != path:
            raise _refuse("mount", f"{path[:80]!r} is not a normalised mount path")
        checked.append(path)
    _check_overlaps([(p, p) for p in checked], "mount")
    return checked
