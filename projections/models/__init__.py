"""The read models kernelhub serves queries from."""

from .agents import AgentsProjection
from .sessions import SessionsProjection

__all__ = ["AgentsProjection", "SessionsProjection", "default_projections"]


def default_projections() -> list["AgentsProjection | SessionsProjection"]:
    return [SessionsProjection(), AgentsProjection()]
