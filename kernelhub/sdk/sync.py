"""``Client``: the same API for code that is not async.

One event loop in a background thread (anyio's blocking portal) runs an
:class:`~kernelhub.sdk.aio.AsyncClient`; each method here hands its call over and waits, so
both clients behave the same by construction and only one of them holds the logic.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .aio import AsyncClient, AsyncSession, ExecutionStream
from .config import ClientConfig
from .errors import SessionNotFound
from .models import (
    AppService,
    ExecutionResult,
    FileListing,
    Output,
    SessionEvent,
    SessionInfo,
    SessionPage,
)

__all__ = ["Client", "Session"]

T = TypeVar("T")


class _Portal:
    def __init__(self) -> None:
        self._manager: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self.portal = self._manager.__enter__()

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """The async iterator, step by step on the loop; left early (``break``), it is
        closed there too, so an event stream's connection does not linger."""
        try:
            while True:
                try:
                    yield self.portal.call(iterator.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):  # the client (and its loop) closed first
                    self.portal.call(close)

    def close(self) -> None:
        self._manager.__exit__(None, None, None)


class Client:
    """``with Client() as client: ...`` — see :class:`~kernelhub.sdk.aio.AsyncClient`
    for what each method does."""

    def __init__(self, config: ClientConfig | None = None) -> None:
        self._loop = _Portal()
        try:
            self._async: AsyncClient = self._loop.portal.call(_make_client, config)
        except BaseException:
            self._loop.close()
            raise
        self.config = self._async.config

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._loop.portal.call(self._async.aclose)
        self._loop.close()

    def _call(self, coroutine_function: Any, *args: Any, **kwargs: Any) -> Any:
        return self._loop.portal.call(lambda: coroutine_function(*args, **kwargs))

    def server_version(self) -> dict[str, str]:
        result: dict[str, str] = self._call(self._async.server_version)
        return result

    def create_session(self, image: str = "python", **options: Any) -> Session:
        """Options as :meth:`AsyncClient.create_session` (``name``, ``type``,
        ``resources``, ``wait``, ``timeout``, ...)."""
        return Session(self, self._call(self._async.create_session, image, **options))

    @contextmanager
    def session(self, image: str = "python", **options: Any) -> Iterator[Session]:
        """``with client.session("python") as s:`` — destroyed on exit."""
        with self.create_session(image, **options) as created:
            yield created

    def get_session(self, ref: str | uuid.UUID, *, owner_access_key: str | None = None) -> Session:
        return Session(
            self, self._call(self._async.get_session, ref, owner_access_key=owner_access_key)
        )

    def list_sessions(
        self, status: Sequence[str] | str | None = None, **options: Any
    ) -> SessionPage:
        page: SessionPage = self._call(self._async.list_sessions, status, **options)
        return page

    def iter_sessions(
        self, status: Sequence[str] | str | None = None, **options: Any
    ) -> Iterator[SessionInfo]:
        return self._loop.iterate(self._async.iter_sessions(status, **options))

    def events(
        self, session: str | uuid.UUID | None = None, *, scope: str = "*"
    ) -> Iterator[SessionEvent]:
        return self._loop.iterate(self._async.events(session, scope=scope))


async def _make_client(config: ClientConfig | None) -> AsyncClient:
    return AsyncClient(config)  # httpx binds its pool to the loop that will use it


class Session:
    """One session; see :class:`~kernelhub.sdk.aio.AsyncSession`. ``with session:``
    destroys it on exit."""

    def __init__(self, client: Client, session: AsyncSession) -> None:
        self.client = client
        self._async = session
        self.id = session.id
        self.name = session.name

    def __repr__(self) -> str:
        return f"Session({self.name!r}, id={self.id})"

    @property
    def correlation_id(self) -> str | None:
        """The create call's ``X-Correlation-ID`` (see :class:`AsyncSession`)."""
        return self._async.correlation_id

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            self.destroy()
        except SessionNotFound:
            pass

    @property
    def info(self) -> SessionInfo | None:
        return self._async.info

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        return self.client._call(method, *args, **kwargs)

    def refresh(self) -> SessionInfo:
        info: SessionInfo = self._call(self._async.refresh)
        return info

    def wait(self, until: Literal["running", "ended"] = "running", **options: Any) -> SessionInfo:
        info: SessionInfo = self._call(self._async.wait, until, **options)
        return info

    def execute(self, code: str = "", **options: Any) -> ExecutionResult:
        result: ExecutionResult = self._call(self._async.execute, code, **options)
        return result

    def stream(self, code: str = "", **options: Any) -> SyncExecutionStream:
        return SyncExecutionStream(self.client._loop, self._async.stream(code, **options))

    def interrupt(self) -> None:
        self._call(self._async.interrupt)

    def restart(self, **options: Any) -> None:
        self._call(self._async.restart, **options)

    def destroy(self, **options: Any) -> None:
        self._call(self._async.destroy, **options)

    def logs(self) -> str:
        text: str = self._call(self._async.logs)
        return text

    def upload(self, paths: Sequence[str | Path], **options: Any) -> list[str]:
        names: list[str] = self._call(self._async.upload, paths, **options)
        return names

    def download(self, names: Sequence[str], **options: Any) -> list[Path]:
        written: list[Path] = self._call(self._async.download, names, **options)
        return written

    def list_files(self, path: str = "/home/work") -> FileListing:
        listing: FileListing = self._call(self._async.list_files, path)
        return listing

    def apps(self) -> list[AppService]:
        found: list[AppService] = self._call(self._async.apps)
        return found

    def events(self, *, scope: str = "*") -> Iterator[SessionEvent]:
        return self.client._loop.iterate(self._async.events(scope=scope))


class SyncExecutionStream:
    """``for out in session.stream(code): ...``; then ``exit_code``."""

    def __init__(self, loop: _Portal, stream: ExecutionStream) -> None:
        self._loop = loop
        self._stream = stream

    def __iter__(self) -> Iterator[Output]:
        return self._loop.iterate(aiter(self._stream))

    @property
    def exit_code(self) -> int | None:
        return self._stream.exit_code

    @property
    def run_id(self) -> str | None:
        return self._stream.run_id
