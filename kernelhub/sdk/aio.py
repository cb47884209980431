"""``AsyncClient``: kernelhub's HTTP API (Backend.AI's, as ``backend.ai-client`` 23.3 speaks
it) for asyncio code, on httpx.

Each method is one user-level operation; the wire's steps (enqueue then watch, execute then
continue, the JSON strings inside JSON) stay in here. Sessions are addressed by id once
known, so a name reused after a session ended never reaches the wrong one.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from ._transfer import Progress, upload_body
from ._wire import CORRELATION_HEADER, USER_AGENT, HMACAuth, SSEParser, extract_tars, tar_parts
from .config import ClientConfig
from .errors import (
    ConnectionFailed,
    ExecutionTimeout,
    InputRequired,
    InvalidRequest,
    PendingTimeout,
    SessionFailed,
    SessionNotFound,
    api_error,
)
from .models import (
    DEAD_STATUSES,
    LIVE_STATUSES,
    AppService,
    ExecutionResult,
    FileEntry,
    FileListing,
    Output,
    SessionEvent,
    SessionInfo,
    SessionPage,
)

__all__ = ["AsyncClient", "AsyncSession", "ExecutionStream", "InputSource", "create_body"]

InputSource = str | Iterable[str] | Callable[[str], str] | None
"""What answers ``input()`` in executed code: one line, lines in order, or a function of
the prompt."""
StatusCallback = Callable[[SessionInfo], None]

_SESSION_FIELDS = """id name type image status status_info status_data status_history
  tag architecture starts_at created_at terminated_at result exit_code access_key
  scaling_group startup_command occupying_slots requested_slots idle_checks
  estimated_start_at estimated_start_interval estimate_basis idle_warning
  containers { id cluster_role cluster_hostname agent status status_info status_data
               container_id occupied_slots }"""
_GET = "query($id: UUID!) { compute_session(id: $id) { " + _SESSION_FIELDS + " } }"
_LIST = (
    "query($limit: Int!, $offset: Int!, $status: String, $access_key: String) {"
    " compute_session_list(limit: $limit, offset: $offset, status: $status,"
    " access_key: $access_key) { items { " + _SESSION_FIELDS + " } total_count } }"
)
_POLL_S = 0.25
_ABANDON_POLLS = 20
_RUNNING = frozenset({"RUNNING"})


class AsyncClient:
    """One connection pool to one kernelhub endpoint, as one keypair.

    ``AsyncClient()`` reads ``BACKEND_ENDPOINT``/``BACKEND_ACCESS_KEY``/``BACKEND_SECRET_KEY``
    or ``kh up``'s config file; use it as ``async with AsyncClient() as client: ...``.
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config or ClientConfig.load()
        timeout = httpx.Timeout(self.config.read_timeout_s, connect=self.config.connect_timeout_s)
        self._http = httpx.AsyncClient(
            base_url=self.config.endpoint,
            timeout=timeout,
            transport=transport,
            auth=HMACAuth(self.config.access_key, self.config.secret_key, self.config.domain),
            headers={"User-Agent": USER_AGENT},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- the wire ---------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One signed call; a refusal raises the :class:`~kernelhub.sdk.errors.APIError`
        its problem body names."""
        try:
            response = await self._http.request(
                method, path, json=json_body, params=params, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"cannot reach {self.config.endpoint}: {exc or type(exc).__name__}"
            ) from None
        if response.status_code >= 400:
            raise api_error(
                response.status_code, response.content, response.headers.get(CORRELATION_HEADER)
            )
        return response

    @asynccontextmanager
    async def streamed(
        self, method: str, path: str, *, what: str, **options: Any
    ) -> AsyncIterator[httpx.Response]:
        """A call whose answer is read as it arrives (events, downloads): a refusal raises
        its problem, a broken connection ``ConnectionFailed`` naming ``what`` broke."""
        try:
            async with self._http.stream(method, path, **options) as response:
                if response.status_code >= 400:
                    raise api_error(
                        response.status_code,
                        await response.aread(),
                        response.headers.get(CORRELATION_HEADER),
                    )
                yield response
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{what} broke: {exc or type(exc).__name__}") from None

    async def _json(self, method: str, path: str, **options: Any) -> Any:
        response = await self.request(method, path, **options)
        return response.json() if response.content else None

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        reply = await self._json(
            "POST", "/admin/gql", json_body={"query": query, "variables": variables or {}}
        )
        if reply.get("errors"):
            raise InvalidRequest(
                400,
                {
                    "type": "graphql-error",
                    "title": "GraphQL-generated error",
                    "msg": reply["errors"][0].get("message"),
                    "data": reply["errors"],
                },
            )
        return reply["data"]

    async def server_version(self) -> dict[str, str]:
        """``{"version": API version, "manager": release}``."""
        reply: dict[str, str] = await self._json("GET", "/")
        return reply

    # ---- sessions ---------------------------------------------------------------------------
    async def create_session(
        self,
        image: str = "python",
        *,
        name: str | None = None,
        type: Literal["interactive", "batch"] = "interactive",
        resources: dict[str, str | int | float] | None = None,
        startup_command: str | None = None,
        environ: dict[str, str] | None = None,
        bootstrap_script: str | None = None,
        tag: str | None = None,
        callback_url: str | None = None,
        starts_at: str | datetime | None = None,
        resource_opts: dict[str, str | int] | None = None,
        architecture: str | None = None,
        agent_list: Sequence[str] = (),
        preopen_ports: Sequence[int] = (),
        cluster_size: int = 1,
        cluster_mode: Literal["single-node", "multi-node"] | None = None,
        scaling_group: str | None = None,
        mounts: Sequence[str] = (),
        mount_map: dict[str, str] | None = None,
        dependencies: Sequence[str | uuid.UUID] = (),
        owner_access_key: str | None = None,
        domain: str | None = None,
        group: str | None = None,
        reuse: bool = False,
        wait: bool = True,
        timeout: float | None = None,
        on_status: StatusCallback | None = None,
    ) -> AsyncSession:
        """Enqueue a session; with ``wait`` (the default), return once it runs.

        A batch session counts as started once it ran (it may have ended already). Raises
        :class:`PendingTimeout` when ``timeout`` seconds pass first (the session is left
        queued: destroy it or wait again), :class:`SessionFailed` when it is cancelled.
        ``on_status`` sees each new status (and pending reason) while it waits.

        Every option goes to the server as the official client sends it
        (:func:`create_body`); one the server does not honour is refused there with a 400
        naming it (:class:`~kernelhub.sdk.errors.InvalidRequest`), never dropped on the way.
        """
        body = create_body(
            image,
            name=name,
            type=type,
            resources=resources,
            startup_command=startup_command,
            environ=environ,
            bootstrap_script=bootstrap_script,
            tag=tag,
            callback_url=callback_url,
            starts_at=starts_at,
            resource_opts=resource_opts,
            architecture=architecture,
            agent_list=agent_list,
            preopen_ports=preopen_ports,
            cluster_size=cluster_size,
            cluster_mode=cluster_mode,
            scaling_group=scaling_group,
            mounts=mounts,
            mount_map=mount_map,
            dependencies=dependencies,
            owner_access_key=owner_access_key,
            domain=domain or self.config.domain,
            group=group or self.config.group,
            reuse=reuse,
        )
        response = await self.request("POST", "/session", json_body=body)
        reply = response.json()
        session = AsyncSession(self, uuid.UUID(reply["sessionId"]), reply["sessionName"])
        session.correlation_id = response.headers.get(CORRELATION_HEADER)
        if wait:
            await session.wait("running", timeout=timeout, on_status=on_status)
        return session

    @asynccontextmanager
    async def session(self, image: str = "python", **options: Any) -> AsyncIterator[AsyncSession]:
        """``async with client.session("python") as s:`` — created (and running) on entry,
        destroyed on exit, whatever happened inside."""
        created = await self.create_session(image, **options)
        async with created:
            yield created

    async def get_session(
        self, ref: str | uuid.UUID, *, owner_access_key: str | None = None
    ) -> AsyncSession:
        """A session by id or name (a name finds the live one first, then the newest ended
        one). Raises :class:`SessionNotFound`."""
        session_id = await self._resolve(str(ref), owner_access_key)
        info = await self.session_info(session_id)
        session = AsyncSession(self, info.id, info.name)
        session.info = info
        return session

    async def session_info(self, session_id: uuid.UUID) -> SessionInfo:
        data = await self.graphql(_GET, {"id": str(session_id)})
        if data.get("compute_session") is None:
            raise _not_found(str(session_id))
        return SessionInfo.from_graphql(data["compute_session"])

    async def list_sessions(
        self,
        status: Sequence[str] | str | None = None,
        *,
        limit: int = 20,
        offset: int = 0,
        access_key: str | None = None,
    ) -> SessionPage:
        """One page, newest first; ``status`` defaults to the live ones (``"ALL"``: all)."""
        statuses = _statuses(status)
        data = await self.graphql(
            _LIST,
            {
                "limit": limit,
                "offset": offset,
                "status": ",".join(statuses),
                "access_key": access_key,
            },
        )
        listing = data["compute_session_list"]
        return SessionPage(
            items=[SessionInfo.from_graphql(i) for i in listing["items"]],
            total=listing["total_count"],
            offset=offset,
            limit=limit,
        )

    async def iter_sessions(
        self, status: Sequence[str] | str | None = None, **options: Any
    ) -> AsyncIterator[SessionInfo]:
        """Every matching session, page after page."""
        offset = 0
        while True:
            page = await self.list_sessions(status, offset=offset, limit=100, **options)
            for item in page.items:
                yield item
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    async def events(
        self, session: str | uuid.UUID | None = None, *, scope: str = "*"
    ) -> AsyncIterator[SessionEvent]:
        """Lifecycle events as they happen (server-sent events). Watching one session, the
        iteration ends when it ends; watching all of the keypair's, it runs until broken."""
        params = {"scope": scope}
        if session is not None:
            params["sessionId"] = str(await self._resolve(str(session), None))
        parser = SSEParser()
        async with self.streamed(
            "GET",
            "/events/session",
            what="the event stream",
            params=params,
            timeout=httpx.Timeout(None, connect=10),
        ) as response:
            async for line in response.aiter_lines():
                message = parser.feed(line)
                if message is None:
                    continue
                name, data = message
                if name == "server_close":
                    return
                yield SessionEvent.from_sse(name, json.loads(data or "{}"))

    async def _resolve(self, ref: str, owner_access_key: str | None) -> uuid.UUID:
        try:
            return uuid.UUID(ref)
        except ValueError:
            pass
        params = {"owner_access_key": owner_access_key} if owner_access_key else None
        try:
            reply = await self._json("GET", f"/session/{ref}", params=params)
            return uuid.UUID(reply["sessionId"])
        except SessionNotFound:
            if owner_access_key:
                raise
        matches = await self._json("GET", "/session/_/match", params={"id": ref})
        named = [m for m in matches["matches"] if m["name"] == ref]  # newest first
        if not named:
            raise _not_found(ref)
        return uuid.UUID(named[0]["id"])


def create_body(
    image: str,
    *,
    name: str | None,
    type: str,
    resources: dict[str, str | int | float] | None,
    startup_command: str | None,
    environ: dict[str, str] | None,
    bootstrap_script: str | None,
    tag: str | None,
    callback_url: str | None,
    starts_at: str | datetime | None,
    resource_opts: dict[str, str | int] | None,
    architecture: str | None,
    agent_list: Sequence[str],
    preopen_ports: Sequence[int],
    cluster_size: int,
    cluster_mode: str | None,
    scaling_group: str | None,
    mounts: Sequence[str],
    mount_map: dict[str, str] | None,
    dependencies: Sequence[str | uuid.UUID],
    owner_access_key: str | None,
    domain: str | None,
    group: str | None,
    reuse: bool,
) -> dict[str, Any]:
    """``POST /session``'s body, with the keys and places ``backend.ai-client`` 23.3 uses
    (``ComputeSession.get_or_create``): a server that reads the official client's requests
    reads these. An option left unset is left out (except the ones this SDK always sent),
    so what a request asks for is exactly what was given, and a refusal names only that."""
    config: dict[str, Any] = {
        "resources": {k: str(v) for k, v in (resources or {}).items()},
        "environ": dict(environ or {}),
        "scalingGroup": scaling_group,
        "preopen_ports": list(preopen_ports),
    }
    if resource_opts:
        config["resource_opts"] = {k: str(v) for k, v in resource_opts.items()}
    if agent_list:
        config["agentList"] = list(agent_list)
    if mounts:
        config["mounts"] = list(mounts)
    if mount_map:
        config["mount_map"] = dict(mount_map)
    body: dict[str, Any] = {
        "name": name or f"kh-{uuid.uuid4().hex[:10]}",
        "image": image,
        "type": type,
        "clusterSize": cluster_size,
        "enqueueOnly": True,
        "reuseIfExists": reuse,
        "startupCommand": startup_command,
        "group": group,
        "domain": domain,
        "owner_access_key": owner_access_key,
        "dependencies": [str(d) for d in dependencies] or None,
        "config": config,
    }
    optional = {
        "bootstrap_script": bootstrap_script,
        "tag": tag,
        "callback_url": callback_url,
        "starts_at": starts_at.isoformat() if isinstance(starts_at, datetime) else starts_at,
        "architecture": architecture,
        "clusterMode": cluster_mode,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def _statuses(status: Sequence[str] | str | None) -> list[str]:
    if status is None:
        return list(LIVE_STATUSES)
    wanted = [s.strip().upper() for s in ([status] if isinstance(status, str) else status)]
    if "ALL" in wanted:
        return [*LIVE_STATUSES, *DEAD_STATUSES]
    return [s for part in wanted for s in part.split(",") if s]


def _not_found(ref: str) -> SessionNotFound:
    return SessionNotFound(
        404,
        {
            "type": "https://api.backend.ai/probs/session-not-found",
            "title": "No such session.",
            "msg": ref,
        },
    )


class AsyncSession:
    """One session: run code in it, move files, read its logs, end it.

    ``async with session:`` destroys it on exit (one already gone is no error)."""

    def __init__(self, client: AsyncClient, session_id: uuid.UUID, name: str) -> None:
        self.client = client
        self.id = session_id
        self.name = name
        self.info: SessionInfo | None = None
        """The last state read (by :meth:`refresh` or :meth:`wait`)."""
        self.correlation_id: str | None = None
        """The create call's ``X-Correlation-ID``, when this object made the session:
        ``kh trace`` shows its way through the gateway, shard, scheduler and agent."""

    def __repr__(self) -> str:
        return f"AsyncSession({self.name!r}, id={self.id})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        try:
            await self.destroy()
        except SessionNotFound:
            pass

    @property
    def _path(self) -> str:
        return f"/session/{self.id}"

    async def refresh(self) -> SessionInfo:
        self.info = await self.client.session_info(self.id)
        return self.info

    async def wait(
        self,
        until: Literal["running", "ended"] = "running",
        *,
        timeout: float | None = None,
        on_status: StatusCallback | None = None,
    ) -> SessionInfo:
        """Until it runs (or, a batch session, ran) or until it ended."""

        def settled(info: SessionInfo) -> bool:
            if until == "ended":
                return not info.is_live
            if info.status in _RUNNING or (info.type == "batch" and info.status == "TERMINATED"):
                return True
            if not info.is_live or info.status == "ERROR":
                why = info.status_info or "no reason given"
                error = (info.status_data or {}).get("error")
                detail = f": {error.get('repr') or error}" if isinstance(error, dict) else ""
                raise SessionFailed(f"session {self.name} is {info.status} ({why}){detail}", info)
            return False

        def late(info: SessionInfo) -> str:
            reason = f": {info.pending_reason}" if info.pending_reason else ""
            return f"session {self.name} is still {info.status} after {timeout:g}s{reason}"

        return await self._poll(settled, timeout, late, on_status)

    async def _poll(
        self,
        settled: Callable[[SessionInfo], bool],
        timeout: float | None,
        late: Callable[[SessionInfo], str],
        on_status: StatusCallback | None = None,
    ) -> SessionInfo:
        """Read it every ``_POLL_S`` until ``settled``; ``PendingTimeout`` (``late``'s words)
        once ``timeout`` seconds passed. ``on_status`` sees each new status or reason."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[str, str | None] | None = None
        while True:
            info = await self.refresh()
            if on_status is not None and (info.status, info.pending_reason) != seen:
                seen = (info.status, info.pending_reason)
                on_status(info)
            if settled(info):
                return info
            if deadline is not None and time.monotonic() >= deadline:
                raise PendingTimeout(late(info), info)
            await asyncio.sleep(_POLL_S)

    # ---- code -------------------------------------------------------------------------------
    def stream(
        self,
        code: str = "",
        *,
        mode: Literal["query", "batch"] = "query",
        exec: str | None = None,
        build: str | None = None,
        input: InputSource = None,
    ) -> ExecutionStream:
        """Output as it arrives: ``async for out in session.stream(code): ...``; afterwards
        the stream's ``exit_code`` says how it ended. ``mode="batch"`` runs ``exec`` (a shell
        command) instead of code."""
        options = {"exec": exec, "build": build, "clean": None, "buildLog": False}
        return ExecutionStream(self, mode, code, options if mode == "batch" else {}, input)

    async def execute(self, code: str = "", **options: Any) -> ExecutionResult:
        """Run to the end and return everything it printed (see :meth:`stream`)."""
        run = self.stream(code, **options)
        console = [out async for out in run]
        return ExecutionResult(
            run_id=run.run_id or "",
            exit_code=run.exit_code,
            console=console,
            stdout="".join(o.text for o in console if o.kind == "stdout"),
            stderr="".join(o.text for o in console if o.kind == "stderr"),
        )

    async def interrupt(self) -> None:
        await self.client.request("POST", f"{self._path}/interrupt")

    # ---- lifecycle --------------------------------------------------------------------------
    async def restart(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Restart its kernels (their state is lost; files in the work dir stay)."""
        before = (await self.refresh()).status_history.get("RESTARTING")
        await self.client.request("PATCH", self._path)
        if wait:
            await self._poll(
                lambda info: (
                    info.status == "RUNNING"
                    and info.status_history.get("RESTARTING") not in (None, before)
                ),
                timeout,
                lambda _info: f"session {self.name} is still restarting",
            )

    async def destroy(
        self,
        *,
        forced: bool = False,
        recursive: bool = False,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """End it (``forced``: even while it is still being created); ``recursive`` also
        ends the sessions that depend on it."""
        params = {k: "true" for k, v in (("forced", forced), ("recursive", recursive)) if v}
        await self.client.request("DELETE", self._path, params=params or None)
        if wait:
            await self.wait("ended", timeout=timeout)

    async def logs(self) -> str:
        """What its kernel printed (also after it ended)."""
        reply = await self.client._json("GET", f"{self._path}/logs")
        return str((reply.get("result") or {}).get("logs") or "")

    # ---- files ------------------------------------------------------------------------------
    async def upload(
        self,
        paths: Sequence[str | Path],
        *,
        base_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> list[str]:
        """Copy local files into its work dir, at their paths relative to ``base_dir``."""
        body = upload_body(paths, base_dir, progress)
        await self.client.request(
            "POST",
            f"{self._path}/upload",
            content=body.chunks(),
            headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
        )
        return body.names

    async def download(
        self,
        names: Sequence[str],
        *,
        dest: Path | str = ".",
        progress: Progress | None = None,
    ) -> list[Path]:
        """Copy files (or directories) from it into ``dest``; returns the files written."""
        received = bytearray()
        async with self.client.streamed(
            "GET", f"{self._path}/download", what="the download", json={"files": list(names)}
        ) as response:
            total = int(response.headers.get("Content-Length") or 0)
            async for chunk in response.aiter_raw():
                received += chunk
                if progress:
                    progress(len(received), total or len(received))
            content_type = response.headers.get("Content-Type", "")
        parts = tar_parts(content_type, bytes(received))
        return await asyncio.to_thread(extract_tars, parts, Path(dest))

    async def list_files(self, path: str = "/home/work") -> FileListing:
        reply = await self.client._json("GET", f"{self._path}/files", json_body={"path": path})
        if reply.get("errors"):
            raise InvalidRequest(
                400,
                {
                    "type": "list-files-failed",
                    "title": "Cannot list files.",
                    "msg": str(reply["errors"]),
                },
            )
        entries = json.loads(reply["files"]) if isinstance(reply["files"], str) else reply["files"]
        return FileListing(
            path=reply.get("abspath") or path,
            files=[
                FileEntry(
                    name=e["filename"],
                    size=int(e["size"]),
                    mode=str(e["mode"]),
                    modified=e["mtime"],
                )
                for e in entries
            ],
        )

    # ---- apps and events --------------------------------------------------------------------
    async def apps(self) -> list[AppService]:
        reply = await self.client._json("GET", f"/stream/session/{self.id}/apps")
        return [AppService.model_validate(a) for a in reply]

    def forward_app(self, app: str, *, host: str = "127.0.0.1", port: int = 0) -> Any:
        """A local listener whose every connection reaches ``app`` in the session:
        ``async with session.forward_app("jupyter", port=8080) as (host, port): ...``."""
        from ._tunnel import forward_app

        return forward_app(self, app, host, port)

    def events(self, *, scope: str = "*") -> AsyncIterator[SessionEvent]:
        """This session's lifecycle events from now until it ends."""
        return self.client.events(self.id, scope=scope)


class ExecutionStream:
    """One execution's output, item by item, as the server hands it over."""

    def __init__(
        self,
        session: AsyncSession,
        mode: str,
        code: str,
        options: dict[str, Any],
        input: InputSource,
    ) -> None:
        self.session = session
        self.mode = mode
        self.code = code
        self.options = options
        self._answers = _answers(input)
        self.run_id: str | None = None
        self.exit_code: int | None = None
        self.status: str | None = None

    def __aiter__(self) -> AsyncIterator[Output]:
        return self._run()

    async def _run(self) -> AsyncIterator[Output]:
        body: dict[str, Any] = {
            "mode": self.mode,
            "code": self.code,
            "runId": None,
            "options": self.options,
        }
        while True:
            reply = await self.session.client._json("POST", self.session._path, json_body=body)
            result = reply["result"]
            self.run_id = result.get("runId") or self.run_id
            self.status = result.get("status")
            for kind, text in result.get("console") or []:
                yield Output(
                    kind=str(kind), text=text if isinstance(text, str) else json.dumps(text)
                )
            if self.status == "finished":
                self.exit_code = result.get("exitCode")
                return
            if self.status == "exec-timeout":
                self.exit_code = result.get("exitCode")
                raise ExecutionTimeout(f"the execution in {self.session.name} timed out")
            if self.status == "waiting-input":
                prompt = str((result.get("options") or {}).get("prompt") or "")
                answer = self._answer(prompt)
                if answer is None:
                    await self._abandon()
                    asked = f" ({prompt!r})" if prompt else ""
                    raise InputRequired(
                        f"the code asked for input{asked} and none was given: pass input= "
                        "(the run was interrupted)"
                    )
                body = {"mode": "input", "code": answer, "runId": self.run_id}
            else:
                body = {"mode": "continue", "code": "", "runId": self.run_id}

    def _answer(self, prompt: str) -> str | None:
        if self._answers is None:
            return None
        try:
            return self._answers(prompt)
        except StopIteration:
            return None

    async def _abandon(self) -> None:
        """Interrupt a run nobody can answer and let it finish, so that the session's next
        execution is not queued behind a prompt forever."""
        await self.session.interrupt()
        body = {"mode": "continue", "code": "", "runId": self.run_id}
        for _ in range(_ABANDON_POLLS):
            reply = await self.session.client._json("POST", self.session._path, json_body=body)
            if reply["result"].get("status") in ("finished", "exec-timeout"):
                return
            if reply["result"].get("status") == "waiting-input":
                body = {"mode": "input", "code": "", "runId": self.run_id}
            else:
                body = {"mode": "continue", "code": "", "runId": self.run_id}


def _answers(source: InputSource) -> Callable[[str], str] | None:
    if source is None:
        return None
    if callable(source):
        return source
    lines: Iterator[str] = iter([source] if isinstance(source, str) else source)
    return lambda _prompt: next(lines)
