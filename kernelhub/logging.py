"""kernelhub's logging setup, for the CLI and tools (it lives with the actors, which
configure themselves with it: see :mod:`actors.runtime.logs`)."""

from actors.runtime.logs import bind_command, configure_logging, get_logger

__all__ = ["bind_command", "configure_logging", "get_logger"]
