"""structlog, configured once for every kernelhub process.

JSON lines when stderr is not a terminal (services, CI, Ray workers), a readable coloured
format in a terminal. Correlation and command ids are bound in context variables, so every
line logged while handling a command carries them without being passed around.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

__all__ = ["bind_command", "configure_logging", "get_logger"]

_configured = False


def configure_logging(
    level: str = "INFO", *, json: bool | None = None, force: bool = False
) -> None:
    """Set up structlog and the stdlib root logger; later calls are no-ops unless ``force``."""
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
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
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
