"""Refusals the domain decides, named and worded as Backend.AI's API errors.

Each carries Backend.AI's name for the error (``error_type``, the suffix of its problem
``type``), its ``title`` and a ``msg`` for the user. Which HTTP status answers each is the front
door's business: the gateway's table (``actors/gateway/problems.py``) maps them.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "DomainError",
    "EndpointNotFound",
    "GenericBadRequest",
    "GenericForbidden",
    "ImageNotFound",
    "InstanceNotAvailable",
    "InvalidAPIParameters",
    "KernelExecutionFailed",
    "ObjectNotFound",
    "QuotaExceeded",
    "RoutingNotFound",
    "ScalingGroupNotFound",
    "TooManyVFoldersFound",
    "VFolderAlreadyExists",
    "VFolderNotFound",
    "VFolderOperationFailed",
]


class DomainError(Exception):
    error_type: ClassVar[str] = "general-error"
    title: ClassVar[str] = "General Backend API Error."

    def __init__(self, msg: str = "") -> None:
        super().__init__(msg or self.title)
        self.msg = msg


class GenericBadRequest(DomainError):
    error_type, title = "generic-bad-request", "Bad request."


class InvalidAPIParameters(DomainError):
    error_type, title = "invalid-api-params", "Missing or invalid API parameters."


class GenericForbidden(DomainError):
    error_type, title = "generic-forbidden", "Forbidden operation."


class QuotaExceeded(DomainError):
    error_type, title = "quota-exceeded", "You have reached your resource limit."


class ScalingGroupNotFound(DomainError):
    error_type, title = "object-not-found", "No such scaling group."


class InstanceNotAvailable(DomainError):
    error_type, title = "instance-not-available", "There is no available instance."


class ObjectNotFound(DomainError):
    """``No such {object}.``, Backend.AI's not-found family."""

    error_type = "object-not-found"

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

    error_type, title = "kernel-execution-failed", "Executing user code failed."


class VFolderNotFound(ObjectNotFound):
    """What a folder the caller may not see answers too: whether it exists is not theirs
    to learn."""

    def __init__(self, msg: str = "") -> None:
        super().__init__("virtual folder", msg)


class TooManyVFoldersFound(ObjectNotFound):
    error_type = "too-many-vfolders"

    def __init__(self, msg: str = "") -> None:
        super().__init__("virtual folder", msg)
        self.title = "There are two or more matching vfolders."  # type: ignore[misc]


class VFolderAlreadyExists(InvalidAPIParameters):
    error_type, title = (
        "vfolder-already-exists",
        "The virtual folder already exists with the same name.",
    )


class VFolderOperationFailed(InvalidAPIParameters):
    error_type, title = "vfolder-operation-failed", "Virtual folder operation has failed."


class EndpointNotFound(ObjectNotFound):
    """What an endpoint the caller may not see answers too."""

    def __init__(self, msg: str = "") -> None:
        super().__init__("endpoint", msg)


class RoutingNotFound(ObjectNotFound):
    def __init__(self, msg: str = "") -> None:
        super().__init__("routing", msg)
