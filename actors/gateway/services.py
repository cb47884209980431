"""``/services``: inference endpoints as Backend.AI 23.3.5 serves them (the official client's
``backend.ai service ...``; shapes in docs/serving.md).

Create checks everything before anything is appended, as a session create does (and with
its helpers): the image, the owner (``owner_access_key``: admins only), the project, the
model folder (by id or name among those the owner may see, ``usage_mode`` ``model``,
mountable by them, of the endpoint's project when it is a project's folder), its model
definition (read bounded, never through a link), the scaling group for
``SessionType.INFERENCE``, the resources, options, environment and cluster. Options kernelhub
does not honour are refused by name when they are not null (:data:`.service_params.UNHONOURED`).

Who may act on an endpoint: :func:`.serving_access.may_act_on`; anyone else gets the answer
of a made-up id. ``GET /services`` lists the caller's own endpoints, admins included, as
23.3.5 does (admins list more through GraphQL ``endpoint_list``). While the manager is
frozen, what would start new replicas (create, scale) answers 503, as a session create
does; the rest (remove, tokens, routes, sync) keeps working, as a session destroy does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from actors.sessions.isolation import check_create
from events.catalogue import (
    EndpointCreated,
    EndpointDestroying,
    EndpointRouteStatusChanged,
    EndpointScaled,
    EndpointTokenIssued,
    EndpointTrafficRatioChanged,
)
from events.catalogue.endpoint import MAX_ENDPOINT_ENV
from projections.endpoint_queries import EndpointLookups

from ..domain.endpoints import check_name
from ..domain.errors import ImageNotFound, InvalidAPIParameters, RoutingNotFound
from ..domain.session import (
    ClusterMode,
    SessionType,
    check_environ,
    check_shmem,
    resource_opts_of,
    session_architecture,
    validate_creation,
)
from .auth import Caller
from .context import GatewayContext
from .folders_access import Folder, folder_for
from .manager import ServerFrozen
from .params import parse, raw_params
from .scaling import role_of_image, scaling_group_for
from .service_params import (
    UNHONOURED,
    ListServices,
    ScaleService,
    ServiceCreate,
    TokenRequest,
    TrafficRatio,
)
from .serving_access import (
    endpoint_for,
    listed,
    model_service,
    mount_destination,
    serve_info,
    sync_endpoint,
    write_endpoint,
)
from .serving_tokens import PURPOSE, EndpointTokens, token_expiry
from .sessions import _project, _slots

__all__ = ["service_routes"]


def _ctx(request: web.Request) -> GatewayContext:
    return request.app["ctx"]  # type: ignore[no-any-return]


def _caller(request: web.Request) -> Caller:
    return request["caller"]  # type: ignore[no-any-return]


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def _not_frozen(ctx: GatewayContext) -> None:
    if await ctx.manager_status() == "frozen":
        raise ServerFrozen()


async def _owner_caller(ctx: GatewayContext, caller: Caller, access_key: str) -> Caller:
    """The endpoint's owner as a caller: whose folders it may serve (an admin creating for
    a user serves the user's folder, as a session mounts its owner's folders)."""
    if access_key == caller.access_key:
        return caller
    entry = await ctx.auth.cache.get(access_key)
    if entry is None:
        raise InvalidAPIParameters("owner_access_key: the owner cannot be resolved")
    return entry[1]


async def _model_folder(ctx: GatewayContext, owner: Caller, ref: str, project_id: str) -> Folder:
    """The model folder: one the owner may see (404 otherwise, whether it exists or not),
    a ``model`` folder, mountable by them, and of the endpoint's project if a project's."""
    folder = await folder_for(ctx, owner, ref)
    usage = str(folder.record.get("usage_mode") or "general")
    if usage != "model":
        raise InvalidAPIParameters(
            f"config.model: {folder.name!r} is a {usage} folder; an endpoint serves a folder "
            "created with usage mode 'model'"
        )
    folder.require("mount")
    group = folder.record.get("group")
    if group is not None and str(group) != str(project_id):
        raise InvalidAPIParameters(
            f"config.model: {folder.name!r} is another project's folder: it is served only "
            "by that project's endpoints"
        )
    return folder


def _refuse_unhonoured(params: ServiceCreate) -> None:
    for name, why in UNHONOURED.items():
        if getattr(params, name) is not None:
            raise InvalidAPIParameters(f"{name} is not supported: {why}")


async def create(request: web.Request) -> web.Response:
    ctx, caller = _ctx(request), _caller(request)
    await _not_frozen(ctx)
    params = parse(ServiceCreate, await raw_params(request))
    _refuse_unhonoured(params)
    check_name(params.name)
    config = params.config
    access_key = await ctx.acting_for(caller, params.owner_access_key)
    owner = (
        caller.keypair
        if access_key == caller.access_key
        else await ctx.lookups.keypair(access_key) or caller.keypair
    )
    image = await ctx.lookups.image(params.image)
    if image is None:
        raise ImageNotFound("unknown alias or disallowed registry")
    architecture = session_architecture(
        params.architecture, image["name"], str(image.get("architecture") or "x86_64")
    )
    cluster_mode = ClusterMode(params.cluster_mode)
    environ = check_environ(config.environ) or {}
    resource_opts = resource_opts_of(config.resource_opts, image.get("labels") or {})
    destination = mount_destination(config.model_mount_destination)
    domain = params.domain or caller.domain
    project = await _project(ctx, caller, owner, domain, params.group or "default")
    project_id = str(project["project_id"])
    folder = await _model_folder(
        ctx, await _owner_caller(ctx, caller, access_key), config.model, project_id
    )
    service = await model_service(folder)
    if len({**service.environ, **environ}) > MAX_ENDPOINT_ENV:
        raise InvalidAPIParameters(
            f"config.environ: with the model definition's environ, more than "
            f"{MAX_ENDPOINT_ENV} variables (each replica is given both)"
        )
    requested = await _slots(ctx, config.resources, image, resource_opts["shmem"])
    check_shmem(resource_opts["shmem"], requested.get("mem", Decimal(0)))
    policy = await ctx.lookups.policy(str(owner.get("resource_policy") or "default")) or {}
    validate_creation(
        session_type=SessionType.INFERENCE,
        starts_at=None,
        startup_command=None,
        cluster_size=params.cluster_size,
        max_containers_per_session=int(policy.get("max_containers_per_session") or 0),
    )
    scaling_group = await scaling_group_for(
        ctx.lookups,
        session_type=SessionType.INFERENCE,
        requested=config.scaling_group,
        domain=domain,
        project_id=project_id,
        access_key=access_key,
        image_role=role_of_image(image),
    )
    await check_create(
        ctx.store, ctx.models, ctx.lookups, access_key=access_key, scaling_group=scaling_group
    )  # a tenant's replicas never run unisolated
    endpoint_id = uuid.uuid4()
    await write_endpoint(
        ctx,
        caller,
        EndpointCreated(
            endpoint_id=endpoint_id,
            name=params.name,
            image=str(image["name"]),
            model=folder.folder_id,
            model_version=config.model_version or 1,
            model_mount_destination=destination,
            resource_slots={k: v for k, v in requested.items() if v is not None},
            resource_opts=resource_opts,
            scaling_group=scaling_group,
            cluster_mode=cluster_mode.value,
            cluster_size=params.cluster_size,
            environ=environ,
            open_to_public=params.open_to_public,
            desired_session_count=params.desired_session_count,
            owner=uuid.UUID(str(owner["user_id"])),
            access_key=access_key,
            project_id=uuid.UUID(project_id),
            domain=domain,
            service=service,
            architecture=architecture,
            tag=params.tag,
            bootstrap_script=params.bootstrap_script or owner.get("bootstrap_script") or None,
        ),
        request.remote,
    )
    record = await endpoint_for(ctx, caller, str(endpoint_id))
    return web.json_response(serve_info(ctx, _origin(request), record))


async def list_services(request: web.Request) -> web.Response:
    """The caller's endpoints (not those being removed), oldest first; ``?name=`` the one
    of that name."""
    ctx, caller = _ctx(request), _caller(request)
    params = parse(ListServices, dict(request.query))
    records = await EndpointLookups(ctx.store).owned_by(caller.user_id)
    records = [r for r in records if r.get("status") == "live"]
    if params.name is not None:
        records = [r for r in records if r.get("name") == params.name]
    records.sort(key=lambda r: (str(r.get("created_at")), str(r.get("endpoint_id"))))
    return web.json_response([listed(ctx, _origin(request), r) for r in records])


async def _endpoint(request: web.Request) -> dict[str, Any]:
    return await endpoint_for(_ctx(request), _caller(request), request.match_info["service_id"])


async def info(request: web.Request) -> web.Response:
    record = await _endpoint(request)
    return web.json_response(serve_info(_ctx(request), _origin(request), record))


async def delete(request: web.Request) -> web.Response:
    """``service rm``: the endpoint drains every route, then is destroyed."""
    record = await _endpoint(request)
    endpoint_id = uuid.UUID(str(record["endpoint_id"]))
    await write_endpoint(
        _ctx(request), _caller(request), EndpointDestroying(endpoint_id=endpoint_id), request.remote
    )
    return web.json_response({"success": True})


async def scale(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    await _not_frozen(ctx)
    params = parse(ScaleService, await raw_params(request))
    record = await _endpoint(request)
    await write_endpoint(
        ctx,
        _caller(request),
        EndpointScaled(
            endpoint_id=uuid.UUID(str(record["endpoint_id"])), desired_session_count=params.to
        ),
        request.remote,
    )
    return web.json_response(
        {"current_route_count": len(record.get("routes") or {}), "target_count": params.to}
    )


async def sync(request: web.Request) -> web.Response:
    record = await _endpoint(request)
    await sync_endpoint(_ctx(request), str(record["endpoint_id"]))
    return web.json_response({"success": True})


async def token(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    params = parse(TokenRequest, await raw_params(request))
    record = await _endpoint(request)
    expires_at = token_expiry(params.duration, params.valid_until, datetime.now(UTC))
    endpoint_id, token_id = uuid.UUID(str(record["endpoint_id"])), uuid.uuid4()
    await write_endpoint(
        ctx,
        _caller(request),
        EndpointTokenIssued(endpoint_id=endpoint_id, token_id=token_id, expires_at=expires_at),
        request.remote,
    )
    signer = EndpointTokens(ctx.auth.secrets.derive(PURPOSE))
    return web.json_response({"token": signer.sign(endpoint_id, token_id, expires_at)})


def _route(record: dict[str, Any], ref: str) -> dict[str, Any]:
    try:
        route_id = str(uuid.UUID(ref)) if len(ref) <= 64 else ""
    except ValueError:
        route_id = ""
    route = (record.get("routes") or {}).get(route_id)
    if route is None:
        raise RoutingNotFound()
    return dict(route)


async def update_route(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    params = parse(TrafficRatio, await raw_params(request))
    record = await _endpoint(request)
    route = _route(record, request.match_info["route_id"])
    endpoint_id = uuid.UUID(str(record["endpoint_id"]))
    await write_endpoint(
        ctx,
        _caller(request),
        EndpointTrafficRatioChanged(
            endpoint_id=endpoint_id,
            route_id=uuid.UUID(str(route["route_id"])),
            traffic_ratio=params.traffic_ratio,
        ),
        request.remote,
    )
    record = await endpoint_for(ctx, _caller(request), str(endpoint_id))
    return web.json_response(serve_info(ctx, _origin(request), record))


async def delete_route(request: web.Request) -> web.Response:
    """One replica fewer, and this one the one that goes: the desired count down by one and
    the route drained in one decision of the writer (one append), so the reconciler never
    sees one without the other (it would drain another route, or start a replacement). A
    route already draining changes nothing."""
    record = await _endpoint(request)
    route = _route(record, request.match_info["route_id"])
    await write_endpoint(
        _ctx(request),
        _caller(request),
        EndpointRouteStatusChanged(
            endpoint_id=uuid.UUID(str(record["endpoint_id"])),
            route_id=uuid.UUID(str(route["route_id"])),
            status="TERMINATING",
        ),
        request.remote,
        downscale=True,
    )
    return web.json_response({"success": True})


def service_routes() -> list[web.RouteDef]:
    return [
        web.post("/services", create),
        web.get("/services", list_services),
        web.get("/services/{service_id}", info),
        web.delete("/services/{service_id}", delete),
        web.post("/services/{service_id}/scale", scale),
        web.post("/services/{service_id}/sync", sync),
        web.post("/services/{service_id}/token", token),
        web.put("/services/{service_id}/routings/{route_id}", update_route),
        web.delete("/services/{service_id}/routings/{route_id}", delete_route),
    ]
