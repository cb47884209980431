"""Request parameters, validated as strictly as 23.03's trafaret schemas: aliases accepted,
unknown keys refused (400 ``invalid-api-params``), from the JSON body or, when there is
none, the query string (``DELETE /session/x?forced=true``).

Every string, list and map a tenant sends is bounded here (docs/security.md: bound every
value before it becomes an event; the log is immutable and Redis ``noeviction``), so
a request can never grow the log, or the gateway's memory, by more than these limits allow.
Resource slots are bounded by :mod:`actors.domain.bounds`. A refusal names the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from ..domain.errors import InvalidAPIParameters

__all__ = [
    "MAX_CLUSTER_SIZE",
    "MAX_CODE",
    "MAX_SCRIPT",
    "MAX_TAG",
    "CompleteParams",
    "CreateConfig",
    "CreateParams",
    "DestroyParams",
    "ExecuteParams",
    "file_name",
    "file_names",
    "loads",
    "parse",
    "raw_params",
]

M = TypeVar("M", bound=BaseModel)


MAX_TAG = 64
"""A session's tag (23.03 keeps it in a 64-character column)."""
MAX_NAME = 256
"""Names and references: image, group, domain, scaling group, tag, access keys, agents."""
MAX_PATH = 1024
MAX_URL = 2048
MAX_SCRIPT = 64 * 2**10
"""startup_command and bootstrap_script (a shell line is at most 128 KiB on Linux anyway)."""
MAX_CODE = 4 * 2**20
"""Code sent to execute: it goes to the kernel, never to the log, but is held in memory."""
MAX_ENV = 128
MAX_ENV_VALUE = 4096
MAX_ITEMS = 64
"""mounts, mount_map, agent_list, dependencies."""
MAX_PORTS = 32
MAX_CLUSTER_SIZE = 64
"""Kernels in one session: each is a record in the session's creation event."""
MAX_OPTIONS = 64 * 2**10
"""Free-form option maps (``resource_opts``, execute ``options``), as JSON."""
MAX_WAIT_S = 2**31 - 1
MAX_FILE_NAME = 4096
"""A file name or path sent to the agent (download, list): Linux's PATH_MAX."""
MAX_DOWNLOAD_FILES = 5
"""Files in one download, as 23.03."""
MAX_JSON_BODY = 8 * 2**20
"""The largest request body the gateway reads (``client_max_size``): the largest JSON
body accepted is an execute or complete with :data:`MAX_CODE` of code, plus its JSON
escapes and options. Uploads are multipart, streamed part by part under their own caps."""


Name = Annotated[str, StringConstraints(max_length=MAX_NAME)]
Path = Annotated[str, StringConstraints(max_length=MAX_PATH)]
Url = Annotated[str, StringConstraints(max_length=MAX_URL)]
Script = Annotated[str, StringConstraints(max_length=MAX_SCRIPT)]
Code = Annotated[str, StringConstraints(max_length=MAX_CODE)]
EnvValue = Annotated[str, StringConstraints(max_length=MAX_ENV_VALUE)]
Time = Annotated[str, StringConstraints(max_length=64)]
Tag = Annotated[str, StringConstraints(max_length=MAX_TAG)]


def _json_within(limit: int) -> Any:
    """A free-form JSON value no larger than ``limit`` bytes once encoded."""

    def check(value: Any) -> Any:
        try:
            size = len(json.dumps(value, separators=(",", ":")))
        except (TypeError, ValueError, RecursionError):
            raise ValueError("not a plain JSON value") from None
        if size > limit:
            raise ValueError(f"at most {limit} bytes of JSON, not {size}")
        return value

    return AfterValidator(check)


Options = Annotated[dict[str, Any], _json_within(MAX_OPTIONS)]


def _alias(*names: str, **constraints: Any) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names), **constraints)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CreateConfig(_Strict):
    mounts: list[Path] | None = Field(default=None, max_length=MAX_ITEMS)
    """Folder names (or ids); 16 distinct at most (:mod:`actors.domain.mount_paths`)."""
    mount_map: dict[Path, Path] | None = _alias("mount_map", "mountMap", max_length=MAX_ITEMS)
    """Folder name -> where it goes (under ``/home/work``)."""
    environ: dict[Name, EnvValue] | None = Field(default=None, max_length=MAX_ENV)
    scaling_group: Name | None = _alias("scaling_group", "scalingGroup")
    resources: dict[str, Any] | None = None
    """Bounded slot by slot by :func:`actors.domain.bounds.requested_slots`."""
    resource_opts: Options | None = _alias("resource_opts", "resourceOpts")
    preopen_ports: list[int] | None = _alias("preopen_ports", "preopenPorts", max_length=MAX_PORTS)
    agent_list: list[Name] | None = _alias("agent_list", "agentList", max_length=MAX_ITEMS)


class CreateParams(_Strict):
    name: Name = Field(validation_alias=AliasChoices("name", "clientSessionToken"))
    image: Name = Field(validation_alias=AliasChoices("image", "lang"))
    architecture: Name | None = _alias("arch", "architecture")
    session_type: Literal["interactive", "batch", "inference"] | None = _alias(
        "type", "sessionType"
    )
    group: Name | None = _alias("group", "groupName", "group_name")
    domain: Name | None = _alias("domain", "domainName", "domain_name")
    cluster_size: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CLUSTER_SIZE,
        validation_alias=AliasChoices("cluster_size", "clusterSize"),
    )
    cluster_mode: Literal["single-node", "multi-node"] | None = _alias(
        "cluster_mode", "clusterMode"
    )
    config: CreateConfig | None = None
    tag: Tag | None = None
    enqueue_only: bool | None = _alias("enqueueOnly", "enqueue_only")
    max_wait_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_WAIT_S,
        validation_alias=AliasChoices("maxWaitSeconds", "max_wait_seconds"),
    )
    starts_at: Time | None = _alias("starts_at", "startsAt")
    """A string, as 23.03's schema: ISO-8601 (a naive time is UTC) or a duration ("30m");
    read by :func:`actors.domain.session.parse_starts_at`."""
    reuse_if_exists: bool | None = _alias("reuseIfExists", "reuse_if_exists")
    startup_command: Script | None = _alias("startupCommand", "startup_command")
    bootstrap_script: Script | None = _alias("bootstrap_script", "bootstrapScript")
    dependencies: list[Name] | None = Field(default=None, max_length=MAX_ITEMS)
    callback_url: Url | None = _alias("callback_url", "callbackUrl", "callbackURL")
    owner_access_key: Name | None = None


class DestroyParams(_Strict):
    forced: bool = False
    recursive: bool = False
    owner_access_key: Name | None = None


class ExecuteParams(_Strict):
    mode: Literal["query", "batch", "continue", "input", "complete"] | None = None
    run_id: Name | None = Field(default=None, validation_alias=AliasChoices("runId", "run_id"))
    code: Code | None = None
    options: Options | None = None
    owner_access_key: Name | None = None


class CompleteParams(BaseModel):
    """What 23.03 reads of a completion request (unknown keys ignored, as there)."""

    model_config = ConfigDict(extra="ignore")
    code: Code | None = None
    options: Options | None = None


class OwnerParams(_Strict):
    owner_access_key: Name | None = None


def file_name(value: Any, what: str = "file") -> str:
    """A file name or path a tenant sends to the agent: a string of bounded length."""
    if not isinstance(value, str) or not value:
        raise InvalidAPIParameters(f"{what} must be a file name (a non-empty string)")
    if len(value) > MAX_FILE_NAME:
        raise InvalidAPIParameters(f"{what} is longer than {MAX_FILE_NAME} characters")
    return value


def file_names(value: Any) -> list[str]:
    """The ``files`` of a download: one name or a list of at most
    :data:`MAX_DOWNLOAD_FILES`, each bounded by :func:`file_name`."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise InvalidAPIParameters("files must be a file name or a non-empty list of them")
    if len(names) > MAX_DOWNLOAD_FILES:
        raise InvalidAPIParameters("Too many files")
    return [file_name(name, "files") for name in names]


def _refuse_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON: Python's parser accepts them, so they are
    refused here before a figure that cannot be an int reaches a bound."""
    raise InvalidAPIParameters(f"Malformed body: {name} is not a JSON value")


def loads(body: bytes | str) -> Any:
    """``json.loads`` that refuses ``NaN``/``Infinity`` with a 400."""
    return json.loads(body, parse_constant=_refuse_constant)


async def raw_params(request: web.Request) -> dict[str, Any]:
    """The JSON body when there is one (also on a GET: the client sends some that way),
    else the query string."""
    body = await request.read() if request.can_read_body else b""
    if body.strip():
        try:
            loaded = loads(body)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
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
        problems = {
            ".".join(str(p) for p in e["loc"])[:MAX_NAME] or "body": e["msg"]
            for e in exc.errors(include_input=False)[:MAX_ITEMS]
        }  # a field name is cut short: a key of a map may be a tenant's megabyte
        first = next(iter(problems.items()))
        error = InvalidAPIParameters(f"Input validation error: {first[0]}: {first[1]}")
        error.data = problems  # type: ignore[attr-defined]
        raise error from None
