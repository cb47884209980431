"""The admin GraphQL schema at ``POST /admin/gql``: what ``backend.ai admin ...`` and
``kh admin ...`` send (docs/admin.md).

Each area module holds one kind of record (its SDL fragment and resolvers); :data:`AREAS`
lists them in the order their SDL is joined. Role rules are :mod:`.roles`; writes go
through :meth:`.base.AdminCall.tenancy`.
"""

from __future__ import annotations

from .base import AdminArea, AdminCall, Resolvers

__all__ = ["AREAS", "AdminArea", "AdminCall", "Resolvers"]

AREAS: tuple[AdminArea, ...] = ()
"""Every admin area (each helper's module adds its ``AREA`` here)."""
