"""A live session is found by its name however often the name was used before (issue 28
review, M3). Ended sessions stay in the keypair's name index (``<name> <id>``, in id order),
and a lookup reads a bounded number of its members: before the fix, once more than 1000
ended sessions bore ``ci-job``, the live ``ci-job`` could sort past the bound and
``GET /session/ci-job`` answered 404 for a running session. The lookup now reads the index of
live names, a few members, and loads only those records.

Against a real Redis, through the real store and projector.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from actors.domain.session import kernel_creation_specs
from events import RedisEventStore
from events.catalogue import (
    KernelCancelled,
    SessionCancelled,
    SessionCreationSpec,
    SessionEnqueued,
)
from events.keys import SessionIndexes
from kernelhub.workload import Step, append_steps
from projections.models import default_projections
from projections.queries import ReadModels
from projections.runtime import Projector

pytestmark = pytest.mark.redis

OWNER = "AKREUSE000000000"
NAME = "ci-job"
ENDED = 1200


def _enqueued(session_id: uuid.UUID, kernel_id: uuid.UUID) -> SessionEnqueued:
    spec = SessionCreationSpec(
        name=NAME,
        access_key=OWNER,
        domain="default",
        session_type="batch",
        image="python:3.11",
        cluster_size=1,
        scaling_group="default",
        startup_command="true",
        kernels=kernel_creation_specs([kernel_id], [{"cpu": Decimal(1), "mem": Decimal(2**30)}]),
    )
    return SessionEnqueued(session_id=session_id, creation_id=f"c-{session_id}", spec=spec)


def _ended_sessions() -> list[Step]:
    """``ENDED`` sessions named ``NAME``, each enqueued then cancelled, 100 to an append."""
    stories: Step = []
    for n in range(ENDED):
        sid, kid = uuid.UUID(int=n + 1), uuid.UUID(int=2**64 + n)
        stories.append(
            (
                f"session-{sid}",
                [
                    _enqueued(sid, kid),
                    KernelCancelled(kernel_id=kid, session_id=sid, reason="user-requested"),
                    SessionCancelled(
                        session_id=sid, creation_id=f"c-{sid}", reason="user-requested"
                    ),
                ],
            )
        )
    return [stories[at : at + 100] for at in range(0, ENDED, 100)]


async def test_a_live_session_is_found_by_a_name_used_1200_times_before(
    store: RedisEventStore,
) -> None:
    # the live one's id sorts after every ended one's: past any bound on the name index
    live_id = uuid.UUID("ffffffff-ffff-4fff-bfff-ffffffffffff")
    await append_steps(store, _ended_sessions())
    await append_steps(
        store, [[(f"session-{live_id}", [_enqueued(live_id, uuid.UUID(int=2**100))])]]
    )
    await Projector(store, default_projections()).catch_up()
    models = ReadModels(store)

    live = await models.sessions_named(OWNER, NAME, ended=False)
    assert [(r["id"], r["status"]) for r in live] == [(str(live_id), "PENDING")]
    # with the ended ones (logs), the live one is still among them, newest first
    everything = await models.sessions_named(OWNER, NAME, limit=3)
    assert everything[0]["id"] == str(live_id)
    assert all(r["status"] == "CANCELLED" for r in everything[1:])
    # the work of a live lookup: one member of the live-names index, not 1200
    generation = await store.redis.keys(f"*{SessionIndexes.ref_live_names(OWNER)}")
    assert len(generation) == 1
    assert await store.redis.zcard(generation[0]) == 1
    assert await models.sessions_named("AKSOMEONEELSE000", NAME, ended=False) == []
