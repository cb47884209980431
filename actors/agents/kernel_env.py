"""The ``BACKENDAI_*`` environment of a kernel (docs/kernel-environment.md): the same names
and formats as Backend.AI's manager sets, so code written for Backend.AI runs unchanged.
kernelhub's own additions are ``KERNELHUB_*`` (the same page), among them
``KERNELHUB_VFOLDER_MOUNTS``: the kernel paths of the session's folders, comma-separated
(not ``BACKEND_VFOLDER_MOUNTS``, which the official client reads as folder *names* to mount).

The user's ``environ`` (``-e K=V``) sits beside them. The gateway refuses what a user may not
set, but the agent reads the log, and the log is only as honest as everything that ever wrote
to it: here again a user variable never names a ``BACKENDAI_*`` or ``KERNELHUB_*`` variable
(ours always win), never has a name a shell cannot export, and never holds a NUL or a line
break (``environ.txt`` is one ``K=V`` a line: a line break in a value would plant a second
variable, ours included, for every shell the kernel starts later). What is dropped is named
(:func:`user_environ`) so the agent says so in the kernel log."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ..domain.session import RESERVED_ENV_PREFIXES, is_reserved_env_name

__all__ = ["RESERVED_PREFIXES", "kernel_environ", "user_environ"]

RESERVED_PREFIXES = RESERVED_ENV_PREFIXES
"""Names only the agent sets."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORBIDDEN_IN_VALUE = ("\0", "\n", "\r")


def user_environ(spec: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Pure: the user's variables of a session's creation spec that a kernel may carry, and
    the names of those dropped (reserved, malformed, or with a value no file line can hold)."""
    given = spec.get("environ") or {}
    kept: dict[str, str] = {}
    dropped: list[str] = []
    if not isinstance(given, Mapping):
        return kept, ["environ"]
    for name, value in given.items():
        if (
            not isinstance(name, str)
            or not isinstance(value, str)
            or not _NAME.fullmatch(name)
            or is_reserved_env_name(name)
            or any(c in value for c in _FORBIDDEN_IN_VALUE)
        ):
            dropped.append(str(name)[:64])
            continue
        kept[name] = value
    return kept, dropped


def kernel_environ(
    session_id: uuid.UUID, spec: Mapping[str, Any], kernel_id: uuid.UUID, agent_id: str
) -> dict[str, str]:
    """Pure: the variables for one kernel of a session, from the session's creation spec
    (as folded from ``session_enqueued``): the user's (:func:`user_environ`), then ours over
    them."""
    kernels: list[dict[str, Any]] = list(spec.get("kernels") or [])
    mine = next((k for k in kernels if k.get("kernel_id") == str(kernel_id)), {})
    roles = Counter(str(k.get("cluster_role", "main")) for k in kernels) or Counter(main=1)
    replicas = ",".join(f"{role}:{count}" for role, count in sorted(roles.items()))
    hosts = ",".join(str(k.get("cluster_hostname", "main1")) for k in kernels) or "main1"
    return {
        **user_environ(spec)[0],
        "BACKENDAI_SESSION_ID": str(session_id),
        "BACKENDAI_SESSION_NAME": str(spec.get("name", "")),
        "BACKENDAI_KERNEL_ID": str(kernel_id),
        "BACKENDAI_KERNEL_IMAGE": str(mine.get("image") or spec.get("image", "")),
        "BACKENDAI_CLUSTER_SIZE": str(len(kernels) or 1),
        "BACKENDAI_CLUSTER_REPLICAS": replicas,
        "BACKENDAI_CLUSTER_HOSTS": hosts,
        "BACKENDAI_CLUSTER_ROLE": str(mine.get("cluster_role", "main")),
        "BACKENDAI_CLUSTER_IDX": str(mine.get("cluster_idx", 1)),
        "BACKENDAI_CLUSTER_LOCAL_RANK": str(mine.get("local_rank", 0)),
        "BACKENDAI_CLUSTER_HOST": str(mine.get("cluster_hostname", "main1")),
        "BACKENDAI_ACCESS_KEY": str(spec.get("access_key", "")),
        "BACKENDAI_PREOPEN_PORTS": ",".join(str(p) for p in spec.get("preopen_ports") or []),
        "BACKENDAI_SERVICE_PORTS": str(spec.get("service_ports") or ""),
        "KERNELHUB_AGENT_ID": agent_id,
        "KERNELHUB_SESSION_TYPE": str(spec.get("session_type", "interactive")),
        "KERNELHUB_VFOLDER_MOUNTS": ",".join(
            str(m.get("kernel_path", "")) for m in spec.get("mounts") or () if isinstance(m, dict)
        ),
    }
