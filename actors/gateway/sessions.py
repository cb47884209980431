"""``/session``: create, info, destroy, restart, execute, files and logs (23.03's
``api/session.py``, as the official client calls it; the path of a create and of an exec:
docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast
from urllib.parse import unquote

from aiohttp import BodyPartReader, MultipartWriter, web

from actors.sessions.isolation import check_create

from ..domain.bounds import known_slot_types, requested_slots
from ..domain.callbacks import validate_callback_url
from ..domain.commands.sessions import CreateSession, DestroySession, RestartSession
from ..domain.errors import DomainError, GenericBadRequest, ImageNotFound, InvalidAPIParameters
from ..domain.limits import execution_timeout_s
from ..domain.mount_paths import mount_plan
from ..domain.session import (
    ClusterMode,
    SessionType,
    check_environ,
    check_shmem,
    designated_agents,
    parse_starts_at,
    resource_opts_of,
    session_architecture,
    validate_creation,
)
from ..domain.sizes import parse_size
from ..domain.slots import ResourceSlot, SlotType
from ..domain.tenancy import image_slot_limits
from .apps import apps_of
from .auth import Caller
from .context import DEAD, LIVE, GatewayContext
from .mounts import mounts_still_allowed, session_mounts
from .params import (
    CompleteParams,
    CreateParams,
    DestroyParams,
    ExecuteParams,
    OwnerParams,
    file_name,
    file_names,
    parse,
    raw_params,
)
from .problems import (
    GatewayError,
    InsufficientPrivilege,
    QueryNotImplemented,
    SessionAlreadyExists,
)
from .scaling import role_of_image, scaling_group_for
from .scope import creation_refusal, visible
from .views import session_info

__all__ = ["session_routes"]

_NAME = re.compile(r"^(?=.{4,64}$)\w[\w.-]*\w$", re.ASCII)
_READ_YOUR_WRITES_S = 10.0
_WAIT_CHUNK_S = 60.0
MAX_UPLOAD_FILES = 20
MAX_UPLOAD_BYTES = 64 * 2**20
"""Per file. 23.03 caps uploads at 1 MiB; kernelhub's file path carries 10 MiB and more."""
MAX_UPLOAD_CALL_BYTES = 64 * 2**20
"""All the files of one upload together: the most the gateway holds of one (it reads parts
in chunks and refuses as soon as a part or the total passes its cap), and the agent's cap
per call too (``actors.agents.workdir.MAX_UPLOAD_BYTES``)."""
DOWNLOAD_CHUNK_BYTES = 2**20
"""One agent call of a streamed ``download_single``; one write of a tar download."""
FILE_STALL_S = 60.0
"""The longest one chunk of a file operation may take to arrive from the client or to be
taken by it: a client that stops sending or reading loses its connection and gives its file
operation slot (:mod:`.stream_limits`) back, instead of holding it, and what it holds in
memory, for ever."""


def _ctx(request: web.Request) -> GatewayContext:
    return request.app["ctx"]  # type: ignore[no-any-return]


def _caller(request: web.Request) -> Caller:
    return request["caller"]  # type: ignore[no-any-return]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


# ---- create ---------------------------------------------------------------------------------
async def _slots(
    ctx: GatewayContext, resources: dict[str, Any] | None, image: dict[str, Any], shmem: int = 0
) -> ResourceSlot:
    """The requested slots: what was asked (``"1g"`` sizes for memory), the image's minimum
    for what was not, each bounded and never below that minimum (:mod:`..domain.bounds`);
    a slot no agent has registered is refused, naming it. The image's memory minimum is
    raised by ``shmem``, as 23.03 raises it: ``/dev/shm`` is memory the kernel's code
    cannot use."""
    minimum, _ = image_slot_limits(image)
    if shmem and "mem" in minimum:
        with contextlib.suppress(ValueError):  # an invalid label is refused by the bounds
            minimum["mem"] = str(int(parse_size(minimum["mem"], allow_infinity=False)) + shmem)
    names = {*(resources or {}), *minimum} if isinstance(resources, dict) else set(minimum)
    known = await _known_slots(ctx, names)
    return requested_slots(resources, minimum, known, image=str(image.get("name") or "image"))


_KNOWN_TTL_S = 1.0


async def _known_slots(ctx: GatewayContext, names: set[str]) -> dict[str, SlotType]:
    """The slot types the cluster knows (cpu, mem and every slot an agent registered).
    Slot types only ever appear, so the cached set is re-read only when a request names a
    slot it lacks, and then at most once a second (the agents are read whole)."""
    at, known = ctx.known_slots
    if known and (names <= set(known) or time.monotonic() - at < _KNOWN_TTL_S):
        return known
    offered: set[str] = set()
    for agent in await ctx.models.agents():
        offered.update(agent.get("available_slots") or {})
    known = known_slot_types(sorted(offered))
    ctx.known_slots = (time.monotonic(), known)
    return known


MAX_OPEN_SESSIONS_PER_KEYPAIR = 256
"""Sessions one keypair may hold open (pending or live, not yet ended) at once; a create
past it is refused before anything is appended. The policy's ``max_concurrent_sessions``
only gates scheduling, so without this a tenant could enqueue sessions that never start
(about 90 KiB of log each) until Redis is full. ``KH_MAX_OPEN_SESSIONS`` sets another cap
(read at each create)."""


class TooManyOpenSessions(GatewayError):
    status, error_type, title = 429, "rate-limit-exceeded", "Too many open sessions."


def open_session_cap() -> int:
    """The cap on a keypair's open sessions: ``KH_MAX_OPEN_SESSIONS`` where it is a positive
    integer, else :data:`MAX_OPEN_SESSIONS_PER_KEYPAIR`."""
    raw = os.environ.get("KH_MAX_OPEN_SESSIONS", "").strip()
    return int(raw) if raw.isdecimal() and int(raw) > 0 else MAX_OPEN_SESSIONS_PER_KEYPAIR


async def _below_open_cap(ctx: GatewayContext, access_key: str) -> None:
    """Refuse (429) a create by an owner that already holds the cap's worth of open
    sessions; counted from the read model's owner and status indexes."""
    cap = open_session_cap()
    held = (await ctx.models.sessions(owner=access_key, statuses=LIVE, limit=1)).total
    if held >= cap:
        raise TooManyOpenSessions(
            f"this keypair already has {held} open (pending or live) "
            f"sessions, the cap of {cap}: destroy some first"
        )


async def _project(
    ctx: GatewayContext, caller: Caller, owner: dict[str, Any], domain: str, group: str
) -> dict[str, Any]:
    """The project the session is created in, where the caller may create for the owner
    (:func:`actors.gateway.scope.creation_refusal`); checked before anything is appended."""
    owner_id = str(owner["user_id"])
    user = caller.user if owner_id == caller.user_id else await ctx.lookups.user(owner_id) or {}
    project = await ctx.lookups.project_by_name(domain, group)
    refusal = creation_refusal(
        caller, owner_id, str(user.get("domain", caller.domain)), domain, project
    )
    if refusal is not None or project is None:
        raise InvalidAPIParameters(f"{refusal} (group {group!r}, domain {domain!r})")
    return project


async def _dependencies(
    ctx: GatewayContext, caller: Caller, access_key: str, refs: list[str]
) -> list[uuid.UUID]:
    """The sessions named (by id, or by name among the owner's), each one the caller may see:
    another tenant's session id is as unknown as a made-up one."""
    found = []
    for ref in refs:
        record = None
        try:
            record = await ctx.models.session(str(uuid.UUID(str(ref))))
        except ValueError:
            pass
        if record is None:
            record = await ctx.models.session_by_name(access_key, str(ref))
        if record is None or not visible(caller, record):
            raise InvalidAPIParameters(f"Unknown session ID or name in dependencies: {ref}")
        found.append(uuid.UUID(record["id"]))
    return found


def _preopen(ports: list[int] | None) -> list[int]:
    for port in ports or []:
        if not 1024 <= port <= 65535:
            raise InvalidAPIParameters(f"preopen port {port} is not in 1024..65535")
    return sorted(set(ports or []))


def _starts_at(value: datetime | str | None) -> datetime | None:
    """The domain's reading (ISO-8601 or 23.03's relative "30m"), always time-zone aware:
    a time without a zone is UTC (docs/deviations.md), and a naive time would make the
    scheduler's ``now >= starts_at`` raise on every pass."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        at = parse_starts_at(value, datetime.now(UTC))
        at.astimezone(UTC)  # out of range once in UTC ("9999-12-31T23:00-05:00")
    except (InvalidAPIParameters, ValueError, OverflowError):
        raise InvalidAPIParameters(
            f"starts_at is not an ISO-8601 time or a duration (30m, 1h): {value!r}"
        ) from None
    return at


def _unsupported(params: CreateParams) -> None:
    """Options refused by name rather than dropped, and the mount paths' rules (checked
    first, as 23.03 checks ``mount_map`` first; which folders they are comes later:
    :mod:`.mounts`)."""
    config = params.config
    if config is not None:
        mount_plan(config.mounts, config.mount_map)
    if params.startup_command is not None and (params.session_type or "interactive") != "batch":
        raise InvalidAPIParameters(
            "startupCommand is run only by batch sessions (23.03 ignores it on the others; "
            "kernelhub refuses it rather than drop it): use type batch, or execute the "
            "command in the session"
        )


async def _agents(
    ctx: GatewayContext, caller: Caller, params: CreateParams, cluster_mode: ClusterMode
) -> tuple[str, ...]:
    """A superadmin's ``config.agent_list``: where each kernel goes (the scheduler places
    a kernel with an agent on that agent, or leaves it pending)."""
    wanted = params.config.agent_list if params.config else None
    if not wanted:
        return ()
    if not caller.is_superadmin:
        raise InsufficientPrivilege("config.agent_list is for superadmins only")
    known = {str(agent.get("id")) for agent in await ctx.models.agents()}
    return designated_agents(wanted, cluster_mode, params.cluster_size or 1, known)


def _callback_url(ctx: GatewayContext, url: str | None) -> str | None:
    """Checked against the callback sender's policy (:mod:`actors.domain.callbacks`): an
    http(s) URL with a host, and not a literal address callbacks may not reach."""
    if url is None:
        return None
    return validate_callback_url(url, ctx.callbacks)


async def _service_ports(ctx: GatewayContext, sid: uuid.UUID) -> list[dict[str, Any]]:
    """The running session's service ports as 23.03's create reply lists them
    (``{"name", "protocol", "ports"}``, and what else the label declares): the image's,
    then the pre-opened ones."""
    record = await ctx.models.session(str(sid))
    return [] if record is None else await apps_of(ctx, record)


def _created(
    record_or_id: Any,
    name: str,
    status: str,
    created: bool,
    service_ports: list[dict[str, Any]] | None = None,
) -> web.Response:
    return _json(
        {
            "sessionId": str(record_or_id),
            "sessionName": name,
            "status": status,
            "servicePorts": service_ports or [],
            "created": created,
        },
        status=201,
    )


async def create(request: web.Request) -> web.Response:
    ctx, caller = _ctx(request), _caller(request)
    params = parse(CreateParams, await raw_params(request))
    if not _NAME.match(params.name) or params.name == "from-template":
        raise InvalidAPIParameters(
            f"invalid session name {params.name!r} (4-64 characters: "
            "letters, digits, _, and . or - inside)"
        )
    _unsupported(params)  # first, as 23.03 checks mount_map first: also before a reuse
    access_key = await ctx.acting_for(caller, params.owner_access_key)
    owner = (
        caller.keypair
        if access_key == caller.access_key
        else await ctx.lookups.keypair(access_key) or caller.keypair
    )
    image = await ctx.lookups.image(params.image)
    if image is None:
        raise ImageNotFound("unknown alias or disallowed registry")
    existing = await ctx.models.session_by_name(access_key, params.name)
    if existing is not None and existing.get("status") not in DEAD:
        if existing.get("image") != image["name"] or params.reuse_if_exists is False:
            raise SessionAlreadyExists(str(existing["id"]))
        return _created(existing["id"], params.name, str(existing["status"]), False)
    config = params.config
    architecture = session_architecture(
        params.architecture, image["name"], str(image.get("architecture") or "x86_64")
    )
    session_type = SessionType(params.session_type or "interactive")
    if session_type is SessionType.INFERENCE:  # idle and lifetime checks skip replicas
        raise InvalidAPIParameters(
            "inference sessions are an endpoint's replicas, kept by its reconciler (and "
            "exempt from idle and lifetime checks): create an endpoint with /services"
        )
    cluster_mode = ClusterMode(params.cluster_mode or "single-node")
    starts_at = _starts_at(params.starts_at)
    environ = check_environ(config.environ if config else None)
    resource_opts = resource_opts_of(
        config.resource_opts if config else None, image.get("labels") or {}
    )
    callback_url = _callback_url(ctx, params.callback_url)
    agents = await _agents(ctx, caller, params, cluster_mode)
    domain = params.domain or caller.domain
    project = await _project(ctx, caller, owner, domain, params.group or "default")
    dependencies = await _dependencies(ctx, caller, access_key, params.dependencies or [])
    mounts = await session_mounts(ctx, caller, access_key, str(project["project_id"]), config)
    requested = await _slots(
        ctx, config.resources if config else None, image, resource_opts["shmem"]
    )
    check_shmem(resource_opts["shmem"], requested.get("mem", Decimal(0)))
    policy = await ctx.lookups.policy(str(owner.get("resource_policy") or "default")) or {}
    validate_creation(
        session_type=session_type,
        starts_at=params.starts_at,
        startup_command=params.startup_command,
        cluster_size=params.cluster_size or 1,
        max_containers_per_session=int(policy.get("max_containers_per_session") or 0),
    )
    scaling_group = await scaling_group_for(
        ctx.lookups,
        session_type=session_type,
        requested=config.scaling_group if config else None,
        domain=domain,
        project_id=str(project["project_id"]),
        access_key=access_key,
        image_role=role_of_image(image),
    )
    await check_create(
        ctx.store, ctx.models, ctx.lookups, access_key=access_key, scaling_group=scaling_group
    )  # a tenant never runs unisolated
    await _below_open_cap(ctx, access_key)
    sid = await ctx.router.handle(
        CreateSession(
            name=params.name,
            access_key=access_key,
            image=image["name"],
            scaling_group=scaling_group,
            requested=[requested],
            cluster_size=params.cluster_size or 1,
            max_containers_per_session=int(policy.get("max_containers_per_session") or 0),
            cluster_mode=cluster_mode,
            session_type=session_type,
            startup_command=params.startup_command,
            starts_at=starts_at,
            dependencies=dependencies,
            domain=domain,
            user_id=uuid.UUID(str(owner["user_id"])),
            project_id=uuid.UUID(str(project["project_id"])),
            preopen_ports=_preopen(config.preopen_ports if config else None),
            architecture=architecture,
            agents=agents,
            environ=environ,
            bootstrap_script=params.bootstrap_script or owner.get("bootstrap_script") or None,
            resource_opts=resource_opts,
            tag=params.tag,
            callback_url=callback_url,
            exec_timeout_s=execution_timeout_s(policy, image),
            mounts=tuple(mounts),
        )
    )
    if params.enqueue_only:
        await _readable(ctx, sid, None)
        return _created(sid, params.name, "PENDING", True)
    status = await _wait_settled(ctx, sid, params.max_wait_seconds or 0)
    await _readable(ctx, sid, None if status == "TIMEOUT" else status)
    ports = await _service_ports(ctx, sid) if status == "RUNNING" else []
    return _created(sid, params.name, status, True, ports)


async def _wait_settled(ctx: GatewayContext, sid: uuid.UUID, max_wait_s: int) -> str:
    """RUNNING or how it ended, or TIMEOUT after ``max_wait_s`` (0: no limit)."""
    deadline = time.monotonic() + max_wait_s if max_wait_s else None
    while True:
        chunk = _WAIT_CHUNK_S if deadline is None else max(0.0, deadline - time.monotonic())
        status = str(await ctx.router.wait(sid, chunk))
        if status in ("RUNNING", "ERROR") or status in DEAD:
            return status
        if deadline is not None and time.monotonic() >= deadline:
            return "TIMEOUT"


async def _readable(ctx: GatewayContext, sid: uuid.UUID, status: str | None) -> None:
    """Read your writes: the next request (by name, a listing) finds the session as this
    answer describes it once the read model shows it (bounded)."""
    deadline = time.monotonic() + _READ_YOUR_WRITES_S
    while time.monotonic() < deadline:
        record = await ctx.models.session(str(sid))
        if record is not None and (status is None or record.get("status") == status):
            return
        await asyncio.sleep(0.01)


# ---- one session ----------------------------------------------------------------------------
async def _session(request: web.Request, *, allow_stale: bool = False) -> dict[str, Any]:
    owner = parse(
        OwnerParams, {k: v for k, v in request.query.items() if k == "owner_access_key"}
    ).owner_access_key
    return await _ctx(request).session(
        _caller(request), request.match_info["ref"], owner, allow_stale=allow_stale
    )


async def get_info(request: web.Request) -> web.Response:
    record = await _session(request)
    return _json(session_info(record, await _ctx(request).idle.report(record)))


async def destroy(request: web.Request) -> web.Response:
    params = parse(DestroyParams, dict(request.query))
    record = await _ctx(request).session(
        _caller(request), request.match_info["ref"], params.owner_access_key
    )
    ctx = _ctx(request)
    command = DestroySession(session_id=uuid.UUID(record["id"]), forced=params.forced)
    await ctx.router.handle(command)
    if params.recursive:
        await ctx.router.destroy_dependants(command)
    await ctx.models.reach(await ctx.store.head())  # the caller's next read shows it ending
    return _json([{}] if params.recursive else {"stats": {}})


async def restart(request: web.Request) -> web.Response:
    record = await _session(request)
    await mounts_still_allowed(_ctx(request), _caller(request), record)
    await _ctx(request).router.handle(RestartSession(session_id=uuid.UUID(record["id"])))
    return web.Response(status=204)


async def execute(request: web.Request) -> web.Response:
    params = parse(ExecuteParams, await raw_params(request))
    record = await _ctx(request).session(
        _caller(request), request.match_info["ref"], params.owner_access_key
    )
    sid, execution = uuid.UUID(record["id"]), _ctx(request).router.execution
    if params.mode is None or params.mode == "complete":
        if params.mode is None and params.options is None:
            raise InvalidAPIParameters("mode is missing or empty!")
        completions = await execution.call(sid, "complete", params.code or "", params.options or {})
        return _json({"result": {"status": "finished", "completions": completions}})
    if params.mode in ("continue", "input") and not params.run_id:
        raise InvalidAPIParameters("continuation requires explicit run ID")
    result = await execution.execute(
        sid, params.run_id, params.mode, params.code or "", params.options or {}
    )
    return _json({"result": result})


async def interrupt(request: web.Request) -> web.Response:
    record = await _session(request)
    await _ctx(request).router.execution.call(uuid.UUID(record["id"]), "interrupt")
    return web.Response(status=204)


async def complete(request: web.Request) -> web.Response:
    params = parse(CompleteParams, await raw_params(request))
    record = await _session(request)
    completions = await _ctx(request).router.execution.call(
        uuid.UUID(record["id"]),
        "complete",
        params.code or "",
        params.options or {},
    )
    return _json({"result": {"status": "finished", "completions": completions}})


@contextlib.contextmanager
def _file_op(request: web.Request) -> Iterator[None]:
    """A slot among the caller's file operations (:mod:`.stream_limits`): a 429 past the
    keypair's cap or the gateway's, before any work is done."""
    with _ctx(request).file_ops.hold(_caller(request).access_key):
        yield


async def _within(step: Awaitable[Any]) -> Any:
    """One chunk of a file operation's body, given :data:`FILE_STALL_S` to move."""
    return await asyncio.wait_for(step, FILE_STALL_S)


def _cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """End an answer that could not be written whole: the connection goes with it (the
    client sees a short body), and nothing waits on a client that stopped reading."""
    response.force_close()
    if request.transport is not None:
        request.transport.abort()
    return response


async def _read_part(part: BodyPartReader, total: int) -> bytes:
    """One file's bytes, read in chunks and refused as soon as it passes the per-file cap
    or the upload passes :data:`MAX_UPLOAD_CALL_BYTES` with ``total`` bytes before it: the
    gateway never holds more than the caps."""
    data = bytearray()
    while chunk := await _within(part.read_chunk(DOWNLOAD_CHUNK_BYTES)):
        data += chunk
        if len(data) > MAX_UPLOAD_BYTES:
            raise InvalidAPIParameters(
                f"Too large file: {part.filename!r} is larger than "
                f"{MAX_UPLOAD_BYTES} bytes, the limit per file"
            )
        if total + len(data) > MAX_UPLOAD_CALL_BYTES:
            raise InvalidAPIParameters(
                f"Too large upload: the files are larger than "
                f"{MAX_UPLOAD_CALL_BYTES} bytes together, the limit "
                "per upload"
            )
    return bytes(data)


async def upload(request: web.Request) -> web.Response:
    with _file_op(request):
        record = await _session(request)
        if not request.content_type.startswith("multipart/"):
            raise InvalidAPIParameters("uploads are multipart/form-data, one 'src' part per file")
        reader = await request.multipart()
        files: list[tuple[str, bytes]] = []
        total = 0
        try:
            while (part := await _within(reader.next())) is not None:
                if not isinstance(part, BodyPartReader) or part.name != "src" or not part.filename:
                    continue
                if len(files) == MAX_UPLOAD_FILES:
                    raise InvalidAPIParameters("Too many files")
                data = await _read_part(part, total)
                total += len(data)
                files.append((unquote(part.filename), data))
        except TimeoutError as stalled:
            raise InvalidAPIParameters(
                f"the upload stalled: nothing arrived for {FILE_STALL_S:g} s"
            ) from stalled
        if not files:
            raise InvalidAPIParameters("no files (parts named 'src' with a filename)")
        await _ctx(request).router.execution.call(uuid.UUID(record["id"]), "upload_files", files)
        return web.Response(status=204)


class _Paced:
    """What a :class:`MultipartWriter` writes, passed on to the answer a chunk at a time,
    each within :data:`FILE_STALL_S` (slices of the archive: nothing is copied whole)."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), DOWNLOAD_CHUNK_BYTES):
            await _within(self.response.write(view[start : start + DOWNLOAD_CHUNK_BYTES]))


async def download(request: web.Request) -> web.StreamResponse:
    """A tar of the named files, held (and the caller's file slot with it) until the client
    has read it all, or until it stops reading for :data:`FILE_STALL_S`."""
    with _file_op(request):
        params = await raw_params(request)
        record = await _session(request)
        names = file_names(params.get("files") or request.query.getall("files", []))
        archive = await _ctx(request).router.execution.call(
            uuid.UUID(record["id"]), "download_files", names
        )
        with MultipartWriter("mixed") as body:
            part = body.append(archive, {"Content-Type": "application/x-tar"})
            part.set_content_disposition("attachment", filename="files.tar")
        response = web.StreamResponse(headers={"Content-Type": body.content_type})
        response.content_length = body.size
        try:
            await _within(response.prepare(request))
            await body.write(cast(Any, _Paced(response)))
            await _within(response.write_eof())
        except (TimeoutError, ConnectionError):  # the client stopped reading, or left
            return _cut(request, response)
        return response


async def download_single(request: web.Request) -> web.StreamResponse:
    """The file streamed in chunks the agent reads one call at a time: neither the agent nor
    the gateway ever holds more than a chunk. Refusals (a link, a FIFO, over the agent's
    cap) come with the first chunk, before the answer starts; the length is the file's when
    the download began, and a failure later cuts the connection short of it."""
    with _file_op(request):
        params = await raw_params(request)
        record = await _session(request)
        if not params.get("file"):
            raise InvalidAPIParameters("file is required")
        name = file_name(params["file"])
        session_id, call = uuid.UUID(record["id"]), _ctx(request).router.execution.call
        chunk, size = await call(session_id, "download_chunk", str(name), 0, DOWNLOAD_CHUNK_BYTES)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        sent = 0
        try:
            await _within(response.prepare(request))
            while chunk and sent < size:
                chunk = chunk[: size - sent]
                await _within(response.write(chunk))
                sent += len(chunk)
                if sent < size:
                    chunk, _ = await call(
                        session_id,
                        "download_chunk",
                        str(name),
                        sent,
                        min(DOWNLOAD_CHUNK_BYTES, size - sent),
                    )
        except (DomainError, TimeoutError, ConnectionError):  # replaced meanwhile, or the
            pass  # client left or stopped reading
        if sent < size:  # the short body (and the closed connection) tell the client
            return _cut(request, response)
        await _within(response.write_eof())
        return response


async def list_files(request: web.Request) -> web.Response:
    with _file_op(request):
        params = await raw_params(request)
        record = await _session(request)
        listing = await _ctx(request).router.execution.call(
            uuid.UUID(record["id"]), "list_files", file_name(params.get("path") or ".", "path")
        )
        return _json(listing)


async def logs(request: web.Request) -> web.Response:
    record = await _session(request, allow_stale=True)
    text = await _ctx(request).router.execution.logs(uuid.UUID(record["id"]))
    return _json({"result": {"logs": text}})


async def direct_access_info(request: web.Request) -> web.Response:
    """Only SYSTEM-role (sftp) sessions have one; kernelhub runs none of those yet."""
    await _session(request)
    return _json({})


async def abusing_report(request: web.Request) -> web.Response:
    """No abuse detector reports to kernelhub: an empty report, as 23.03 without one."""
    await _session(request)
    return _json({})


async def not_implemented(request: web.Request) -> web.Response:
    """Routes of 23.03 kernelhub does not serve yet: refused as the reference refuses an
    unimplemented query, after the session is checked (so a stranger's is still 404)."""
    await _session(request)
    raise QueryNotImplemented(f"{request.method} {request.path} is not implemented in kernelhub")


async def match(request: web.Request) -> web.Response:
    """``GET /session/_/match?id=<prefix>``: the ten newest sessions (ended ones too) of the
    keypair the request acts as (``owner_access_key``) whose id or name starts with the
    prefix."""
    prefix = request.query.get("id", "")
    if not prefix:
        raise GenericBadRequest("id is required")
    owner = parse(
        OwnerParams, {k: v for k, v in request.query.items() if k == "owner_access_key"}
    ).owner_access_key
    matches = await _ctx(request).match_sessions(_caller(request), prefix, owner)
    return _json({"matches": matches})


def session_routes() -> list[web.RouteDef]:
    return [
        web.post("/session", create),
        web.post("/session/_/create", create),
        web.get("/session/_/match", match),
        web.get("/session/{ref}", get_info),
        web.delete("/session/{ref}", destroy),
        web.patch("/session/{ref}", restart),
        web.post("/session/{ref}", execute),
        web.post("/session/{ref}/interrupt", interrupt),
        web.post("/session/{ref}/complete", complete),
        web.post("/session/{ref}/upload", upload),
        web.get("/session/{ref}/download", download),
        web.get("/session/{ref}/download_single", download_single),
        web.get("/session/{ref}/files", list_files),
        web.get("/session/{ref}/logs", logs),
        web.get("/session/{ref}/direct-access-info", direct_access_info),
        web.get("/session/{ref}/abusing-report", abusing_report),
        web.post("/session/{ref}/rename", not_implemented),
        web.post("/session/{ref}/commit", not_implemented),
        web.get("/session/{ref}/commit", not_implemented),
        web.post("/session/{ref}/shutdown-service", not_implemented),
    ]
