"""Inference endpoints as pure decisions: what an endpoint is, what may happen to it, and
what its reconciler should do next.

:class:`EndpointState` is folded from the ``endpoint-<id>`` streams. :func:`decide` checks
a proposed event against it and returns what to append (nothing when the event would change
nothing, so a repeated command is harmless) or raises a :class:`DomainError`. The single
writer (:mod:`actors.endpoints.writer`) serialises decisions, which is what keeps a name
unique among its owner's live endpoints and a route id owned by one endpoint.

A route's life: added ``PROVISIONING``; ``HEALTHY`` and ``UNHEALTHY`` as its probe says;
``TERMINATING`` once it is drained (nothing but its removal follows); removed once, its id
never reused. An endpoint is destroyed only once it has no routes left, and nothing
happens to it after.

:func:`replicas_to_start` and :func:`routes_to_drain` are the reconciler's questions,
answered from the state alone (and the time, which the caller passes in).

Failure memory (review S1: a tenant whose replicas always fail — a bootstrap script that
exits 1, a model that never answers — would otherwise have each one replaced at once, for
ever: thousands of sessions an hour). The fold counts an endpoint's failures in a row: a
route that turned ``UNHEALTHY``, or whose session ended while it was not being drained.
The fold's time is the log's (each event's position, Redis time), so the memory and its
clock survive the serving actor's restart. A failure of a route that had been HEALTHY for
:data:`STABLE_S` starts the count afresh (a replica that served for a while and then died
is not a broken model); a replica that turns HEALTHY and dies soon after (a flapping one)
counts on. The owner's scale starts it afresh too (a scale to the count it already has is
appended only when there are failures to forget: that is what ``sync`` appends).
:func:`replacement_hold` says whether a replacement waits (``min(base * 2**(k-1),
BACKOFF_MAX_S)`` after the last failure) or is stopped (:data:`MAX_FAILURES` in a row:
until the owner scales or syncs).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from events.catalogue import (
    AnyPayload,
    EndpointCreated,
    EndpointDestroyed,
    EndpointDestroying,
    EndpointRouteAdded,
    EndpointRouteRemoved,
    EndpointRouteStatusChanged,
    EndpointScaled,
    EndpointTokenIssued,
    EndpointTrafficRatioChanged,
)
from events.catalogue.endpoint import MAX_REPLICAS, RouteStatus

from .errors import EndpointNotFound, InvalidAPIParameters, RoutingNotFound

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "MAX_ENDPOINTS_PER_OWNER",
    "MAX_FAILURES",
    "MAX_ROUTES",
    "STABLE_S",
    "Endpoint",
    "EndpointState",
    "Hold",
    "Route",
    "check_name",
    "decide",
    "decide_downscale",
    "ready_to_destroy",
    "replacement_hold",
    "replicas_to_start",
    "routes_to_drain",
    "stream_of",
]

MAX_ENDPOINTS_PER_OWNER = 16
"""The most endpoints one user holds at once (not yet destroyed): each is a reconciler's
work and a record every listing reads."""
MAX_ROUTES = 2 * MAX_REPLICAS
"""The most routes one endpoint holds at once (its replicas, and as many replacements)."""
MAX_FAILURES = 5
"""Replica failures in a row after which an endpoint starts no more replacements until its
owner scales it or asks ``sync``."""
BACKOFF_BASE_S = 5.0
"""The wait before the replacement of the first failure in a row (doubled per failure)."""
BACKOFF_MAX_S = 600.0
STABLE_S = 600.0
"""How long a route must have been HEALTHY for its failure to start the count afresh."""

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_NEXT: dict[RouteStatus, frozenset[RouteStatus]] = {
    "PROVISIONING": frozenset({"HEALTHY", "UNHEALTHY", "TERMINATING"}),
    "HEALTHY": frozenset({"UNHEALTHY", "TERMINATING"}),
    "UNHEALTHY": frozenset({"HEALTHY", "TERMINATING"}),
    "TERMINATING": frozenset(),
}
"""The statuses a route may move to from each (the same status again changes nothing)."""


_ENDPOINT_EVENTS = (
    EndpointScaled,
    EndpointRouteAdded,
    EndpointRouteStatusChanged,
    EndpointRouteRemoved,
    EndpointTrafficRatioChanged,
    EndpointTokenIssued,
)


def stream_of(endpoint_id: uuid.UUID) -> str:
    return f"endpoint-{endpoint_id.hex}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidAPIParameters(
            "an endpoint name is 1-64 letters, digits, '_', '-' or '.', and does not start "
            "with '.' or '-'"
        )
    return name


def _check_ratio(ratio: float) -> float:
    if not isinstance(ratio, int | float) or not math.isfinite(ratio) or not 0 <= ratio <= 1:
        raise InvalidAPIParameters("a traffic ratio is a number from 0 to 1")
    return float(ratio)


@dataclass
class Route:
    route_id: uuid.UUID
    session_id: uuid.UUID
    traffic_ratio: float
    added_at: int
    """The endpoint's version when it was added: a larger one is newer."""
    status: RouteStatus = "PROVISIONING"
    healthy_since_ms: int | None = None
    """When it first turned HEALTHY (the log's time, ms)."""
    failed: bool = False
    """Counted as a failure already (it turned UNHEALTHY)."""


@dataclass
class Endpoint:
    endpoint_id: uuid.UUID
    name: str
    owner: uuid.UUID
    spec: EndpointCreated
    """Everything it was created with (image, model, resources, ...)."""
    desired_session_count: int
    status: Literal["live", "destroying", "destroyed"] = "live"
    """``destroying``: ``service rm`` was asked; it drains and is destroyed when no route is
    left (it keeps its name until then)."""
    routes: dict[uuid.UUID, Route] = field(default_factory=dict)
    """Its routes not yet removed."""
    removed_routes: set[uuid.UUID] = field(default_factory=set)
    tokens: dict[uuid.UUID, datetime] = field(default_factory=dict)
    """Token id -> expiry."""
    version: int = 0
    failures: int = 0
    """Replica failures in a row (see the module's docstring)."""
    last_failure_ms: int = 0
    """When the last of them happened (the log's time, ms)."""

    def serving(self) -> list[Route]:
        """Its routes that count as replicas: every one not being drained."""
        return [r for r in self.routes.values() if r.status != "TERMINATING"]


class EndpointState:
    """Every endpoint the log names, destroyed ones included (their ids are never reused)."""

    def __init__(self) -> None:
        self.endpoints: dict[uuid.UUID, Endpoint] = {}
        self.route_owner: dict[uuid.UUID, uuid.UUID] = {}
        """Route id -> its endpoint (removed routes included)."""
        self.session_route: dict[uuid.UUID, uuid.UUID] = {}
        """Session id -> the route it serves (removed routes included)."""

    def version(self, endpoint_id: uuid.UUID) -> int:
        endpoint = self.endpoints.get(endpoint_id)
        return 0 if endpoint is None else endpoint.version

    def live(self) -> Iterable[Endpoint]:
        """The endpoints not yet destroyed (those being destroyed included)."""
        return (e for e in self.endpoints.values() if e.status != "destroyed")

    def named(self, owner: uuid.UUID, name: str) -> Endpoint | None:
        for endpoint in self.live():
            if endpoint.owner == owner and endpoint.name == name:
                return endpoint
        return None

    def apply(self, version: int, event: AnyPayload, at_ms: int = 0) -> None:
        """Fold one event; ``at_ms`` is when the log took it (its position's Redis time):
        the failure memory's clock."""
        if isinstance(event, EndpointCreated):
            self.endpoints[event.endpoint_id] = Endpoint(
                endpoint_id=event.endpoint_id,
                name=event.name,
                owner=event.owner,
                spec=event,
                desired_session_count=event.desired_session_count,
                version=version,
            )
            return
        endpoint = self.endpoints.get(getattr(event, "endpoint_id", None))  # type: ignore[arg-type]
        if endpoint is None:
            return
        endpoint.version = version
        if isinstance(event, EndpointScaled):
            endpoint.desired_session_count = event.desired_session_count
            endpoint.failures = 0  # the owner asked again: replacements start afresh
        elif isinstance(event, EndpointRouteAdded):
            endpoint.routes[event.route_id] = Route(
                route_id=event.route_id,
                session_id=event.session_id,
                traffic_ratio=event.traffic_ratio,
                added_at=version,
            )
            self.route_owner[event.route_id] = event.endpoint_id
            self.session_route[event.session_id] = event.route_id
        elif isinstance(event, EndpointRouteStatusChanged):
            route = endpoint.routes.get(event.route_id)
            if route is not None:
                route.status = event.status
                if event.status == "HEALTHY" and route.healthy_since_ms is None:
                    route.healthy_since_ms = at_ms
                elif event.status == "UNHEALTHY" and not route.failed:
                    _failed(endpoint, route, at_ms)
        elif isinstance(event, EndpointTrafficRatioChanged):
            route = endpoint.routes.get(event.route_id)
            if route is not None:
                route.traffic_ratio = event.traffic_ratio
        elif isinstance(event, EndpointRouteRemoved):
            route = endpoint.routes.pop(event.route_id, None)
            if route is not None:
                endpoint.removed_routes.add(event.route_id)
                if route.status != "TERMINATING" and not route.failed:  # ended, not drained
                    _failed(endpoint, route, at_ms)
        elif isinstance(event, EndpointTokenIssued):
            endpoint.tokens[event.token_id] = event.expires_at
        elif isinstance(event, EndpointDestroying):
            endpoint.status = "destroying"
            endpoint.desired_session_count = 0
        elif isinstance(event, EndpointDestroyed):
            endpoint.status = "destroyed"


def _failed(endpoint: Endpoint, route: Route, at_ms: int) -> None:
    """Count ``route``'s failure: afresh after a route that served :data:`STABLE_S`."""
    route.failed = True
    stable = route.healthy_since_ms is not None and at_ms - route.healthy_since_ms >= (
        STABLE_S * 1000
    )
    endpoint.failures = 1 if stable else endpoint.failures + 1
    endpoint.last_failure_ms = max(endpoint.last_failure_ms, at_ms)


# ---- decisions ----------------------------------------------------------------------------------
def _live(state: EndpointState, endpoint_id: uuid.UUID) -> Endpoint:
    endpoint = state.endpoints.get(endpoint_id)
    if endpoint is None or endpoint.status == "destroyed":
        raise EndpointNotFound()
    return endpoint


_WHILE_DESTROYING = (
    EndpointScaled,
    EndpointRouteAdded,
    EndpointTrafficRatioChanged,
    EndpointTokenIssued,
)
"""What an endpoint being destroyed refuses (its routes still change status and go)."""


def _route(endpoint: Endpoint, route_id: uuid.UUID) -> Route:
    route = endpoint.routes.get(route_id)
    if route is None:
        raise RoutingNotFound()
    return route


def decide(
    state: EndpointState, event: AnyPayload, *, now: datetime | None = None
) -> list[AnyPayload]:
    """The events to append for ``event`` (``now``: the writer's clock, which a token's
    expiry must be after)."""
    if isinstance(event, EndpointCreated):
        return _decide_create(state, event)
    if isinstance(event, EndpointDestroyed):
        known = state.endpoints.get(event.endpoint_id)
        if known is None:
            raise EndpointNotFound()
        if known.status == "destroyed":
            return []
        if known.routes:
            raise InvalidAPIParameters(
                "the endpoint still has routes: scale it to 0 and let them drain first"
            )
        return [event]
    if isinstance(event, EndpointDestroying):
        endpoint = _live(state, event.endpoint_id)
        return [] if endpoint.status == "destroying" else [event]
    if not isinstance(event, _ENDPOINT_EVENTS):
        raise TypeError(f"not an endpoint event: {type(event).__name__}")
    endpoint = _live(state, event.endpoint_id)
    if endpoint.status == "destroying" and isinstance(event, _WHILE_DESTROYING):
        raise InvalidAPIParameters("the endpoint is being destroyed")
    if isinstance(event, EndpointScaled):
        _check_count(event.desired_session_count)
        same = endpoint.desired_session_count == event.desired_session_count
        return [] if same and not endpoint.failures else [event]  # the same again: a retry
    if isinstance(event, EndpointRouteAdded):
        return _decide_route_added(state, endpoint, event)
    if isinstance(event, EndpointRouteStatusChanged):
        route = _route(endpoint, event.route_id)
        if route.status == event.status:
            return []
        if event.status not in _NEXT[route.status]:
            raise InvalidAPIParameters(f"a {route.status} route does not become {event.status}")
        return [event]
    if isinstance(event, EndpointTrafficRatioChanged):
        route = _route(endpoint, event.route_id)
        ratio = _check_ratio(event.traffic_ratio)
        return [] if route.traffic_ratio == ratio else [event]
    if isinstance(event, EndpointRouteRemoved):
        if event.route_id in endpoint.removed_routes:
            return []  # removed once: a repeat changes nothing
        _route(endpoint, event.route_id)
        return [event]
    if isinstance(event, EndpointTokenIssued):
        if event.token_id in endpoint.tokens:
            return []
        if event.expires_at.tzinfo is None:
            raise InvalidAPIParameters("a token's expiry names its time zone")
        if now is not None and event.expires_at <= now:
            raise InvalidAPIParameters("a token expires in the future")
        return [event]
    raise TypeError(f"not an endpoint event: {type(event).__name__}")  # pragma: no cover


def decide_downscale(
    state: EndpointState, route_id: uuid.UUID, endpoint_id: uuid.UUID
) -> list[AnyPayload]:
    """``downscale-route``: one replica fewer, and this route the one that goes — the scale
    and the drain in one decision (one append), so the reconciler never sees one without the
    other (it would drain another route, or start a replacement). A route already draining
    changes nothing; an endpoint being destroyed only drains it."""
    endpoint = _live(state, endpoint_id)
    route = _route(endpoint, route_id)
    if route.status == "TERMINATING":
        return []
    drain = EndpointRouteStatusChanged(
        endpoint_id=endpoint_id, route_id=route_id, status="TERMINATING"
    )
    if endpoint.status != "live":
        return [drain]
    desired = max(0, endpoint.desired_session_count - 1)
    if desired == endpoint.desired_session_count:
        return [drain]
    return [EndpointScaled(endpoint_id=endpoint_id, desired_session_count=desired), drain]


def _check_count(count: int) -> int:
    if not isinstance(count, int) or not 0 <= count <= MAX_REPLICAS:
        raise InvalidAPIParameters(f"an endpoint has 0 to {MAX_REPLICAS} replicas")
    return count


def _decide_create(state: EndpointState, event: EndpointCreated) -> list[AnyPayload]:
    if event.endpoint_id in state.endpoints:
        return []  # the same id again: a retried create
    check_name(event.name)
    _check_count(event.desired_session_count)
    if any(part == ".." for part in event.model_mount_destination.split("/")):
        raise InvalidAPIParameters("the model's mount destination is an absolute path")
    if state.named(event.owner, event.name) is not None:
        raise InvalidAPIParameters(f"an endpoint named {event.name!r} already exists")
    if sum(1 for e in state.live() if e.owner == event.owner) >= MAX_ENDPOINTS_PER_OWNER:
        raise InvalidAPIParameters(
            f"a user holds at most {MAX_ENDPOINTS_PER_OWNER} endpoints: remove one first"
        )
    return [event]


def _decide_route_added(
    state: EndpointState, endpoint: Endpoint, event: EndpointRouteAdded
) -> list[AnyPayload]:
    _check_ratio(event.traffic_ratio)
    owner = state.route_owner.get(event.route_id)
    if owner is not None:
        route = endpoint.routes.get(event.route_id)
        if owner == endpoint.endpoint_id and route is not None:
            if route.session_id == event.session_id:
                return []  # added once: the same route again changes nothing
            raise InvalidAPIParameters("the route already serves another session")
        raise InvalidAPIParameters("the route id is taken (by another endpoint, or was removed)")
    if event.session_id in state.session_route:
        raise InvalidAPIParameters("the session already serves a route")
    if len(endpoint.routes) >= MAX_ROUTES:
        raise InvalidAPIParameters(f"an endpoint holds at most {MAX_ROUTES} routes")
    return [event]


# ---- the reconciler's questions -----------------------------------------------------------------
@dataclass(frozen=True)
class Hold:
    """Why an endpoint's replacements wait: ``until_ms`` (the log's time) or ``stopped``."""

    failures: int
    until_ms: int | None
    """``None``: stopped until the owner scales or syncs."""

    @property
    def stopped(self) -> bool:
        return self.until_ms is None

    def reason(self) -> str:
        if self.until_ms is None:
            return (
                f"{self.failures} replicas failed in a row: no more are started until the "
                "owner scales the endpoint or asks sync"
            )
        return f"{self.failures} replica(s) failed in a row: the next starts after a backoff"


def replacement_hold(
    endpoint: Endpoint,
    now_ms: int,
    *,
    base_s: float = BACKOFF_BASE_S,
    max_failures: int = MAX_FAILURES,
) -> Hold | None:
    """Whether the endpoint's next replica waits, and until when: after ``k`` failures in a
    row, ``min(base_s * 2**(k-1), BACKOFF_MAX_S)`` past the last one; after
    ``max_failures``, until the owner scales or syncs."""
    failures = endpoint.failures
    if failures <= 0:
        return None
    if failures >= max_failures:
        return Hold(failures, None)
    wait_ms = int(min(base_s * 2 ** (failures - 1), BACKOFF_MAX_S) * 1000)
    until = endpoint.last_failure_ms + wait_ms
    return Hold(failures, until) if now_ms < until else None


def replicas_to_start(
    state: EndpointState,
    endpoint_id: uuid.UUID,
    *,
    now_ms: int = 0,
    base_s: float = BACKOFF_BASE_S,
    max_failures: int = MAX_FAILURES,
) -> int:
    """How many inference sessions to start now: the desired count minus the routes not being
    drained (0 for an endpoint unknown or destroyed, and 0 while :func:`replacement_hold`
    holds it: ``now_ms`` is the log's time now; left out, a held endpoint stays held)."""
    endpoint = state.endpoints.get(endpoint_id)
    if endpoint is None or endpoint.status != "live":
        return 0
    hold = replacement_hold(endpoint, now_ms, base_s=base_s, max_failures=max_failures)
    if hold is not None:
        return 0
    return max(0, endpoint.desired_session_count - len(endpoint.serving()))


def ready_to_destroy(state: EndpointState, endpoint_id: uuid.UUID) -> bool:
    """Whether an endpoint being destroyed has drained (its last route removed)."""
    endpoint = state.endpoints.get(endpoint_id)
    return endpoint is not None and endpoint.status == "destroying" and not endpoint.routes


def routes_to_drain(state: EndpointState, endpoint_id: uuid.UUID) -> list[uuid.UUID]:
    """Which routes to drain (turn ``TERMINATING``) for the endpoint to have no more than it
    wants (all of them once it is being destroyed), in the order to drain them: unhealthy
    ones first, then the newest."""
    endpoint = state.endpoints.get(endpoint_id)
    if endpoint is None or endpoint.status == "destroyed":
        return []
    serving = endpoint.serving()
    excess = len(serving) - endpoint.desired_session_count
    if excess <= 0:
        return []
    order = sorted(serving, key=lambda r: (r.status != "UNHEALTHY", -r.added_at))
    return [r.route_id for r in order[:excess]]
