"""Which sessions mount a virtual folder, from the sessions read model.

A folder is not trashed while a session that has not ended (pending ones included: they
will mount it when they start) names it in its mounts: the vfolder writer asks
:func:`live_sessions_mounting` before it trashes. The answer comes from the
``i:vfolder:<folder hex>`` index (``projections.models.sessions``), which holds a session
from its ``session_enqueued`` until it is CANCELLED or TERMINATED.

It is a read model, so it lags the log by the projector's delay: a session enqueued a
moment before the trash may not be seen yet. That session then starts on a folder in the
trash (its files are still there until the purge), and a purge that removes the folder's
directory before it starts makes its agent refuse the mount (docs/vfolders.md).
"""

from __future__ import annotations

import uuid

from events import RedisEventStore
from events.keys import SessionIndexes

__all__ = ["MAX_REPORTED", "live_sessions_mounting"]

MAX_REPORTED = 100
"""Session ids returned at most (a refusal names a few; the count is what matters)."""


async def live_sessions_mounting(
    store: RedisEventStore, folder_id: uuid.UUID | str, limit: int = MAX_REPORTED
) -> list[str]:
    """Ids of sessions not ended that mount folder ``folder_id`` (a UUID, or its hex), oldest
    first, at most ``limit``; empty when none does (or the sessions model is not built)."""
    folder_hex = uuid.UUID(str(folder_id)).hex
    active = await store.read_models.active("sessions")
    if active is None:
        return []
    return await active.members(SessionIndexes.mounting(folder_hex), 0, max(0, limit - 1))
