"""Upload bodies built as they are sent, so a progress bar can follow the bytes.

``POST /session/{ref}/upload`` takes ``multipart/form-data`` with one ``src`` part per file,
its filename percent-encoded relative path (as ``backend.ai session upload`` sends it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = ["Progress", "UploadBody", "upload_body"]

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as a transfer goes."""
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class UploadBody:
    content_type: str
    length: int
    names: list[str]
    chunks: Callable[[], AsyncIterator[bytes]]


def upload_body(
    paths: Sequence[str | os.PathLike[str]],
    base_dir: Path | None = None,
    progress: Progress | None = None,
) -> UploadBody:
    """The multipart body for ``paths``, named relative to ``base_dir`` (default: the
    working directory) as the official client names them; a path outside it is refused."""
    base = (base_dir or Path.cwd()).resolve()
    boundary = secrets.token_hex(16)
    entries: list[tuple[Path, str, bytes]] = []
    for given in paths:
        path = Path(given)
        resolved = (path if path.is_absolute() else base / path).resolve()
        if not resolved.is_file():
            raise FileNotFoundError(f"no such file: {given}")
        try:
            name = resolved.relative_to(base).as_posix()
        except ValueError:
            raise ValueError(f"{given} is outside {base}: upload from its directory") from None
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="src"; '
            f'filename="{quote(name, safe="")}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        entries.append((resolved, name, head))
    tail = f"--{boundary}--\r\n".encode()
    sizes = [p.stat().st_size for p, _, _ in entries]
    length = sum(len(h) + s + 2 for (_, _, h), s in zip(entries, sizes, strict=True)) + len(tail)

    async def chunks() -> AsyncIterator[bytes]:
        done = 0
        for path, _, head in entries:
            yield head
            # small reads of a local file: a thread hop per chunk would cost more
            with open(path, "rb") as handle:  # noqa: ASYNC230
                while data := handle.read(_CHUNK):
                    done += len(data)
                    if progress:
                        progress(done, sum(sizes))
                    yield data
            yield b"\r\n"
        yield tail

    return UploadBody(
        f"multipart/form-data; boundary={boundary}",
        length,
        [name for _, name, _ in entries],
        chunks,
    )
