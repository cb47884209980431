"""structlog, configured once for every kernelhub process (the CLI, tests and each actor).

JSON lines when stderr is not a terminal (services, CI, Ray workers), a readable coloured
format in a terminal. Correlation and command ids are bound in context variables, so every
line logged while handling a command carries them without being passed around.

Every actor configures itself with :func:`configure_actor_logging`: JSON on its stderr,
which Ray keeps in the node's ``logs/worker-*.err`` (the dashboard shows it per actor), each
line naming its component; ``kh trace`` reads those files back through Ray's log API.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from events.correlation import add_correlation_id

__all__ = [
    "bind_command",
    "component_of",
    "configure_actor_logging",
    "configure_logging",
    "get_logger",
]

_configured = False


def configure_logging(
    level: str = "INFO",
    *,
    json: bool | None = None,
    force: bool = False,
    static: dict[str, Any] | None = None,
) -> None:
    """Set up structlog and the stdlib root logger; later calls are no-ops unless ``force``.
    ``static`` fields are on every line (an actor's component and name)."""
    global _configured
    if _configured and not force:
        return
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if json
        else structlog.dev.ConsoleRenderer(colors=True)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_correlation_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if static:
        shared.append(_StaticFields(static))
    if json:
        shared.append(structlog.processors.dict_tracebacks)
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    _configured = True


class _StaticFields:
    """structlog processor: fields every line of this process carries."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __call__(self, _logger: Any, _method: str, event_dict: Any) -> Any:
        for key, value in self.fields.items():
            event_dict.setdefault(key, value)
        return event_dict


def component_of(actor_name: str) -> str:
    """The component an actor belongs to: its name up to the colon, with every agent host
    (``agent:<id>`` of a node, ``agents-sim:<k>`` of simulated ones) under ``agent``."""
    head = actor_name.partition(":")[0]
    return "agent" if head in ("agent", "agents-sim") else head


def configure_actor_logging(actor_name: str) -> None:
    """JSON lines on stderr naming the component and the actor, at ``KH_ACTOR_LOG_LEVEL``
    (default INFO): called first thing in each actor, before anything logs."""
    fields = {"component": component_of(actor_name), "actor_name": actor_name, "pid": os.getpid()}
    configure_logging(
        os.environ.get("KH_ACTOR_LOG_LEVEL", "INFO"), json=True, force=True, static=fields
    )


def get_logger(name: str | None = None, **initial: Any) -> Any:
    return structlog.get_logger(name, **initial)


@contextmanager
def bind_command(
    command_id: uuid.UUID | str, correlation_id: uuid.UUID | str | None = None, **extra: Any
) -> Iterator[None]:
    """Bind ``command_id`` (and ``correlation_id``) to every log line inside the block."""
    ids: dict[str, Any] = {"command_id": str(command_id), **extra}
    if correlation_id is not None:
        ids["correlation_id"] = str(correlation_id)
    with structlog.contextvars.bound_contextvars(**ids):
        yield
