"""The ``/services`` request bodies as 23.3.5's schemas take them (what the official client's
``func/service.py`` sends), validated strictly: unknown keys refused, every string, map and
count bounded before anything is looked up, a refusal naming the field
(:func:`.params.parse`).

The client always sends every key of a create, ``null`` meaning unset. Options kernelhub does
not honour are accepted only as ``null`` (:data:`UNHONOURED`): a value is refused with a 400
naming it, never dropped.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, StrictInt, field_validator

from events.catalogue.endpoint import MAX_CLUSTER_SIZE, MAX_ENDPOINT_ENV, MAX_REPLICAS

from .params import EnvValue, Name, Options, Path, Script, Tag, Url, _Strict

__all__ = [
    "UNHONOURED",
    "ListServices",
    "ScaleService",
    "ServiceConfig",
    "ServiceCreate",
    "TokenRequest",
    "TrafficRatio",
]


class ServiceConfig(_Strict):
    model: Name = Field(min_length=1)
    """The model folder, by id or by name among the folders the owner may see."""
    model_version: StrictInt | str | None = None
    """23.3.5 keeps it as an int; the client sends its ``--model-version`` text (or null)."""
    model_mount_destination: Path | None = None
    """Where the model folder is mounted in each replica (``/models`` when null)."""
    environ: dict[Name, EnvValue] | None = Field(default=None, max_length=MAX_ENDPOINT_ENV)
    """At most what an endpoint keeps (64; a session takes 128): more was a 500 (review
    S15)."""
    scaling_group: Name | None = None
    resources: dict[str, Any] | None = None
    """Bounded slot by slot by :func:`actors.domain.bounds.requested_slots`."""
    resource_opts: Options | None = None

    @field_validator("model_version")
    @classmethod
    def _version(cls, value: int | str | None) -> int | None:
        if value is None:
            return None
        text = str(value).strip()
        if not text.isdecimal() or not 1 <= int(text) <= 2**31:
            raise ValueError("a model version is a whole number from 1")
        return int(text)


class ServiceCreate(_Strict):
    """``POST /services``."""

    name: Name = Field(validation_alias=AliasChoices("name", "service_name"))
    desired_session_count: StrictInt = Field(
        ge=0,
        le=MAX_REPLICAS,
        validation_alias=AliasChoices("desired_session_count", "initial_session_count"),
    )
    image: Name = Field(min_length=1)
    architecture: Name | None = Field(
        default=None, validation_alias=AliasChoices("arch", "architecture")
    )
    group: Name | None = Field(default=None, validation_alias=AliasChoices("group", "group_name"))
    domain: Name | None = Field(
        default=None, validation_alias=AliasChoices("domain", "domain_name")
    )
    cluster_size: StrictInt = Field(default=1, ge=1, le=MAX_CLUSTER_SIZE)
    cluster_mode: Literal["single-node", "multi-node"] = "single-node"
    tag: Tag | None = None
    startup_command: Script | None = None
    bootstrap_script: Script | None = None
    callback_url: Url | None = None
    owner_access_key: Name | None = None
    open_to_public: bool = False
    config: ServiceConfig


UNHONOURED: dict[str, str] = {
    "startup_command": (
        "an inference replica runs the model definition's start_command (put the command "
        "in the model folder's model-definition.yaml)"
    ),
    "callback_url": "kernelhub sends no callbacks for inference sessions",
}
"""Create options kernelhub refuses when they are not null, and why."""


class ListServices(_Strict):
    """``GET /services?name=``: the caller's endpoints, or the one of that name."""

    name: Name | None = None


class ScaleService(_Strict):
    """``POST /services/{id}/scale``."""

    to: StrictInt = Field(ge=0, le=MAX_REPLICAS)


class TokenRequest(_Strict):
    """``POST /services/{id}/token``: ``duration`` (``"30m"``, ``"2h"``, ``"3d"``) or
    ``valid_until`` (seconds since the epoch)."""

    duration: Name | None = None
    valid_until: StrictInt | None = None


class TrafficRatio(_Strict):
    """``PUT /services/{id}/routings/{route_id}``."""

    traffic_ratio: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
