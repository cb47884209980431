"""``kh why <endpoint>``: an endpoint's replica history, told from the log.

The endpoint's own stream (``endpoint-<hex>``) says what was asked (created, scaled, rm,
ratios, tokens: by whom, from the envelope's initiator) and what its reconciler did to each
route: added, HEALTHY, UNHEALTHY, drained (TERMINATING), removed. The events carry no
"because", so the reason a route was drained is read from where it stood when it was: the
endpoint being removed, a person's ``downscale-route`` (the event has an initiator; the
reconciler's never do), the route unhealthy (replaced), or more routes serving than wanted
(a scale down). Each route's session stream then says how its session went: why it still
waits (the scheduler's recorded attempts) or how it ended (:func:`.why.explain`), so "my
replica never became healthy" reads as "its session was cancelled: no such image" or "its
kernel exited 1".

Pure: the caller reads the streams.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from events import Event

from .positions import iso_ms
from .why import explain as explain_session

__all__ = ["EndpointExplanation", "RouteHistory", "explain_endpoint"]


@dataclass
class RouteHistory:
    """One route's life, as the endpoint's stream and its session's stream tell it."""

    route_id: str
    session_id: str
    added_at: str
    status: str = "PROVISIONING"
    healthy_at: str | None = None
    drained_at: str | None = None
    drained_because: str | None = None
    removed_at: str | None = None
    session_status: str | None = None
    session_because: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "route_id": self.route_id,
            "session_id": self.session_id,
            "status": "REMOVED" if self.removed_at else self.status,
            "added_at": self.added_at,
            "healthy_at": self.healthy_at,
            "drained_at": self.drained_at,
            "drained_because": self.drained_because,
            "removed_at": self.removed_at,
            "session": {"status": self.session_status, "because": self.session_because},
        }


@dataclass
class EndpointExplanation:
    endpoint_id: str
    name: str
    status: str
    """``live``, ``destroying`` (``service rm``: draining) or ``destroyed``."""
    since: str
    desired_session_count: int
    lines: list[str] = field(default_factory=list)
    """The history, one event a line, oldest first."""
    routes: list[RouteHistory] = field(default_factory=list)

    @property
    def healthy(self) -> int:
        return sum(1 for r in self.routes if r.status == "HEALTHY" and not r.removed_at)

    @property
    def serving(self) -> int:
        return sum(1 for r in self.routes if not r.removed_at and r.status != "TERMINATING")

    def headline(self) -> str:
        name = f" ({self.name})" if self.name else ""
        state = f"{self.status} since {self.since}"
        if self.status == "destroyed":
            return f"endpoint {self.endpoint_id}{name} is {state}"
        return (
            f"endpoint {self.endpoint_id}{name} is {state}: {self.healthy} of "
            f"{self.desired_session_count} wanted replicas HEALTHY ({self.serving} serving)"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "endpoint_id": self.endpoint_id,
            "name": self.name,
            "status": self.status,
            "since": self.since,
            "desired_session_count": self.desired_session_count,
            "healthy": self.healthy,
            "history": self.lines,
            "routes": [r.as_json() for r in self.routes],
        }


def _who(event: Event) -> str:
    who = event.initiator
    if who is None:
        return ""
    name = who.email or who.access_key or (str(who.user_id) if who.user_id else None)
    return f" by {name}" if name else ""


def _short(value: object) -> str:
    return str(value)[:8]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _created(data: Any) -> list[str]:
    public = "public: no token needed" if data.open_to_public else "private: callers need a token"
    lines = [
        f"created{{who}}: {_plural(data.desired_session_count, 'replica')} of {data.image} "
        f"serving model folder {data.model} at {data.model_mount_destination} ({public})"
    ]
    service = data.service
    if service is None:
        lines.append("  no model service defined: no route can become HEALTHY")
    else:
        lines.append(
            f"  model service: {' '.join(service.start_command)} on port {service.port}; "
            f"health GET {service.health_check_path} every {service.health_check_interval_s:g}s, "
            f"UNHEALTHY after {_plural(service.max_retries, 'failed probe')} in a row or "
            f"no pass within {service.initial_delay_s:g}s of RUNNING"
        )
    return lines


_UNEXPLAINED = "its session was ending"
_LOST = "its session ended on its own; it no longer counts, so a replacement starts"
_DESTROY_REASONS = {
    "service-unhealthy": "its session failed (ERROR) and was replaced",
    "service-scaled-down": "the reconciler drained it",
}
"""What the reconciler's destroy reasons (:mod:`actors.endpoints.reconciler`) mean, for a
drain the endpoint's stream alone does not explain."""


def _ending_reason(session: Sequence[Event]) -> str | None:
    for event in session:
        if event.type == "session_terminating":
            return str(getattr(event.data, "reason", "") or "") or None
    return None


class _Fold:
    """The endpoint's stream walked once, in order, keeping what a reason needs."""

    def __init__(self, out: EndpointExplanation) -> None:
        self.out = out
        self.routes: dict[str, RouteHistory] = {}
        self.desired = 0
        self.destroying = False
        self.initial_delay: float | None = None
        self.drain_lines: dict[str, int] = {}
        """Route id -> the line that says it was drained (refined from its session)."""

    def say(self, event: Event, text: str) -> None:
        self.out.lines.append(f"{iso_ms(event.position_ms)}  {text}")

    def serving(self) -> int:
        return sum(
            1 for r in self.routes.values() if not r.removed_at and r.status != "TERMINATING"
        )

    def apply(self, event: Event) -> None:
        data: Any = event.data
        kind = event.type
        if kind == "endpoint_created":
            self.desired = data.desired_session_count
            self.initial_delay = data.service.initial_delay_s if data.service else None
            first, *rest = _created(data)
            self.say(event, first.replace("{who}", _who(event)))
            self.out.lines.extend(f"{' ' * 26}{line}" for line in rest)
        elif kind == "endpoint_scaled":
            before, self.desired = self.desired, data.desired_session_count
            way = "up" if self.desired > before else "down"
            self.say(event, f"scaled {way} from {before} to {self.desired}{_who(event)}")
        elif kind == "endpoint_route_added":
            added = RouteHistory(
                str(data.route_id), str(data.session_id), iso_ms(event.position_ms)
            )
            self.routes[added.route_id] = added
            self.out.routes.append(added)
            self.say(
                event,
                f"route {_short(added.route_id)} added: session {_short(added.session_id)} "
                f"starting ({self.serving()} of {self.desired} wanted)",
            )
        elif kind == "endpoint_route_status_changed":
            self._status(event, data)
        elif kind == "endpoint_route_removed":
            route = self.routes.get(str(data.route_id))
            if route is None:
                return
            how = "after draining" if route.status == "TERMINATING" else _LOST
            route.removed_at = iso_ms(event.position_ms)
            self.say(event, f"route {_short(route.route_id)} removed ({how})")
        elif kind == "endpoint_traffic_ratio_changed":
            self.say(
                event,
                f"route {_short(data.route_id)} takes traffic ratio {data.traffic_ratio:g}"
                f"{_who(event)}",
            )
        elif kind == "endpoint_token_issued":
            expires = data.expires_at.isoformat().replace("+00:00", "Z")
            self.say(
                event, f"token {_short(data.token_id)} issued, valid until {expires}{_who(event)}"
            )
        elif kind == "endpoint_destroying":
            self.destroying = True
            self.say(event, f"service rm asked{_who(event)}: every route drains, then it goes")
        elif kind == "endpoint_destroyed":
            self.say(event, "destroyed: no route left; its name is free again")

    def _status(self, event: Event, data: Any) -> None:
        route = self.routes.get(str(data.route_id))
        if route is None:
            return
        before, route.status = route.status, str(data.status)
        tag = f"route {_short(route.route_id)}"
        if route.status == "HEALTHY":
            if route.healthy_at is None:
                route.healthy_at = iso_ms(event.position_ms)
            again = " again" if before == "UNHEALTHY" else ""
            self.say(event, f"{tag} HEALTHY{again}: its health check passed; it takes traffic")
        elif route.status == "UNHEALTHY":
            if before == "PROVISIONING":
                within = (
                    f" within {self.initial_delay:g}s" if self.initial_delay is not None else ""
                )
                why = f"no health check passed{within} of its session running"
            else:
                why = "its health check failed too many times in a row"
            self.say(event, f"{tag} UNHEALTHY: {why}; it takes no traffic")
        elif route.status == "TERMINATING":
            route.drained_at = iso_ms(event.position_ms)
            route.drained_because = self._drain_reason(before, event)
            self.drain_lines[route.route_id] = len(self.out.lines)
            self.say(event, f"{tag} drained: {route.drained_because}")

    def _drain_reason(self, before: str, event: Event) -> str:
        if self.destroying:
            return "the endpoint is being removed (service rm)"
        if event.initiator is not None:  # the gateway's (a person's), not the reconciler's
            return f"downscale-route{_who(event)}: this route chosen to go"
        if before == "UNHEALTHY":
            return "it was UNHEALTHY; a replacement starts"
        # this route no longer counts: if more routes served than wanted, a scale down
        if self.serving() + 1 > self.desired:
            return f"more routes served than the {self.desired} wanted (scaled down)"
        return _UNEXPLAINED


def explain_endpoint(
    events: Sequence[Event],
    sessions: Mapping[str, Sequence[Event]],
    now_ms: int,
    *,
    read: Set[str] | None = None,
) -> EndpointExplanation:
    """The history of the endpoint of ``events`` (its whole stream, in order);
    ``sessions`` maps a route's session id to its session's stream (those found), ``read``
    the session ids whose streams were read (default: all; the others are only named)."""
    first: Any = events[0].data
    out = EndpointExplanation(
        endpoint_id=str(first.endpoint_id),
        name=str(getattr(first, "name", "")),
        status="live",
        since=iso_ms(events[0].position_ms),
        desired_session_count=int(getattr(first, "desired_session_count", 0)),
    )
    fold = _Fold(out)
    for event in events:
        fold.apply(event)
        if event.type == "endpoint_destroying":
            out.status, out.since = "destroying", iso_ms(event.position_ms)
        elif event.type == "endpoint_destroyed":
            out.status, out.since = "destroyed", iso_ms(event.position_ms)
    out.desired_session_count = 0 if fold.destroying else fold.desired
    for route in out.routes:
        stream = sessions.get(route.session_id)
        if read is not None and route.session_id not in read:
            route.session_because = [f"(an older route: kh why {route.session_id} tells it)"]
            continue
        if not stream:
            route.session_because = ["its session has no events (not created yet, or lost)"]
            continue
        told = explain_session(stream, now_ms)
        route.session_status, route.session_because = told.status, told.lines
        if route.drained_because == _UNEXPLAINED:
            reason = _ending_reason(stream)
            if reason is not None:
                meaning = _DESTROY_REASONS.get(reason, "it was destroyed")
                line = fold.drain_lines[route.route_id]
                out.lines[line] = out.lines[line].replace(
                    f"drained: {_UNEXPLAINED}", f"drained: {meaning} ({reason})"
                )
                route.drained_because = f"{meaning} ({reason})"
    return out


def route_lines(route: RouteHistory) -> list[str]:
    """A route and its session, for the text output."""
    state = f"removed {route.removed_at}" if route.removed_at else route.status
    lines = [f"route {route.route_id}: {state}; session {route.session_id}"]
    if route.drained_because:
        lines.append(f"  drained {route.drained_at}: {route.drained_because}")
    if route.session_status:
        lines.append(f"  session {route.session_status}")
    lines.extend(f"    {line}" for line in route.session_because)
    return lines
