"""Upcasters: pure steps that lift an old stored event to the shape the code expects now.

The log is immutable, so a payload whose shape changed is rewritten on *read*, never in
place. Each step is a plain function ``raw -> raw`` (a structlog-style processor) that moves
one ``(type, schema_version)`` forward; the registry chains them until none applies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["RawEvent", "Upcaster", "UpcasterRegistry", "default_upcasters"]

RawEvent = dict[str, Any]
"""A stored event body as decoded JSON: ``type``, ``schema_version``, ``data`` and the rest."""

Upcaster = Callable[[RawEvent], RawEvent]

_MAX_STEPS = 64


class UpcasterRegistry:
    """Upcasting steps keyed by the ``(type, schema_version)`` they start from."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``fn`` turns ``event_type`` at ``from_version`` into a newer shape.

        A step must return a body with a later ``schema_version`` or another ``type`` (a
        rename); it receives its own copy of the body and may change it freely.
        """

        def decorate(fn: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._steps:
                raise ValueError(f"an upcaster from {event_type} v{from_version} already exists")
            self._steps[key] = fn
            return fn

        return decorate

    def upcast(self, raw: RawEvent) -> RawEvent:
        for _ in range(_MAX_STEPS):
            key = (raw.get("type"), raw.get("schema_version"))
            step = self._steps.get(key)  # type: ignore[arg-type]
            if step is None:
                return raw
            lifted = step({**raw, "data": dict(raw.get("data") or {})})
            if (lifted.get("type"), lifted.get("schema_version")) == key:
                raise ValueError(f"upcaster from {key[0]} v{key[1]} did not move the event forward")
            raw = lifted
        raise ValueError(f"more than {_MAX_STEPS} upcasting steps: is there a cycle?")

    def has_step(self, event_type: Any, version: Any) -> bool:
        return (event_type, version) in self._steps

    def __len__(self) -> int:
        return len(self._steps)


default_upcasters = UpcasterRegistry()
"""The registry the store uses unless given another; empty while every type is at v1."""
