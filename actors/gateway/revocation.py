"""What a tenancy event means to the gateway's callers, and who is refused right now (pure).

The gateway answers keypairs from a cache of the tenancy read model (:mod:`.auth`), which
lags the log by a projection step and is held for a few seconds more. That was fine for
reading a keypair's rate limit and wrong for taking one away: a keypair an admin had just
deactivated kept working for two seconds or more, and a stream it had opened never ended.

So the gateway reads the tenancy streams of the log itself
(:mod:`.revocation_follower`) and folds each event here:

- a *revocation* (a keypair deactivated or deleted, a user made anything but active or
  purged, a domain deactivated or purged) enters :class:`Revoked` at once, from the event
  alone, and every request and open stream of that keypair, user or domain is refused from
  then on, whatever the read model or the cache still say;
- a *restoration* (a keypair activated again, a user or domain made active again) leaves it
  only once the read model has folded that event too (until then the old, revoked answer is the
  consistent one), and only if no later revocation came in between;
- any other change to a keypair or user (its role, admin flag, rate limit) drops the cached
  entry once the read model has it, so the next request reads the new record; a change of
  role or admin flag also ends the streams open now (*close*), which were authorised under
  the old one: their client reconnects and is judged by the new (nothing is refused).

The refused sets grow only with revocations seen while the gateway runs (one admin action
each) and shrink with restorations: a deleted keypair or a purged user stays refused for
the gateway's life, which costs a string each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.envelope import Position, position_key

__all__ = ["STREAMS", "TYPES", "Change", "Revoked", "change_of"]

STREAMS = frozenset({"tenancy-domains", "tenancy-keypairs", "tenancy-users"})
"""The log streams whose events change who may call."""
TYPES = frozenset(
    {
        "domain_updated",
        "domain_purged",
        "keypair_updated",
        "keypair_deleted",
        "user_updated",
        "user_purged",
    }
)
"""The event types read from them (the others, like an issued keypair, add a caller the
read model will answer for and take nobody's access away)."""


@dataclass(frozen=True)
class Change:
    """One event's consequences: who is refused from now on (``revoke_*``, for ``reason``),
    who may call again once the read model has the event (``restore_*``), and whose cached
    entries are reloaded then (``refresh_*``; a revocation and a restoration refresh too)."""

    revoke_keys: tuple[str, ...] = ()
    revoke_users: tuple[str, ...] = ()
    revoke_domains: tuple[str, ...] = ()
    restore_keys: tuple[str, ...] = ()
    restore_users: tuple[str, ...] = ()
    restore_domains: tuple[str, ...] = ()
    refresh_keys: tuple[str, ...] = ()
    refresh_users: tuple[str, ...] = ()
    close_keys: tuple[str, ...] = ()
    """Keypairs whose open streams end now, though their requests are not refused."""
    close_users: tuple[str, ...] = ()
    reason: str = ""
    """Why the revoked are refused (or the closed streams ended), as a closed stream tells
    its client."""

    @property
    def revokes(self) -> bool:
        """Whether the event acts at once (refuses someone or ends streams)."""
        return bool(
            self.revoke_keys
            or self.revoke_users
            or self.revoke_domains
            or self.close_keys
            or self.close_users
        )

    @property
    def domains(self) -> tuple[str, ...]:
        """Every domain whose callers' cached entries this event makes stale."""
        return self.revoke_domains + self.restore_domains

    @property
    def keys(self) -> tuple[str, ...]:
        """Every access key whose cached entry this event makes stale."""
        return self.revoke_keys + self.restore_keys + self.refresh_keys

    @property
    def users(self) -> tuple[str, ...]:
        """Every user whose keypairs' cached entries this event makes stale."""
        return self.revoke_users + self.restore_users + self.refresh_users


def change_of(event_type: str, data: Any) -> Change | None:
    """What ``event_type`` with payload ``data`` changes for callers (``None``: nothing)."""
    if event_type == "keypair_updated":
        key = str(data.access_key)
        if data.is_active is False:
            return Change(revoke_keys=(key,), reason=f"keypair {key} was deactivated")
        if data.is_active is True:
            return Change(restore_keys=(key,))
        if data.is_admin is not None:
            return Change(
                refresh_keys=(key,),
                close_keys=(key,),
                reason=f"keypair {key}'s admin flag changed; reconnect",
            )
        return Change(refresh_keys=(key,))
    if event_type == "keypair_deleted":
        key = str(data.access_key)
        return Change(revoke_keys=(key,), reason=f"keypair {key} was deleted")
    if event_type == "user_updated":
        user = str(data.user_id)
        if data.status is None:
            if data.role is not None:
                return Change(
                    refresh_users=(user,),
                    close_users=(user,),
                    reason=f"user {user}'s role changed; reconnect",
                )
            return Change(refresh_users=(user,))
        if data.status == "active":
            return Change(restore_users=(user,))
        return Change(revoke_users=(user,), reason=f"user {user} is now {data.status}")
    if event_type == "user_purged":
        user = str(data.user_id)
        return Change(
            revoke_users=(user,),
            revoke_keys=tuple(str(k) for k in data.access_keys),
            reason=f"user {user} was purged",
        )
    if event_type == "domain_updated":
        name = str(data.name)
        if data.is_active is False:
            return Change(revoke_domains=(name,), reason=f"domain {name} was deactivated")
        if data.is_active is True:
            return Change(restore_domains=(name,))
        return None
    if event_type == "domain_purged":
        name = str(data.name)
        return Change(revoke_domains=(name,), reason=f"domain {name} was purged")
    return None


class Revoked:
    """The keypairs and users refused now, each with the log position of the event that
    revoked it (so a restoration read late never undoes a later revocation)."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[int, int]] = {}
        self.users: dict[str, tuple[int, int]] = {}
        self.domains: dict[str, tuple[int, int]] = {}

    def refuses(self, access_key: str, user_id: str, domain: str = "") -> bool:
        """Whether a request of ``access_key`` (of ``user_id``, in ``domain``) is refused
        (the hot path: three dict lookups)."""
        return access_key in self.keys or user_id in self.users or domain in self.domains

    def revoke(self, change: Change, position: Position) -> None:
        at = position_key(position)
        for key in change.revoke_keys:
            self.keys[key] = max(at, self.keys.get(key, at))
        for user in change.revoke_users:
            self.users[user] = max(at, self.users.get(user, at))
        for domain in change.revoke_domains:
            self.domains[domain] = max(at, self.domains.get(domain, at))

    def restore(self, change: Change, position: Position) -> None:
        """Lift what ``change`` restores, unless revoked again after ``position``."""
        at = position_key(position)
        for key in change.restore_keys:
            if self.keys.get(key, at) < at:
                del self.keys[key]
        for user in change.restore_users:
            if self.users.get(user, at) < at:
                del self.users[user]
        for domain in change.restore_domains:
            if self.domains.get(domain, at) < at:
                del self.domains[domain]
