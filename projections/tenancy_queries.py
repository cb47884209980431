"""O(1) tenancy lookups for the scheduler, the gateway and the CLI (from the ``tenancy``
read model). Secrets stay ciphertext here; only the auth cache decrypts them."""

from __future__ import annotations

from typing import Any

from events import RedisEventStore
from events.keys import TenancyIndexes as Index
from events.readmodels import Generation

from .base import Record

__all__ = ["TenancyLookups"]


class TenancyLookups:
    def __init__(self, store: RedisEventStore) -> None:
        self.storage = store.read_models

    async def _active(self) -> Generation | None:
        return await self.storage.active("tenancy")

    async def _get(self, kind: str, record_id: str) -> Record | None:
        active = await self._active()
        return None if active is None else await active.record(kind, record_id)

    async def _many(self, kind: str, ids: list[str]) -> list[Record]:
        active = await self._active()
        if active is None or not ids:
            return []
        return await active.records(kind, ids)

    async def _index(self, key: str, field: str) -> str | None:
        active = await self._active()
        return None if active is None else await active.field(key, field)

    async def _members(self, key: str) -> list[str]:
        active = await self._active()
        return [] if active is None else await active.members(key)

    # ---- records by key -------------------------------------------------------------------
    async def domain(self, name: str) -> Record | None:
        return await self._get("domain", name)

    async def project(self, project_id: str) -> Record | None:
        return await self._get("project", str(project_id))

    async def project_by_name(self, domain: str, name: str) -> Record | None:
        project_id = await self._index(Index.project_names(domain), name)
        return None if project_id is None else await self.project(project_id)

    async def projects_in(self, domain: str) -> list[str]:
        """The ids of a domain's projects (what a domain admin's listings are scoped to)."""
        active = await self._active()
        if active is None:
            return []
        return sorted(await active.values(Index.project_names(domain)))

    async def user(self, user_id: str) -> Record | None:
        return await self._get("user", str(user_id))

    async def user_by_email(self, email: str) -> Record | None:
        user_id = await self._index(Index.USER_EMAIL, email)
        return None if user_id is None else await self.user(user_id)

    async def keypair(self, access_key: str) -> Record | None:
        return await self._get("keypair", access_key)

    async def keypairs_of(self, user_id: str) -> list[Record]:
        return await self._many("keypair", await self._members(Index.keypairs(user_id)))

    async def projects_of(self, user_id: str) -> list[Record]:
        return await self._many("project", await self._members(Index.projects(user_id)))

    async def policy(self, name: str) -> Record | None:
        return await self._get("policy", name)

    async def manager_status(self) -> str:
        """``running`` or ``frozen`` (``running`` until anyone says otherwise)."""
        record = await self._get("manager", "status")
        return str((record or {}).get("status", "running"))

    async def presets(self) -> list[Record]:
        return await self._many("preset", await self._members(Index.PRESETS))

    async def scaling_group(self, name: str) -> Record | None:
        return await self._get("sgroup", name)

    async def image(self, name_or_alias: str) -> Record | None:
        """An image by canonical name or alias; ``None`` -> "No such environment image."."""
        alias = await self._get("alias", name_or_alias)
        return await self._get("image", alias["target"] if alias else name_or_alias)

    async def password_hash(self, user_id: str) -> str:
        """The user's password hash ("" for none, or for no such user: the same one read)."""
        record = await self._get("credential", str(user_id))
        return str((record or {}).get("password_hash") or "")

    async def every(self, kind: str, *, bound: int = 10_000) -> list[Record]:
        """Every record of a kind (``domain``, ``project``, ``user``, ``keypair``,
        ``policy``, ``preset``, ``sgroup``, ``image``, ``alias``) in id order, at most
        ``bound`` of them: what admin listings filter and page in memory (a lab has
        hundreds of users, not millions)."""
        active = await self._active()
        if active is None:
            return []
        return await active.records(kind, await active.members(Index.every(kind), 0, bound - 1))

    # ---- derived --------------------------------------------------------------------------
    async def allowed_scaling_groups(
        self, domain: str, project_id: str | None, access_key: str | None
    ) -> list[Record]:
        """Active scaling groups associated with the domain, the project or the keypair
        (their union, in name order), as Backend.AI's ``query_allowed_sgroups``: whole
        records (``is_public``, ``allowed_session_types`` and the rest of the group's
        ``scaling_group_set``), for ``actors.domain.scaling_groups.from_record``. A name
        associated but never set is no group (23.03's foreign key makes it impossible) and
        is left out."""
        names: set[str] = set(await self._members(Index.scaling_groups_for("domain", domain)))
        if project_id:
            names |= set(await self._members(Index.scaling_groups_for("project", project_id)))
        if access_key:
            names |= set(await self._members(Index.scaling_groups_for("keypair", access_key)))
        groups = await self._many("sgroup", sorted(names))
        return [g for g in groups if g.get("name") and g.get("is_active", True)]

    async def limits_of(
        self, access_key: str, project_id: str | None = None
    ) -> dict[str, Any] | None:
        """Everything that caps what a keypair may occupy: its resource policy, and the
        ``total_resource_slots`` of its user's domain and of the project (when given)."""
        keypair = await self.keypair(access_key)
        if keypair is None:
            return None
        user = await self.user(keypair["user_id"])
        policy = await self.policy(keypair["resource_policy"])
        domain = await self.domain(user["domain"]) if user else None
        project = await self.project(project_id) if project_id else None
        return {
            "access_key": access_key,
            "policy": policy,
            "domain_slots": (domain or {}).get("total_resource_slots", {}),
            "project_slots": (project or {}).get("total_resource_slots", {}),
        }
