"""Errors meant for people: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

__all__ = ["KernelhubError", "RedisBinaryNotFound", "RedisStartError"]


class KernelhubError(Exception):
    """An error whose message is fit to show a user as is."""


class RedisBinaryNotFound(KernelhubError):
    pass


class RedisStartError(KernelhubError):
    pass
