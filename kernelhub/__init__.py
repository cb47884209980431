"""kernelhub: event-sourced compute sessions on Ray and Redis.

``from kernelhub import Client, AsyncClient`` is the SDK (:mod:`kernelhub.sdk`); it is
imported on first use, so that ``kh`` and the actors do not pay for httpx at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sdk import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'kernelhub' has no attribute {name!r}")
