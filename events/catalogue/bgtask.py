"""Background-task outcomes (Backend.AI ``bgtask_*``).

Progress (``bgtask_updated``) is telemetry, not a log event.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from ._base import EventPayload

__all__ = ["BgtaskCancelled", "BgtaskDone", "BgtaskFailed"]


class _BgtaskDoneArgs(EventPayload):
    task_id: UUID
    message: str | None = None


class BgtaskDone(_BgtaskDoneArgs):
    type: Literal["bgtask_done"] = "bgtask_done"


class BgtaskCancelled(_BgtaskDoneArgs):
    type: Literal["bgtask_cancelled"] = "bgtask_cancelled"


class BgtaskFailed(_BgtaskDoneArgs):
    type: Literal["bgtask_failed"] = "bgtask_failed"
