"""A plain user's "too many sessions to filter" refusal counts their own sessions only
(issue 28 review, L2). The status and project indexes hold every tenant's sessions; when
the listing walked the smallest index, a user with more sessions than the bound who filtered
by status (or named another project's ``group_id``) was told the size of that index: how
many sessions every tenant together, or another project, has. Real Redis, real projector.
"""

from __future__ import annotations

from collections import Counter

import pytest

from events import RedisEventStore
from kernelhub.workload import Workload, append_steps
from projections.models import default_projections
from projections.queries import ReadModels, TooManyToScan
from projections.runtime import Projector

pytestmark = pytest.mark.redis


async def test_a_plain_users_refusal_counts_only_their_own_sessions(
    store: RedisEventStore,
) -> None:
    await append_steps(store, Workload(sessions=60, agents=2, keypairs=2, seed=28).steps())
    await Projector(store, default_projections()).catch_up()
    models = ReadModels(store)
    everything = (await models.sessions(limit=1000)).items
    owner = str(everything[0]["access_key"])
    mine = sum(1 for r in everything if r["access_key"] == owner)
    # a status fewer sessions have (all tenants together) than this user alone
    by_status = Counter(str(r["status"]) for r in everything)
    status, across_tenants = min(by_status.items(), key=lambda item: item[1])
    assert across_tenants < mine
    bound = across_tenants - 1

    with pytest.raises(TooManyToScan) as refused:
        await models.session_candidates(owner=owner, statuses=[status], bound=bound, by_owner=True)
    assert refused.value.count == mine  # never across_tenants: not this user's to know
    # an admin (no by_owner) still gets the cheapest walk, and its count
    with pytest.raises(TooManyToScan) as admins:
        await models.session_candidates(owner=owner, statuses=[status], bound=bound)
    assert admins.value.count == across_tenants
    # within the bound, the same sessions either way
    found = await models.session_candidates(
        owner=owner, statuses=[status], bound=mine, by_owner=True
    )
    assert {r["id"] for r in found} == {
        r["id"] for r in everything if r["access_key"] == owner and r["status"] == status
    }
