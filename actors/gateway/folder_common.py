"""What the ``/folders`` routes share: the request's context and caller, its body read
through a pydantic model (a 400 naming the field), the storage volume, the folder a route
names (resolved among those the caller may see), and writing a proposed event.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from actors.storage.volume import Volume

from .auth import Caller
from .context import GatewayContext
from .folders_access import Folder, folder_for, write_vfolder
from .params import parse, raw_params
from .storage_routes import storage_of

__all__ = ["body_of", "caller_of", "ctx_of", "folder_named", "volume_of", "write"]

M = TypeVar("M", bound=BaseModel)


def ctx_of(request: web.Request) -> GatewayContext:
    ctx: GatewayContext = request.app["ctx"]
    return ctx


def caller_of(request: web.Request) -> Caller:
    caller: Caller = request["caller"]
    return caller


async def body_of(request: web.Request, model: type[M]) -> M:
    """The request's JSON body (or query string) as ``model``: unknown keys and bad values
    are a 400 naming the field."""
    return parse(model, await raw_params(request))


def volume_of(request: web.Request) -> Volume:
    return storage_of(request.app).require_volume()[0]


async def folder_named(request: web.Request, ref: str | None = None) -> Folder:
    name = request.match_info["name"] if ref is None else ref
    return await folder_for(ctx_of(request), caller_of(request), name)


async def write(request: web.Request, event: Any, *, max_count: int = 0) -> list[Any]:
    return await write_vfolder(
        ctx_of(request), caller_of(request), event, max_count=max_count, peer=request.remote
    )
