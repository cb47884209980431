"""Model-serving events (kernelhub's; Backend.AI 23.3.5 keeps endpoints in the ``endpoints``
and ``routings`` tables).

One stream per endpoint, ``endpoint-<endpoint id hex>``, written by the single endpoint
writer (:mod:`actors.endpoints.writer`). An endpoint is what a caller asked for (a model
folder served by ``desired_session_count`` inference sessions of one image); its routes are
the inference sessions serving it, each with a status and a traffic ratio.

Every tenant-given string and count is bounded here as a last line of defence (the gateway
checks them first). No event holds a token: a token issued for an endpoint is signed from
its id and expiry, which is all the log keeps.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ._base import EventPayload, RequestedSlots, Short, added_later

__all__ = [
    "ENDPOINT_NAME_PATTERN",
    "HEALTH_PATH_PATTERN",
    "MAX_CLUSTER_SIZE",
    "MAX_ENDPOINT_ENV",
    "MAX_ENDPOINT_NAME",
    "MAX_REPLICAS",
    "MOUNT_PATTERN",
    "EndpointCreated",
    "EndpointDestroyed",
    "EndpointDestroying",
    "EndpointRouteAdded",
    "EndpointRouteRemoved",
    "EndpointRouteStatusChanged",
    "EndpointScaled",
    "EndpointTokenIssued",
    "EndpointTrafficRatioChanged",
    "ModelService",
    "RouteStatus",
]

MAX_ENDPOINT_NAME = 64
MAX_REPLICAS = 64
"""The most inference sessions one endpoint may ask for."""
MAX_ENDPOINT_ENV = 64
MAX_CLUSTER_SIZE = 64
RouteStatus = Literal["PROVISIONING", "HEALTHY", "UNHEALTHY", "TERMINATING"]
"""Backend.AI 23.3.5's ``RouteStatus``."""

ENDPOINT_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
"""A slug (dots and dashes allowed, never first), bounded."""
MOUNT_PATTERN = r"^/[A-Za-z0-9_.\-/]{0,255}$"
"""An absolute path inside the container, of plain path characters."""

HEALTH_PATH_PATTERN = r"^/[A-Za-z0-9_.\-/~%?=&+]{0,255}$"
"""An HTTP path (with an optional query) of plain characters."""
MAX_BOOTSTRAP_SCRIPT = 64 * 2**10

_Ratio = Field(ge=0.0, le=1.0, allow_inf_nan=False)
_Env = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=256)],
        Annotated[str, StringConstraints(max_length=4096)],
    ],
    Field(max_length=MAX_ENDPOINT_ENV),
]


class ModelService(BaseModel):
    """How a replica serves the model, from the model folder's definition
    (``model-definition.yaml``, read once at create: :mod:`actors.domain.model_definition`):
    the command the kernel runs, the port it listens on inside the kernel, and the health
    check a route must pass to be HEALTHY."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_command: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = Field(
        min_length=1, max_length=64
    )
    port: int = Field(ge=1, le=65535)
    health_check_path: str = Field(default="/", max_length=256, pattern=HEALTH_PATH_PATTERN)
    health_check_interval_s: float = Field(default=10.0, ge=0.2, le=600.0, allow_inf_nan=False)
    max_retries: int = Field(default=3, ge=1, le=100)
    """Probes failed in a row that make a HEALTHY route UNHEALTHY."""
    initial_delay_s: float = Field(default=60.0, ge=0.0, le=3600.0, allow_inf_nan=False)
    """How long a new replica may take to pass its first probe before it is UNHEALTHY."""
    environ: _Env = Field(default_factory=dict)
    """Variables the definition sets for the service (beside the endpoint's ``environ``)."""


class EndpointCreated(EventPayload):
    """An endpoint is born: what to serve (``model``, a model folder, at ``model_version``,
    mounted at ``model_mount_destination``), with what (``image``, resources, scaling group,
    cluster), for whom (owner, key, project, domain) and how many replicas."""

    type: Literal["endpoint_created"] = "endpoint_created"
    endpoint_id: UUID
    name: str = Field(min_length=1, max_length=MAX_ENDPOINT_NAME, pattern=ENDPOINT_NAME_PATTERN)
    image: str = Field(min_length=1, max_length=512)
    model: UUID
    """The model folder's id."""
    model_version: int = Field(default=1, ge=1, le=2**31)
    model_mount_destination: str = Field(default="/models", max_length=256, pattern=MOUNT_PATTERN)
    resource_slots: RequestedSlots
    resource_opts: dict[Short, int] = Field(default_factory=dict, max_length=64)
    """Per-kernel options beside the slots: ``{"shmem": bytes}``."""
    scaling_group: str = Field(min_length=1, max_length=64)
    cluster_mode: Literal["single-node", "multi-node"] = "single-node"
    cluster_size: int = Field(default=1, ge=1, le=MAX_CLUSTER_SIZE)
    environ: _Env = Field(default_factory=dict)
    open_to_public: bool = False
    """Whether callers need no token."""
    desired_session_count: int = Field(ge=0, le=MAX_REPLICAS)
    owner: UUID
    """The user the inference sessions belong to (23.3.5's ``session_owner``)."""
    access_key: str = Field(min_length=1, max_length=128)
    """The owner's key the sessions are created with."""
    project_id: UUID
    domain: str = Field(min_length=1, max_length=64)
    service: ModelService | None = added_later()
    """How replicas serve the model (none: the endpoint can have no HEALTHY route)."""
    architecture: Short | None = added_later()
    tag: Short | None = added_later()
    bootstrap_script: Annotated[str, StringConstraints(max_length=MAX_BOOTSTRAP_SCRIPT)] | None = (
        added_later()
    )
    """Run once in each replica's kernels before it is RUNNING (as a session's)."""


class EndpointScaled(EventPayload):
    """The number of replicas wanted changed (``service scale``)."""

    type: Literal["endpoint_scaled"] = "endpoint_scaled"
    endpoint_id: UUID
    desired_session_count: int = Field(ge=0, le=MAX_REPLICAS)


class EndpointRouteAdded(EventPayload):
    """An inference session now serves the endpoint (``PROVISIONING`` until its health
    check passes)."""

    type: Literal["endpoint_route_added"] = "endpoint_route_added"
    endpoint_id: UUID
    route_id: UUID
    session_id: UUID
    traffic_ratio: float = _Ratio


class EndpointRouteStatusChanged(EventPayload):
    type: Literal["endpoint_route_status_changed"] = "endpoint_route_status_changed"
    endpoint_id: UUID
    route_id: UUID
    status: RouteStatus


class EndpointRouteRemoved(EventPayload):
    """The route's session has ended: the route serves no more, and its id is never reused."""

    type: Literal["endpoint_route_removed"] = "endpoint_route_removed"
    endpoint_id: UUID
    route_id: UUID


class EndpointTrafficRatioChanged(EventPayload):
    type: Literal["endpoint_traffic_ratio_changed"] = "endpoint_traffic_ratio_changed"
    endpoint_id: UUID
    route_id: UUID
    traffic_ratio: float = _Ratio


class EndpointTokenIssued(EventPayload):
    """A token for callers of a private endpoint was issued (``generate-token``). The token
    itself is never logged: it is signed from ``token_id`` and ``expires_at``."""

    type: Literal["endpoint_token_issued"] = "endpoint_token_issued"
    endpoint_id: UUID
    token_id: UUID
    expires_at: datetime


class EndpointDestroying(EventPayload):
    """``service rm``: the endpoint wants no replicas any more and is destroyed once its
    routes have drained (23.3.5 marks it with ``desired_session_count = -1``)."""

    type: Literal["endpoint_destroying"] = "endpoint_destroying"
    endpoint_id: UUID


class EndpointDestroyed(EventPayload):
    """The endpoint is gone (its routes removed first); its name is free again."""

    type: Literal["endpoint_destroyed"] = "endpoint_destroyed"
    endpoint_id: UUID
