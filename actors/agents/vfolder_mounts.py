"""A session's virtual folders, as the agent makes them appear in a kernel.

The session's creation event lists its mounts (``VFolderMountSpec``: name, folder id, host
path, kernel path, permission), resolved and checked by the gateway. The agent runs as root
and reads them from the log, which is only as honest as whatever wrote it, so before it
binds anything it checks again (:func:`parse_mounts`, :func:`open_folder`):

- the kernel path is one the gateway would have made (:func:`actors.domain.mount_paths.
  kernel_paths`: under ``/home/work``, normalised, no two nesting);
- the host path is exactly ``<volume root>/<folder id hex>``, the volume root being this
  agent's (``KH_VFOLDER_ROOT``, else ``<data dir>/vfolders``: :func:`default_volume_root`),
  owned by root (or the agent's user) and writable by nobody else, so no tenant can put
  anything at that name;
- the folder's directory is opened with ``O_NOFOLLOW | O_DIRECTORY``: a symlink planted
  there (``/etc``, ``/root``) is refused, never followed, and so is anything not a
  directory. Only the folder's root is checked: what is inside is the tenant's and is
  never walked by the agent (no subpath mounts, no chown below the root).

A refusal is :class:`MountRefused`: the kernel does not start and the session says why
(``status_data.error``). A mount is never dropped: a session that runs without the data it
asked for would write its results into its work dir and lose them.

What each backend does with the checked mounts: the Docker backend binds the folder at its
kernel path (read-only for ``ro``; :func:`docker_mounts`), after making the mount point in
the kernel's work dir (through :mod:`.safe_fs`, owned by the kernel's user, so a nested
path's parents are the user's); the process backend links the folder into the work dir
(:func:`link_into_work_dir`: no isolation, so ``ro`` is not enforced there, and the kernel
log says so).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..domain.errors import InvalidAPIParameters
from ..domain.mount_paths import WORK_DIR, in_work_dir, kernel_paths
from .safe_fs import Owner, Refused, open_dir, open_root

__all__ = [
    "VOLUME_ROOT_ENV",
    "FolderMount",
    "MountRefused",
    "default_volume_root",
    "docker_mounts",
    "link_into_work_dir",
    "open_folder",
    "parse_mounts",
]

VOLUME_ROOT_ENV = "KH_VFOLDER_ROOT"
_HEX = re.compile(r"^[0-9a-f]{32}$")
_PERMS = {"ro", "rw", "wd"}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class MountRefused(Exception):
    """A folder the agent will not mount into a kernel (the session's error says which)."""


@dataclass(frozen=True)
class FolderMount:
    name: str
    folder_hex: str
    host_path: str
    kernel_path: str
    read_only: bool
    usage_mode: str = "general"

    @property
    def in_work_dir(self) -> bool:
        """Under ``/home/work`` (every mount but an inference replica's model folder)."""
        return in_work_dir(self.kernel_path)

    @property
    def parts(self) -> tuple[str, ...]:
        """The kernel path below ``/home/work``, one name a step."""
        return PurePosixPath(self.kernel_path).relative_to(WORK_DIR).parts


def default_volume_root(data_dir: Path | None) -> Path | None:
    """Where this host's folders are: ``$KH_VFOLDER_ROOT``, else ``<data dir>/vfolders``
    (the gateway's default too: ``actors.gateway.folders_access.volume_root``); None when
    neither is known (every mount is then refused)."""
    configured = os.environ.get(VOLUME_ROOT_ENV, "").strip()
    if configured:
        return Path(configured)
    return None if data_dir is None else data_dir / "vfolders"


def parse_mounts(raw: Sequence[Mapping[str, Any]] | None) -> list[FolderMount]:
    """The session's mounts as the log has them, checked for shape and kernel paths (pure);
    :class:`MountRefused` at the first that is wrong."""
    mounts: list[FolderMount] = []
    for item in raw or ():
        if not isinstance(item, Mapping):
            raise MountRefused("a mount is not an object")
        name, vfid = str(item.get("name", ""))[:64], item.get("vfid")
        perm, host = item.get("mount_perm"), item.get("host_path")
        if not isinstance(vfid, str) or not _HEX.match(vfid):
            raise MountRefused(f"folder {name!r}: its id is not a folder id")
        if perm not in _PERMS:
            raise MountRefused(f"folder {name!r}: permission {str(perm)[:8]!r} is not ro/rw/wd")
        if item.get("vfsubpath", ".") != ".":
            raise MountRefused(f"folder {name!r}: subpath mounts are not supported")
        if not isinstance(host, str) or not isinstance(item.get("kernel_path"), str):
            raise MountRefused(f"folder {name!r}: no host or kernel path")
        mounts.append(
            FolderMount(
                name=name,
                folder_hex=vfid,
                host_path=host,
                kernel_path=str(item["kernel_path"]),
                read_only=perm == "ro",
                usage_mode=str(item.get("usage_mode") or "general"),
            )
        )
    try:  # only a model folder, read-only, may land outside the work dir (/models)
        kernel_paths(
            [m.kernel_path for m in mounts],
            [m.usage_mode == "model" and m.read_only for m in mounts],
        )
    except InvalidAPIParameters as exc:
        raise MountRefused(str(exc)) from None
    return mounts


@contextmanager
def open_folder(volume_root: Path | None, mount: FolderMount) -> Iterator[tuple[int, str]]:
    """The folder's directory, opened without following a link, and the path to bind it by
    (``<real volume root>/<hex>``); :class:`MountRefused` when the host path is not exactly
    that, the volume root may be written by others, or the folder's directory is missing,
    a symlink or not a directory. Blocking: call it in a thread."""
    if volume_root is None:
        raise MountRefused(f"folder {mount.name!r}: this agent has no volume root")
    real_root = os.path.realpath(volume_root)  # the operator's path: its links are theirs
    expected = {
        os.path.join(os.path.normpath(volume_root), mount.folder_hex),
        os.path.join(real_root, mount.folder_hex),
    }
    if mount.host_path not in expected:
        raise MountRefused(
            f"folder {mount.name!r}: its host path is not {volume_root}/<its id> "
            "(a log entry this agent will not trust)"
        )
    try:
        root_fd = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise MountRefused(f"the volume root {volume_root} cannot be opened: {exc}") from None
    try:
        info = os.fstat(root_fd)
        if info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022:
            raise MountRefused(
                f"the volume root {volume_root} may be written by others than its owner "
                "(root or the agent's user): a folder's name there could be swapped"
            )
        try:
            fd = os.open(mount.folder_hex, _DIR_FLAGS, dir_fd=root_fd)
        except OSError as exc:
            raise MountRefused(_why(mount, exc)) from None
    finally:
        os.close(root_fd)
    try:
        yield fd, f"{real_root}/{mount.folder_hex}"
    finally:
        os.close(fd)


def _why(mount: FolderMount, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"folder {mount.name!r}: its directory is missing (purged?)"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return f"folder {mount.name!r}: its directory is a symlink or not a directory"
    return f"folder {mount.name!r}: its directory cannot be opened: {exc.strerror}"


def _mount_point(work_fd: int, mount: FolderMount, owner: Owner | None) -> None:
    """The kernel path's directory in the work dir (and its parents), owned by the kernel's
    user, made through descriptors: what the tenant left at those names on a restart (a
    symlink to ``/etc``) is refused, never followed."""
    try:
        os.close(open_dir(work_fd, mount.parts, label=mount.kernel_path, create=True, owner=owner))
    except Refused as exc:
        raise MountRefused(f"folder {mount.name!r}: {exc}") from None


def docker_mounts(
    volume_root: Path | None,
    mounts: Sequence[FolderMount],
    work_dir: Path,
    owner: Owner,
) -> list[dict[str, Any]]:
    """Docker ``HostConfig.Mounts`` entries for the checked folders (a ``bind`` mount
    never creates a missing source, unlike ``Binds``), their mount points made in the
    kernel's work dir. A folder mounted for writing whose root belongs to another user is
    given to the kernel's user (its root only, through the descriptor opened without
    following links). Blocking: call it in a thread."""
    specs: list[dict[str, Any]] = []
    work_fd = open_root(work_dir)
    try:
        for mount in mounts:
            with open_folder(volume_root, mount) as (fd, source):
                if not mount.read_only and os.geteuid() == 0:
                    info = os.fstat(fd)
                    if (info.st_uid, info.st_gid) != (owner.uid, owner.gid):
                        os.fchown(fd, owner.uid, owner.gid)
                if mount.in_work_dir:  # elsewhere (/models) Docker makes it in the image's tree
                    _mount_point(work_fd, mount, owner)
                specs.append(
                    {
                        "Type": "bind",
                        "Source": source,
                        "Target": mount.kernel_path,
                        "ReadOnly": mount.read_only,
                        "BindOptions": {"Propagation": "rprivate"},
                    }
                )
    finally:
        os.close(work_fd)
    return specs


def link_into_work_dir(
    volume_root: Path | None, mounts: Sequence[FolderMount], work_dir: Path
) -> list[str]:
    """The process backend's mounts: a symlink at each kernel path's place in the work dir
    (``<work>/data -> <volume root>/<hex>``), replacing a link an earlier start left. There
    is no isolation here (one trusted user), so ``ro`` cannot be enforced: the notes
    returned say so, for the kernel log. Blocking: call it in a thread."""
    notes = []
    work_fd = open_root(work_dir)
    try:
        for mount in mounts:
            if not mount.in_work_dir:
                raise MountRefused(
                    f"folder {mount.name!r}: the process backend mounts folders only under "
                    f"{WORK_DIR} (not at {mount.kernel_path}): choose a mount destination there"
                )
            with open_folder(volume_root, mount) as (_fd, source):
                parent = open_dir(work_fd, mount.parts[:-1], label=mount.kernel_path, create=True)
                try:
                    _replace_link(parent, mount.parts[-1], source, mount)
                finally:
                    os.close(parent)
            if mount.read_only:
                notes.append(
                    f"kernelhub-agent: folder {mount.name} is read-only ({mount.kernel_path}), "
                    "which the process backend cannot enforce\n"
                )
    except Refused as exc:
        raise MountRefused(str(exc)) from None
    finally:
        os.close(work_fd)
    return notes


def _replace_link(dir_fd: int, name: str, source: str, mount: FolderMount) -> None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISLNK(info.st_mode):
            raise MountRefused(
                f"folder {mount.name!r}: {mount.kernel_path} is taken in the work dir "
                f"(not a link this agent made)"
            )
        os.unlink(name, dir_fd=dir_fd)
    os.symlink(source, name, dir_fd=dir_fd)
