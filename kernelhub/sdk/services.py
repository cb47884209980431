"""Model serving from Python: :class:`AsyncServices` (asyncio) and :class:`Services`
(blocking), the calls of the official client's ``backend.ai service`` on ``/services``,
and :func:`call_endpoint` / :func:`acall_endpoint` for whoever calls a served model.

    from kernelhub import Client
    from kernelhub.sdk.services import Services, call_endpoint

    with Client() as client:
        services = Services(client)
        created = services.create("python", "my-model", 2, name="echo")
        services.wait_healthy("echo", timeout=300)
        token = services.generate_token("echo", "2h")
        reply = call_endpoint(created["service_endpoint"], "/predict", token=token,
                              json={"text": "hi"})

An endpoint is named by its id or its name (among the caller's); another tenant's endpoint
is :class:`~kernelhub.sdk.errors.NotFound` exactly as a made-up id. Answers are the
gateway's JSON (dicts) in the shapes Backend.AI 23.3.5 gives (docs/serving.md).

Calling a served model is plain HTTP to its ``service_endpoint`` (the gateway's inference
proxy), not a signed API call: a caller needs only the URL and, for a private endpoint, a
token (``Authorization: BackendAI <token>``), never a keypair.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx

from ._blocking import BlockingTwin
from ._wire import CORRELATION_HEADER
from .errors import ClientError, ConnectionFailed, NotFound, PendingTimeout, api_error

if TYPE_CHECKING:
    from .aio import AsyncClient

__all__ = [
    "AsyncServices",
    "Services",
    "acall_endpoint",
    "call_endpoint",
    "endpoint_url",
    "healthy_routes",
]

Record = dict[str, Any]
ClusterMode = Literal["single-node", "multi-node"]
_POLL_S = 0.5


def _path(endpoint_id: uuid.UUID, tail: str = "") -> str:
    return f"/services/{endpoint_id}{tail}"


def _not_found(ref: str) -> NotFound:
    """What the server answers for an endpoint the caller cannot see."""
    return NotFound(
        404,
        {
            "type": "https://api.backend.ai/probs/object-not-found",
            "title": "No such endpoint.",
            "msg": ref,
        },
    )


def healthy_routes(info: Mapping[str, Any]) -> list[Record]:
    """The routes of a ``/services/{id}`` answer that serve traffic now."""
    return [r for r in info.get("active_routes") or () if r.get("status") == "HEALTHY"]


def endpoint_url(service_endpoint: str, path: str = "") -> str:
    """``path`` under an endpoint's URL (``/predict`` -> ``.../serving/<id>/predict``)."""
    if not path:
        return service_endpoint
    return service_endpoint.rstrip("/") + "/" + path.lstrip("/")


def _token_headers(token: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"BackendAI {token}"
    return sent


def create_service_body(
    image: str,
    model: str,
    count: int,
    *,
    name: str,
    model_version: int | None,
    model_mount_destination: str | None,
    environ: Mapping[str, str] | None,
    startup_command: str | None,
    resources: Mapping[str, str | int | float] | None,
    resource_opts: Mapping[str, str | int] | None,
    cluster_size: int,
    cluster_mode: ClusterMode | None,
    domain: str | None,
    group: str | None,
    bootstrap_script: str | None,
    tag: str | None,
    architecture: str | None,
    scaling_group: str | None,
    owner_access_key: str | None,
    open_to_public: bool,
) -> Record:
    """``POST /services``'s body with the official client's keys and places
    (``Service.create``). An option left unset is left out, so the server's refusal of an
    option (a 400 naming it) only ever names one the caller gave."""
    config: Record = {"model": model}
    optional_config: Record = {
        "model_version": model_version,
        "model_mount_destination": model_mount_destination,
        "environ": dict(environ) if environ else None,
        "scaling_group": scaling_group,
        "resources": {k: str(v) for k, v in resources.items()} if resources else None,
        "resource_opts": {k: str(v) for k, v in resource_opts.items()} if resource_opts else None,
    }
    config.update({k: v for k, v in optional_config.items() if v is not None})
    body: Record = {
        "name": name,
        "desired_session_count": count,
        "image": image,
        "cluster_size": cluster_size,
        "open_to_public": open_to_public,
        "config": config,
    }
    optional: Record = {
        "arch": architecture,
        "group": group,
        "domain": domain,
        "cluster_mode": cluster_mode,
        "tag": tag,
        "startup_command": startup_command,
        "bootstrap_script": bootstrap_script,
        "owner_access_key": owner_access_key,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


class AsyncServices:
    """The ``/services`` operations over an :class:`~kernelhub.sdk.aio.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def _json(self, method: str, path: str, body: Any = None, **options: Any) -> Any:
        response = await self.client.request(method, path, json_body=body, **options)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    async def resolve(self, ref: str | uuid.UUID) -> uuid.UUID:
        """An endpoint's id from its id or its name. A name must name exactly one of the
        endpoints the caller sees (an admin may see several of one name: use the id)."""
        if isinstance(ref, uuid.UUID):
            return ref
        try:
            return uuid.UUID(ref)
        except ValueError:
            pass
        named = [e for e in await self.list(name=ref) if e.get("name") == ref]
        if not named:
            raise _not_found(ref)
        if len(named) > 1:
            ids = ", ".join(str(e["id"]) for e in named)
            raise ClientError(f"several endpoints are named {ref!r} ({ids}): give its id")
        return uuid.UUID(str(named[0]["id"]))

    # ---- endpoints ------------------------------------------------------------------------
    async def create(
        self,
        image: str,
        model: str,
        count: int = 1,
        *,
        name: str | None = None,
        model_version: int | None = None,
        model_mount_destination: str | None = None,
        environ: Mapping[str, str] | None = None,
        startup_command: str | None = None,
        resources: Mapping[str, str | int | float] | None = None,
        resource_opts: Mapping[str, str | int] | None = None,
        cluster_size: int = 1,
        cluster_mode: ClusterMode | None = None,
        domain: str | None = None,
        group: str | None = None,
        bootstrap_script: str | None = None,
        tag: str | None = None,
        architecture: str | None = None,
        scaling_group: str | None = None,
        owner_access_key: str | None = None,
        open_to_public: bool = False,
    ) -> Record:
        """An endpoint serving the model folder ``model`` (its name or id) with ``count``
        inference sessions of ``image``; the answer is ``/services/{id}``'s shape
        (``endpoint_id``, ``service_endpoint``, ``active_routes``, ...). Replicas start in
        the background: :meth:`wait_healthy` waits for them."""
        body = create_service_body(
            image,
            model,
            count,
            name=name or f"kh-serve-{uuid.uuid4().hex[:8]}",
            model_version=model_version,
            model_mount_destination=model_mount_destination,
            environ=environ,
            startup_command=startup_command,
            resources=resources,
            resource_opts=resource_opts,
            cluster_size=cluster_size,
            cluster_mode=cluster_mode,
            domain=domain or self.client.config.domain,
            group=group or self.client.config.group,
            bootstrap_script=bootstrap_script,
            tag=tag,
            architecture=architecture,
            scaling_group=scaling_group,
            owner_access_key=owner_access_key,
            open_to_public=open_to_public,
        )
        answer: Record = await self._json("POST", "/services", body)
        return answer

    async def list(self, *, name: str | None = None) -> list[Record]:
        """The endpoints the caller may see: ``id``, ``name``, ``desired_session_count``,
        ``active_route_count``, ``service_endpoint``, ``is_public``."""
        params = {"name": name} if name else None
        answer: list[Record] = await self._json("GET", "/services", params=params)
        return answer

    async def info(self, ref: str | uuid.UUID) -> Record:
        """``endpoint_id``, ``name``, ``desired_session_count``, ``active_routes``
        (``route_id``, ``session_id``, ``traffic_ratio``, ``status``), ``service_endpoint``,
        ``is_public``."""
        answer: Record = await self._json("GET", _path(await self.resolve(ref)))
        return answer

    async def get_endpoint(self, ref: str | uuid.UUID) -> str:
        """The URL callers send requests to."""
        return str((await self.info(ref))["service_endpoint"])

    async def delete(self, ref: str | uuid.UUID) -> Record:
        """Remove the endpoint: its routes drain (no new requests), their sessions end, then
        the endpoint is gone and its name free."""
        answer: Record = await self._json("DELETE", _path(await self.resolve(ref)))
        return answer

    async def sync(self, ref: str | uuid.UUID) -> Record:
        """Probe every route now and reconcile now (not at the next pass)."""
        answer: Record = await self._json("POST", _path(await self.resolve(ref), "/sync"))
        return answer

    async def scale(self, ref: str | uuid.UUID, to: int) -> Record:
        """``{"current_route_count", "target_count"}``: replicas start or drain after."""
        path = _path(await self.resolve(ref), "/scale")
        answer: Record = await self._json("POST", path, {"to": to})
        return answer

    async def generate_token(
        self,
        ref: str | uuid.UUID,
        duration: str | None = None,
        *,
        valid_until: int | float | datetime | None = None,
    ) -> str:
        """A token for callers of a private endpoint, valid for ``duration`` (``"2h"``,
        ``"3d"``, ...) or until ``valid_until`` (a time, or Unix seconds)."""
        if (duration is None) == (valid_until is None):
            raise ClientError("give a token either a duration or valid_until")
        body: Record
        if duration is not None:
            body = {"duration": duration}
        else:
            until = valid_until.timestamp() if isinstance(valid_until, datetime) else valid_until
            body = {"valid_until": int(until)}  # type: ignore[arg-type]
        answer: Record = await self._json("POST", _path(await self.resolve(ref), "/token"), body)
        return str(answer["token"])

    async def update_traffic_ratio(
        self, ref: str | uuid.UUID, route_id: str | uuid.UUID, ratio: float
    ) -> Record:
        """One route's share of the traffic (0 to 1, weighed against its siblings')."""
        path = _path(await self.resolve(ref), f"/routings/{uuid.UUID(str(route_id))}")
        answer: Record = await self._json("PUT", path, {"traffic_ratio": ratio})
        return answer

    async def downscale_route(self, ref: str | uuid.UUID, route_id: str | uuid.UUID) -> Record:
        """Scale down by one, draining this route (and ending its session)."""
        path = _path(await self.resolve(ref), f"/routings/{uuid.UUID(str(route_id))}")
        answer: Record = await self._json("DELETE", path)
        return answer

    async def wait_healthy(
        self, ref: str | uuid.UUID, count: int | None = None, *, timeout: float | None = None
    ) -> Record:
        """Until ``count`` routes (default: the desired count, at least one) are HEALTHY;
        the last answer. :class:`~kernelhub.sdk.errors.PendingTimeout` after ``timeout``."""
        endpoint_id = await self.resolve(ref)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self.info(endpoint_id)
            wanted = count if count is not None else max(1, int(info["desired_session_count"]))
            healthy = len(healthy_routes(info))
            if healthy >= wanted:
                return info
            if deadline is not None and time.monotonic() >= deadline:
                statuses = ", ".join(str(r.get("status")) for r in info.get("active_routes") or ())
                raise PendingTimeout(
                    f"endpoint {info.get('name', endpoint_id)} has {healthy} of {wanted} routes "
                    f"HEALTHY after {timeout:g}s (routes: {statuses or 'none yet'}; "
                    f"kh why {endpoint_id} tells why)",
                    info,
                )
            await asyncio.sleep(_POLL_S)

    async def call(
        self,
        ref: str | uuid.UUID,
        path: str = "",
        *,
        method: str = "GET",
        token: str | None = None,
        **options: Any,
    ) -> httpx.Response:
        """A request to the endpoint's model (see :func:`acall_endpoint`), its URL looked up
        with this client's keypair first."""
        url = await self.get_endpoint(ref)
        return await acall_endpoint(url, path, method=method, token=token, **options)


async def acall_endpoint(
    service_endpoint: str,
    path: str = "",
    *,
    method: str = "GET",
    token: str | None = None,
    json: Any = None,
    content: bytes | str | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = 60.0,
    raise_refusal: bool = True,
) -> httpx.Response:
    """One request to a served model through the gateway's inference proxy: ``path`` under
    ``service_endpoint``, with the token when given. The model's own answers come back as
    they are, whatever their status; with ``raise_refusal``, the proxy's refusals (a
    Backend.AI problem body: no token, a bad one, no HEALTHY route) raise their
    :class:`~kernelhub.sdk.errors.APIError` instead."""
    async with httpx.AsyncClient(timeout=timeout) as http:
        try:
            response = await http.request(
                method,
                endpoint_url(service_endpoint, path),
                json=json,
                content=content,
                params=params,
                headers=_token_headers(token, headers),
            )
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"cannot reach {service_endpoint}: {exc or type(exc).__name__}"
            ) from None
    return _checked(response, raise_refusal)


def call_endpoint(
    service_endpoint: str,
    path: str = "",
    *,
    method: str = "GET",
    token: str | None = None,
    json: Any = None,
    content: bytes | str | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = 60.0,
    raise_refusal: bool = True,
) -> httpx.Response:
    """The blocking :func:`acall_endpoint`."""
    try:
        response = httpx.request(
            method,
            endpoint_url(service_endpoint, path),
            json=json,
            content=content,
            params=params,
            headers=_token_headers(token, headers),
            timeout=timeout,
        )
    except httpx.TransportError as exc:
        raise ConnectionFailed(
            f"cannot reach {service_endpoint}: {exc or type(exc).__name__}"
        ) from None
    return _checked(response, raise_refusal)


def _is_proxy_refusal(response: httpx.Response) -> bool:
    """The proxy answers its own refusals as a problem body (``application/problem+json``);
    a model's answer, whatever its status, is the model's."""
    kind = response.headers.get("Content-Type", "")
    return response.status_code >= 400 and kind.startswith("application/problem+json")


def _checked(response: httpx.Response, raise_refusal: bool) -> httpx.Response:
    if raise_refusal and _is_proxy_refusal(response):
        raise api_error(
            response.status_code, response.content, response.headers.get(CORRELATION_HEADER)
        )
    return response


class Services(BlockingTwin):
    """The blocking twin of :class:`AsyncServices` over a :class:`~kernelhub.sdk.sync.Client`
    (each method run on the client's event loop; delegated, so the two cannot drift)."""

    async_class = AsyncServices
