"""REST pieces of the admin surface that the client and web UIs call (placeholder until
its routes land)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["admin_rest_routes"]


def admin_rest_routes() -> list[web.RouteDef]:
    return []
