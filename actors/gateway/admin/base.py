"""What every admin area is given: the request's context and caller, and one way to write.

An *area* (domains, users, keypairs, ...) is a module with an SDL fragment (``extend type
Query`` / ``extend type Mutation`` and its own types) and a function from an
:class:`AdminCall` to its root resolvers; :mod:`actors.gateway.graphql` joins them into one
schema. Mutations write only through :meth:`AdminCall.tenancy`, which stamps the command
with who asked (so the log answers "who did this") and waits until the tenancy read model
has folded the change (so the client's next request sees it: a keypair just issued
authenticates at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from events import Initiator, position_key
from events.correlation import correlation_kwargs

from ...domain.commands.tenancy import TenancyCommand
from ...domain.errors import GenericForbidden, InvalidAPIParameters
from ..auth import Caller
from ..context import GatewayContext

__all__ = ["MAX_PAGE", "AdminArea", "AdminCall", "Resolvers", "check_page"]

MAX_PAGE = 100
"""The most items one ``*_list`` page holds."""


def check_page(limit: int, offset: int) -> None:
    """A ``*_list`` query's page: 1..:data:`MAX_PAGE` items from a non-negative offset."""
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise InvalidAPIParameters(f"limit must be 1..{MAX_PAGE} and offset >= 0")


R = TypeVar("R")

Resolvers = Mapping[str, Callable[..., Any]]
"""Root field name -> resolver (graphql-core calls a root mapping's callables)."""

_SETTLE_S = 3.0
"""How long a mutation waits for the tenancy read model to fold what it appended."""


@dataclass(frozen=True)
class AdminArea:
    name: str
    sdl: str
    resolvers: Callable[[AdminCall], Resolvers]


@dataclass
class AdminCall:
    """One GraphQL request as the admin areas see it."""

    ctx: GatewayContext
    caller: Caller
    peer: str | None = None

    def initiator(self) -> Initiator:
        user = self.caller.user or {}
        return Initiator(
            access_key=self.caller.access_key,
            user_id=self.caller.user_id or None,
            email=user.get("email"),
            role=self.caller.role,
            peer=self.peer,
        )

    async def tenancy(self, command: TenancyCommand[R]) -> R:
        """Run ``command`` at the tenancy writer as this caller, then wait until the read
        model shows it. A refusal (a :class:`DomainError`) comes back as itself."""
        import ray

        try:
            writer = ray.get_actor("tenancy", namespace=self.ctx.router.namespace)
        except ValueError:
            raise GenericForbidden("this gateway has no tenancy service to write to") from None
        stamped = command.model_copy(update={"initiator": self.initiator()})
        result: R = await writer.handle.remote(stamped, **correlation_kwargs())
        await self.settled()
        return result

    async def settled(self) -> None:
        """Wait (bounded) until the tenancy projection has folded the log's current head."""
        head = await self.ctx.store.head()
        deadline = time.monotonic() + _SETTLE_S
        while time.monotonic() < deadline:
            active = await self.ctx.store.read_models.active("tenancy")
            if active is None:
                return
            if position_key(await active.checkpoint()) >= position_key(head):
                return
            await asyncio.sleep(0.01)
