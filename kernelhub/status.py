"""``kh status``: the cluster at a glance, from the read models, telemetry and Ray's state API.

- The embedded stack's own health first: when only part of it runs (Redis dead or restarting
  while Ray runs, or the reverse), it says exactly which part, and nothing else (exit 4).

- The log: events, head, durability, Redis memory.
- The projections: state and lag.
- The agents: status, slots used of offered, accelerators with their live utilization.
- The sessions: counted by status.
- Ray: kernelhub's actors with their state and restarts, read from the dashboard's state
  API. The token comes from ``~/.ray/auth_token``, as every driver reads it. Without a
  reachable dashboard this part says why, and the rest still answers.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from actors.domain.sizes import format_size
from actors.domain.statuses import SessionStatus
from events import RedisEventStore
from projections.queries import ReadModels

from . import embedded
from .projections_cli import projection_rows

if TYPE_CHECKING:
    from .config import Settings
    from .embedded import EmbeddedState, StackHealth

__all__ = [
    "cluster_summary",
    "degraded_report",
    "kernelhub_actors",
    "own_health",
    "own_stack",
    "render",
    "render_degraded",
    "same_redis",
]


def same_redis(a: str, b: str) -> bool:
    """Whether two Redis URLs name the same server and database: ``redis://h:p`` is
    ``redis://h:p/0``, ``localhost`` is ``127.0.0.1``, a trailing slash changes nothing."""

    def key(url: str) -> tuple[str, str, int | None, str]:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        host = "127.0.0.1" if host in ("localhost", "::1") else host
        path = parts.path.rstrip("/") if parts.scheme == "unix" else parts.path.strip("/") or "0"
        db = dict(parse_qsl(parts.query)).get("db", "") if parts.scheme == "unix" else ""
        return (parts.scheme.lower(), host, parts.port, path + db)

    try:
        return key(a) == key(b)
    except ValueError:  # a port that is not a number: not ours
        return False


def own_stack(settings: Settings) -> EmbeddedState | None:
    """The embedded stack ``kh up`` runs from this data dir, when ``KH_REDIS_URL`` is unset
    or names that stack's own Redis (the ``export KH_REDIS_URL=...`` line ``kh up``
    printed): its Ray address, dashboard and metrics are then ours to show. A
    ``KH_REDIS_URL`` naming another Redis is an external stack: None."""
    health = own_health(settings)
    return health.state if health is not None else None


def own_health(settings: Settings) -> StackHealth | None:
    """The health of the embedded stack of this data dir when it is ours to show (as
    :func:`own_stack`), and some of it runs; None otherwise (a stale record is dropped)."""
    health = embedded.inspect(settings)
    if health.verdict == "stopped":
        embedded.read_state(settings)
        return None
    state, url = health.state, settings.redis_url
    if url and (state is None or not same_redis(url, state.redis_url)):
        return None
    return health


def degraded_report(health: StackHealth) -> dict[str, Any]:
    """``kh status --json`` of a half-alive stack: the same as the text, as fields."""
    state = health.state
    return {
        "running": False,
        "degraded": True,
        "summary": health.summary(),
        "data_dir": health.data_dir,
        "redis_url": state.redis_url if state else None,
        "ray_address": state.ray_address if state else None,
        **health.to_json(),
    }


def render_degraded(health: StackHealth) -> list[str]:
    redis = health.log_server
    lines = [health.summary()]
    if redis.supervisor_pid or redis.restarts:
        supervisor = f"pid {redis.supervisor_pid}" if redis.supervisor_pid else "gone"
        last = f" (last: {redis.supervisor.why})" if redis.supervisor and redis.restarts else ""
        lines.append(f"  redis supervisor {supervisor}, {redis.restarts} restarts{last}")
    lines.append("Repair it: kh up    Stop all of it: kh down")
    return lines


async def cluster_summary(store: RedisEventStore) -> dict[str, Any]:
    models = ReadModels(store)
    agents = []
    for record in await models.agents():
        raw = await store.telemetry.agent_devices(record["id"])
        live = json.loads(raw)["devices"] if raw else {}
        agents.append(
            {
                "id": record["id"],
                "status": record["status"],
                "schedulable": record.get("schedulable", True),
                "available_slots": record["available_slots"],
                "occupied_slots": record["occupied_slots"],
                "accelerators": _accelerators(record.get("compute_plugins") or {}, live),
            }
        )
    sessions = {}
    for status in SessionStatus:
        count = (await models.sessions(statuses=[status.name], limit=1)).total
        if count:
            sessions[status.name] = count
    return {
        "agents": agents,
        "sessions": sessions,
        "projections": [
            {k: r[k] for k in ("projection", "state", "lag_ms", "error")}
            for r in await projection_rows(store)
        ],
    }


def _accelerators(plugins: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """Each plugin's devices as registered, with their last sampled utilization."""
    out = {}
    for key, info in plugins.items():
        entry = {
            "plugin": info.get("plugin"),
            "devices": len(info.get("devices") or []),
            "utilization": {d: s["utilization"] for d, s in (live.get(key) or {}).items()},
        }
        if info.get("unavailable"):
            entry["unavailable"] = info["unavailable"]
        out[key] = entry
    return out


def kernelhub_actors(dashboard_url: str) -> list[dict[str, Any]] | str:
    """kernelhub's named actors from Ray's state API, or why they cannot be listed
    (``dashboard_url``: the dashboard's URL, or the cluster's GCS address)."""
    try:
        from ray.util.state import list_actors

        found = list_actors(
            address=dashboard_url, limit=10_000, detail=True, raise_on_missing_output=False
        )
    except Exception as exc:  # no dashboard, no token: the status still answers
        return f"Ray's state API at {dashboard_url} did not answer: {str(exc).splitlines()[0]}"
    rows = [
        {"name": a.name, "state": a.state, "restarts": int(getattr(a, "num_restarts", 0) or 0)}
        for a in found
        if a.name
    ]
    return sorted(rows, key=lambda row: row["name"])


def _slot(name: str, used: Any, offered: Any) -> str:
    def shown(value: Any) -> str:
        amount = Decimal(str(value or 0))
        return format_size(amount) if name == "mem" else format(amount.normalize(), "f")

    return f"{name} {shown(used)}/{shown(offered)}"


def render(report: dict[str, Any]) -> list[str]:
    lines = [
        f"kernelhub  running, data dir {report['data_dir']}",
        f"log        {report['events']} events, head {report['head']}, appendfsync "
        f"{report['appendfsync']}, Redis {report['redis_version']} ({report['used_memory_human']})",
        "projections "
        + ", ".join(
            f"{p['projection']} {p['state']}"
            + (f" lag {p['lag_ms']} ms" if p["lag_ms"] is not None else "")
            for p in report["projections"]
        ),
        f"agents     {len(report['agents'])}",
    ]
    if report.get("supervisor_pid"):
        restarts = report.get("redis_restarts") or 0
        last = (report.get("stack") or {}).get("redis", {}).get("last_restart_why")
        lines.insert(
            2,
            f"redis      pid {report.get('redis_pid')}, supervised by pid "
            f"{report['supervisor_pid']}, {restarts} restarts"
            + (f" (last: {last})" if restarts and last else ""),
        )
    for agent in report["agents"][:20]:
        offered = sorted(agent["available_slots"].items())
        slots = "  ".join(
            _slot(name, agent["occupied_slots"].get(name), amount) for name, amount in offered
        )
        drained = "" if agent["schedulable"] else " (drained)"
        lines.append(f"  {agent['id']:12} {agent['status']}{drained}  {slots}")
        for key, devices in agent["accelerators"].items():
            used = " ".join(f"{d}:{u:.0f}%" for d, u in sorted(devices["utilization"].items()))
            why = f" ({devices['unavailable']})" if devices.get("unavailable") else ""
            lines.append(
                f"    {key}: {devices['devices']} {devices['plugin']} device(s){why}"
                + (f"  utilization {used}" if used else "")
            )
    if len(report["agents"]) > 20:
        lines.append(f"  ... {len(report['agents']) - 20} more")
    sessions = ", ".join(f"{status} {count}" for status, count in report["sessions"].items())
    lines.append(f"sessions   {sessions or 'none'}")
    actors = report.get("actors")
    if isinstance(actors, str):
        lines.append(f"actors     {actors}")
    elif actors is not None:
        shown = [
            f"{a['name']} {a['state']}" + (f" ({a['restarts']} restarts)" if a["restarts"] else "")
            for a in actors[:12]
        ]
        more = f", ... {len(actors) - 12} more" if len(actors) > 12 else ""
        lines.append(f"actors     {', '.join(shown)}{more}")
    if report.get("metrics_url"):
        lines.append(f"metrics    {report['metrics_url']} (Prometheus)")
    return lines
