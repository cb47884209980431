"""Admin GraphQL area (a placeholder until it lands; see ``actors.gateway.admin``)."""

from __future__ import annotations

from .base import AdminArea, AdminCall, Resolvers

__all__ = ["AREA"]


def _resolvers(call: AdminCall) -> Resolvers:
    return {}


AREA = AdminArea("users", sdl="", resolvers=_resolvers)
