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

from .errors import ImageNotFound, InvalidAPIParameters, QuotaExceeded
from .lifecycle import DEFAULT_ROLE
from .sizes import format_size, parse_size
from .slots import ResourceSlot

__all__ = [
    "ARCH_ALIASES",
    "DEFAULT_SHMEM",
    "PRIVATE_KERNEL_ROLES",
    "RESERVED_ENV_PREFIXES",
    "SHMEM_LABEL",
    "ClusterMode",
    "KernelPlace",
    "KernelRole",
    "KernelSpec",
    "SessionResult",
    "SessionSpec",
    "SessionType",
    "check_environ",
    "check_shmem",
    "cluster_configs",
    "designated_agents",
    "expand_cluster",
    "is_reserved_env_name",
    "kernel_creation_specs",
    "kernel_id_for",
    "kernel_place",
    "parse_duration",
    "parse_starts_at",
    "resource_opts_of",
    "session_architecture",
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
    """ISO-8601 first; otherwise a relative duration added to ``now`` (as 23.03). A time
    without a zone is read in ``now``'s zone (the gateway passes UTC: a naive
    ``starts_at`` is UTC, as docs/deviations.md says)."""
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


# ---- create options (23.03's ``create_session`` checks of each option) -----------------------
RESERVED_ENV_PREFIXES = ("BACKENDAI_", "KERNELHUB_")


def is_reserved_env_name(name: str) -> bool:
    """Whether ``name`` starts with one of :data:`RESERVED_ENV_PREFIXES` in any case: the one
    rule the gateway refuses by and the agent drops by, so nothing the gateway accepts is
    then dropped by the agent (``backendai_token`` would have been accepted here and dropped
    there, silently)."""
    return name.upper().startswith(RESERVED_ENV_PREFIXES)


"""What the agent sets in every kernel (its identity, its cluster, its ports): a tenant's
``environ`` may not shadow them, or code in the kernel could no longer trust them."""


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def check_environ(environ: Mapping[str, str] | None) -> dict[str, str] | None:
    """``config.environ`` as the kernel can be given it: each name a shell variable name
    (letters, digits, ``_``, not first a digit: no ``=`` or NUL, which ``execve`` cannot
    carry), each value one line without NUL (the agent hands the kernel one ``K=V`` a line),
    and no name of :data:`RESERVED_ENV_PREFIXES`. A refusal names the variable."""
    if not environ:
        return None
    for name, value in environ.items():
        shown = repr(name[:64])
        if not _ENV_NAME.fullmatch(name):
            raise InvalidAPIParameters(
                f"config.environ: {shown} is not an environment variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        if is_reserved_env_name(name):
            raise InvalidAPIParameters(
                f"config.environ: {shown} is reserved: names starting with "
                f"{' or '.join(RESERVED_ENV_PREFIXES)} (in any case) are set by kernelhub and "
                "cannot be overridden"
            )
        if any(ch in value for ch in "\0\n\r"):
            raise InvalidAPIParameters(
                f"config.environ: the value of {shown} contains NUL or a line break"
            )
    return dict(environ)


SHMEM_LABEL = "ai.backend.resource.preferred.shmem"
DEFAULT_SHMEM = 64 * 2**20
"""23.03's default ``/dev/shm`` size when neither the request nor the image says one."""


def _shmem_bytes(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidAPIParameters(f"{where} must be a size like 64m or a number of bytes")
    try:
        size = parse_size(value, allow_infinity=False)
    except ValueError as exc:
        raise InvalidAPIParameters(f"{where}: {str(exc)[:200]}") from None
    if size <= 0:
        raise InvalidAPIParameters(f"{where} must be more than 0 bytes")
    return int(size)


def resource_opts_of(
    requested: Mapping[str, object] | None, labels: Mapping[str, str]
) -> dict[str, int]:
    """``config.resource_opts`` as kernelhub honours it: ``{"shmem": bytes}``, from the
    request, else the image's :data:`SHMEM_LABEL`, else :data:`DEFAULT_SHMEM` (as 23.03).
    Any other option is refused, naming it: nothing would apply it."""
    for key in requested or {}:
        if key != "shmem":
            raise InvalidAPIParameters(
                f"config.resource_opts.{str(key)[:64]} is not supported: "
                "kernelhub honours only shmem"
            )
    asked = (requested or {}).get("shmem")
    if asked is not None:
        return {"shmem": _shmem_bytes(asked, "config.resource_opts.shmem")}
    label = labels.get(SHMEM_LABEL)
    if label is not None:
        return {"shmem": _shmem_bytes(label, f"the image label {SHMEM_LABEL}")}
    return {"shmem": DEFAULT_SHMEM}


def check_shmem(shmem: int, mem: Decimal) -> None:
    """23.03's rule: ``/dev/shm`` is memory too, so it must be less than the kernel's."""
    if shmem >= mem:
        raise InvalidAPIParameters(
            "Shared memory should be less than the main memory. "
            f"(s:{format_size(shmem)}, m:{format_size(mem)})"
        )


ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64", "x32": "x86", "i686": "x86"}
"""The other names clients give architectures (23.03's ``arch_name_aliases``)."""


def _arch(name: str) -> str:
    plain = name.strip().lower()
    return ARCH_ALIASES.get(plain, plain)


def session_architecture(requested: str | None, image: str, image_architecture: str) -> str:
    """The architecture of a session's kernels: the one asked (aliases read as 23.03 reads
    them) must be the image's. 23.03 resolves an image by name *and* architecture, so an
    image registered only for another one is not found (404), not a bad request; without
    one asked, the image's own."""
    registered = _arch(image_architecture or "x86_64")
    if requested is None or not requested.strip():
        return registered
    wanted = _arch(requested)
    if wanted != registered:
        raise ImageNotFound(
            f"unknown alias or disallowed registry: {image} is registered for {registered}, "
            f"not {wanted[:64]}"
        )
    return wanted


def designated_agents(
    agent_list: Sequence[str] | None,
    cluster_mode: ClusterMode,
    cluster_size: int,
    known: Sequence[str] | frozenset[str] | set[str],
) -> tuple[str, ...]:
    """The agent of each kernel from a superadmin's ``agent_list`` (23.03's rules and
    messages): a single-node session names one agent and all its kernels go there; a
    multi-node one names one per kernel, each a different agent (kernelhub places a
    multi-node session's kernels on distinct agents; see docs/deviations.md). An agent the
    cluster never registered is refused as 23.03 refuses it."""
    if not agent_list:
        return ()
    if cluster_mode is ClusterMode.SINGLE_NODE and len(agent_list) != 1:
        raise InvalidAPIParameters(
            "For non-cluster sessions and single-node cluster sessions, "
            "you may specify only one manually assigned agent."
        )
    if cluster_mode is ClusterMode.MULTI_NODE:
        if len(agent_list) != cluster_size:
            raise InvalidAPIParameters(
                "For multi-node cluster sessions, the number of manually assigned agents "
                "must be same to the cluster size."
            )
        if len(set(agent_list)) != len(agent_list):
            raise InvalidAPIParameters(
                "config.agent_list: the kernels of a multi-node session go to distinct agents"
            )
    for agent in agent_list:
        if agent not in known:
            raise InvalidAPIParameters(f"No such agent: {agent[:64]}")
    if cluster_mode is ClusterMode.SINGLE_NODE:
        return tuple(agent_list) * cluster_size
    return tuple(agent_list)
