"""Where uploads wait until they are whole: ``<volume root>/.kh-staging/<folder hex>/<id>``,
outside every folder's tree, so no session ever sees (or links to, or swaps) a half-written
file, and a quota counts only what is complete plus what is declared.

The staging area is the gateway's own (mode 0700, beside the folders on the same filesystem,
so completing an upload is one ``rename``). A staged file is named by its token's nonce; when
it completes, a ``<id>.done`` marker stays behind so a repeated last PATCH (its answer lost)
is told the upload is complete instead of starting it over. Both are swept once they are
older than any token could be.

These functions block: the transfer code runs them in a thread.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

from actors.agents.safe_fs import closing

from .tokens import TOKEN_TTL_S

__all__ = ["MAX_STAGED_PER_FOLDER", "STAGING_DIR", "OffsetMismatch", "Staged", "Staging"]

STAGING_DIR = ".kh-staging"
"""Beside the folders' directories (named by 32 hex digits, so never this)."""
MAX_STAGED_PER_FOLDER = 32
"""Unfinished uploads one folder may have at once (each holds disk until done or swept)."""
_SWEEP_AFTER_S = TOKEN_TTL_S + 3600
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_DONE = ".done"


class Staged:
    """One upload's staging file, opened for one PATCH."""

    def __init__(self, dir_fd: int, name: str, fd: int) -> None:
        self.dir_fd, self.name, self.fd = dir_fd, name, fd

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.dir_fd)


class Staging:
    def __init__(self, volume_root: Path) -> None:
        self.root = volume_root / STAGING_DIR

    def _folder_dir(self, folder_hex: str, *, create: bool) -> int | None:
        if create:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                os.mkdir(self.root / folder_hex, 0o700)
            except FileExistsError:
                pass
        try:
            return os.open(self.root / folder_hex, _DIR_FLAGS)
        except FileNotFoundError:
            return None

    def offset(self, folder_hex: str, upload_id: str, size: int) -> int:
        """Bytes received so far (``size`` once complete, 0 before the first PATCH)."""
        fd = self._folder_dir(folder_hex, create=False)
        if fd is None:
            return 0
        with closing(fd):
            try:
                os.stat(upload_id + _DONE, dir_fd=fd, follow_symlinks=False)
                return size
            except FileNotFoundError:
                pass
            try:
                return os.stat(upload_id, dir_fd=fd, follow_symlinks=False).st_size
            except FileNotFoundError:
                return 0

    def completed(self, folder_hex: str, upload_id: str) -> bool:
        fd = self._folder_dir(folder_hex, create=False)
        if fd is None:
            return False
        with closing(fd):
            try:
                os.stat(upload_id + _DONE, dir_fd=fd, follow_symlinks=False)
                return True
            except FileNotFoundError:
                return False

    def others(self, folder_hex: str, upload_id: str) -> dict[str, int]:
        """The folder's other unfinished uploads and their bytes so far (after sweeping
        the dead ones)."""
        fd = self._folder_dir(folder_hex, create=False)
        if fd is None:
            return {}
        found: dict[str, int] = {}
        cutoff = time.time() - _SWEEP_AFTER_S
        with closing(fd), os.scandir(fd) as names:
            for item in names:
                try:
                    info = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if info.st_mtime < cutoff:
                    _unlink(fd, item.name)
                elif not item.name.endswith(_DONE) and item.name != upload_id:
                    found[item.name] = info.st_size
        return found

    def open(self, folder_hex: str, upload_id: str, offset: int) -> Staged:
        """The staging file for a PATCH at ``offset``: made at offset 0, else opened, and
        its length must be ``offset`` (:class:`OffsetMismatch` otherwise)."""
        dir_fd = self._folder_dir(folder_hex, create=True)
        assert dir_fd is not None
        try:
            try:
                fd = os.open(upload_id, _WRITE_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                if offset != 0:
                    raise OffsetMismatch(0) from None
                fd = os.open(upload_id, _WRITE_FLAGS | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size != offset:
                os.close(fd)
                raise OffsetMismatch(info.st_size)
        except BaseException:
            os.close(dir_fd)
            raise
        return Staged(dir_fd, upload_id, fd)

    def drop(self, folder_hex: str) -> None:
        """Every staged upload of a folder, gone (the folder was purged)."""
        fd = self._folder_dir(folder_hex, create=False)
        if fd is None:
            return
        with closing(fd), os.scandir(fd) as names:
            for item in names:
                _unlink(fd, item.name)
        try:
            os.rmdir(self.root / folder_hex)
        except OSError:
            pass  # an upload began meanwhile: the sweep takes it later

    def finish(self, staged: Staged) -> None:
        """Leave the ``.done`` marker (the file itself was renamed into the folder)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(staged.name + _DONE, flags, 0o600, dir_fd=staged.dir_fd)
        os.close(fd)

    def discard(self, staged: Staged) -> None:
        _unlink(staged.dir_fd, staged.name)


class OffsetMismatch(Exception):
    """The PATCH's Upload-Offset is not what the server holds (tus: 409)."""

    def __init__(self, actual: int) -> None:
        super().__init__(f"the upload is at offset {actual}")
        self.actual = actual


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
