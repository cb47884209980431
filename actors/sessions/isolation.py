"""Applying :mod:`actors.domain.isolation` where sessions enter and where kernels start.

* The operator's opt-in lives in the installation's facts (``store.install``: the
  ``<p>:install`` hash, field ``allow_unisolated``, ``1`` or ``0``), beside the shard count:
  it holds across restarts and every actor reads it when it decides, so
  ``kh up --allow-unisolated`` (or ``--no-allow-unisolated``) on a running installation takes
  effect at once.
* The gateway refuses a tenant's create with a 403 problem when the scaling group has an
  agent that runs kernels unisolated (the agents read model has each agent's ``isolation``
  from its registration).
* The agent checks again before it starts a kernel: a session queued before the opt-in was
  withdrawn, or placed on an unisolated agent that joined its group after it was created,
  never runs either.
"""

from __future__ import annotations

from typing import Any

from actors.domain.isolation import UNISOLATED, UnisolatedBackend, refusal
from events import RedisEventStore
from events.keys import INSTALL_ALLOW_UNISOLATED
from projections.queries import ReadModels
from projections.tenancy_queries import TenancyLookups

__all__ = [
    "ALLOW_UNISOLATED_FIELD",
    "UnisolatedRefused",
    "agent_refusal",
    "check_create",
    "check_kernel",
    "opted_in",
    "set_opt_in",
]

ALLOW_UNISOLATED_FIELD = INSTALL_ALLOW_UNISOLATED


async def opted_in(store: RedisEventStore) -> bool:
    """Whether the operator allowed tenants' code on unisolated agents."""
    return await store.install.allow_unisolated()


async def set_opt_in(store: RedisEventStore, allowed: bool) -> None:
    await store.install.set_allow_unisolated(allowed)


async def check_create(
    store: RedisEventStore,
    models: ReadModels,
    lookups: TenancyLookups,
    *,
    access_key: str,
    scaling_group: str,
) -> None:
    """Raise :class:`UnisolatedBackend` (403) when a session owned by ``access_key`` could
    land on an unisolated agent of ``scaling_group`` (any agent there not TERMINATED: a LOST
    one may come back)."""
    role = await owner_role(lookups, access_key)
    if role == "superadmin":
        return  # no more reads: the operator's sessions run anywhere
    agents = await models.agents(scaling_group)
    isolations = [a.get("isolation") for a in agents if a.get("status") != "TERMINATED"]
    where = f"scaling group {scaling_group!r}"
    refused = refusal(
        owner_role=role, isolations=isolations, opted_in=await opted_in(store), where=where
    )
    if refused is not None:
        raise refused


async def owner_role(lookups: TenancyLookups, access_key: str) -> str | None:
    """The role of the user owning ``access_key``; ``""`` for a keypair tenancy does not
    know (an installation without tenancy: the operator's own tools, tests)."""
    keypair = await lookups.keypair(access_key)
    if keypair is None:
        return ""
    user = await lookups.user(str(keypair.get("user_id")))
    return None if user is None else str(user.get("role", "user"))


async def agent_refusal(
    store: RedisEventStore, *, isolation: str, access_key: str, agent_id: str
) -> dict[str, Any] | None:
    """The ``status_data.error`` with which an agent of ``isolation`` refuses to start a
    kernel of ``access_key``'s session, or None when it may start it."""
    if isolation != UNISOLATED:
        return None
    role = await owner_role(TenancyLookups(store), access_key)
    if role == "":
        return None
    refused = refusal(
        owner_role=role,
        isolations=[isolation],
        opted_in=await opted_in(store),
        where=f"agent {agent_id!r}",
    )
    if refused is None:
        return None
    return {
        "src": "agent",
        "name": type(refused).__name__,
        "repr": refused.msg,
        "agent_id": agent_id,
        "title": UnisolatedBackend.title,
    }


class UnisolatedRefused(Exception):
    """An agent will not (re)start a tenant's kernel unisolated; ``error`` says why."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error["repr"]))
        self.error = error


async def check_kernel(
    store: RedisEventStore, *, isolation: str, access_key: str, agent_id: str
) -> None:
    """:func:`agent_refusal` as an exception (a restart, after the opt-in was withdrawn)."""
    refused = await agent_refusal(
        store, isolation=isolation, access_key=access_key, agent_id=agent_id
    )
    if refused is not None:
        raise UnisolatedRefused(refused)
