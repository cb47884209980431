"""``tenancy``: the single writer of the tenancy streams (see :mod:`actors.tenancy.writer`).

Commands arrive by name with keyword arguments; only the service's public commands are
callable, and each keeps its command id, so a retry after ``RayActorError`` has one effect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox

from ._follower import boot
from ._traced import traced_actor

__all__ = ["TENANCY_COMMANDS", "TenancyActor"]

TENANCY_COMMANDS = frozenset(
    {
        "create_domain",
        "update_domain",
        "create_project",
        "update_project",
        "create_user",
        "update_user",
        "add_member",
        "remove_member",
        "issue_keypair",
        "update_keypair",
        "set_policy",
        "set_preset",
        "set_scaling_group",
        "associate",
        "dissociate",
        "register_image",
        "set_alias",
        "set_manager_status",
    }
)


@ray.remote(max_restarts=-1)
@traced_actor
class TenancyActor:
    def __init__(self, redis_url: str, master_key_path: str, prefix: str = "kh") -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        box = SecretBox.from_file(Path(master_key_path), create=True)
        self.service = TenancyService(self.store, box)
        self._boot = boot(self.service.load())

    async def ready(self) -> bool:
        await self._boot
        return True

    async def execute(self, command: str, arguments: dict[str, Any]) -> Any:
        """Run one tenancy command (a conflict with another writer is a refresh and a second
        look, inside the service)."""
        if command not in TENANCY_COMMANDS:
            raise ValueError(f"unknown tenancy command {command!r}")
        await self._boot
        return await getattr(self.service, command)(**arguments)
