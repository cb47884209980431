"""Backend.AI's problem bodies (RFC 7807 as its manager sends them) for every refusal.

The domain's errors (:mod:`actors.domain.errors`) carry Backend.AI's name and title for a
refusal, no HTTP status: :data:`DOMAIN_STATUS` maps them here, at the front door. The errors
defined below (and in the other gateway modules) are the ones only the front door raises; each
names its own ``status``. :func:`problem` renders any of them.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from aiohttp import web

from ..domain.errors import (
    DomainError,
    GenericBadRequest,
    GenericForbidden,
    InstanceNotAvailable,
    InvalidAPIParameters,
    KernelExecutionFailed,
    ObjectNotFound,
    QuotaExceeded,
    ScalingGroupNotFound,
)

__all__ = [
    "DOMAIN_STATUS",
    "AuthorizationFailed",
    "GatewayError",
    "InsufficientPrivilege",
    "InternalServerError",
    "InvalidAuthParameters",
    "LogUnreachable",
    "MethodNotAllowed",
    "QueryNotImplemented",
    "ServiceRestarting",
    "SessionAlreadyExists",
    "SessionNotFound",
    "TooManySessionsMatched",
    "URLNotFound",
    "problem",
    "status_of",
]

PROBLEM_BASE = "https://api.backend.ai/probs/"

DOMAIN_STATUS: dict[type[DomainError], int] = {
    DomainError: 500,
    GenericBadRequest: 400,
    InvalidAPIParameters: 400,
    GenericForbidden: 403,
    ObjectNotFound: 404,
    ScalingGroupNotFound: 404,
    QuotaExceeded: 412,
    KernelExecutionFailed: 500,
    InstanceNotAvailable: 503,
}
"""The HTTP status of each domain refusal (Backend.AI's error table); a subclass answers as
its nearest listed class."""


class GatewayError(DomainError):
    """A refusal only the front door makes: it names its HTTP status itself."""

    status: ClassVar[int] = 500


def status_of(error: DomainError) -> int:
    """The status ``error`` answers with: the nearest class in its lineage that names one
    (a gateway error's own ``status``, else :data:`DOMAIN_STATUS`)."""
    for cls in type(error).__mro__:
        own = cls.__dict__.get("status")
        if isinstance(own, int):
            return own
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    return 500


class AuthorizationFailed(GatewayError):
    status, error_type, title = 401, "auth-failed", "Credential/signature mismatch."


class InvalidAuthParameters(GatewayError):
    status, error_type = 400, "invalid-auth-params"
    title = "Missing or invalid authorization parameters."


class InsufficientPrivilege(GenericForbidden):
    status, error_type, title = 403, "insufficient-privilege", "Insufficient privilege."


class URLNotFound(GatewayError):
    status, error_type, title = 404, "url-not-found", "Unknown URL path."


class MethodNotAllowed(GatewayError):
    status, error_type, title = 405, "method-not-allowed", "HTTP Method Not Allowed."


class InternalServerError(GatewayError):
    status, error_type, title = 500, "internal-server-error", "Internal server error."


class LogUnreachable(GatewayError):
    """The log (Redis) cannot be reached right now: down, restarting, loading its AOF, or
    not answering in time. Nothing was lost by refusing; the caller tries again after
    :data:`RETRY_AFTER_S` (the answer's ``Retry-After``). Its body names no internal detail
    (no address, no traceback)."""

    status, error_type = 503, "service-unavailable"
    title = "Service unavailable: the event log cannot be reached; retry shortly."


class ServiceRestarting(GatewayError):
    """A kernelhub actor the request needed died and is being restarted by Ray (its state
    comes back from the log): a command sent to it keeps its id, so trying again after
    :data:`RETRY_AFTER_S` never doubles an effect."""

    status, error_type = 503, "service-unavailable"
    title = "Service unavailable: a kernelhub service is restarting; retry shortly."


RETRY_AFTER_S = 1
"""Seconds a caller of a refused request waits before trying again (a Redis restart takes
about that; clients that back off do so from there)."""


class QueryNotImplemented(GatewayError):
    status, error_type, title = 503, "not-implemented", "This API query is not implemented."


class SessionNotFound(ObjectNotFound):
    def __init__(self, msg: str = "") -> None:
        super().__init__("session", msg)


class TooManySessionsMatched(GatewayError):
    status, error_type, title = 404, "too-many-sessions-matched", "Too many sessions matched."

    def __init__(self, matches: list[dict[str, Any]]) -> None:
        super().__init__()
        self.data = {"matches": matches}


class SessionAlreadyExists(GatewayError):
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
        status=status_of(error),
        text=json.dumps(body),
        headers=headers,
        content_type="application/problem+json",
    )
