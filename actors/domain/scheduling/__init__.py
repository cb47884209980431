"""The scheduler's pure core: plugins, agent selection, the ledger and one pass."""

from .agents import AgentIndex, AgentState, selection_key
from .kept_index import KeptIndex
from .ledger import Allocation, Ledger, Reservation
from .plugins import (
    DRFScheduler,
    ExistingSession,
    FIFOScheduler,
    LIFOScheduler,
    MOFScheduler,
    PendingSession,
    SchedulerPlugin,
    make_plugin,
)
from .schedule import (
    AgentInfo,
    Cancellation,
    Decision,
    FailedAttempt,
    PassResult,
    known_slot_types,
    occupancy_of,
    schedule_pass,
)

__all__ = [
    "AgentIndex",
    "AgentInfo",
    "AgentState",
    "Allocation",
    "Cancellation",
    "DRFScheduler",
    "Decision",
    "ExistingSession",
    "FIFOScheduler",
    "FailedAttempt",
    "KeptIndex",
    "LIFOScheduler",
    "Ledger",
    "MOFScheduler",
    "PassResult",
    "PendingSession",
    "Reservation",
    "SchedulerPlugin",
    "known_slot_types",
    "make_plugin",
    "occupancy_of",
    "schedule_pass",
    "selection_key",
]
