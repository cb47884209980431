"""kernelhub's Python SDK: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

    from kernelhub import Client

    with Client() as client, client.session("python") as session:
        print(session.execute("print(6 * 7)").stdout)   # 42

:class:`Admin` / :class:`AsyncAdmin` administer a lab over either (``kh admin``'s calls);
:class:`VFolders` / :class:`AsyncVFolders` manage virtual folders (``kh vfolder``'s);
:class:`Services` / :class:`AsyncServices` serve models (``kh service``'s), and
:func:`call_endpoint` calls one with only its URL and a token.
Both clients read ``BACKEND_ENDPOINT``, ``BACKEND_ACCESS_KEY`` and ``BACKEND_SECRET_KEY`` (as
Backend.AI's client does), or the config file ``kh up`` wrote. Guide: ``docs/sdk.md``.
"""

from __future__ import annotations

from .admin import Admin, AsyncAdmin
from .aio import AsyncClient, AsyncSession, ExecutionStream
from .config import ClientConfig
from .errors import (
    APIError,
    AuthenticationFailed,
    ClientError,
    ConfigurationError,
    ConnectionFailed,
    ExecutionTimeout,
    InputRequired,
    InvalidRequest,
    KernelhubSDKError,
    NotFound,
    PendingTimeout,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ServerError,
    ServerFrozen,
    SessionAlreadyExists,
    SessionFailed,
    SessionNotFound,
)
from .models import (
    AppService,
    ExecutionResult,
    FileEntry,
    FileListing,
    Kernel,
    Output,
    SessionEvent,
    SessionInfo,
    SessionPage,
)
from .services import AsyncServices, Services, acall_endpoint, call_endpoint
from .sync import Client, Session
from .vfolders import AsyncVFolders, VFolders

__all__ = [
    "APIError",
    "Admin",
    "AppService",
    "AsyncAdmin",
    "AsyncClient",
    "AsyncServices",
    "AsyncSession",
    "AsyncVFolders",
    "AuthenticationFailed",
    "Client",
    "ClientConfig",
    "ClientError",
    "ConfigurationError",
    "ConnectionFailed",
    "ExecutionResult",
    "ExecutionStream",
    "ExecutionTimeout",
    "FileEntry",
    "FileListing",
    "InputRequired",
    "InvalidRequest",
    "Kernel",
    "KernelhubSDKError",
    "NotFound",
    "Output",
    "PendingTimeout",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "ServerError",
    "ServerFrozen",
    "Services",
    "Session",
    "SessionAlreadyExists",
    "SessionEvent",
    "SessionFailed",
    "SessionInfo",
    "SessionNotFound",
    "SessionPage",
    "VFolders",
    "acall_endpoint",
    "call_endpoint",
]
