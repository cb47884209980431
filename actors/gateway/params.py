"""Request parameters, validated as strictly as 23.03's trafaret schemas: aliases accepted,
unknown keys refused (400 ``invalid-api-params``), from the JSON body or, when there is
none, the query string (``DELETE /session/x?forced=true``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from ..domain.errors import InvalidAPIParameters

__all__ = [
    "CreateConfig",
    "CreateParams",
    "DestroyParams",
    "ExecuteParams",
    "parse",
    "raw_params",
]

M = TypeVar("M", bound=BaseModel)


def _alias(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CreateConfig(_Strict):
    mounts: list[str] | None = None
    mount_map: dict[str, str] | None = _alias("mount_map", "mountMap")
    environ: dict[str, str] | None = None
    scaling_group: str | None = _alias("scaling_group", "scalingGroup")
    resources: dict[str, Any] | None = None
    resource_opts: dict[str, Any] | None = _alias("resource_opts", "resourceOpts")
    preopen_ports: list[int] | None = _alias("preopen_ports", "preopenPorts")
    agent_list: list[str] | None = _alias("agent_list", "agentList")


class CreateParams(_Strict):
    name: str = Field(validation_alias=AliasChoices("name", "clientSessionToken"))
    image: str = Field(validation_alias=AliasChoices("image", "lang"))
    architecture: str | None = _alias("arch", "architecture")
    session_type: Literal["interactive", "batch", "inference"] | None = _alias(
        "type", "sessionType"
    )
    group: str | None = _alias("group", "groupName", "group_name")
    domain: str | None = _alias("domain", "domainName", "domain_name")
    cluster_size: int | None = Field(
        default=None, ge=1, validation_alias=AliasChoices("cluster_size", "clusterSize")
    )
    cluster_mode: Literal["single-node", "multi-node"] | None = _alias(
        "cluster_mode", "clusterMode"
    )
    config: CreateConfig | None = None
    tag: str | None = None
    enqueue_only: bool | None = _alias("enqueueOnly", "enqueue_only")
    max_wait_seconds: int | None = Field(
        default=None, ge=0, validation_alias=AliasChoices("maxWaitSeconds", "max_wait_seconds")
    )
    starts_at: datetime | str | None = _alias("starts_at", "startsAt")
    reuse_if_exists: bool | None = _alias("reuseIfExists", "reuse_if_exists")
    startup_command: str | None = _alias("startupCommand", "startup_command")
    bootstrap_script: str | None = _alias("bootstrap_script", "bootstrapScript")
    dependencies: list[str] | None = None
    callback_url: str | None = _alias("callback_url", "callbackUrl", "callbackURL")
    owner_access_key: str | None = None


class DestroyParams(_Strict):
    forced: bool = False
    recursive: bool = False
    owner_access_key: str | None = None


class ExecuteParams(_Strict):
    mode: Literal["query", "batch", "continue", "input", "complete"] | None = None
    run_id: str | None = Field(default=None, validation_alias=AliasChoices("runId", "run_id"))
    code: str | None = None
    options: dict[str, Any] | None = None
    owner_access_key: str | None = None


class OwnerParams(_Strict):
    owner_access_key: str | None = None


async def raw_params(request: web.Request) -> dict[str, Any]:
    """The JSON body when there is one (also on a GET: the client sends some that way),
    else the query string."""
    body = await request.read() if request.can_read_body else b""
    if body.strip():
        try:
            loaded = json.loads(body)
        except ValueError:
            raise InvalidAPIParameters("Malformed body") from None
        if not isinstance(loaded, dict):
            raise InvalidAPIParameters("Malformed body")
        params: dict[str, Any] = loaded
        for key, value in request.query.items():  # e.g. owner_access_key beside a body
            params.setdefault(key, value)
        return params
    return {key: value for key, value in request.query.items()}


def parse(model: type[M], params: dict[str, Any]) -> M:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        error = InvalidAPIParameters("Input validation error")
        error.data = {  # type: ignore[attr-defined]
            ".".join(str(p) for p in e["loc"]) or "body": e["msg"] for e in exc.errors()
        }
        raise error from None
