"""The admin GraphQL schema at ``POST /admin/gql``: what ``backend.ai admin ...`` and
``kh admin ...`` send (docs/admin.md).

Each area module holds one kind of record (its SDL fragment and resolvers); :data:`AREAS`
lists them in the order their SDL is joined. Role rules are :mod:`.roles`; writes go
through :meth:`.base.AdminCall.tenancy`.
"""

from __future__ import annotations

from . import (
    agents,
    domains,
    endpoints,
    groups,
    images,
    keypairs,
    policies,
    presets,
    sgroups,
    users,
    vfolders,
)
from .base import AdminArea, AdminCall, Resolvers

__all__ = ["AREAS", "AdminArea", "AdminCall", "Resolvers"]

AREAS: tuple[AdminArea, ...] = (
    domains.AREA,
    groups.AREA,
    users.AREA,
    keypairs.AREA,
    policies.AREA,
    presets.AREA,
    sgroups.AREA,
    images.AREA,
    agents.AREA,
    vfolders.AREA,
    endpoints.AREA,
)
"""Every admin area, in the order their SDL is joined."""
