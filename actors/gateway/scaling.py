"""The scaling group of a new session, at the front door: the tenancy read model's allowed
groups fed to the domain's :func:`~actors.domain.scaling_groups.check_scaling_group`
(23.03's ``create_session`` step 6, docs/gateway.md).

Every way a user creates a session reaches the gateway's ``create`` (the official client's
``session create``/``run``, kernelhub's SDK, ``kh run`` and ``kh session create`` all go
through ``POST /session``), which calls :func:`scaling_group_for` before anything is
appended: a refused create leaves no trace in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from projections.tenancy_queries import TenancyLookups

from ..domain.scaling_groups import (
    check_scaling_group,
    from_record,
    image_role,
    preference_order,
    public_only_for,
)
from ..domain.session import KernelRole, SessionType

__all__ = ["role_of_image", "scaling_group_for"]

log = logging.getLogger(__name__)


def role_of_image(image: Mapping[str, Any]) -> KernelRole:
    """The kernel role of an image record of the catalogue (its ``ai.backend.role`` label)."""
    labels = image.get("labels")
    return image_role(labels if isinstance(labels, Mapping) else None)


async def scaling_group_for(
    lookups: TenancyLookups,
    *,
    session_type: SessionType,
    requested: str | None,
    domain: str,
    project_id: str,
    access_key: str,
    image_role: KernelRole = KernelRole.COMPUTE,
) -> str:
    """The name of the scaling group a session of ``session_type`` (owned by
    ``access_key``, in ``project_id`` of ``domain``) is created in: ``requested`` when the
    caller may use it for that type, else the preferred one when none is requested
    (``default`` when it qualifies, else the first by name that accepts the type).

    Raises :class:`~actors.domain.errors.ScalingGroupNotFound` with 23.03's message
    otherwise; a group the caller may not use (another tenant's, an inactive one, a
    non-public one for an image that is not SYSTEM-role) gets the same answer as one that
    does not exist.
    """
    records = await lookups.allowed_scaling_groups(domain, project_id, access_key)
    groups = [g for g in map(from_record, records) if g is not None]
    chosen = check_scaling_group(
        preference_order(groups),
        session_type,
        requested or None,
        public_only=public_only_for(image_role),
    )
    if not requested:
        log.warning(
            "create (ak:%s, type:%s): the client did not specify the scaling group for the "
            "session; falling back to %s",
            access_key,
            session_type.value,
            chosen.name,
        )
    return chosen.name
