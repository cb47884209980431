"""Session callbacks (``callback_url``), the decisions: which events a receiver is told of and
in what words, which URLs a tenant may name, which addresses we may connect to, and what to
do after each attempt. The delivery itself (following the log, HTTP, the checkpoint) is
:mod:`actors.runtime.callbacks`; docs/callbacks.md says it all for operators.

Backend.AI 23.03 (``manager/api/session.py``, ``invoke_session_callback`` and
``_make_session_callback``) POSTs ``{"type": "session_lifecycle", "event": <the event's
name without "session_">, "session_id": ..., "when": <ISO 8601, UTC>}`` as JSON for
``session_enqueued``, ``_scheduled``, ``_preparing``, ``_started``, ``_cancelled``,
``_terminating``, ``_terminated``, ``_success`` and ``_failure``, once, with a 30 s timeout,
and forgets it on any error. We send the same body for the same events, from the log, with
retries; ``when`` is the time the log recorded the change (so a retry carries the very same
body), and an ``Idempotency-Key`` header (the event's id) lets a receiver drop repeats.

``callback_url`` is the tenant's, and the manager runs on the host: without care it is a way
to make the host send requests to itself, its private network or a cloud's metadata service.
So a URL is checked at create (:func:`validate_callback_url`: http or https, no user info,
bounded, a literal address judged at once) and every address a name resolves to is judged
again where the connection is made (:func:`address_refusal`), unless the operator's
allow-list (``KH_CALLBACK_ALLOW``) names it. The host is judged in the form the HTTP client
connects to (:func:`connect_host`, yarl's IDNA/UTS 46 form), never only as written: circled
or full-width digits, or ideographic full stops, make a name to ``urllib`` that aiohttp
reads as the literal ``127.0.0.1``.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

from yarl import URL

from .errors import InvalidAPIParameters

__all__ = [
    "CALLBACK_EVENTS",
    "DEFAULT_POLICY",
    "CallbackPolicy",
    "Delivery",
    "Outcome",
    "Progress",
    "address_refusal",
    "callback_body",
    "connect_host",
    "destination_of",
    "judge",
    "literal_address",
    "parse_allow",
    "retry_delay",
    "validate_callback_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CALLBACK_EVENTS: Mapping[str, str] = {
    "session_enqueued": "enqueued",
    "session_scheduled": "scheduled",
    "session_preparing": "preparing",
    "session_started": "started",
    "session_cancelled": "cancelled",
    "session_terminating": "terminating",
    "session_terminated": "terminated",
    "session_success": "success",
    "session_failure": "failure",
    "session_idle_warning": "idle_warning",
}
"""The log's event type -> the ``event`` a receiver is told (23.03's set and names, and
kernelhub's ``idle_warning``: a reclaim ahead, docs/idle.md). There is no callback for
PULLING: 23.03 has no session-level pulling event to send one for."""

_SCHEMES = frozenset({"http", "https"})
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-Fx.]+$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)


def parse_allow(text: str) -> tuple[IPNetwork, ...]:
    """``KH_CALLBACK_ALLOW``: comma-separated addresses or CIDR blocks (``127.0.0.1/32``)
    the operator lets callbacks reach although they are loopback, private or the like."""
    networks: list[IPNetwork] = []
    for item in text.split(","):
        item = item.strip()
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ValueError(f"KH_CALLBACK_ALLOW: {item!r} is not an address or CIDR") from exc
    return tuple(networks)


@dataclass(frozen=True)
class CallbackPolicy:
    """How callbacks are checked and delivered (the operator's; defaults are production's)."""

    allow: tuple[IPNetwork, ...] = ()
    """Addresses callbacks may reach although not public (``KH_CALLBACK_ALLOW``)."""
    max_url_length: int = 2048
    connect_timeout_s: float = 5.0
    timeout_s: float = 10.0
    """One attempt, from connecting to the answer's status line and a capped read."""
    max_attempts: int = 8
    backoff_s: float = 1.0
    """The first retry's delay; each next one doubles, up to ``backoff_cap_s``, jittered."""
    backoff_cap_s: float = 120.0
    queue_bound: int = 1000
    """Deliveries waiting per destination; more are dropped (and counted)."""
    max_response_bytes: int = 4096
    """The most of an answer's body we read (we need only its status)."""
    max_destinations: int = 512
    """Destinations with deliveries in flight at once, all tenants together; a delivery to
    a new destination past it is dropped (and counted), so memory, tasks and connections
    stay bounded (each destination holds at most one connection at a time)."""
    max_destinations_per_owner: int = 16
    """The same, per owner (access key): one tenant's slow receivers fill its own share,
    never the others'."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CallbackPolicy:
        """``KH_CALLBACK_ALLOW``, ``KH_CALLBACK_ATTEMPTS``, ``KH_CALLBACK_TIMEOUT_S`` and
        ``KH_CALLBACK_BACKOFF_S`` (the first retry's delay), where set."""
        values: dict[str, object] = {"allow": parse_allow(environ.get("KH_CALLBACK_ALLOW", ""))}
        for name, key, kind in (
            ("max_attempts", "KH_CALLBACK_ATTEMPTS", int),
            ("timeout_s", "KH_CALLBACK_TIMEOUT_S", float),
            ("backoff_s", "KH_CALLBACK_BACKOFF_S", float),
        ):
            if environ.get(key):
                value = kind(environ[key])
                if value <= 0:
                    raise ValueError(f"{key} must be positive")
                values[name] = value
        return cls(**values)  # type: ignore[arg-type]

    def allows(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allow)


DEFAULT_POLICY = CallbackPolicy()


# ---- which URLs, which addresses --------------------------------------------------------------
def _refuse(why: str) -> InvalidAPIParameters:
    return InvalidAPIParameters(f"callback_url: {why}")


def validate_callback_url(url: str, policy: CallbackPolicy = DEFAULT_POLICY) -> str:
    """The ``callback_url`` a create asked for, checked (raises :class:`InvalidAPIParameters`
    naming ``callback_url``); returns it as given.

    http or https, a host, no user info (a secret would sit in the log for good), no
    whitespace or control characters, at most ``policy.max_url_length`` characters; a host
    written as an address (``127.0.0.1``, ``[::1]``, ``2130706433``) must be one callbacks
    may reach. A name is judged where the connection is made, on every address it resolves
    to then (names change; see :func:`address_refusal`)."""
    if len(url) > policy.max_url_length:
        raise _refuse(f"longer than {policy.max_url_length} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise _refuse("whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse(f"not a URL ({exc})") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise _refuse("only http and https URLs")
    if "@" in parts.netloc:
        raise _refuse("no user name or password in the URL")
    host = parts.hostname
    if not host:
        raise _refuse("no host")
    if port == 0:
        raise _refuse("port 0")
    try:
        target = connect_host(url)
    except ValueError as exc:
        raise _refuse(f"not a URL ({exc})") from None
    address = literal_address(target)
    if address is None and target != host.lower().rstrip(".") and not host.isascii():
        if _NUMERIC_HOST.match(target.strip("[]")) or ":" in target:
            raise _refuse(f"the host {host!r} stands for {target!r}; write it in ASCII")
    if address is None:
        address = literal_address(host)
    if address is None:
        try:
            host.encode("idna")
        except UnicodeError:
            raise _refuse("not a valid host name") from None
        return url
    why = address_refusal(address, policy)
    if why is not None:
        shown = host if target == host else f"{host} (to an HTTP client {target})"
        raise _refuse(f"{shown} is {why}, which callbacks may not reach")
    return url


def connect_host(url: str) -> str:
    """The host the HTTP client connects to for ``url``: yarl's ``raw_host`` (IDNA/UTS 46
    applied, so full-width digits or ``。`` become ASCII), which aiohttp takes as an address
    when it is written as one, and resolves otherwise. Raises ``ValueError`` when yarl cannot
    read it."""
    host = URL(url).raw_host
    if not host:
        raise ValueError("no host")
    return host


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an address when it is written as one, in any form a resolver accepts
    (``127.1``, ``0x7f.0.0.1``, ``2130706433``); ``None`` for a name."""
    host = host.strip("[]")
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]  # "127.0.0.1." is the same address to a resolver
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_v4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to the same host (mapped, 6to4, NAT64)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(
    address: IPAddress | str, policy: CallbackPolicy = DEFAULT_POLICY
) -> str | None:
    """Why callbacks may not connect to ``address`` (``None``: they may).

    Refused unless the allow-list names it: loopback, link-local, private (10/8, 172.16/12,
    192.168/16, fc00::/7 and the rest of RFC 6890's non-global blocks), shared (100.64/10),
    multicast, unspecified, reserved, cloud metadata services; an IPv6 address carrying an
    IPv4 one (mapped, 6to4, NAT64) is judged as that one, Teredo refused outright."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address.split("%", 1)[0])
    if policy.allows(address):
        return None
    embedded = _embedded_v4(address)
    if embedded is not None:
        return address_refusal(embedded, policy)
    if isinstance(address, ipaddress.IPv6Address) and address.teredo is not None:
        return "a Teredo address"
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "not a public address"
    return None


def destination_of(url: str) -> str:
    """Where a delivery goes, for its queue: ``scheme://host:port``, the host as the client
    connects to it (:func:`connect_host`), so two spellings of one host share a queue."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    try:
        host = connect_host(url).lower().rstrip(".")
    except ValueError:
        host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


# ---- what is sent --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """One event for one receiver: the same body and key on every attempt."""

    event_id: str
    position: str
    session_id: str
    url: str
    body: Mapping[str, str]


def callback_body(event_type: str, session_id: str, when_ms: int) -> dict[str, str]:
    """23.03's body; ``when`` is the log's time of the change (ISO 8601, UTC)."""
    when = datetime.fromtimestamp(when_ms / 1000, UTC).isoformat()
    return {
        "type": "session_lifecycle",
        "event": CALLBACK_EVENTS[event_type],
        "session_id": session_id,
        "when": when,
    }


# ---- after an attempt ----------------------------------------------------------------------------
_RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Outcome:
    kind: Literal["delivered", "retry", "drop"]
    why: str = ""
    delay_s: float = 0.0


def retry_delay(attempt: int, policy: CallbackPolicy, jitter: float) -> float:
    """The wait after failed attempt ``attempt`` (1-based): exponential from
    ``policy.backoff_s``, capped, scaled by ``jitter`` in [0, 1] into its upper half (many
    receivers failing at once do not retry in step, and none retries at once)."""
    ceiling = min(policy.backoff_cap_s, policy.backoff_s * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + 0.5 * min(1.0, max(0.0, jitter)))


def judge(
    status: int | None,
    error: str | None,
    attempt: int,
    policy: CallbackPolicy,
    jitter: float,
    *,
    refused: bool = False,
) -> Outcome:
    """What follows attempt ``attempt``: a 2xx delivered it; an answer that says it will
    never be taken (a redirect, which is not followed, or a 4xx other than 408/425/429) and
    an address refused are dropped; a timeout, a connection error, 408/425/429 and 5xx are
    tried again after :func:`retry_delay`, until ``policy.max_attempts``, then dropped."""
    if refused:
        return Outcome("drop", error or "address refused")
    if status is not None and 200 <= status < 300:
        return Outcome("delivered", str(status))
    why = error or f"HTTP {status}"
    transient = status is None or status >= 500 or status in _RETRY_STATUSES
    if not transient:
        return Outcome("drop", why)
    if attempt >= policy.max_attempts:
        return Outcome("drop", f"{why}; gave up after {attempt} attempts")
    return Outcome("retry", why, retry_delay(attempt, policy, jitter))


# ---- the checkpoint ------------------------------------------------------------------------------
class Progress:
    """Which log positions are done, so the follower's checkpoint never passes a delivery
    still owed (a restart resumes before it: at least once).

    Positions are read in log order, each with how many deliveries it owes; the checkpoint
    is the last position at and before which everything is done. Neighbouring done
    positions are merged into the later one, so this holds at most about two entries per
    open delivery, however long one receiver keeps the checkpoint back. A position is found
    by binary search (log positions, ``<ms>-<seq>``, sort as pairs of numbers), so many
    deliveries owed at once do not cost a scan each."""

    def __init__(self, checkpoint: str | None = None) -> None:
        self.checkpoint = checkpoint
        self._entries: list[list[str | int]] = []
        """[position, deliveries still owed], in log order."""
        self._owed = 0

    def read(self, position: str, owed: int) -> None:
        if owed == 0 and self._entries and self._entries[-1][1] == 0:
            self._entries[-1][0] = position  # a done run grows by its last position
        else:
            self._entries.append([position, owed])
        self._owed += owed
        self._advance()

    def done(self, position: str) -> None:
        key = _position_key(position)
        i = bisect.bisect_left(self._entries, key, key=lambda e: _position_key(str(e[0])))
        if not (i < len(self._entries) and self._entries[i][0] == position):
            i = next(  # a position not of the ``<ms>-<seq>`` form: looked for in full
                (j for j, e in enumerate(self._entries) if e[0] == position), len(self._entries)
            )
        if i < len(self._entries):
            entry = self._entries[i]
            if int(entry[1]) > 0:
                entry[1] = int(entry[1]) - 1
                self._owed -= 1
            if entry[1] == 0:  # a later done neighbour covers a done one
                if i + 1 < len(self._entries) and self._entries[i + 1][1] == 0:
                    del self._entries[i]
                if i > 0 and self._entries[i - 1][1] == 0:
                    del self._entries[i - 1]
        self._advance()

    @property
    def owed(self) -> int:
        """Deliveries read and not yet done."""
        return self._owed

    def __len__(self) -> int:
        return len(self._entries)

    def _advance(self) -> None:
        while self._entries and int(self._entries[0][1]) <= 0:
            self.checkpoint = str(self._entries.pop(0)[0])


def _position_key(position: str) -> tuple[int, ...]:
    """A log position (``<ms>-<seq>``) as numbers, in log order."""
    try:
        return tuple(int(part) for part in position.split("-"))
    except ValueError:
        return ()
