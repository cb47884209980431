"""The Ray actor shells around the write side and the read side: each loads state from the
log, calls the domain, and appends; nothing else (docs/architecture.md, The actors)."""

from .agents import AgentsActor
from .callbacks import CallbacksActor
from .projector import ProjectorActor
from .reaper import ReaperActor
from .scheduler import SchedulerActor
from .serving import ServingActor
from .sessions import SessionsActor
from .start import NAMESPACE, Installation, install_shard_count, start_actors
from .tenancy import TenancyActor

__all__ = [
    "NAMESPACE",
    "AgentsActor",
    "CallbacksActor",
    "Installation",
    "ProjectorActor",
    "ReaperActor",
    "SchedulerActor",
    "ServingActor",
    "SessionsActor",
    "TenancyActor",
    "install_shard_count",
    "start_actors",
]
