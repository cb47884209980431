"""Effective resource limits of a keypair: its policy, its project's and its domain's caps.

Backend.AI checks the three separately (three predicates); the effective cap is their
element-wise minimum. The keypair layer follows the policy's ``default_for_unspecified``
(LIMITED: unlisted slots are 0; UNLIMITED: infinite); project and domain caps leave
unlisted slots unlimited. Slots the cluster does not know are ignored everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .predicates import QuotaPolicy
from .slots import DefaultForUnspecified, ResourceSlot, SlotType, cap_from

__all__ = [
    "EXEC_TIMEOUT_LABEL",
    "EffectiveLimits",
    "effective_limits",
    "execution_timeout_s",
    "quota_policy",
]


def quota_policy(policy: Mapping[str, Any] | None) -> QuotaPolicy:
    """A keypair resource policy record as the predicates read it."""
    if not policy:
        return QuotaPolicy()
    return QuotaPolicy(
        total_resource_slots=dict(policy.get("total_resource_slots") or {}),
        default_for_unspecified=DefaultForUnspecified(
            policy.get("default_for_unspecified", "UNLIMITED")
        ),
        max_concurrent_sessions=int(policy.get("max_concurrent_sessions", 0)),
        max_concurrent_sftp_sessions=int(policy.get("max_concurrent_sftp_sessions", 1)),
    )


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    keypair: ResourceSlot
    project: ResourceSlot
    domain: ResourceSlot

    @property
    def combined(self) -> ResourceSlot:
        keys = sorted(set(self.keypair) | set(self.project) | set(self.domain))
        inf = Decimal("Infinity")
        return ResourceSlot(
            {
                k: min(self.keypair.get(k, inf), self.project.get(k, inf), self.domain.get(k, inf))
                for k in keys
            }
        )


def effective_limits(limits: Mapping[str, Any], known: Mapping[str, SlotType]) -> EffectiveLimits:
    """From ``TenancyLookups.limits_of`` to caps per layer, over the known slot types."""
    policy = quota_policy(limits.get("policy"))
    return EffectiveLimits(
        keypair=cap_from(policy.total_resource_slots, known, policy.default_for_unspecified),
        project=cap_from(limits.get("project_slots") or {}, known),
        domain=cap_from(limits.get("domain_slots") or {}, known),
    )


EXEC_TIMEOUT_LABEL = "ai.backend.exec-timeout"
"""The image label bounding one execution, in seconds (kernelhub's own name: the upstream
behaviour we follow, ../shared/spec, has the agent's per-run watchdog and a session's batch
``timeout``, but names no label or policy field that feeds them)."""


def _positive_seconds(value: Any) -> float | None:
    """A positive, finite number of seconds, or None for "no limit" (absent, 0, negative,
    not a number: a limit nobody can read bounds nothing, and 0 means "none" upstream)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 < seconds < float("inf") else None


def execution_timeout_s(
    policy: Mapping[str, Any] | None, image: Mapping[str, Any] | None
) -> float | None:
    """Pure: the longest one execution (a query run, or a batch session's whole command) may
    take, from the keypair policy's ``exec_timeout_s`` and the image's
    :data:`EXEC_TIMEOUT_LABEL`: the tighter of the two that are set; None when neither is.

    kernelhub takes the limit from who owns the cost (the policy) and from who knows the
    workload (the image); the gateway computes it at create and the session's creation spec
    carries it to the agent (``exec_timeout_s``): a run past it ends ``exec-timeout`` and its
    kernel is destroyed with that reason, a batch ends its session ``task-timeout`` (-2), as
    upstream's agent does with its watchdog."""
    limits = [
        _positive_seconds((policy or {}).get("exec_timeout_s")),
        _positive_seconds(((image or {}).get("labels") or {}).get(EXEC_TIMEOUT_LABEL)),
    ]
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None
