"""What the actors report to the Ray dashboard (``ray.util.metrics``, exported through the
head's Prometheus endpoint), with a local copy each actor can return for inspection.

============================================  =========  ===================================
metric                                        kind       tags / meaning
============================================  =========  ===================================
``kernelhub_session_commands_total``          counter    command: create, destroy, report, ...
``kernelhub_session_events_total``            counter    type: events the shard appended
``kernelhub_scheduling_decisions_total``      counter    scaling_group: sessions scheduled
``kernelhub_scheduling_passes_total``         counter    scaling_group: passes run (coalescing)
``kernelhub_scheduling_pass_seconds``         histogram  scaling_group: one pass, wall time
``kernelhub_pending_sessions``                gauge      scaling_group: queue seen by a pass
``kernelhub_kernels_started_total``           counter    agent
``kernelhub_kernels_terminated_total``        counter    agent
``kernelhub_projection_lag_ms``               gauge      projection: commit time - event time
``kernelhub_sessions``                        gauge      status: sessions in each status
``kernelhub_sessions_by_type``                gauge      type: interactive, batch, inference
``kernelhub_pending_oldest_seconds``          gauge      how long the oldest PENDING one waits
``kernelhub_slots``                           gauge      scaling_group, slot, state: occupied
                                                         or available, over alive agents
``kernelhub_redis_used_memory_bytes``         gauge      the log's Redis (INFO used_memory)
``kernelhub_idle_reclaims_total``             counter    reason: idle-timeout, ... (reaper)
``kernelhub_callbacks_total``                 counter    outcome: delivered, failed (an attempt
                                                         retried), dropped (callbacks actor)
``kernelhub_gateway_requests_total``          counter    route (pattern), method, status
``kernelhub_gateway_request_seconds``         histogram  route: time to the answer's headers
``kernelhub_serving_requests_total``          counter    endpoint, status (inference proxy)
``kernelhub_serving_request_seconds``         histogram  endpoint: time to the replica's headers
``kernelhub_serving_errors_total``            counter    endpoint, reason: no-replica, connect,
                                                         timeout, bad-answer, too-large
``kernelhub_endpoint_routes_total``           counter    endpoint, change: started, healthy,
                                                         unhealthy, drained, removed, lost,
                                                         replaced (serving actor)
============================================  =========  ===================================

docs/metrics.md says the same for operators (a unit test keeps the two in step).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DOCUMENTED", "ActorMetrics"]

_COUNTER, _GAUGE, _HISTOGRAM = "counter", "gauge", "histogram"
_DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "kernelhub_session_commands_total": (
        _COUNTER,
        "commands handled by a session shard",
        ("command",),
    ),
    "kernelhub_session_events_total": (_COUNTER, "events a session shard appended", ("type",)),
    "kernelhub_scheduling_decisions_total": (_COUNTER, "sessions scheduled", ("scaling_group",)),
    "kernelhub_scheduling_passes_total": (_COUNTER, "scheduling passes run", ("scaling_group",)),
    "kernelhub_scheduling_pass_seconds": (
        _HISTOGRAM,
        "wall time of a scheduling pass",
        ("scaling_group",),
    ),
    "kernelhub_pending_sessions": (
        _GAUGE,
        "pending sessions seen by the last pass",
        ("scaling_group",),
    ),
    "kernelhub_kernels_started_total": (_COUNTER, "kernels an agent started", ("agent",)),
    "kernelhub_kernels_terminated_total": (_COUNTER, "kernels an agent stopped", ("agent",)),
    "kernelhub_projection_lag_ms": (
        _GAUGE,
        "commit time minus the newest event's time",
        ("projection",),
    ),
    "kernelhub_sessions": (_GAUGE, "sessions by status (read model)", ("status",)),
    "kernelhub_sessions_by_type": (_GAUGE, "sessions by type (read model)", ("type",)),
    "kernelhub_pending_oldest_seconds": (
        _GAUGE,
        "seconds the oldest pending session has waited",
        (),
    ),
    "kernelhub_slots": (
        _GAUGE,
        "resource slots of alive agents",
        ("scaling_group", "slot", "state"),
    ),
    "kernelhub_redis_used_memory_bytes": (_GAUGE, "memory used by the log's Redis", ()),
    "kernelhub_idle_reclaims_total": (_COUNTER, "sessions the reaper reclaimed", ("reason",)),
    "kernelhub_callbacks_total": (_COUNTER, "session callbacks by outcome", ("outcome",)),
    "kernelhub_gateway_requests_total": (
        _COUNTER,
        "API requests answered",
        ("route", "method", "status"),
    ),
    "kernelhub_gateway_request_seconds": (_HISTOGRAM, "API answer time", ("route",)),
    "kernelhub_serving_requests_total": (
        _COUNTER,
        "requests through the inference proxy",
        ("endpoint", "status"),
    ),
    "kernelhub_serving_request_seconds": (
        _HISTOGRAM,
        "inference proxy: time to the replica's answer headers",
        ("endpoint",),
    ),
    "kernelhub_serving_errors_total": (
        _COUNTER,
        "inference proxy failures by reason",
        ("endpoint", "reason"),
    ),
    "kernelhub_endpoint_routes_total": (
        _COUNTER,
        "replica routes of inference endpoints by change",
        ("endpoint", "change"),
    ),
}
DOCUMENTED = tuple(_DEFINITIONS)
"""Every metric kernelhub registers (docs/metrics.md documents each)."""


class ActorMetrics:
    """The metrics one actor uses, created lazily (inside the actor's process)."""

    def __init__(self, *names: str) -> None:
        from ray.util import metrics

        self._metrics: dict[str, Any] = {}
        for name in names:
            kind, description, tags = _DEFINITIONS[name]
            if kind == _COUNTER:
                self._metrics[name] = metrics.Counter(name, description, tag_keys=tags)
            elif kind == _GAUGE:
                self._metrics[name] = metrics.Gauge(name, description, tag_keys=tags)
            else:
                self._metrics[name] = metrics.Histogram(
                    name, description, boundaries=[0.001, 0.01, 0.05, 0.1, 0.5, 1, 5], tag_keys=tags
                )
        self.local: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def inc(self, name: str, value: float = 1, **tags: str) -> None:
        self._metrics[name].inc(value, tags=tags)
        key = _key(name, tags)
        self.local[key] = self.local.get(key, 0) + value

    def set(self, name: str, value: float, **tags: str) -> None:
        self._metrics[name].set(value, tags=tags)
        self.last[_key(name, tags)] = value

    def observe(self, name: str, value: float, **tags: str) -> None:
        self._metrics[name].observe(value, tags=tags)
        self.last[_key(name, tags)] = value

    def snapshot(self) -> dict[str, float]:
        return {**self.last, **self.local}


def _key(name: str, tags: dict[str, str]) -> str:
    return name + "".join(f"{{{k}={v}}}" for k, v in sorted(tags.items()))
