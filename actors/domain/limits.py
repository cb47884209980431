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

__all__ = ["EffectiveLimits", "effective_limits", "quota_policy"]


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
