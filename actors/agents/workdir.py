"""Files in a kernel's work dir (``/home/work`` inside the kernel), for upload, download and
listing. The agent reaches the work dir on the host (the process backend's directory, or
the Docker bind mount), so no request passes through user code.

Names arrive percent-encoded (the official client quotes ``sub/b.txt`` as ``sub%2Fb.txt``)
and relative to ``/home/work``; ``/home/work/...`` is accepted too. Every path is resolved
with ``realpath`` and must stay inside the work dir: ``..`` and symlinks pointing out are
refused, whatever they are spelled as.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import urllib.parse
from pathlib import Path
from typing import Any

from ..domain.errors import InvalidAPIParameters, ObjectNotFound

__all__ = ["KERNEL_WORK_DIR", "download", "download_single", "list_files", "resolve", "upload"]

KERNEL_WORK_DIR = "/home/work"
MAX_UPLOAD_BYTES = 512 * 2**20


def resolve(work_dir: Path, name: str, *, must_exist: bool = False) -> Path:
    """The host path of ``name`` inside ``work_dir``; refuses anything that leaves it."""
    text = urllib.parse.unquote(name)
    if "\0" in text:
        raise InvalidAPIParameters(f"invalid file name {name!r}")
    if text == KERNEL_WORK_DIR or text.startswith(KERNEL_WORK_DIR + "/"):
        text = text[len(KERNEL_WORK_DIR) :].lstrip("/")
    elif os.path.isabs(text):
        raise InvalidAPIParameters(f"{name!r} is outside the work dir ({KERNEL_WORK_DIR})")
    root = Path(os.path.realpath(work_dir))
    target = Path(os.path.realpath(root / text))
    if target != root and root not in target.parents:
        raise InvalidAPIParameters(f"{name!r} is outside the work dir ({KERNEL_WORK_DIR})")
    if must_exist and not target.exists():
        raise ObjectNotFound("file", f"no such file: {name}")
    return target


def upload(work_dir: Path, files: list[tuple[str, bytes]]) -> list[str]:
    """Write each file (parents created); the names written, relative to the work dir.
    All names are checked before anything is written, so a refused batch writes nothing."""
    total = sum(len(data) for _, data in files)
    if total > MAX_UPLOAD_BYTES:
        raise InvalidAPIParameters(f"uploads are limited to {MAX_UPLOAD_BYTES} bytes per call")
    targets = [(resolve(work_dir, name), data) for name, data in files]
    root = Path(os.path.realpath(work_dir))
    for target, _ in targets:
        if target == root or target.is_dir():
            raise InvalidAPIParameters(f"{target.name or '/'} is a directory")
    written = []
    for target, data in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.kh-upload")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        written.append(str(target.relative_to(root)))
    return written


def download(work_dir: Path, names: list[str]) -> bytes:
    """A tar archive of the named files or directories (as upstream's download parts)."""
    root = Path(os.path.realpath(work_dir))
    paths = [resolve(work_dir, name, must_exist=True) for name in names]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in paths:
            archive.add(path, arcname=str(path.relative_to(root)) if path != root else ".",
                        filter=_inside(root))  # fmt: skip
    return buffer.getvalue()


def _inside(root: Path) -> Any:
    """Leave out symlinks that point outside the work dir (their targets are not ours)."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.issym() or info.islnk():
            target = os.path.realpath(root / os.path.dirname(info.name) / info.linkname)
            if not (target == str(root) or target.startswith(str(root) + os.sep)):
                return None
        return info

    return keep


def download_single(work_dir: Path, name: str) -> bytes:
    path = resolve(work_dir, name, must_exist=True)
    if not path.is_file():
        raise InvalidAPIParameters(f"{name!r} is not a regular file")
    return path.read_bytes()


def list_files(work_dir: Path, name: str = KERNEL_WORK_DIR) -> dict[str, Any]:
    """Upstream's shape: ``files`` is a JSON *string* of entries (the client decodes it)."""
    path = resolve(work_dir, name or KERNEL_WORK_DIR, must_exist=True)
    root = Path(os.path.realpath(work_dir))
    if not path.is_dir():
        raise InvalidAPIParameters(f"{name!r} is not a directory")
    entries = []
    for entry in sorted(path.iterdir()):
        info = entry.lstat()
        entries.append({
            "filename": entry.name, "size": info.st_size, "mode": stat.filemode(info.st_mode),
            "mtime": info.st_mtime, "atime": info.st_atime, "ctime": info.st_ctime,
        })  # fmt: skip
    relative = str(path.relative_to(root))
    abspath = KERNEL_WORK_DIR if relative == "." else f"{KERNEL_WORK_DIR}/{relative}"
    return {"files": json.dumps(entries), "errors": "", "abspath": abspath}
