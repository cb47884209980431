"""Access key -> credentials, for checking request signatures.

The secret is decrypted in this process and nowhere else. The cache folds the keypair, user
and policy streams once, then follows the log tail: a keypair deactivated (or its user
made inactive) stops authenticating as soon as the event is read, well within a second,
without waiting for any projection.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog

from actors.domain.tenancy import TenancyState
from events import RedisEventStore, Subscription
from events.secrets import SecretBox

__all__ = ["AuthCache", "Credentials"]

log = structlog.get_logger(__name__)

_STREAMS = ("tenancy-keypairs", "tenancy-users", "tenancy-policies")


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str
    user_id: str
    email: str
    role: str
    domain: str
    is_admin: bool
    rate_limit: int
    resource_policy: str

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"


class AuthCache:
    def __init__(self, store: RedisEventStore, secret_box: SecretBox) -> None:
        self.store = store
        self.secrets = secret_box
        self.state = TenancyState()
        self._clear: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self.position = "0-0"
        """Log position up to which changes are known."""

    async def start(self) -> AuthCache:
        self.position = await self.store.head()  # pinned first: nothing can slip between
        for stream in _STREAMS:
            for event in await self.store.read_stream(stream):
                self.state.apply(stream, event.version, event.data)
        self._task = asyncio.create_task(self._follow(), name="auth-cache-follow")
        return self

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        self._subscription = self.store.subscribe(self.position, block_ms=250)
        async for event in self._subscription:
            if event.stream in _STREAMS:
                try:
                    self.state.apply(event.stream, event.version, event.data)
                except Exception:  # one odd event must not freeze every later deactivation
                    log.exception("auth cache could not fold an event", position=event.position)
                if event.type in ("keypair_updated", "keypair_deleted"):
                    self._clear.pop(event.data.access_key, None)  # type: ignore[union-attr]
                elif event.type == "user_purged":
                    for access_key in event.data.access_keys:  # type: ignore[union-attr]
                        self._clear.pop(access_key, None)
                log.debug("auth cache updated", event_type=event.type, position=event.position)
            self.position = event.position

    def lookup(self, access_key: str) -> Credentials | None:
        """Credentials of an active keypair of an active user, else ``None``."""
        keypair = self.state.keypairs.get(access_key)
        if keypair is None or not keypair.get("is_active", False):
            return None
        user = self.state.users.get(keypair["user_id"])
        if user is None or user.get("status") != "active":
            return None
        secret = self._clear.get(access_key)
        if secret is None:
            secret = self._clear[access_key] = self.secrets.decrypt(keypair["secret_key"])
        return Credentials(
            access_key=access_key,
            secret_key=secret,
            user_id=keypair["user_id"],
            email=user["email"],
            role=user["role"],
            domain=user["domain"],
            is_admin=bool(keypair.get("is_admin")),
            rate_limit=int(keypair.get("rate_limit", 1000)),
            resource_policy=keypair.get("resource_policy", "default"),
        )
