"""Scaling groups: which pool of agents a session may use (23.03's ``check_scaling_group``,
in ``manager/registry.py``).

The rules at session creation, in the order they apply (:func:`check_scaling_group`):

1. The candidates are the groups associated with the session's domain, its project or its
   keypair (their union; the caller passes them, see
   ``projections.tenancy_queries.TenancyLookups.allowed_scaling_groups``), less the inactive
   ones, less the non-public ones unless the image's role is SYSTEM (:func:`public_only_for`).
2. No candidate at all: "You have no scaling groups allowed to use.".
3. None requested: the first candidate, in the caller's order, whose
   ``allowed_session_types`` has the session's type (:func:`preference_order` puts
   ``default`` first: kernelhub's one extension), else "No scaling groups accept ...".
4. One requested: it must be a candidate ("... does not exist or you do not have access
   ...", the same words whether it exists elsewhere, is another tenant's, is inactive or
   is non-public: nothing tells a tenant that a group it may not use exists) and accept the
   type ("... does not accept the session type ...").

Every refusal is a :class:`ScalingGroupNotFound` (Backend.AI's 404 ``object-not-found``
"No such scaling group.") whose message is upstream's word for word: clients and scripts
match on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ScalingGroupNotFound
from .session import PRIVATE_KERNEL_ROLES, KernelRole, SessionType

__all__ = [
    "DEFAULT_ALLOWED_SESSION_TYPES",
    "PREFERRED_GROUP",
    "ScalingGroup",
    "check_scaling_group",
    "from_record",
    "image_role",
    "preference_order",
    "public_only_for",
    "upstream_type_name",
]

DEFAULT_ALLOWED_SESSION_TYPES = (SessionType.INTERACTIVE, SessionType.BATCH)
"""The validator's default (the attrs default lists all three; stored JSON uses this one)."""

PREFERRED_GROUP = "default"
"""The group kernelhub tries first when a create names none (``kh up``'s embedded pool):
before this rule existed every such create went there when it was allowed, and it still
does, but only when it also accepts the session's type."""


@dataclass(frozen=True, slots=True)
class ScalingGroup:
    name: str
    is_active: bool = True
    is_public: bool = True
    scheduler: str = "fifo"
    allowed_session_types: tuple[SessionType, ...] = DEFAULT_ALLOWED_SESSION_TYPES
    pending_timeout: float = 0.0
    """Seconds a session may stay PENDING before it is cancelled; 0 = never."""
    scheduler_config: Mapping[str, Any] = field(default_factory=dict)
    agent_selector: str | None = None
    """kernelhub extension: concentrated / dispersed / round-robin; None = the plugin's own."""
    use_host_network: bool = False


_KNOWN_TYPES = frozenset(t.value for t in SessionType)


def from_record(record: Mapping[str, Any]) -> ScalingGroup | None:
    """A scaling group from its tenancy record (a ``scaling_group_set``'s fields plus its
    associations); ``None`` for a record that only has associations, never set (no such
    group: 23.03's foreign key makes that row impossible). A session type the record names
    that kernelhub does not know is left out (never widens what the group accepts)."""
    name = record.get("name")
    if not isinstance(name, str) or not name:
        return None
    stored = record.get("allowed_session_types")
    types = (
        DEFAULT_ALLOWED_SESSION_TYPES
        if stored is None
        else tuple(SessionType(t) for t in stored if t in _KNOWN_TYPES)
    )
    return ScalingGroup(
        name,
        is_active=bool(record.get("is_active", True)),
        is_public=bool(record.get("is_public", True)),
        scheduler=str(record.get("scheduler", "fifo")),
        allowed_session_types=types,
        pending_timeout=float(record.get("pending_timeout", 0)),
        scheduler_config=record.get("scheduler_config") or {},
        agent_selector=record.get("agent_selector"),
        use_host_network=bool(record.get("use_host_network", False)),
    )


def image_role(labels: Mapping[str, str] | None) -> KernelRole:
    """The kernel role an image's ``ai.backend.role`` label gives (23.03 reads the same
    label); absent or unknown is COMPUTE, the role that may use public groups only."""
    value = (labels or {}).get("ai.backend.role", KernelRole.COMPUTE.value)
    try:
        return KernelRole(value)
    except ValueError:
        return KernelRole.COMPUTE


def public_only_for(role: KernelRole) -> bool:
    """23.03.5's ``public_sgroup_only``: only a private (SYSTEM-role, e.g. SFTP) image's
    sessions may use non-public scaling groups."""
    return role not in PRIVATE_KERNEL_ROLES


def preference_order(
    groups: Iterable[ScalingGroup], preferred: str = PREFERRED_GROUP
) -> list[ScalingGroup]:
    """``groups`` with ``preferred`` moved to the front, the others in their order (by name,
    as the lookups list them). 23.03 takes the first allowed group that accepts the type in
    the database's order; kernelhub keeps sending a create that names no group to
    ``default`` where ``default`` is allowed, visible and accepts the type, and otherwise
    does as 23.03 does, in name order."""
    listed = list(groups)
    return [g for g in listed if g.name == preferred] + [g for g in listed if g.name != preferred]


def upstream_type_name(session_type: SessionType) -> str:
    """How 23.03's messages spell a session type: its ``SessionTypes`` is a ``(str, Enum)``
    and 23.03 runs on Python 3.11, where an f-string of such a member gives
    ``SessionTypes.BATCH``, not ``batch``. The messages keep that spelling so that what a
    script matches on upstream matches here."""
    return f"SessionTypes.{session_type.name}"


def check_scaling_group(
    allowed: Sequence[ScalingGroup],
    session_type: SessionType,
    requested: str | None,
    *,
    public_only: bool = True,
) -> ScalingGroup:
    """Pick the scaling group for a new session from those its domain, project and keypair
    may use (``allowed``, in their listed order; see the module's docstring for the rules).
    ``requested`` empty is the same as not given."""
    candidates = [g for g in allowed if g.is_active and (g.is_public or not public_only)]
    if not candidates:
        raise ScalingGroupNotFound("You have no scaling groups allowed to use.")
    spelled = upstream_type_name(session_type)
    if not requested:
        for group in candidates:
            if session_type in group.allowed_session_types:
                return group
        raise ScalingGroupNotFound(f"No scaling groups accept the session type '{spelled}'.")
    chosen = next((g for g in candidates if g.name == requested), None)
    if chosen is None:
        raise ScalingGroupNotFound(
            f"The scaling group '{requested}' does not exist "
            f"or you do not have access to the scaling group '{requested}'."
        )
    if session_type not in chosen.allowed_session_types:
        raise ScalingGroupNotFound(
            f"The scaling group '{requested}' does not accept the session type '{spelled}'."
        )
    return chosen
