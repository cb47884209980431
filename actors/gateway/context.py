"""What every handler of the gateway works with, and the rules they share: who acts for
whom (``owner_access_key``), how a session reference is resolved."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.idle.facts import IdleFacts
from events import RedisEventStore
from projections.queries import ReadModels
from projections.tenancy_queries import TenancyLookups

from ..domain.callbacks import CallbackPolicy
from ..domain.errors import GenericForbidden, InvalidAPIParameters
from ..domain.slots import SlotType
from ..domain.statuses import DEAD_SESSION_STATUSES, SessionStatus
from .auth import Authenticator, Caller
from .coalesce import Coalescer
from .log_tail import LogTail
from .problems import SessionNotFound, TooManySessionsMatched
from .ratelimit import PeerLimiter, RateLimiter
from .stream_limits import FileOpLimits, StreamLimits

if TYPE_CHECKING:
    from actors.sessions.routing import ShardRouter

__all__ = ["DEAD", "LIVE", "GatewayContext"]

_STATUS_TTL_S = 1.0

DEAD = frozenset(s.name for s in DEAD_SESSION_STATUSES)
LIVE = sorted(s.name for s in SessionStatus if s not in DEAD_SESSION_STATUSES)
"""Statuses of sessions not yet ended, as the read model's status indexes name them."""


@dataclass
class GatewayContext:
    store: RedisEventStore
    router: ShardRouter
    """The session router: commands (``router.handle``) and code execution."""
    auth: Authenticator
    models: ReadModels
    lookups: TenancyLookups
    rate_limiter: RateLimiter
    idle: IdleFacts
    """The idle checkers' facts: each session's ``idleChecks`` is judged fresh from them."""
    observe: Callable[[str, str, int, float], None] | None = None
    """Told (route, method, status, seconds) of every answer: the gateway actor's metrics."""
    callbacks: CallbackPolicy = field(default_factory=CallbackPolicy)
    """How ``callback_url`` is checked at create (the operator's allow-list,
    ``KH_CALLBACK_ALLOW``)."""
    peers: PeerLimiter = field(default_factory=PeerLimiter)
    """Failed authentications per peer address (requests without a keypair to count)."""
    streams: StreamLimits = field(default_factory=StreamLimits)
    """Open SSE and websocket streams, per keypair and in all."""
    file_ops: FileOpLimits = field(default_factory=FileOpLimits)
    """File operations (uploads, downloads, listings) being served, per keypair and in all."""
    log_tail: LogTail | None = None
    """The one tail of the log every event stream reads (made with the first stream)."""
    vfolder_root: Path | None = None
    """Where the ``local:default`` storage host keeps folders (a directory per folder id);
    ``None``: this gateway serves no folders' files."""
    serving_base: str | None = None
    """The inference proxy's base URL (``http://host:port``) as callers reach it: the
    operator's ``KH_SERVING_URL``, else the gateway's bound address (set by the gateway
    actor once it listens; ``None``: each answer uses the origin its request came to)."""
    observe_serving: Callable[[str, int, float, str | None], None] | None = None
    """Told (endpoint id, status, seconds, error reason or ``None``) of every answer of the
    inference proxy: the gateway actor's per-endpoint metrics."""
    _status: tuple[float, str] = (0.0, "running")
    known_slots: tuple[float, dict[str, SlotType]] = (0.0, {})
    """When the slot types the cluster knows were last read, and what they were (the
    create route's cache, :func:`actors.gateway.sessions._known_slots`): it lives and dies
    with this context, so another installation's context never inherits it."""
    _records: Coalescer[str, dict[str, Any] | None] = field(init=False, repr=False)
    """Session records by id, the lookups of one turn of the loop read together."""

    def __post_init__(self) -> None:
        self._records = Coalescer(self._sessions_by_id)

    async def _sessions_by_id(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """Each id's record (``None``: unknown), read in one round trip; an id asked twice
        is read twice, so no two requests share (and could change) one record."""
        found = iter(await self.models.sessions_by_id(ids))
        record = next(found, None)
        answers: list[dict[str, Any] | None] = []
        for session_id in ids:  # the records come in the order asked, unknown ones left out
            if record is not None and str(record.get("id")) == session_id:
                answers.append(record)
                record = next(found, None)
            else:
                answers.append(None)
        return answers

    async def manager_status(self) -> str:
        """``running`` or ``frozen``, re-read at most once a second."""
        at, status = self._status
        if time.monotonic() - at >= _STATUS_TTL_S:
            status = await self.lookups.manager_status()
            self._status = (time.monotonic(), status)
        return status

    def forget_manager_status(self) -> None:
        self._status = (0.0, "running")

    async def acting_for(self, caller: Caller, owner_access_key: str | None) -> str:
        """The access key a request acts as: the caller's own, or (admins only) the one
        ``owner_access_key`` names, in the admin's domain unless a superadmin asks."""
        if not owner_access_key or owner_access_key == caller.access_key:
            return caller.access_key
        if not caller.may_act_for_others:
            raise GenericForbidden("only admins may act on other keypairs' sessions")
        keypair = await self.lookups.keypair(owner_access_key)
        if keypair is None and caller.is_superadmin:
            raise InvalidAPIParameters(f"unknown owner access key {owner_access_key!r}")
        if not caller.is_superadmin:
            # one answer for a key of another domain and a key that does not exist: which
            # access keys exist elsewhere is not a domain admin's to learn (review F18)
            owner = (
                await self.lookups.user(str(keypair["user_id"])) if keypair is not None else None
            ) or {}
            if owner.get("domain") != caller.domain or owner.get("role") == "superadmin":
                raise GenericForbidden("a domain admin acts only within the domain")
        return owner_access_key

    async def session(
        self,
        caller: Caller,
        ref: str,
        owner_access_key: str | None = None,
        *,
        allow_stale: bool = False,
    ) -> dict[str, Any]:
        """A session by UUID, then by name, among the sessions of the keypair the request
        acts as (another tenant's session is "not found", never "forbidden"); ended ones
        only where ``allow_stale`` (logs). As 23.03's ``get_session``: no prefixes here, and
        a name several of the keypair's sessions bear (one reused after the first ended)
        is 404 ``too-many-sessions-matched`` with the newest ten, for the caller to pick."""
        access_key = await self.acting_for(caller, owner_access_key)
        found = await self.resolve(access_key, ref, allow_stale=allow_stale)
        if not found:
            raise SessionNotFound()
        if len(found) > 1:
            raise TooManySessionsMatched([_match(r) for r in found])
        return found[0]

    async def resolve(
        self, access_key: str, ref: str, *, allow_stale: bool = False, limit: int = 10
    ) -> list[dict[str, Any]]:
        """23.03's ``match_sessions`` without prefixes: the session whose id ``ref`` is, else
        those named ``ref`` (newest first, at most ``limit``), of ``access_key`` only."""
        try:
            session_id = str(uuid.UUID(ref))
        except ValueError:
            session_id = None
        if session_id is not None:
            record = await self._records(session_id)
            if record is not None and record.get("access_key") == access_key:
                if allow_stale or record.get("status") not in DEAD:
                    return [record]
        # not stale: the index of live names only, so a live session is found in a few reads
        # however many ended sessions bore its name before
        named = await self.models.sessions_named(access_key, ref, limit=1000, ended=allow_stale)
        live = [r for r in named if allow_stale or r.get("status") not in DEAD]
        return live[:limit]

    async def match_sessions(
        self, caller: Caller, prefix: str, owner_access_key: str | None = None
    ) -> list[dict[str, Any]]:
        """``GET /session/_/match?id=<prefix>``: the sessions of the keypair the request acts
        as whose id or name starts with ``prefix`` (ended ones too), newest first, at most
        ten, as ``{id, name, status}`` (23.03's ``match_sessions`` with ``allow_prefix``)."""
        access_key = await self.acting_for(caller, owner_access_key)
        found = await self.models.sessions_prefixed(access_key, prefix, limit=10)
        return [
            {"id": str(r["id"]), "name": r.get("name"), "status": r.get("status")} for r in found
        ]


def _match(record: dict[str, Any]) -> dict[str, Any]:
    """One candidate of ``too-many-sessions-matched``: what the official client prints
    (``id``, ``name``, ``status``) and when it was created."""
    return {
        "id": str(record["id"]),
        "name": record.get("name"),
        "status": record.get("status"),
        "created_at": record.get("created_at"),
    }
