"""Backend.AI's problem bodies (RFC 7807 as its manager sends them) for every refusal.

The domain's errors (:mod:`actors.domain.errors`) already carry status, type and title;
these are the ones only the front door raises. :func:`problem` renders any of them.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..domain.errors import DomainError, GenericForbidden, ObjectNotFound

__all__ = [
    "AuthorizationFailed",
    "InsufficientPrivilege",
    "InternalServerError",
    "InvalidAuthParameters",
    "MethodNotAllowed",
    "QueryNotImplemented",
    "SessionAlreadyExists",
    "SessionNotFound",
    "TooManySessionsMatched",
    "URLNotFound",
    "problem",
]

PROBLEM_BASE = "https://api.backend.ai/probs/"


class AuthorizationFailed(DomainError):
    status, error_type, title = 401, "auth-failed", "Credential/signature mismatch."


class InvalidAuthParameters(DomainError):
    status, error_type = 400, "invalid-auth-params"
    title = "Missing or invalid authorization parameters."


class InsufficientPrivilege(GenericForbidden):
    status, error_type, title = 403, "insufficient-privilege", "Insufficient privilege."


class URLNotFound(DomainError):
    status, error_type, title = 404, "url-not-found", "Unknown URL path."


class MethodNotAllowed(DomainError):
    status, error_type, title = 405, "method-not-allowed", "HTTP Method Not Allowed."


class InternalServerError(DomainError):
    status, error_type, title = 500, "internal-server-error", "Internal server error."


class QueryNotImplemented(DomainError):
    status, error_type, title = 503, "not-implemented", "This API query is not implemented."


class SessionNotFound(ObjectNotFound):
    def __init__(self, msg: str = "") -> None:
        super().__init__("session", msg)


class TooManySessionsMatched(DomainError):
    status, error_type, title = 404, "too-many-sessions-matched", "Too many sessions matched."

    def __init__(self, matches: list[dict[str, Any]]) -> None:
        super().__init__()
        self.data = {"matches": matches}


class SessionAlreadyExists(DomainError):
    status, error_type = 400, "session-already-exists"
    title = "The session already exists but you requested not to reuse existing one."

    def __init__(self, existing: str) -> None:
        super().__init__()
        self.data = {"existingSessionId": existing}


def problem(error: DomainError, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"type": PROBLEM_BASE + error.error_type, "title": error.title}
    if error.msg and error.msg != error.title:
        body["msg"] = error.msg
    data = getattr(error, "data", None)
    if data:
        body["data"] = data
    return web.Response(
        status=error.status,
        text=json.dumps(body),
        headers=headers,
        content_type="application/problem+json",
    )
