"""What a replica of an endpoint is, as values: its route's id, its session's creation
command, and the model service it runs. Pure: the reconciler
(:mod:`actors.endpoints.reconciler`) looks up what these need (the owner's policy, the model
folder's place on disk) and sends what they build.

Every id here derives from the endpoint's log, so a reconciler restarted at any point
builds the same commands again and each has one effect: the n-th route ever added to an
endpoint is ``uuid5(endpoint_id, "route/<n>")``, its session is created by the command
``uuid5(route_id, "create")`` (whose session id derives from it:
:func:`~actors.domain.session.session_id_for`), so the session id is known, and recorded on
the route, *before* the session is created.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from actors.domain.commands.sessions import CreateSession, DestroySession
from actors.domain.endpoints import Endpoint
from actors.domain.mount_paths import vfolder_mount_spec
from actors.domain.session import ClusterMode, SessionType, check_environ, session_id_for
from actors.domain.slots import ResourceSlot
from events.catalogue import EndpointCreated
from events.catalogue.endpoint import ModelService

__all__ = [
    "MODEL_SERVICE",
    "REPLICA_TRAFFIC_RATIO",
    "create_replica",
    "destroy_replica",
    "next_route_id",
    "replica_environ",
    "replica_name",
    "session_of_route",
    "start_model_service",
]

MODEL_SERVICE = "model"
"""The service name a replica's model server runs under in the kernel."""
REPLICA_TRAFFIC_RATIO = 1.0
"""A new route's share of traffic (23.3.5's default)."""


def next_route_id(endpoint: Endpoint) -> uuid.UUID:
    """The id of the route to add next: one per route ever added, never reused."""
    added = len(endpoint.routes) + len(endpoint.removed_routes)
    return uuid.uuid5(endpoint.endpoint_id, f"route/{added}")


def _create_command_id(route_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(route_id, "create")


def session_of_route(route_id: uuid.UUID) -> uuid.UUID:
    """The session a route's replica runs as (known before it is created)."""
    return session_id_for(_create_command_id(route_id))


def replica_name(endpoint_name: str, route_id: uuid.UUID) -> str:
    """``<endpoint name[:40]>-<route id hex[:8]>``: unique among the owner's sessions, and
    telling which endpoint a session serves in any listing."""
    return f"{endpoint_name[:40]}-{route_id.hex[:8]}"


def replica_environ(spec: EndpointCreated) -> dict[str, str]:
    """The replica's variables: the model definition's, then the endpoint's own
    (``service create -e``) over them: what the caller said last wins. Checked as a
    session's ``environ`` is (a reserved name is refused, naming it)."""
    service = spec.service.environ if spec.service is not None else {}
    return check_environ({**service, **spec.environ}) or {}


def create_replica(
    endpoint: Endpoint,
    route_id: uuid.UUID,
    *,
    model_name: str,
    model_path: Path,
    model_usage_mode: str = "model",
    max_containers_per_session: int = 0,
) -> CreateSession:
    """The creation of a route's inference session: the endpoint's image, resources,
    cluster, variables, bootstrap script, tag and scaling group, for its owner, with the
    model folder (``model_name``, on disk at ``model_path``) mounted read-only at the
    endpoint's ``model_mount_destination``."""
    spec = endpoint.spec
    command_id = _create_command_id(route_id)
    return CreateSession(
        command_id=command_id,
        session_id=session_id_for(command_id),
        name=replica_name(endpoint.name, route_id),
        access_key=spec.access_key,
        scaling_group=spec.scaling_group,
        image=spec.image,
        requested=(ResourceSlot(dict(spec.resource_slots)),),
        cluster_size=spec.cluster_size,
        cluster_mode=ClusterMode(spec.cluster_mode),
        session_type=SessionType.INFERENCE,
        max_containers_per_session=max_containers_per_session,
        domain=spec.domain,
        user_id=spec.owner,
        project_id=spec.project_id,
        architecture=spec.architecture or "x86_64",
        environ=replica_environ(spec) or None,
        bootstrap_script=spec.bootstrap_script or None,
        resource_opts=dict(spec.resource_opts) or None,
        tag=spec.tag,
        mounts=(
            vfolder_mount_spec(
                model_name,
                spec.model,
                str(model_path),
                spec.model_mount_destination,
                "ro",
                model_usage_mode,
            ),
        ),
    )


def destroy_replica(route_id: uuid.UUID, reason: str) -> DestroySession:
    """The destruction of a route's session (one per route: a retry is the same command)."""
    return DestroySession(
        command_id=uuid.uuid5(route_id, "destroy"),
        session_id=session_of_route(route_id),
        reason=reason,
    )


def start_model_service(spec: EndpointCreated, service: ModelService) -> tuple[Any, ...]:
    """The arguments of the agent's ``start_service`` for a replica's model server (after
    the session id): its name, port and options, the definition inline (the runner accepts
    one for protocol ``inference`` only)."""
    definition = {"command": list(service.start_command), "env": replica_environ(spec)}
    return (MODEL_SERVICE, service.port, {"protocol": "inference", "definition": definition})
