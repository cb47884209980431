"""Which endpoint a request names, who may act on it, how its changes reach the endpoint
writer, and how it is shown.

An endpoint is found by id in the tenancy read model (:class:`projections.endpoint_queries.
EndpointLookups`) and answered only to those who may act on it: its owner, an admin of its
domain (not for a superadmin's endpoint), a superadmin. Anyone else gets exactly what a
made-up id gets (404 "No such endpoint."), so which endpoints exist is not learnt by
probing ids.

Changes go to the single endpoint writer, the named actor ``serving``, as an
:class:`~actors.domain.commands.endpoints.EndpointCommand` stamped with who asked; the call
returns once the tenancy read model has folded what was appended (read your writes: the
caller's next request sees it).

The model folder's definition is read here: a regular file at the top of the folder, never
through a link (the folder is mounted in sessions, so its tenant can plant one anywhere),
at most :data:`~actors.domain.model_definition.MAX_DEFINITION_BYTES`.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

from actors.agents.safe_fs import OverLimit, Refused, closing, read_capped
from actors.storage.tree import Tree
from events import Initiator, position_key
from events.catalogue.endpoint import ModelService
from events.correlation import correlation_kwargs
from projections.endpoint_queries import EndpointLookups

from ..domain.commands.endpoints import EndpointCommand, EndpointEvent
from ..domain.errors import (
    EndpointNotFound,
    InvalidAPIParameters,
    ObjectNotFound,
    VFolderOperationFailed,
)
from ..domain.model_definition import (
    DEFINITION_NAMES,
    MAX_DEFINITION_BYTES,
    InvalidModelDefinition,
    parse_model_definition,
)
from ..domain.mount_paths import model_mount_path
from .auth import Caller
from .context import GatewayContext
from .folders_access import Folder
from .problems import InternalServerError

__all__ = [
    "DEFAULT_MOUNT",
    "endpoint_for",
    "may_act_on",
    "model_service",
    "mount_destination",
    "serve_info",
    "service_endpoint",
    "write_endpoint",
]

DEFAULT_MOUNT = "/models"
_READ_YOUR_WRITES_S = 10.0


async def _owner_role(ctx: GatewayContext, record: dict[str, Any]) -> str | None:
    user = await ctx.lookups.user(str(record.get("owner")))
    return None if user is None else str(user.get("role"))


async def may_act_on(ctx: GatewayContext, caller: Caller, record: dict[str, Any]) -> bool:
    """Whether ``caller`` may see and change the endpoint ``record``: its owner, a superadmin,
    or an admin of its domain (by the user's role, not a keypair's flag) when a superadmin
    does not own it."""
    if caller.is_superadmin or str(record.get("owner")) == caller.user_id:
        return True
    if caller.role != "admin" or record.get("domain") != caller.domain:
        return False
    return await _owner_role(ctx, record) != "superadmin"


async def endpoint_for(ctx: GatewayContext, caller: Caller, ref: str) -> dict[str, Any]:
    """The endpoint ``ref`` (its id) names, when the caller may act on it; 404 "No such
    endpoint." otherwise, whether it exists or not."""
    try:
        endpoint_id = uuid.UUID(str(ref)) if len(str(ref)) <= 64 else None
    except ValueError:
        endpoint_id = None
    if endpoint_id is None:
        raise EndpointNotFound()
    record = await EndpointLookups(ctx.store).endpoint(str(endpoint_id))
    if record is None or not await may_act_on(ctx, caller, record):
        raise EndpointNotFound()
    return record


def _writer(ctx: GatewayContext) -> Any:
    import ray

    try:
        return ray.get_actor("serving", namespace=ctx.router.namespace)
    except ValueError:
        raise InvalidAPIParameters("this installation serves no inference endpoints") from None


async def write_endpoint(
    ctx: GatewayContext,
    caller: Caller,
    event: EndpointEvent,
    peer: str | None = None,
    *,
    downscale: bool = False,
) -> list[Any]:
    """Run ``event`` at the endpoint writer as ``caller`` and wait until the read model has
    it. A refusal (a :class:`DomainError`) comes back as itself; a writer that died mid-call
    is asked once more with the same command id (its log answers a retry). ``downscale``
    with a route's ``TERMINATING``: one replica fewer in the same append."""
    import ray

    user = caller.user or {}
    initiator = Initiator(
        access_key=caller.access_key,
        user_id=caller.user_id or None,
        email=user.get("email"),
        role=caller.role,
        peer=peer,
    )
    command = EndpointCommand(event=event, initiator=initiator, downscale=downscale)
    writer = _writer(ctx)
    try:
        appended: list[Any] = await writer.endpoint.remote(command, **correlation_kwargs())
    except ray.exceptions.RayActorError:
        appended = await _writer(ctx).endpoint.remote(command, **correlation_kwargs())
    await _settled(ctx)
    return appended


async def _settled(ctx: GatewayContext) -> None:
    """Wait (bounded) until the tenancy projection has folded the log's current head."""
    head = await ctx.store.head()
    deadline = time.monotonic() + _READ_YOUR_WRITES_S
    while time.monotonic() < deadline:
        active = await ctx.store.read_models.active("tenancy")
        if active is None or position_key(await active.checkpoint()) >= position_key(head):
            return
        await asyncio.sleep(0.01)


async def sync_endpoint(ctx: GatewayContext, endpoint_id: str) -> None:
    """The reconciler probes every route of the endpoint and acts on it now."""
    await _writer(ctx).sync.remote(endpoint_id, **correlation_kwargs())
    await _settled(ctx)


def service_endpoint(ctx: GatewayContext, origin: str | None, endpoint_id: Any) -> str:
    """Where callers send inference requests: ``<base>/serving/<id>``, the base being the
    operator's ``KH_SERVING_URL`` or the gateway's own address (else the origin the caller
    reached the gateway by)."""
    base = ctx.serving_base or origin or ""
    return f"{base.rstrip('/')}/serving/{uuid.UUID(str(endpoint_id))}"


def _routes(record: dict[str, Any]) -> list[dict[str, Any]]:
    routes = sorted(
        (record.get("routes") or {}).values(),
        key=lambda r: (str(r.get("created_at")), str(r.get("route_id"))),
    )
    return [
        {
            "route_id": str(r["route_id"]),
            "session_id": str(r["session_id"]),
            "traffic_ratio": float(r.get("traffic_ratio", 1.0)),
            "status": str(r.get("status")),
        }
        for r in routes
    ]


def serve_info(ctx: GatewayContext, origin: str | None, record: dict[str, Any]) -> dict[str, Any]:
    """23.3.5's ``ServeInfoModel``: what create, info and a traffic ratio change answer."""
    return {
        "endpoint_id": str(uuid.UUID(str(record["endpoint_id"]))),
        "name": record.get("name"),
        "desired_session_count": int(record.get("desired_session_count") or 0),
        "active_routes": _routes(record),
        "service_endpoint": service_endpoint(ctx, origin, record["endpoint_id"]),
        "is_public": bool(record.get("open_to_public")),
    }


def listed(ctx: GatewayContext, origin: str | None, record: dict[str, Any]) -> dict[str, Any]:
    """One endpoint of ``GET /services``."""
    healthy = [r for r in _routes(record) if r["status"] == "HEALTHY"]
    return {
        "id": str(uuid.UUID(str(record["endpoint_id"]))),
        "name": record.get("name"),
        "desired_session_count": int(record.get("desired_session_count") or 0),
        "active_route_count": len(healthy),
        "service_endpoint": service_endpoint(ctx, origin, record["endpoint_id"]),
        "is_public": bool(record.get("open_to_public")),
    }


# ---- create-time checks ---------------------------------------------------------------------
def mount_destination(value: str | None) -> str:
    """Where the model folder goes in each replica (``/models`` when unset), judged by
    :func:`~actors.domain.mount_paths.model_mount_path`, the agent's own check: a
    destination the gateway accepts but every replica then fails on (``/home``,
    ``/home/work/.ssh``) would be a 200 followed by failing replicas for ever (review S2)."""
    raw = DEFAULT_MOUNT if value is None or not value.strip() else value
    return model_mount_path(raw, "config.model_mount_destination")


def _read_definition(path: Path) -> tuple[str, bytes] | None:
    """The first definition file at the top of the folder at ``path``: its name and bytes;
    ``None`` when there is none. Blocking (run in a thread)."""
    with Tree.opened(path) as tree:
        for name in DEFINITION_NAMES:
            try:
                fd, _ = tree.open_file((name,))
            except ObjectNotFound:
                continue
            except Refused as exc:
                raise InvalidModelDefinition(
                    f"the model folder's {name} is not a regular file ({exc.msg}); links "
                    "are not followed"
                ) from None
            with closing(fd):
                try:
                    return name, read_capped(fd, MAX_DEFINITION_BYTES, label=name)
                except OverLimit:
                    raise InvalidModelDefinition(
                        f"the model folder's {name} is larger than "
                        f"{MAX_DEFINITION_BYTES // 1024} KiB"
                    ) from None
    return None


async def model_service(folder: Folder) -> ModelService:
    """The service the model folder's definition describes; a 400 naming the file (or the
    names looked for) when it is missing or invalid."""
    if folder.host_path is None:
        raise InvalidAPIParameters("config.model: this installation serves no folders")
    try:
        # read and parsed in one thread: parsing the tenant's text must not hold the
        # gateway's event loop (review S7)
        return await asyncio.to_thread(_definition, folder.host_path, folder.name)
    except VFolderOperationFailed:
        raise
    except OSError as exc:
        raise InternalServerError(
            f"the model folder could not be read: {os.strerror(exc.errno or 0)}"
        ) from None


def _definition(path: Path, folder_name: str) -> ModelService:
    """The folder's definition, read and parsed (blocking: run in a thread)."""
    found = _read_definition(path)
    if found is None:
        raise InvalidModelDefinition(
            f"the model folder {folder_name!r} has no model definition at its top "
            f"({', '.join(DEFINITION_NAMES)})"
        )
    name, raw = found
    try:
        return parse_model_definition(raw, name)
    except InvalidModelDefinition as exc:
        raise InvalidModelDefinition(f"{name}: {exc.msg}") from None
