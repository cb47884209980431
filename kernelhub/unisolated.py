"""What ``kh up`` (and ``kh agent start``) say and record about kernels that run unisolated.

The process backend runs each kernel as a child process of the agent, as the operator's uid,
on the host: no isolation at all. ``kh up`` falls back to it where no Docker daemon answers
(the demo on a fresh machine), so it says so in one line, and it records the operator's
choice about other users in the installation (:mod:`actors.sessions.isolation`): by default only the
superadmin's sessions run there; ``--allow-unisolated`` (or ``KH_ALLOW_UNISOLATED=1``) lets
every user's run, ``--no-allow-unisolated`` (``KH_ALLOW_UNISOLATED=0``) withdraws that.
Neither given: the recorded choice stands.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping

from actors.domain.isolation import UNISOLATED, isolation_of_backend
from actors.sessions.isolation import opted_in, set_opt_in
from events import RedisEventStore

from .errors import KernelhubError

__all__ = ["ENV", "opt_in_asked", "record", "warning"]

ENV = "KH_ALLOW_UNISOLATED"


def opt_in_asked(flag: bool | None, environ: Mapping[str, str]) -> bool | None:
    """The operator's choice this time: the flag, else ``KH_ALLOW_UNISOLATED``, else None."""
    if flag is not None:
        return flag
    value = environ.get(ENV, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise KernelhubError(f"{ENV}={environ[ENV]!r}: use 1 (allow) or 0 (refuse)")


async def record(url: str, prefix: str, asked: bool | None) -> bool:
    """Record ``asked`` (unless None) in the installation; the choice now in force."""
    store = RedisEventStore.from_url(url, prefix=prefix)
    try:
        if asked is not None:
            await set_opt_in(store, asked)
        return await opted_in(store)
    finally:
        await store.close()


def _operator() -> str:
    uid = os.getuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def warning(backend: str | None, allowed: bool) -> str | None:
    """The one line an operator must read when kernels will run unisolated, else None."""
    if backend is None or isolation_of_backend(backend) != UNISOLATED:
        return None
    others = (
        "every user's sessions run so (--allow-unisolated)"
        if allowed
        else "other users' sessions are refused (opt in: kh up --allow-unisolated)"
    )
    return (
        f"kh: warning: {backend} backend: kernels are NOT isolated, they run as "
        f"{_operator()} on this host; {others}"
    )
