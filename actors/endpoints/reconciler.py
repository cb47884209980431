"""The endpoints' reconciler: keeps each endpoint's replicas what its log asks for.

It runs beside the endpoint writer (:class:`~actors.endpoints.writer.EndpointService`, in
the ``serving`` actor: :mod:`actors.hosts.serving`) and appends through it. A pass looks
at every endpoint not yet destroyed, route by route, and at the route's session as its
stream says; passes run when something changes (an endpoint command, an event of a route's
session, a probe's answer) and at least every ``tick_s`` seconds.

For each route:

- no session yet (the route is appended ``PROVISIONING`` *before* its session is created,
  so a crash in between leaves exactly this): create it, through the normal session
  router, with the route's fixed command id (:mod:`.replicas`); a refusal (the owner's
  keypair gone, the model folder trashed or no longer theirs, the image unknown) is kept
  for the report and retried with a backoff, the route staying ``PROVISIONING``;
- its session RUNNING: start the model service (the runner answers "running" when it
  already runs, and starts it again when it died), and probe the definition's
  health-check path every ``health_check_interval_s`` through the runner's tunnel
  (:mod:`.probe`): a 2xx makes it ``HEALTHY``; ``max_retries`` failures in a row make a
  HEALTHY route ``UNHEALTHY``; a PROVISIONING route that has not passed within
  ``initial_delay_s`` of its session running is ``UNHEALTHY`` (the delay counts from
  RUNNING, not from the create: a replica waiting for resources or an image pull is not a
  broken model, and replacing it would only queue another);
- its session failed (ERROR) or ending by itself: ``UNHEALTHY`` first (a failure the
  endpoint's memory counts), then drained;
- ``UNHEALTHY``: drained at once (``TERMINATING``, its session destroyed with reason
  ``service-scaled-down``: see :data:`UNHEALTHY`); it no longer counts as a replica, so a
  replacement starts;
- drained (scale down, ``service rm``: :func:`~actors.domain.endpoints.routes_to_drain`,
  unhealthy ones then the newest first): ``TERMINATING``, its session destroyed with reason
  ``service-scaled-down``;
- its session ended (terminated, cancelled; or ERROR, which is destroyed first): the route
  is removed; one that was serving (its container killed, its session destroyed by
  someone else) is replaced, since it no longer counts;
- its session terminating on its own: the route turns ``TERMINATING`` (no traffic to it).

Then as many routes are added as :func:`~actors.domain.endpoints.replicas_to_start` says,
and an endpoint being destroyed whose last route is gone is destroyed.

A tenant controls everything that makes a replica fail, so replacements are held back
(review S1): the endpoint's failures in a row are folded from its log
(:func:`~actors.domain.endpoints.replacement_hold`), each replacement waits a doubling
backoff past the last failure, and after ``max_failures`` none is started until the owner
scales or asks ``sync`` (which appends a scale to the same count: the log forgets the
failures). The report says which. The wait is counted in the log's time (wall clock here,
Redis time in the fold), so a restart keeps it.

Each replica is judged again before it is created, as the gateway judged the endpoint
(an endpoint outlives its owner's rights, review S4): the owner's keypair, user and
domain active, still a member of the endpoint's project, the scaling group still theirs
and accepting inference sessions, the image still known, the model folder still theirs,
isolation, and the keypair's open-session cap (review S3: replicas are sessions like any).

Probes cost (review S18): a route is probed at most every :data:`MIN_PROBE_INTERVAL_S`
whatever its definition says, the model service is (re)started at most every
:data:`START_SERVICE_EVERY_S` per route, and at most :data:`MAX_PROBES_IN_FLIGHT` probes
run at once in the actor.

An endpoint without a model service (no definition: the gateway refuses to create one, so
this is only defence) starts no replicas: nothing in them could ever pass a probe, and
each would be a session the owner pays for. Its report says why.

Restart-safe: the routes and their statuses are the log's; what is only in memory (probe
history, failures in a row, when a session was first seen RUNNING) starts afresh, so a
restarted reconciler gives a PROVISIONING replica a fresh ``initial_delay_s`` and a
HEALTHY one a fresh run of ``max_retries``. Every command it sends has an id derived from
the log (the route, and the endpoint's version for a status change), so one sent twice
across a restart has one effect.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from actors.agents.kernel_sockets import KernelSocket
from actors.domain.commands.endpoints import EndpointCommand
from actors.domain.endpoints import (
    BACKOFF_BASE_S,
    MAX_FAILURES,
    Endpoint,
    Hold,
    Route,
    ready_to_destroy,
    replacement_hold,
    replicas_to_start,
    routes_to_drain,
)
from actors.domain.errors import DomainError, EndpointNotFound
from actors.domain.session import SessionType
from actors.domain.session_aggregate import SessionAggregate
from actors.domain.statuses import DEAD_SESSION_STATUSES, SessionStatus
from actors.domain.vfolders import permission_of
from actors.gateway.context import LIVE
from actors.gateway.folders_access import folder_state
from actors.gateway.scaling import role_of_image, scaling_group_for
from actors.gateway.scope import creation_refusal
from actors.gateway.sessions import open_session_cap
from actors.runtime.outage import Outages
from actors.sessions.isolation import check_create
from actors.sessions.shard import catch_up, load_session
from events import AnyPayload, RedisEventStore
from events.catalogue import (
    EndpointDestroyed,
    EndpointRouteAdded,
    EndpointRouteRemoved,
    EndpointRouteStatusChanged,
    EndpointScaled,
)
from events.catalogue.endpoint import ModelService, RouteStatus
from events.catalogue.reasons import KernelLifecycleEventReason
from events.server import log_unreachable
from projections.queries import ReadModels
from projections.tenancy_queries import TenancyLookups
from projections.vfolder_queries import VFolderLookups

from .probe import Probe, probe_health, tunnel_target
from .replicas import (
    REPLICA_TRAFFIC_RATIO,
    create_replica,
    destroy_replica,
    next_route_id,
    session_of_route,
    start_model_service,
)
from .writer import EndpointService

__all__ = ["DRAINED", "UNHEALTHY", "Reconciler"]

log = structlog.get_logger(__name__)

DRAINED = UNHEALTHY = KernelLifecycleEventReason.SERVICE_SCALED_DOWN.value
"""The reason a replica's session ends with, drained (scale down, ``service rm``) or
unhealthy (replaced): upstream's one reason for it (a kernel's end is told with a
``KernelLifecycleEventReason``, so no other word fits there); the endpoint's stream says
which (``UNHEALTHY`` before ``TERMINATING``), and ``kh why`` tells it."""
PROBES_KEPT = 10
"""The last probes of each route kept for the report."""
MAX_PROBE_TIMEOUT_S = 10.0
CREATE_BACKOFF_MAX_S = 60.0
MIN_PROBE_INTERVAL_S = 0.5
"""The least time between two probes of one route, whatever the definition asks (0.2 s
passes the event's bound; each probe is an agent call, a tunnel and a connect)."""
START_SERVICE_EVERY_S = 5.0
"""The least time between two ``start_service`` calls for one route (after a failed probe
the service is started again in case it died; not before every probe)."""
MAX_PROBES_IN_FLIGHT = 64
"""Probes running at once in the actor (every tenant's routes share it)."""
_CHANGE: dict[RouteStatus, str] = {
    "PROVISIONING": "provisioning",
    "HEALTHY": "healthy",
    "UNHEALTHY": "unhealthy",
    "TERMINATING": "drained",
}
"""A route's new status as the change counted (``kernelhub_endpoint_routes_total``)."""
_ENDED = frozenset({SessionStatus.TERMINATED, SessionStatus.CANCELLED})
_SERVING = frozenset({SessionStatus.RUNNING, SessionStatus.RUNNING_DEGRADED})


@dataclass
class _Watch:
    """What the reconciler knows of one route beyond the log (lost on restart)."""

    running_since: float | None = None
    """When its session was first seen RUNNING (monotonic)."""
    service_started: bool = False
    service_starts: int = 0
    """``start_service`` calls made for it (the report shows them)."""
    failures: int = 0
    """Probes failed in a row."""
    probes: deque[Probe] = field(default_factory=lambda: deque(maxlen=PROBES_KEPT))
    next_probe_at: float = 0.0
    probing: asyncio.Task[Probe] | None = None
    target: KernelSocket | None = None
    create_error: str | None = None
    create_attempts: int = 0
    next_create_at: float = 0.0
    service_error: str | None = None
    next_start_at: float = 0.0
    """When ``start_service`` may be called again (monotonic)."""
    created: bool = False
    """Its session was created by this reconciler (the read model may not show it yet)."""


def _wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class _Owner:
    """The endpoint's owner as the tenancy rules read a caller
    (:class:`~actors.gateway.scope.Viewer`): a replica is created with their rights."""

    access_key: str
    domain: str
    is_superadmin: bool
    may_act_for_others: bool


class Reconciler:
    def __init__(
        self,
        writer: EndpointService,
        router: Any,
        store: RedisEventStore,
        *,
        vfolder_root: Path | None,
        tick_s: float = 1.0,
        on_change: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
        backoff_s: float = BACKOFF_BASE_S,
        max_failures: int = MAX_FAILURES,
    ) -> None:
        self.writer = writer
        self.router = router
        """The session router (:class:`~actors.sessions.routing.ShardRouter`)."""
        self.store = store
        self.vfolder_root = vfolder_root
        self.tick_s = tick_s
        self.on_change = on_change
        """Told ``(endpoint id, change)`` of every route change (the actor's metrics)."""
        self.clock = clock
        self.wall_ms = wall_ms
        """The log's time now (ms): replacement backoffs are counted in it."""
        self.backoff_s = backoff_s
        self.max_failures = max_failures
        self._probes = asyncio.Semaphore(MAX_PROBES_IN_FLIGHT)
        self.lookups = TenancyLookups(store)
        self.folders = VFolderLookups(store)
        self.models = ReadModels(store)
        self.watches: dict[uuid.UUID, _Watch] = {}
        self.counts: dict[uuid.UUID, dict[str, int]] = {}
        self._sessions: dict[uuid.UUID, SessionAggregate | None] = {}
        self._owed: dict[uuid.UUID, int] = {}
        """Endpoint -> replicas lost or unhealthy not yet replaced (for ``replaced``)."""
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    # ---- driving ----------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def session_changed(self, session_id: uuid.UUID) -> None:
        """An event of ``session_id``'s stream was appended: look now if it is a replica's."""
        if session_id in self.writer.state.session_route:
            self.wake()

    async def run(self) -> None:
        """Passes for ever: on a wake, and every ``tick_s`` (probes fall due)."""
        outages = Outages("reconcile pass")
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.reconcile_all()
            except Exception as exc:  # one bad pass must not end the loop
                await asyncio.sleep(outages.failed(exc))
            else:
                outages.succeeded()

    async def reconcile_all(self) -> None:
        async with self._lock:
            for endpoint in list(self.writer.state.live()):
                try:
                    await self._reconcile(endpoint.endpoint_id)
                except Exception as exc:
                    if log_unreachable(exc):
                        raise  # every endpoint would fail the same way: the pass waits
                    log.exception("reconciling an endpoint failed", endpoint=str(endpoint))

    async def sync(self, endpoint_id: uuid.UUID) -> None:
        """Probe every route of the endpoint now, and reconcile it with what they say."""
        endpoint = self.writer.state.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.status == "destroyed":
            raise EndpointNotFound()
        for route_id in endpoint.routes:
            self._watch(route_id).next_probe_at = 0.0
        if endpoint.status == "live" and endpoint.failures:
            # the owner asks again: a scale to the same count makes the log forget the
            # failures, so replacements start afresh (and stay so after a restart)
            await self._append(
                EndpointScaled(
                    endpoint_id=endpoint_id,
                    desired_session_count=endpoint.desired_session_count,
                ),
                uuid.uuid5(endpoint_id, f"sync@{endpoint.version}"),
            )
        async with self._lock:
            await self._reconcile(endpoint_id)
        probing = [
            w.probing
            for rid in list(endpoint.routes)
            if (w := self.watches.get(rid)) is not None and w.probing is not None
        ]
        if probing:
            await asyncio.wait(probing, timeout=MAX_PROBE_TIMEOUT_S + 1)
        async with self._lock:
            await self._reconcile(endpoint_id)

    def report(self, endpoint_id: uuid.UUID) -> dict[str, Any]:
        """The reconciler's view of an endpoint: each route's status, session and last probes,
        and how many routes changed how."""
        endpoint = self.writer.state.endpoints.get(endpoint_id)
        if endpoint is None:
            raise EndpointNotFound()
        routes = {}
        for route in endpoint.routes.values():
            watch = self.watches.get(route.route_id) or _Watch()
            session = self._sessions.get(route.session_id)
            routes[str(route.route_id)] = {
                "status": route.status,
                "session_id": str(route.session_id),
                "session_status": session.status.name if session is not None else None,
                "failures_in_a_row": watch.failures,
                "service_started": watch.service_started,
                "service_starts": watch.service_starts,
                "service_error": watch.service_error,
                "create_error": watch.create_error,
                "probes": [p.to_json() for p in watch.probes],
            }
        report: dict[str, Any] = {
            "endpoint_id": str(endpoint_id),
            "status": endpoint.status,
            "desired_session_count": endpoint.desired_session_count,
            "routes": routes,
            "changes": dict(self.counts.get(endpoint_id, {})),
            "failures_in_a_row": endpoint.failures,
        }
        hold = self._hold(endpoint)
        if hold is not None:
            report["replacements"] = {
                "held": True,
                "stopped": hold.stopped,
                "until": None if hold.until_ms is None else hold.until_ms / 1000,
                "reason": hold.reason(),
            }
            report["note"] = hold.reason()
        if endpoint.spec.service is None:
            report["note"] = (
                "the endpoint has no model service (no model definition): no replica is started"
            )
        return report

    # ---- one endpoint -----------------------------------------------------------------------
    async def _reconcile(self, endpoint_id: uuid.UUID) -> None:
        state = self.writer.state
        endpoint = state.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.status == "destroyed":
            return
        for route in list(endpoint.routes.values()):
            await self._route(endpoint, route)
        for route_id in routes_to_drain(state, endpoint_id):
            await self._drain(endpoint, route_id, DRAINED)
        if endpoint.spec.service is not None:
            wanted = replicas_to_start(
                state,
                endpoint_id,
                now_ms=self.wall_ms(),
                base_s=self.backoff_s,
                max_failures=self.max_failures,
            )
            for _ in range(wanted):
                if not await self._add_route(endpoint):
                    break
        if ready_to_destroy(state, endpoint_id):
            await self._append(
                EndpointDestroyed(endpoint_id=endpoint_id), uuid.uuid5(endpoint_id, "destroyed")
            )
            for route_id in endpoint.removed_routes:
                self.watches.pop(route_id, None)

    async def _route(self, endpoint: Endpoint, route: Route) -> None:
        watch = self._watch(route.route_id)
        session = await self._session(route.session_id)
        if session is None:
            if route.status == "TERMINATING":  # drained before its session was created
                await self._remove(endpoint, route, "removed")
            else:
                await self._create(endpoint, route, watch)
            return
        status = session.status
        if status in _ENDED:
            drained = route.status == "TERMINATING"
            await self._remove(endpoint, route, "removed" if drained else "lost")
            return
        if route.status == "TERMINATING":
            if status is not SessionStatus.TERMINATING:
                await self._destroy(route, DRAINED, forced=status is SessionStatus.ERROR)
            return
        if status is SessionStatus.ERROR:  # a failure: counted (UNHEALTHY), then drained
            await self._set_status(endpoint, route, "UNHEALTHY")
            await self._drain(endpoint, route.route_id, UNHEALTHY)
            return
        if status is SessionStatus.TERMINATING:  # ending by itself: a failure, then no traffic
            await self._set_status(endpoint, route, "UNHEALTHY")
            await self._set_status(endpoint, route, "TERMINATING")
            return
        service = endpoint.spec.service
        if status not in _SERVING or service is None:
            return  # still being scheduled or started (or nothing to serve)
        now = self.clock()
        if watch.running_since is None:
            watch.running_since = now
        if watch.probing is not None and watch.probing.done():
            await self._judge(endpoint, route, watch, service, watch.probing.result())
            watch.probing = None
            if route.status in ("UNHEALTHY", "TERMINATING"):
                return
        if (
            route.status == "PROVISIONING"
            and now - watch.running_since > service.initial_delay_s
            and watch.probing is None
        ):
            await self._set_status(endpoint, route, "UNHEALTHY")
            await self._drain(endpoint, route.route_id, UNHEALTHY)
            return
        if watch.probing is None and now >= watch.next_probe_at:
            watch.next_probe_at = now + max(MIN_PROBE_INTERVAL_S, service.health_check_interval_s)
            watch.probing = asyncio.create_task(self._probe(endpoint, route, watch, service))
            watch.probing.add_done_callback(lambda _: self.wake())

    async def _judge(
        self, endpoint: Endpoint, route: Route, watch: _Watch, service: ModelService, probe: Probe
    ) -> None:
        watch.probes.append(probe)
        if probe.ok:
            watch.failures = 0
            await self._set_status(endpoint, route, "HEALTHY")
            return
        watch.failures += 1
        if route.status == "HEALTHY" and watch.failures >= service.max_retries:
            await self._set_status(endpoint, route, "UNHEALTHY")
        if route.status == "UNHEALTHY":
            await self._drain(endpoint, route.route_id, UNHEALTHY)

    async def _probe(
        self, endpoint: Endpoint, route: Route, watch: _Watch, service: ModelService
    ) -> Probe:
        """Start the model service if it may not run, then probe it (never raises); at most
        :data:`MAX_PROBES_IN_FLIGHT` at once."""
        async with self._probes:
            return await self._probe_now(endpoint, route, watch, service)

    async def _probe_now(
        self, endpoint: Endpoint, route: Route, watch: _Watch, service: ModelService
    ) -> Probe:
        timeout_s = min(MAX_PROBE_TIMEOUT_S, max(2.0, service.health_check_interval_s))
        try:
            now = self.clock()
            if (not watch.service_started or watch.failures) and now >= watch.next_start_at:
                watch.next_start_at = now + START_SERVICE_EVERY_S
                watch.service_starts += 1
                result = await self.router.execution.call(
                    route.session_id, "start_service", *start_model_service(endpoint.spec, service)
                )
                if (result or {}).get("status") == "failed":
                    watch.service_error = str(result.get("error"))[:512]
                    return Probe(at=time.time(), ok=False, error="the model service did not start")
                watch.service_started, watch.service_error = True, None
            if watch.target is None:
                watch.target = await tunnel_target(self.router, route.session_id)
        except DomainError as exc:
            watch.target = None
            return Probe(at=time.time(), ok=False, error=(exc.msg or str(exc))[:512])
        except Exception as exc:  # the agent away, restarting: a failed probe, not a crash
            watch.target = None
            return Probe(at=time.time(), ok=False, error=repr(exc)[:512])
        probe = await probe_health(watch.target, service.port, service.health_check_path, timeout_s)
        if not probe.ok and probe.status is None:
            watch.target = None  # ask the agent again next time (the kernel may have moved)
        return probe

    # ---- commands ---------------------------------------------------------------------------
    async def _append(self, event: AnyPayload, command_id: uuid.UUID) -> bool:
        try:
            await self.writer.handle(EndpointCommand(event=event, command_id=command_id))
        except DomainError as exc:
            log.warning("endpoint change refused", event=event.type, why=exc.msg or str(exc))
            return False
        return True

    def _owe_replacement(self, endpoint: Endpoint) -> None:
        """A serving replica was lost or turned unhealthy: the next route started for the
        endpoint replaces it (counted ``replaced`` as well as ``started``)."""
        if endpoint.status == "live":
            self._owed[endpoint.endpoint_id] = self._owed.get(endpoint.endpoint_id, 0) + 1

    def _changed(self, endpoint: Endpoint, change: str) -> None:
        counts = self.counts.setdefault(endpoint.endpoint_id, {})
        counts[change] = counts.get(change, 0) + 1
        if self.on_change is not None:
            self.on_change(str(endpoint.endpoint_id), change)

    async def _set_status(self, endpoint: Endpoint, route: Route, status: RouteStatus) -> None:
        if route.status == status:
            return
        event = EndpointRouteStatusChanged(
            endpoint_id=endpoint.endpoint_id, route_id=route.route_id, status=status
        )
        command_id = uuid.uuid5(route.route_id, f"{status}@{endpoint.version}")
        if await self._append(event, command_id):
            self._changed(endpoint, _CHANGE[status])
            if status == "UNHEALTHY":
                self._owe_replacement(endpoint)

    async def _drain(self, endpoint: Endpoint, route_id: uuid.UUID, reason: str) -> None:
        route = endpoint.routes.get(route_id)
        if route is None:
            return
        await self._set_status(endpoint, route, "TERMINATING")
        session = await self._session(route.session_id)
        if session is not None and session.status not in _ENDED:
            await self._destroy(route, reason, forced=session.status is SessionStatus.ERROR)

    async def _destroy(self, route: Route, reason: str, *, forced: bool = False) -> None:
        command = destroy_replica(route.route_id, reason)
        if forced:
            command = command.model_copy(update={"forced": True})
        try:
            await self.router.handle(command)
        except DomainError as exc:
            log.warning("replica not destroyed", route=str(route.route_id), why=str(exc))
        self._sessions.pop(route.session_id, None)

    async def _remove(self, endpoint: Endpoint, route: Route, change: str) -> None:
        event = EndpointRouteRemoved(endpoint_id=endpoint.endpoint_id, route_id=route.route_id)
        if await self._append(event, uuid.uuid5(route.route_id, "removed")):
            self._changed(endpoint, change)
            if change == "lost":
                self._owe_replacement(endpoint)
            self._sessions.pop(route.session_id, None)
            watch = self.watches.pop(route.route_id, None)
            if watch is not None and watch.probing is not None:
                watch.probing.cancel()

    async def _add_route(self, endpoint: Endpoint) -> bool:
        route_id = next_route_id(endpoint)
        event = EndpointRouteAdded(
            endpoint_id=endpoint.endpoint_id,
            route_id=route_id,
            session_id=session_of_route(route_id),
            traffic_ratio=REPLICA_TRAFFIC_RATIO,
        )
        if not await self._append(event, uuid.uuid5(route_id, "added")):
            return False
        self._changed(endpoint, "started")
        owed = self._owed.get(endpoint.endpoint_id, 0)
        if owed:
            self._owed[endpoint.endpoint_id] = owed - 1
            self._changed(endpoint, "replaced")
        route = endpoint.routes.get(route_id)
        if route is not None:
            await self._create(endpoint, route, self._watch(route_id))
        return True

    async def _create(self, endpoint: Endpoint, route: Route, watch: _Watch) -> None:
        """Create the route's session, or keep why it cannot be and try again later."""
        now = self.clock()
        if now < watch.next_create_at:
            return
        try:
            command = await self._creation(endpoint, route)
            await self.router.handle(command)
        except DomainError as exc:
            watch.create_attempts += 1
            watch.create_error = (exc.msg or str(exc))[:512]
            watch.next_create_at = now + min(CREATE_BACKOFF_MAX_S, 2.0**watch.create_attempts)
            log.warning("replica not created", route=str(route.route_id), why=watch.create_error)
            return
        watch.create_error, watch.create_attempts, watch.created = None, 0, True
        self._sessions.pop(route.session_id, None)

    def _hold(self, endpoint: Endpoint) -> Hold | None:
        return replacement_hold(
            endpoint, self.wall_ms(), base_s=self.backoff_s, max_failures=self.max_failures
        )

    async def _creation(self, endpoint: Endpoint, route: Route) -> Any:
        """The route's session creation, once its owner may still run it: their keypair,
        user and domain active, still a member of the endpoint's project, the scaling group
        still theirs and taking inference sessions, the image still known, the model
        folder still there, ready, and theirs to read, the scaling group isolating them,
        and their keypair below its open-session cap (the gateway checked all this at
        create; an endpoint lives on, so each replica is judged again)."""
        spec = endpoint.spec
        keypair = await self.lookups.keypair(spec.access_key)
        user = await self.lookups.user(str(spec.owner))
        if keypair is None or not keypair.get("is_active", True) or user is None:
            raise _Refused("the endpoint's owner keypair is gone or inactive")
        if user.get("status", "active") != "active":
            raise _Refused("the endpoint's owner is not active")
        domain = await self.lookups.domain(spec.domain)
        if domain is not None and not domain.get("is_active", True):
            raise _Refused("the endpoint's domain is not active")
        role = str(user.get("role", "user"))
        owner = _Owner(
            access_key=spec.access_key,
            domain=str(user.get("domain", spec.domain)),
            is_superadmin=role == "superadmin",
            may_act_for_others=role in ("superadmin", "admin") or bool(keypair.get("is_admin")),
        )
        project = await self.lookups.project(str(spec.project_id))
        refusal = creation_refusal(owner, str(spec.owner), owner.domain, spec.domain, project)
        if refusal is not None:
            raise _Refused(f"the endpoint's owner may no longer create in its project: {refusal}")
        image = await self.lookups.image(spec.image)
        if image is None:
            raise _Refused(f"the endpoint's image {spec.image!r} is no longer known")
        try:
            await scaling_group_for(
                self.lookups,
                session_type=SessionType.INFERENCE,
                requested=spec.scaling_group,
                domain=spec.domain,
                project_id=str(spec.project_id),
                access_key=spec.access_key,
                image_role=role_of_image(image),
            )
        except DomainError as exc:
            raise _Refused(
                f"the scaling group {spec.scaling_group!r} no longer takes the owner's "
                f"inference sessions: {exc.msg or exc}"
            ) from None
        cap = open_session_cap()
        held = await self._open_sessions(spec.access_key)
        if held >= cap:
            raise _Refused(
                f"the owner's keypair already has {held} open sessions, the cap of {cap}"
            )
        record = await self.folders.folder(str(spec.model))
        if record is None or record.get("status", "ready") != "ready":
            raise _Refused("the model folder is gone or in the trash")
        projects = [
            uuid.UUID(str(p["project_id"])) for p in await self.lookups.projects_of(str(spec.owner))
        ]
        permission = permission_of(
            folder_state(record),
            spec.owner,
            role=role,
            domain=str(user.get("domain", spec.domain)),
            project_ids=projects,
        )
        if permission is None:
            raise _Refused("the endpoint's owner may no longer read the model folder")
        if self.vfolder_root is None:
            raise _Refused("this installation serves no folders")
        policy = await self.lookups.policy(str(keypair.get("resource_policy") or "default")) or {}
        await check_create(
            self.store,
            self.models,
            self.lookups,
            access_key=spec.access_key,
            scaling_group=spec.scaling_group,
        )
        return create_replica(
            endpoint,
            route.route_id,
            model_name=str(record.get("name", "model")),
            model_path=self.vfolder_root / spec.model.hex,
            model_usage_mode=str(record.get("usage_mode") or "model"),
            max_containers_per_session=int(policy.get("max_containers_per_session") or 0),
        )

    async def _open_sessions(self, access_key: str) -> int:
        """The keypair's open sessions, as the gateway's cap counts them (the read model),
        with its replicas counted from what this reconciler knows when that is more (it
        creates several in one pass, faster than the read model shows them; an inference
        session is only ever a replica)."""
        page = await self.models.sessions(owner=access_key, statuses=LIVE, limit=1)
        projected = await self.models.sessions(
            owner=access_key, statuses=LIVE, session_type=SessionType.INFERENCE.value, limit=1
        )
        known = 0
        for endpoint in self.writer.state.live():
            if endpoint.spec.access_key != access_key:
                continue
            for route in endpoint.routes.values():
                session = self._sessions.get(route.session_id)
                if session is not None:
                    known += session.status not in DEAD_SESSION_STATUSES
                elif (watch := self.watches.get(route.route_id)) is not None and watch.created:
                    known += 1
        return page.total - projected.total + max(projected.total, known)

    # ---- memory -----------------------------------------------------------------------------
    def _watch(self, route_id: uuid.UUID) -> _Watch:
        watch = self.watches.get(route_id)
        if watch is None:
            watch = self.watches[route_id] = _Watch()
        return watch

    async def _session(self, session_id: uuid.UUID) -> SessionAggregate | None:
        """The session as its stream says now (``None``: not created): kept folded, and
        caught up with what its stream gained since (one short read)."""
        cached = self._sessions.get(session_id)
        session = await (
            catch_up(self.store, cached)
            if cached is not None
            else load_session(self.store, session_id)
        )
        self._sessions[session_id] = session if session.version else None
        return self._sessions[session_id]


class _Refused(DomainError):
    """Why a replica is not created now (kept for the report, retried later)."""
