"""What a session is before it runs: its type, cluster shape, kernels and creation checks
(23.03's ``create_session``/``enqueue_session``). Everything here is decided at enqueue time,
from the request and the policies."""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from events.catalogue import KernelCreationSpec

from .errors import InvalidAPIParameters, QuotaExceeded
from .lifecycle import DEFAULT_ROLE
from .slots import ResourceSlot

__all__ = [
    "PRIVATE_KERNEL_ROLES",
    "ClusterMode",
    "KernelPlace",
    "KernelRole",
    "KernelSpec",
    "SessionResult",
    "SessionSpec",
    "SessionType",
    "cluster_configs",
    "expand_cluster",
    "kernel_creation_specs",
    "kernel_id_for",
    "kernel_place",
    "parse_duration",
    "parse_starts_at",
    "session_id_for",
    "validate_creation",
]


class SessionType(enum.StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"
    INFERENCE = "inference"
    """Accepted and scheduled; never idle-checked (23.3.5, B12 in docs/upstream.md); no
    routing yet."""


class ClusterMode(enum.StrEnum):
    SINGLE_NODE = "single-node"
    MULTI_NODE = "multi-node"


class SessionResult(enum.StrEnum):
    UNDEFINED = "undefined"
    SUCCESS = "success"
    FAILURE = "failure"


class KernelRole(enum.StrEnum):
    """From the image label ``ai.backend.role``; SYSTEM kernels (SFTP) are "private"."""

    INFERENCE = "INFERENCE"
    COMPUTE = "COMPUTE"
    SYSTEM = "SYSTEM"


PRIVATE_KERNEL_ROLES = frozenset({KernelRole.SYSTEM})


@dataclass(frozen=True, slots=True)
class KernelSpec:
    """One container of a session, as enqueued."""

    kernel_id: uuid.UUID
    cluster_role: str
    cluster_idx: int
    local_rank: int
    cluster_hostname: str
    requested_slots: ResourceSlot
    image: str = ""
    architecture: str = "x86_64"
    role: KernelRole = KernelRole.COMPUTE
    agent: str | None = None
    """Pre-assigned agent (superadmin ``agent_list``), else chosen by the scheduler."""


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """A pending session as the scheduler sees it."""

    session_id: uuid.UUID
    name: str
    access_key: str
    kernels: tuple[KernelSpec, ...]
    created_at: datetime
    session_type: SessionType = SessionType.INTERACTIVE
    cluster_mode: ClusterMode = ClusterMode.SINGLE_NODE
    user_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    domain: str = "default"
    scaling_group: str | None = None
    dependencies: tuple[uuid.UUID, ...] = ()
    starts_at: datetime | None = None
    startup_command: str | None = None
    creation_id: str = ""
    requested_slots: ResourceSlot = field(init=False)

    def __post_init__(self) -> None:
        total = ResourceSlot()
        for kernel in self.kernels:
            total = total + kernel.requested_slots
        object.__setattr__(self, "requested_slots", total)

    @property
    def cluster_size(self) -> int:
        return len(self.kernels)

    @property
    def main_kernel(self) -> KernelSpec:
        return next(k for k in self.kernels if k.cluster_role == DEFAULT_ROLE)

    @property
    def is_private(self) -> bool:
        return all(k.role in PRIVATE_KERNEL_ROLES for k in self.kernels)


def session_id_for(command_id: uuid.UUID) -> uuid.UUID:
    """A new session's id, derived from its creation command's id: the router knows the
    owning shard before the first attempt, and a retry of the creation finds the first."""
    return uuid.uuid5(command_id, "session")


def kernel_id_for(session_id: uuid.UUID, index: int) -> uuid.UUID:
    """The id of a new session's ``index``-th kernel (``0`` is the main one)."""
    return uuid.uuid5(session_id, f"kernel-{index}")


@dataclass(frozen=True, slots=True)
class KernelPlace:
    """Where a kernel sits in its cluster: the main one is ``main1``, then ``sub1``..."""

    cluster_role: str
    cluster_idx: int
    local_rank: int
    cluster_hostname: str


def kernel_place(index: int) -> KernelPlace:
    """The place of a cluster's ``index``-th kernel (``0`` is the main one)."""
    if index == 0:
        return KernelPlace(DEFAULT_ROLE, 1, 0, "main1")
    return KernelPlace("sub", index, index, f"sub{index}")


def cluster_configs(
    cluster_size: int, configs: Sequence[ResourceSlot], *, strict: bool = True
) -> list[ResourceSlot]:
    """One resource config per kernel: a single config is replicated ``cluster_size``
    times; several are taken as they are (``strict``: their count must equal
    ``cluster_size``)."""
    if len(configs) == 1:
        return [configs[0]] * cluster_size
    if strict and len(configs) != cluster_size:
        raise InvalidAPIParameters(
            f"got {len(configs)} kernel configs for a cluster_size of {cluster_size}"
        )
    return list(configs)


def expand_cluster(
    cluster_size: int,
    configs: Sequence[ResourceSlot],
    *,
    kernel_ids: Sequence[uuid.UUID] | None = None,
    image: str = "",
    architecture: str = "x86_64",
    role: KernelRole = KernelRole.COMPUTE,
    agents: Sequence[str | None] = (),
) -> tuple[KernelSpec, ...]:
    """Kernel specs for a cluster: with one config it is replicated to ``main1``,
    ``sub1``..``sub<n-1>``; with several, their count must equal ``cluster_size``."""
    if cluster_size < 1:
        raise InvalidAPIParameters("cluster_size must be at least 1")
    configs = cluster_configs(cluster_size, configs)
    ids = list(kernel_ids) if kernel_ids is not None else [uuid.uuid4() for _ in configs]
    specs = []
    for idx, slots in enumerate(configs):
        place = kernel_place(idx)
        specs.append(
            KernelSpec(
                kernel_id=ids[idx],
                cluster_role=place.cluster_role,
                cluster_idx=place.cluster_idx,
                local_rank=place.local_rank,
                cluster_hostname=place.cluster_hostname,
                requested_slots=slots,
                image=image,
                architecture=architecture,
                role=role,
                agent=agents[idx] if idx < len(agents) else None,
            )
        )
    return tuple(specs)


def kernel_creation_specs(
    kernel_ids: Sequence[uuid.UUID],
    configs: Sequence[Mapping[str, Decimal]],
    *,
    image: str = "",
    architecture: str = "x86_64",
    agents: Sequence[str | None] = (),
) -> list[KernelCreationSpec]:
    """The kernels of a ``session_enqueued``: the ``i``-th with ``kernel_ids[i]``, its
    place (:func:`kernel_place`), ``configs[i]`` (see :func:`cluster_configs`) and, when
    a superadmin named them (``agent_list``), ``agents[i]``."""
    kernels = []
    for index, (kernel_id, slots) in enumerate(zip(kernel_ids, configs, strict=True)):
        place = kernel_place(index)
        kernels.append(
            KernelCreationSpec(
                kernel_id=kernel_id,
                cluster_role=place.cluster_role,
                cluster_idx=place.cluster_idx,
                local_rank=place.local_rank,
                cluster_hostname=place.cluster_hostname,
                image=image,
                architecture=architecture,
                requested_slots={k: Decimal(v) for k, v in slots.items()},
                agent=agents[index] if index < len(agents) else None,
            )
        )
    return kernels


_DURATION = re.compile(
    r"^(?P<sign>[+-])?"
    r"(?:(?P<weeks>\d+(?:\.\d+)?)(?:w|wk|wks|week|weeks))?"
    r"(?:(?P<days>\d+(?:\.\d+)?)(?:d|day|days))?"
    r"(?:(?P<hours>\d+(?:\.\d+)?)(?:h|hr|hrs|hour|hours))?"
    r"(?:(?P<minutes>\d+(?:\.\d+)?)(?:m|min|mins|minute|minutes))?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)(?:s|sec|secs|second|seconds))?$"
)


def parse_duration(text: str) -> timedelta:
    """``"30m"``, ``"1h30m"``, ``"2d"``, ``"90s"`` (a bare number is seconds)."""
    compact = text.replace(" ", "").lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        return timedelta(seconds=float(compact))
    match = _DURATION.match(compact)
    if (
        not compact
        or not match
        or not any(match.group(k) for k in ("weeks", "days", "hours", "minutes", "seconds"))
    ):
        raise InvalidAPIParameters(f"invalid duration {text!r}: use e.g. 30m, 1h30m, 2d")
    parts = {k: float(v) for k, v in match.groupdict().items() if v and k != "sign"}
    delta = timedelta(**parts)
    return -delta if match["sign"] == "-" else delta


def parse_starts_at(value: str, now: datetime) -> datetime:
    """ISO-8601 first; otherwise a relative duration added to ``now`` (as 23.03)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return now + parse_duration(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=now.tzinfo)


def validate_creation(
    *,
    session_type: SessionType,
    starts_at: str | None,
    startup_command: str | None,
    cluster_size: int,
    max_containers_per_session: int,
    requested: Sequence[ResourceSlot] = (),
) -> None:
    """The request checks of 23.03's ``create_session`` (``manager/registry.py``) that need no
    lookups."""
    if session_type is SessionType.BATCH and not (startup_command or "").strip():
        raise InvalidAPIParameters("Batch type session requires startup command.")
    if session_type is not SessionType.BATCH and starts_at:
        raise InvalidAPIParameters("Parameter starts_at should be used only for batch sessions")
    if max_containers_per_session > 0 and cluster_size > max_containers_per_session:
        raise QuotaExceeded(
            f"You cannot create session with more than {max_containers_per_session} containers."
        )
    for slots in requested:
        if any(v < Decimal(0) for v in slots.values()):
            raise InvalidAPIParameters("resource slots cannot be negative")
