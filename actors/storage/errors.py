"""Refusals of the transfer endpoint that tus gives their own HTTP status (a tus client acts
on the status: 409 means "ask the offset again", 412 "wrong protocol version").

They carry ``status`` themselves, as the gateway's own errors do
(:func:`actors.gateway.problems.status_of` honours it on any domain error), so the storage
code needs nothing from the gateway to say how it is refused.
"""

from __future__ import annotations

from typing import ClassVar

from ..domain.errors import DomainError

__all__ = [
    "BodyCut",
    "IdleBody",
    "LengthRequired",
    "OffsetConflict",
    "TooLarge",
    "TooManyUploads",
    "UnsupportedMedia",
    "UnsupportedVersion",
]


class BodyCut(DomainError):
    status: ClassVar[int] = 400
    error_type, title = "upload-interrupted", "The upload's body ended early."


class IdleBody(DomainError):
    status: ClassVar[int] = 408
    error_type, title = "request-timeout", "The upload's body stopped arriving."


class OffsetConflict(DomainError):
    status: ClassVar[int] = 409
    error_type, title = "upload-conflict", "The upload is not at that offset."


class LengthRequired(DomainError):
    status: ClassVar[int] = 411
    error_type, title = "length-required", "A PATCH needs a Content-Length."


class UnsupportedVersion(DomainError):
    status: ClassVar[int] = 412
    error_type, title = "tus-version", "Only tus 1.0.0 is spoken here."


class TooLarge(DomainError):
    status: ClassVar[int] = 413
    error_type, title = "request-too-large", "More bytes than the upload declared."


class UnsupportedMedia(DomainError):
    status: ClassVar[int] = 415
    error_type, title = "unsupported-media-type", "A PATCH body is application/offset+octet-stream."


class TooManyUploads(DomainError):
    status: ClassVar[int] = 429
    error_type, title = "rate-limit-exceeded", "Too many uploads at once."
