"""The write side on Ray (compatibility home): see :mod:`actors.hosts`."""

from .hosts import (
    NAMESPACE,
    AgentsActor,
    Installation,
    ProjectorActor,
    SchedulerActor,
    SessionsActor,
    TenancyActor,
    start_actors,
)
from .routing import ShardRouter

__all__ = [
    "NAMESPACE",
    "AgentsActor",
    "Installation",
    "ProjectorActor",
    "SchedulerActor",
    "SessionsActor",
    "ShardRouter",
    "TenancyActor",
    "start_actors",
]
