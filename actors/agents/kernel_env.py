"""The ``BACKENDAI_*`` environment of a kernel (docs/kernel-environment.md): the same names
and formats as Backend.AI's manager sets, so code written for Backend.AI runs unchanged.
kernelhub's own additions are ``KERNELHUB_*`` (the same page)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["kernel_environ"]


def kernel_environ(
    session_id: uuid.UUID, spec: Mapping[str, Any], kernel_id: uuid.UUID, agent_id: str
) -> dict[str, str]:
    """Pure: the variables for one kernel of a session, from the session's creation spec
    (as folded from ``session_enqueued``)."""
    kernels: list[dict[str, Any]] = list(spec.get("kernels") or [])
    mine = next((k for k in kernels if k.get("kernel_id") == str(kernel_id)), {})
    roles = Counter(str(k.get("cluster_role", "main")) for k in kernels) or Counter(main=1)
    replicas = ",".join(f"{role}:{count}" for role, count in sorted(roles.items()))
    hosts = ",".join(str(k.get("cluster_hostname", "main1")) for k in kernels) or "main1"
    return {
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
    }
