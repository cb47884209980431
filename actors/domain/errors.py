"""Refusals the domain decides, named and worded as Backend.AI's API errors.

Each carries the problem ``type`` suffix, HTTP status and ``title`` of the spec's error
table, plus a ``msg`` for the user; the gateway turns them into problem bodies unchanged.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "DomainError",
    "GenericBadRequest",
    "GenericForbidden",
    "ImageNotFound",
    "InstanceNotAvailable",
    "InvalidAPIParameters",
    "KernelExecutionFailed",
    "ObjectNotFound",
    "QuotaExceeded",
    "ScalingGroupNotFound",
]


class DomainError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "general-error"
    title: ClassVar[str] = "General Backend API Error."

    def __init__(self, msg: str = "") -> None:
        super().__init__(msg or self.title)
        self.msg = msg


class GenericBadRequest(DomainError):
    status, error_type, title = 400, "generic-bad-request", "Bad request."


class InvalidAPIParameters(DomainError):
    status, error_type, title = 400, "invalid-api-params", "Missing or invalid API parameters."


class GenericForbidden(DomainError):
    status, error_type, title = 403, "generic-forbidden", "Forbidden operation."


class QuotaExceeded(DomainError):
    status, error_type, title = 412, "quota-exceeded", "You have reached your resource limit."


class ScalingGroupNotFound(DomainError):
    status, error_type, title = 404, "object-not-found", "No such scaling group."


class InstanceNotAvailable(DomainError):
    status, error_type, title = 503, "instance-not-available", "There is no available instance."


class ObjectNotFound(DomainError):
    """``No such {object}.``, Backend.AI's 404 family."""

    status, error_type = 404, "object-not-found"

    def __init__(self, object_name: str, msg: str = "") -> None:
        super().__init__(msg)
        self.title = f"No such {object_name}."  # type: ignore[misc]
        self.object_name = object_name
        if not msg:
            self.args = (self.title,)


class ImageNotFound(ObjectNotFound):
    def __init__(self, msg: str = "") -> None:
        super().__init__("environment image", msg)


class KernelExecutionFailed(DomainError):
    """The runner could not be reached or failed the request (Backend.AI's agent-details
    ``agent-failure``)."""

    status, error_type, title = 500, "kernel-execution-failed", "Executing user code failed."
