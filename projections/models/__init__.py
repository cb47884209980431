"""The read models kernelhub serves queries from."""

from ..base import Projection
from .agents import AgentsProjection
from .sessions import SessionsProjection
from .tenancy import TenancyProjection

__all__ = ["AgentsProjection", "SessionsProjection", "TenancyProjection", "default_projections"]


def default_projections() -> list[Projection]:
    return [SessionsProjection(), AgentsProjection(), TenancyProjection()]
