"""Who is calling: the HMAC keypair check of every authenticated request (docs/gateway.md).

Keypairs come from the ``tenancy`` read model, their secrets decrypted here and only here,
held for a few seconds (the cache answers from the old entry while it refreshes, see
``actors.tenancy.cache``). Taking access away does not wait for either: the gateway reads
the tenancy streams of the log itself (:mod:`.revocation_follower`), and a keypair or user
revoked there is refused by the next request and its open streams are closed
(:meth:`Authenticator.revoke`), whatever the cache still holds. A user restricted to some
addresses (``allowed_client_ip``) is served only from them, judged by the TCP peer.

Strangers choose what reaches here: an access key that does not exist is remembered only
briefly and in a bounded table, an access key or signature that could never be ours (not
printable ASCII, too long) is refused before any lookup, and a peer that keeps failing
(``cached_only``) is answered from the cache alone, never from Redis.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from actors.tenancy.cache import RefreshingCache
from events.secrets import SecretBox, SecretError
from kernelhub.signing import (
    SignatureError,
    parse_authorization,
    parse_date,
    sign_with_key,
    signing_key,
    string_to_sign,
)
from projections.tenancy_queries import TenancyLookups

from .open_streams import OpenStream, OpenStreams
from .problems import AuthorizationFailed, InvalidAuthParameters
from .revocation import Change, Revoked

__all__ = [
    "MAX_SKEW",
    "Authenticator",
    "Caller",
    "NotCached",
    "SigningKeys",
    "networks_of",
    "peer_allowed",
]

MAX_SKEW = timedelta(minutes=15)
_ACCESS_KEY = re.compile(r"^[!-~]{1,128}$")
"""Printable ASCII, no spaces: what an access key could be (ours are ``AKIA`` + 16)."""
_SIGNATURE = re.compile(r"^[0-9a-f]{32,128}$")
"""A hex digest (MD5 to SHA-512)."""
MAX_ABSENT_KEYS = 1_000
"""Unknown access keys remembered at most (each for ``ttl_s``)."""
MAX_SIGNING_KEYS = 4_096
"""Derived signing keys held at most (:class:`SigningKeys`)."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks_of(allowed: Any) -> tuple[Network, ...] | None:
    """A user's ``allowed_client_ip`` as networks (``None``: no restriction). An entry that
    does not parse (tenancy refuses those now; an older record may hold one) matches no
    peer: a restriction an admin meant is never widened to everyone."""
    if not allowed or not isinstance(allowed, list):
        return None
    networks: list[Network] = []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(str(entry), strict=False))
        except ValueError:
            continue
    return tuple(networks)


def peer_allowed(peer: str | None, networks: tuple[Network, ...] | None) -> bool:
    """Whether a request from ``peer`` (the TCP peer's address) may use a keypair of a user
    restricted to ``networks``; an IPv4 address mapped into IPv6 counts as itself."""
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(peer or "")
    except ValueError:
        return False  # not an IP peer (a unix socket): never within a restriction
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class SigningKeys:
    """The derived key each keypair signs with on a given day for a given host
    (:func:`kernelhub.signing.signing_key`): two of a signature's three HMACs, the same for
    every request of the day, so computed once. Bounded: past ``max_keys`` (a caller may
    send any ``Host``) the table starts again empty; what is forgotten is derived anew."""

    def __init__(self, max_keys: int = MAX_SIGNING_KEYS) -> None:
        self.max_keys = max_keys
        self._keys: dict[tuple[str, int, int, int, str, str], bytes] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def key(self, secret: str, date: datetime, host: str, hash_type: str) -> bytes:
        # the day of the date in its own zone, as signing_key reads it
        wanted = (secret, date.year, date.month, date.day, host, hash_type)
        found = self._keys.get(wanted)
        if found is None:
            if len(self._keys) >= self.max_keys:
                self._keys.clear()
            found = self._keys[wanted] = signing_key(secret, date, host, hash_type)
        return found


class NotCached(AuthorizationFailed):
    """A peer over its failure limit sent a key the cache does not hold (see app.py)."""


@dataclass(frozen=True)
class Caller:
    access_key: str
    user_id: str
    domain: str
    role: str
    """``superadmin``, ``admin`` or ``user`` (the user's role)."""
    is_admin: bool
    """The keypair's admin flag (what ``keypair { is_admin }`` shows)."""
    keypair: dict[str, Any]
    user: dict[str, Any]
    networks: tuple[Network, ...] | None = None
    """Where the user may call from (``allowed_client_ip``; ``None``: anywhere)."""

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"

    @property
    def may_act_for_others(self) -> bool:
        return self.is_superadmin or self.role == "admin" or self.is_admin


class Authenticator:
    def __init__(
        self,
        lookups: TenancyLookups,
        secrets: SecretBox,
        ttl_s: float = 2.0,
        max_absent: int = MAX_ABSENT_KEYS,
    ) -> None:
        self.lookups = lookups
        self.secrets = secrets
        self.ttl_s = ttl_s
        self._cache: RefreshingCache[str, tuple[str, Caller] | None] = RefreshingCache(
            self._load, ttl_s, absent_ttl_s=ttl_s, max_absent=max_absent
        )
        self.signing_keys = SigningKeys()
        self.revoked = Revoked()
        """Keypairs and users refused now, from the log (:mod:`.revocation`)."""
        self.open_streams = OpenStreams()
        """The streams open now, to close when their keypair or user is revoked."""

    @property
    def cache(self) -> RefreshingCache[str, tuple[str, Caller] | None]:
        """The keypair cache (its size is bounded; tests read it)."""
        return self._cache

    async def _keypair(self, access_key: str) -> tuple[str, Caller] | None:
        """The keypair's secret and caller, cached (a refresh never makes a request wait)."""
        return await self._cache.get(access_key)

    async def _load(self, access_key: str) -> tuple[str, Caller] | None:
        keypair = await self.lookups.keypair(access_key)
        if keypair is None or not keypair.get("is_active", True):
            return None
        user = await self.lookups.user(str(keypair["user_id"])) or {}
        if user.get("status", "active") != "active":
            return None
        domain = await self.lookups.domain(str(user.get("domain", "default")))
        if domain is not None and not domain.get("is_active", True):
            return None  # 23.03 refuses every keypair of an inactive domain
        try:
            secret = self.secrets.decrypt(str(keypair["secret_key"]))
        except SecretError:
            return None  # another installation's ciphertext: not a keypair of ours
        caller = Caller(
            access_key=access_key,
            user_id=str(keypair["user_id"]),
            domain=str(user.get("domain", "default")),
            role=str(user.get("role", "user")),
            is_admin=bool(keypair.get("is_admin", False)),
            keypair={k: v for k, v in keypair.items() if k != "secret_key"},
            user=user,
            networks=networks_of(user.get("allowed_client_ip")),
        )
        return secret, caller

    def revoke(self, change: Change, position: str) -> int:
        """Refuse what ``change`` revokes from now on and close its open streams; how many
        streams were closed."""
        self.revoked.revoke(change, position)
        self._forget(change.revoke_keys, change.revoke_users, change.revoke_domains)
        return self.open_streams.revoke(
            change.revoke_keys + change.close_keys,
            change.revoke_users + change.close_users,
            change.reason,
            change.revoke_domains,
        )

    def settle(self, change: Change, position: str) -> None:
        """The read model has folded ``change`` (at ``position``): lift what it restores and
        drop the cached entries it made stale, so the next request reads them anew."""
        self.revoked.restore(change, position)
        self._forget(change.keys, change.users, change.domains)

    def _forget(
        self, keys: tuple[str, ...], users: tuple[str, ...], domains: tuple[str, ...] = ()
    ) -> None:
        for key in keys:
            self._cache.forget(key)
        if users:
            wanted = set(users)
            self._cache.forget_where(lambda _k, v: v is not None and v[1].user_id in wanted)
        if domains:
            within = set(domains)
            self._cache.forget_where(lambda _k, v: v is not None and v[1].domain in within)

    @contextmanager
    def track_stream(self, request: web.Request, caller: Caller) -> Iterator[OpenStream]:
        """Track the stream ``request`` serves for its whole life; one whose caller was
        revoked between its authentication and now is revoked at once."""
        with self.open_streams.track(
            request, caller.access_key, caller.user_id, caller.domain
        ) as stream:
            if self.revoked.refuses(caller.access_key, caller.user_id, caller.domain):
                stream.revoke("this keypair, its user or its domain was revoked")
            yield stream

    async def secret_of(self, access_key: str) -> str | None:
        """A keypair's secret in clear (``keypair { secret_key }`` shows the caller its own)."""
        found = await self._keypair(access_key)
        return None if found is None else found[0]

    async def authenticate(self, request: web.Request, *, cached_only: bool = False) -> Caller:
        """The caller a signed request comes from; with ``cached_only``, only a keypair the
        cache holds is looked at (:class:`NotCached` otherwise)."""
        header = request.headers.get("Authorization")
        if not header:
            raise AuthorizationFailed("Unauthorized access")
        try:
            credential = parse_authorization(header)
        except SignatureError as exc:
            raise InvalidAuthParameters(str(exc)) from None
        raw_date = (
            request.headers.get("Date")
            or request.headers.get("X-BackendAI-Date")
            or request.headers.get("X-Sorna-Date")
        )
        version = request.headers.get("X-BackendAI-Version") or request.headers.get(
            "X-Sorna-Version"
        )
        if not raw_date or not version:
            raise InvalidAuthParameters("Date and X-BackendAI-Version headers are required")
        try:
            date = parse_date(raw_date)
        except SignatureError as exc:
            raise InvalidAuthParameters(str(exc)) from None
        if abs(datetime.now(UTC) - date) > MAX_SKEW:
            raise InvalidAuthParameters("Date/time sync error")
        if not _ACCESS_KEY.match(credential.access_key):
            raise AuthorizationFailed("Access key not found")
        if cached_only and not self._cache.cached(credential.access_key):
            raise NotCached("Access key not found")
        found = await self._keypair(credential.access_key)
        if found is None:
            raise AuthorizationFailed("Access key not found")
        secret, caller = found
        if self.revoked.refuses(caller.access_key, caller.user_id, caller.domain):
            # what the read model answers once it has the revocation too (as 23.03 does)
            raise AuthorizationFailed("Access key not found")
        text = string_to_sign(
            request.method, request.raw_path, raw_date, request.host, request.content_type, version
        )
        key = self.signing_keys.key(secret, date, request.host, credential.hash_type)
        expected = sign_with_key(key, text, credential.hash_type)
        if not _SIGNATURE.match(credential.signature) or not hmac.compare_digest(
            expected.encode(), credential.signature.encode()
        ):
            raise AuthorizationFailed("Signature mismatch")
        if caller.networks is not None and not peer_allowed(request.remote, caller.networks):
            # the TCP peer: no proxy is trusted to say where a request came from
            raise AuthorizationFailed("Access from this address is not allowed.")
        return caller
