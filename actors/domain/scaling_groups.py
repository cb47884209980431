"""Scaling groups: which pool of agents a session may use (23.03's ``check_scaling_group``,
in ``manager/registry.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ScalingGroupNotFound
from .session import SessionType

__all__ = ["DEFAULT_ALLOWED_SESSION_TYPES", "ScalingGroup", "check_scaling_group"]

DEFAULT_ALLOWED_SESSION_TYPES = (SessionType.INTERACTIVE, SessionType.BATCH)
"""The validator's default (the attrs default lists all three; stored JSON uses this one)."""


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


def check_scaling_group(
    allowed: Sequence[ScalingGroup],
    session_type: SessionType,
    requested: str | None,
    *,
    public_only: bool = True,
) -> ScalingGroup:
    """Pick the scaling group for a new session from those its domain, project and keypair
    may use (``allowed``, in their listed order)."""
    candidates = [g for g in allowed if g.is_active and (g.is_public or not public_only)]
    if not candidates:
        raise ScalingGroupNotFound("You have no scaling groups allowed to use.")
    if requested is None:
        for group in candidates:
            if session_type in group.allowed_session_types:
                return group
        raise ScalingGroupNotFound(f"No scaling groups accept the session type '{session_type}'.")
    chosen = next((g for g in candidates if g.name == requested), None)
    if chosen is None:
        raise ScalingGroupNotFound(
            f"The scaling group '{requested}' does not exist or you are not allowed to use it."
        )
    if session_type not in chosen.allowed_session_types:
        raise ScalingGroupNotFound(
            f"The scaling group '{requested}' does not accept the session type '{session_type}'."
        )
    return chosen
