"""A path inside a folder, as a tenant sends it, turned into the components the safe walk
takes (:func:`actors.agents.safe_fs.open_dir`).

The path is never joined to the host path and resolved: it is split into names, and each
name is checked here (no ``..``, no NUL, bounded lengths), so nothing a tenant writes can
name a place outside the folder before a single system call is made. Empty components and
``.`` are dropped (``a//b``, ``./a`` mean what a shell means); an absolute path is refused
rather than silently made relative, so a client that meant the host's ``/etc`` learns it.
"""

from __future__ import annotations

from ..domain.errors import InvalidAPIParameters

__all__ = ["MAX_DEPTH", "MAX_NAME_BYTES", "MAX_PATH_BYTES", "parse_name", "parse_path", "shown"]

MAX_PATH_BYTES = 4096
"""Linux's PATH_MAX: no longer path is accepted (and a token carries the path)."""
MAX_NAME_BYTES = 255
"""Linux's NAME_MAX, for one component."""
MAX_DEPTH = 64
"""Components in one path: enough for any real tree, and it bounds every walk's steps."""


def parse_name(value: object, what: str = "name") -> str:
    """One file name (a rename's new name): a single component."""
    if not isinstance(value, str) or not value:
        raise InvalidAPIParameters(f"{what} must be a non-empty string")
    if "/" in value:
        raise InvalidAPIParameters(f"{what} must be a name, not a path: {shown(value)}")
    (name,) = parse_path(value, what=what) or ("",)
    if not name:
        raise InvalidAPIParameters(f"{what} must be a name, not {shown(value)}")
    return name


def parse_path(value: object, *, what: str = "path", root_ok: bool = True) -> tuple[str, ...]:
    """The components of ``value``, relative to the folder's root; ``()`` is the root itself
    (refused unless ``root_ok``)."""
    if not isinstance(value, str):
        raise InvalidAPIParameters(f"{what} must be a string")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate JSON let through
        raise InvalidAPIParameters(f"{what} is not valid UTF-8 text") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidAPIParameters(f"{what} is longer than {MAX_PATH_BYTES} bytes")
    if "\0" in value:
        raise InvalidAPIParameters(f"{what} contains a NUL character")
    if value.startswith("/"):
        raise InvalidAPIParameters(f"{what} must be relative to the folder: {shown(value)}")
    parts = tuple(p for p in value.split("/") if p not in ("", "."))
    if ".." in parts:
        raise InvalidAPIParameters(f"{what} may not contain '..': {shown(value)}")
    if len(parts) > MAX_DEPTH:
        raise InvalidAPIParameters(f"{what} is deeper than {MAX_DEPTH} directories")
    for part in parts:
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise InvalidAPIParameters(f"a name in {what} is longer than {MAX_NAME_BYTES} bytes")
    if not parts and not root_ok:
        raise InvalidAPIParameters(f"{what} must name something inside the folder")
    return parts


def shown(value: str, limit: int = 120) -> str:
    """``value`` quoted for a message, cut short (a path may be 4 KiB of a tenant's text)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
