"""Exceptions named after what went wrong.

Every refusal from the server is an :class:`APIError` carrying the Backend.AI problem body
(``type``, ``title``, ``msg``, ``data``) as it came; the subclass says which refusal it was,
so callers catch :class:`SessionNotFound` or :class:`QuotaExceeded` rather than inspect
status codes. What goes wrong on this side of the wire (no connection, a wait that ran out)
is a :class:`ClientError` of its own kind.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "APIError",
    "AuthenticationFailed",
    "ClientError",
    "ConfigurationError",
    "ConnectionFailed",
    "ExecutionTimeout",
    "InputRequired",
    "InvalidRequest",
    "KernelhubSDKError",
    "NotFound",
    "PendingTimeout",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "ServerError",
    "ServerFrozen",
    "SessionAlreadyExists",
    "SessionFailed",
    "SessionNotFound",
    "api_error",
]


class KernelhubSDKError(Exception):
    """Everything the SDK raises on purpose."""


class ClientError(KernelhubSDKError):
    """Went wrong on this side: the request never got an answer to judge."""


class ConfigurationError(ClientError):
    """No usable endpoint or keypair."""


class ConnectionFailed(ClientError):
    """The endpoint did not answer (not running, wrong address, a dropped connection)."""


class PendingTimeout(ClientError):
    """A session did not reach the awaited status in time; it is left as it is.

    ``session`` is its last known state (``session.pending_reason`` says why it waits)."""

    def __init__(self, message: str, session: Any) -> None:
        super().__init__(message)
        self.session = session


class SessionFailed(ClientError):
    """A session ended (cancelled, errored) while it was awaited to run."""

    def __init__(self, message: str, session: Any) -> None:
        super().__init__(message)
        self.session = session


class ExecutionTimeout(ClientError):
    """The kernel gave up on the execution (its execution timeout)."""


class InputRequired(ClientError):
    """The code asked for input and the call gave none (pass ``input=``)."""


class APIError(KernelhubSDKError):
    """The server refused, with a Backend.AI problem body."""

    def __init__(
        self, status: int, problem: dict[str, Any], correlation_id: str | None = None
    ) -> None:
        self.status = status
        self.problem = problem
        self.correlation_id = correlation_id
        """The gateway's ``X-Correlation-ID`` for the call (``kh trace`` follows it)."""
        self.type: str = str(problem.get("type", ""))
        self.title: str = str(problem.get("title", "")) or f"HTTP {status}"
        self.msg: str | None = problem.get("msg") or None
        self.data: Any = problem.get("data")
        super().__init__(self.title + (f": {self.msg}" if self.msg else ""))

    @property
    def slug(self) -> str:
        """The last part of the problem type, e.g. ``session-not-found``."""
        return self.type.rsplit("/", 1)[-1]


class InvalidRequest(APIError):
    """400: the request itself is wrong (parameters, names, resources)."""


class SessionAlreadyExists(InvalidRequest):
    """A live session of that name exists (``data`` or ``msg`` names it)."""


class AuthenticationFailed(APIError):
    """401, or 400 ``invalid-auth-params``: unknown keypair, wrong secret, skewed clock."""


class PermissionDenied(APIError):
    """403: authenticated, but not allowed (e.g. acting for another keypair as a user)."""


class NotFound(APIError):
    """404: no such thing (among what the caller may see)."""


class SessionNotFound(NotFound):
    """No such session for this keypair (another tenant's sessions are never found)."""


class QuotaExceeded(APIError):
    """412: over a resource policy's limit."""


class RateLimited(APIError):
    """429: the keypair's request rate limit."""


class ServerError(APIError):
    """5xx: the server failed or cannot serve this now."""


class ServerFrozen(ServerError):
    """503 ``server-frozen``: an admin froze the manager; no new sessions until thawed."""


_BY_SLUG: dict[str, type[APIError]] = {
    "session-not-found": SessionNotFound,
    "session-already-exists": SessionAlreadyExists,
    "invalid-auth-params": AuthenticationFailed,
    "auth-failed": AuthenticationFailed,
    "quota-exceeded": QuotaExceeded,
    "server-frozen": ServerFrozen,
}
_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    412: QuotaExceeded,
    429: RateLimited,
}


def api_error(status: int, body: bytes, correlation_id: str | None = None) -> APIError:
    """The exception for one refusal; a body that is not a problem object is kept as text."""
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        text = body.decode(errors="replace").strip()[:500]
        parsed = {"type": "generic-error", "title": f"HTTP {status}", "msg": text or None}
    problem: dict[str, Any] = parsed
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
    kind = _BY_SLUG.get(slug) or _BY_STATUS.get(status)
    if kind is NotFound and "session" in str(problem.get("title", "")).lower():
        kind = SessionNotFound  # 23.03 says "object-not-found" with the title "No such session."
    if kind is None:
        kind = ServerError if status >= 500 else APIError
    return kind(status, problem, correlation_id)
