"""Pure rules of the infrastructure areas (scaling groups, images, agents): what the client
sends turned into what kernelhub records, and records turned into what 23.03's GraphQL
types show. No I/O, so each rule is unit-tested alone (tests/test_admin_infra_rules.py).

Why a separate module: the resolvers in :mod:`.sgroups`, :mod:`.images` and :mod:`.agents`
only read, check roles and write; every decision about a value (is this driver one kernelhub
runs, which scheduler options it honours, how an image reference splits into 23.03's
``registry``/``name``/``tag``) lives here, where a test reaches it without a stack.

Nothing the client sends is dropped silently: a value kernelhub cannot honour (another
driver than ``static``, driver options, a wsproxy, host networking, an unknown scheduler,
session type or scheduler option) is refused with a 400 naming it. ``null`` (what the
client sends for "not given") is always accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from ...domain.errors import GenericBadRequest, InvalidAPIParameters
from ...domain.scheduling.plugins import check_scheduler_config
from ...domain.session import parse_duration
from ..gql_filter import FieldSpec, moment_of
from ..scope import Viewer, creation_refusal

__all__ = [
    "AGENT_FIELDS",
    "AGENT_STATUSES",
    "INVALID_GROUP",
    "SCHEDULERS",
    "SESSION_TYPES",
    "agent_row",
    "agent_view",
    "decode_json_object",
    "image_parts",
    "image_view",
    "is_operation_image",
    "node_live_stat",
    "parse_agent_status",
    "project_refusal",
    "require_no_preset_names",
    "scaling_group_settings",
    "scaling_group_view",
]

INVALID_GROUP = "Invalid group: no such project in this domain, or you are not a member of it"
"""``GET /scaling-groups?group=``'s one answer for a project the caller may not use, whatever
the reason (unknown, inactive, another domain's, not a member): a different text for another
domain's project would tell that its id exists."""


def project_refusal(caller: Viewer, user_id: str, project: Mapping[str, Any] | None) -> str | None:
    """Why ``caller`` (the user ``user_id``) may not ask about ``project``'s scaling groups:
    :data:`INVALID_GROUP` whenever :func:`..scope.creation_refusal` refuses, or ``None``."""
    if project is None:
        return INVALID_GROUP
    domain = str(project.get("domain", caller.domain))
    refused = creation_refusal(caller, user_id, caller.domain, domain, project)
    return None if refused is None else INVALID_GROUP


def require_no_preset_names(name: str, presets: Sequence[Mapping[str, Any]]) -> None:
    """A scaling group named by a resource preset (its ``scaling_group_name``) is not deleted:
    the preset would point at a group that no longer exists. 400 naming the presets, so the
    superadmin changes or deletes them first."""
    naming = sorted(str(p.get("name")) for p in presets if p.get("scaling_group_name") == name)
    if naming:
        raise GenericBadRequest(
            f"scaling group {name!r} is named by resource preset(s) {', '.join(naming)}: "
            "change their scaling_group_name or delete them first"
        )


SCHEDULERS = ("fifo", "lifo", "drf", "mof", "fair_share")
"""The scheduler plugins kernelhub runs (:mod:`actors.domain.scheduling.plugins`)."""
SESSION_TYPES = ("interactive", "batch", "inference")
AGENT_SELECTORS = ("concentrated", "dispersed", "round-robin", "fragmentation")
AGENT_STATUSES = ("ALIVE", "LOST", "RESTARTING", "TERMINATED")
AGENT_FIELDS: Mapping[str, FieldSpec] = {
    "id": FieldSpec("str"),
    "status": FieldSpec("enum", AGENT_STATUSES),
    "status_changed": FieldSpec("time"),
    "region": FieldSpec("str"),
    "scaling_group": FieldSpec("str"),
    "architecture": FieldSpec("str"),
    "addr": FieldSpec("str"),
    "first_contact": FieldSpec("time"),
    "lost_at": FieldSpec("time"),
    "version": FieldSpec("str"),
}
"""What ``agent_list``'s ``filter`` and ``order`` may name (23.03's ``Agent`` query-filter
and order columns that kernelhub's records hold)."""
_OPTS_KEYS = frozenset({"allowed_session_types", "pending_timeout", "config", "agent_selector"})
_SETTING_FIELDS = (
    "description",
    "is_active",
    "is_public",
    "driver",
    "scheduler",
    "allowed_session_types",
    "pending_timeout",
    "scheduler_config",
    "agent_selector",
    "use_host_network",
)
"""What a scaling group's record holds of its settings (``SetScalingGroup``'s fields)."""


def _refuse(field: str, why: str) -> InvalidAPIParameters:
    return InvalidAPIParameters(f"{field}: {why}")


def decode_json_object(field: str, raw: Any) -> dict[str, Any] | None:
    """A JSONString argument as an object: ``None`` for null (or the text ``"null"``, what
    the client's ``json.dumps(None)`` sends); a 400 naming ``field`` for anything but a
    JSON object."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _refuse(field, "must be a JSON-encoded string")
    try:
        value = json.loads(raw)
    except ValueError:
        raise _refuse(field, "is not valid JSON") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _refuse(field, "must be a JSON object")
    return value


# ---- scaling groups ------------------------------------------------------------------------
def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _refuse(field, "must be true or false")
    return value


def _scheduler_opts(raw: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(raw) - _OPTS_KEYS)
    if unknown:
        raise _refuse(
            "scheduler_opts",
            f"kernelhub does not honour {', '.join(unknown)} "
            f"(it reads {', '.join(sorted(_OPTS_KEYS))})",
        )
    settings: dict[str, Any] = {}
    if raw.get("allowed_session_types") is not None:
        types = raw["allowed_session_types"]
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise _refuse("scheduler_opts.allowed_session_types", "must be a list of names")
        wrong = [t for t in types if t not in SESSION_TYPES]
        if wrong:
            raise _refuse(
                "scheduler_opts.allowed_session_types",
                f"unknown session type {', '.join(wrong)} (types: {', '.join(SESSION_TYPES)})",
            )
        settings["allowed_session_types"] = list(dict.fromkeys(types))
    if raw.get("pending_timeout") is not None:
        settings["pending_timeout"] = _seconds(raw["pending_timeout"])
    if raw.get("config") is not None:
        config = raw["config"]
        if not isinstance(config, dict):
            raise _refuse("scheduler_opts.config", "must be a JSON object")
        settings["scheduler_config"] = config
    if raw.get("agent_selector") is not None:
        if raw["agent_selector"] not in AGENT_SELECTORS:
            raise _refuse(
                "scheduler_opts.agent_selector",
                f"{raw['agent_selector']!r} is not one of {', '.join(AGENT_SELECTORS)}",
            )
        settings["agent_selector"] = raw["agent_selector"]
    return settings


def _seconds(value: Any) -> float:
    """23.03's ``TimeDuration``: seconds as a number, or a duration text (``10m``)."""
    field = "scheduler_opts.pending_timeout"
    if isinstance(value, bool):
        raise _refuse(field, "must be seconds or a duration such as 10m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value).total_seconds()
        except InvalidAPIParameters as exc:
            raise _refuse(field, exc.msg) from None
    else:
        raise _refuse(field, "must be seconds or a duration such as 10m")
    if not seconds >= 0 or seconds == float("inf"):
        raise _refuse(field, "must be a finite duration >= 0")
    return seconds


def _check_config(scheduler: str, config: Mapping[str, Any]) -> None:
    try:
        check_scheduler_config(scheduler, config)
    except ValueError as exc:
        raise _refuse("scheduler_opts.config", str(exc)) from None


def scaling_group_settings(
    props: Mapping[str, Any], current: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The settings a ``CreateScalingGroupInput`` (``current`` is None) or a
    ``ModifyScalingGroupInput`` (overlaid on ``current``, the group's record) gives:
    ``SetScalingGroup``'s fields, whole. ``scheduler_opts`` replaces the options it names
    and keeps the others (as 23.03 overwrites the column with what it is given, a key not
    given falls back to its default on create)."""
    settings: dict[str, Any] = {k: current[k] for k in _SETTING_FIELDS if current and k in current}
    for field in ("wsproxy_addr", "wsproxy_api_token"):
        if props.get(field):
            raise _refuse(field, "kernelhub has no wsproxy (apps are reached through the gateway)")
    if props.get("description") is not None:
        if not isinstance(props["description"], str):
            raise _refuse("description", "must be a string")
        settings["description"] = props["description"]
    for field in ("is_active", "is_public"):
        if props.get(field) is not None:
            settings[field] = _bool(field, props[field])
    if props.get("use_host_network") is not None:
        if _bool("use_host_network", props["use_host_network"]):
            raise _refuse(
                "use_host_network", "kernelhub's agents do not run kernels on the host network"
            )
        settings["use_host_network"] = False
    driver = props.get("driver")
    if driver is not None and driver != "static":
        raise _refuse("driver", f"{driver!r} is not a driver kernelhub runs (only static)")
    settings["driver"] = "static"
    driver_opts = decode_json_object("driver_opts", props.get("driver_opts"))
    if driver_opts:
        raise _refuse("driver_opts", "the static driver takes no options")
    scheduler = props.get("scheduler")
    if scheduler is not None:
        if scheduler not in SCHEDULERS:
            raise _refuse(
                "scheduler",
                f"{scheduler!r} is not a scheduler kernelhub runs ({', '.join(SCHEDULERS)})",
            )
        settings["scheduler"] = scheduler
    settings.setdefault("scheduler", "fifo")
    opts = decode_json_object("scheduler_opts", props.get("scheduler_opts"))
    if opts is not None:
        settings.update(_scheduler_opts(opts))
    _check_config(settings["scheduler"], settings.get("scheduler_config") or {})
    return settings


def scaling_group_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """23.03's ``ScalingGroup`` of a record: ``driver_opts`` and ``scheduler_opts`` are
    JSONStrings, and a kernelhub group has no wsproxy (``wsproxy_addr`` null)."""
    opts: dict[str, Any] = {
        "allowed_session_types": list(
            record.get("allowed_session_types") or ("interactive", "batch")
        ),
        "pending_timeout": float(record.get("pending_timeout") or 0),
        "config": dict(record.get("scheduler_config") or {}),
    }
    if record.get("agent_selector"):
        opts["agent_selector"] = record["agent_selector"]
    return {
        "name": record.get("name"),
        "description": record.get("description", ""),
        "is_active": bool(record.get("is_active", True)),
        "is_public": bool(record.get("is_public", True)),
        "created_at": record.get("created_at"),
        "wsproxy_addr": None,
        "wsproxy_api_token": None,
        "driver": record.get("driver", "static"),
        "driver_opts": json.dumps({}),
        "scheduler": record.get("scheduler", "fifo"),
        "scheduler_opts": json.dumps(opts),
        "use_host_network": bool(record.get("use_host_network", False)),
    }


# ---- images -------------------------------------------------------------------------------
def image_parts(reference: str) -> tuple[str, str, str]:
    """(registry, name, tag) of a canonical reference, as 23.03 shows them: the first path
    component is the registry when it looks like a host (a dot, a port or ``localhost``),
    else the image is ``local`` (kernelhub's images are built or pulled on the agents)."""
    path, _, tag = reference.rpartition(":")
    if not path or "/" in tag:  # no tag, or the colon was a registry's port
        path, tag = reference, "latest"
    head, _, rest = path.partition("/")
    if rest and ("." in head or ":" in head or head == "localhost"):
        return head, rest, tag
    return "local", path, tag


def is_operation_image(record: Mapping[str, Any]) -> bool:
    """23.03's ``is_operation``: the image's ``ai.backend.features`` names ``operation``."""
    labels = record.get("labels") or {}
    return "operation" in str(labels.get("ai.backend.features", "")).split()


def image_view(record: Mapping[str, Any], aliases: Sequence[str]) -> dict[str, Any]:
    """23.03's ``Image`` of a catalogue record. ``size_bytes`` is 0: registration records
    no size (the client's table formats it as a number, so it cannot be null)."""
    reference = str(record.get("name"))
    registry, name, tag = image_parts(reference)
    labels: Mapping[str, str] = record.get("labels") or {}
    prefix = "ai.backend.resource.min."
    accelerators = str(labels.get("ai.backend.accelerators", "")).split(",")
    return {
        "name": name,
        "humanized_name": name,
        "tag": tag,
        "registry": registry,
        "architecture": record.get("architecture", "x86_64"),
        "is_local": bool(record.get("is_local", True)),
        "digest": record.get("digest", ""),
        "labels": [{"key": k, "value": v} for k, v in sorted(labels.items())],
        "aliases": sorted(aliases),
        "size_bytes": 0,
        "resource_limits": [
            {"key": k[len(prefix) :], "min": v, "max": None}
            for k, v in sorted(labels.items())
            if k.startswith(prefix)
        ],
        "supported_accelerators": [a.strip() for a in accelerators if a.strip()],
        "reference": reference,
    }


# ---- agents -------------------------------------------------------------------------------
def parse_agent_status(status: str | None) -> str | None:
    """An agent status name (either case); a 400 naming the unknown one."""
    if status is None or status == "":
        return None
    name = status.strip().upper()
    if name not in AGENT_STATUSES:
        raise _refuse("status", f"unknown agent status {status!r} ({', '.join(AGENT_STATUSES)})")
    return name


def _number(value: Any) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return number if number.is_finite() else Decimal(0)


def _plain(value: Decimal) -> str:
    quantized = value.quantize(Decimal("0.01"))
    return (
        format(quantized.normalize(), "f")
        if quantized == quantized.to_integral()
        else str(quantized)
    )


def node_live_stat(
    capacity: Mapping[str, Any],
    kernel_stats: Sequence[Mapping[str, Any]],
    devices: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """An agent's ``live_stat`` (23.03's node/devices shape) from its kernels' live stats
    (:func:`projections.live_stats.metric_values` of each kernel it holds) and its
    accelerators' sampled utilization: the node's CPU as the share of its cores the kernels
    use, its memory as the kernels' resident bytes of what it offers."""
    cores = _number(capacity.get("cpu"))
    memory = _number(capacity.get("mem"))
    cpu = sum((_number((s.get("cpu_util") or {}).get("current")) for s in kernel_stats), Decimal(0))
    rss = sum((_number((s.get("mem") or {}).get("current")) for s in kernel_stats), Decimal(0))
    cpu_pct = cpu / cores if cores else Decimal(0)
    mem_pct = rss * 100 / memory if memory else Decimal(0)
    node = {
        "cpu_util": {
            "current": _plain(cpu),
            "capacity": _plain(cores * 100),
            "pct": _plain(cpu_pct),
            "unit_hint": "percent",
        },
        "mem": {
            "current": _plain(rss),
            "capacity": _plain(memory),
            "pct": _plain(mem_pct),
            "unit_hint": "bytes",
        },
    }
    per_device: dict[str, dict[str, Any]] = {"cpu_util": {}}
    for key, by_device in sorted((devices or {}).items()):
        per_device[f"{key}_util"] = {
            device: {
                "current": _plain(_number(stats.get("utilization"))),
                "capacity": "100",
                "pct": _plain(_number(stats.get("utilization"))),
                "unit_hint": "pct",
            }
            for device, stats in sorted(by_device.items())
        }
    return {"node": node, "devices": per_device}


def agent_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's :data:`AGENT_FIELDS`, typed for the filter and the order to compare."""
    row: dict[str, Any] = {name: record.get(name) for name in AGENT_FIELDS}
    for name, spec in AGENT_FIELDS.items():
        if spec.kind == "time":
            row[name] = moment_of(record.get(name))
    return row


def agent_view(record: Mapping[str, Any], live: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """23.03's ``Agent`` of an agents read-model record (slots as JSONStrings);
    ``live`` is :func:`node_live_stat`'s answer (``cpu_cur_pct``/``mem_cur_bytes`` read it;
    0 without it, as 23.03 answers for an agent with no stats)."""
    plugins: Mapping[str, Any] = record.get("compute_plugins") or {}
    node = (live or {}).get("node") or {}
    hardware = {
        key: {
            "status": "unavailable" if info.get("unavailable") else "healthy",
            "status_info": info.get("unavailable"),
            "metadata": {"plugin": info.get("plugin"), "devices": len(info.get("devices") or [])},
        }
        for key, info in sorted(plugins.items())
        if isinstance(info, Mapping)
    }
    local = {
        "agent": {
            "id": record.get("id"),
            "region": record.get("region"),
            "scaling-group": record.get("scaling_group"),
            "public-host": record.get("public_host"),
            "isolation": record.get("isolation"),
        }
    }
    return {
        "id": record.get("id"),
        "status": record.get("status"),
        "status_changed": record.get("status_changed"),
        "region": record.get("region"),
        "architecture": record.get("architecture", "x86_64"),
        "scaling_group": record.get("scaling_group"),
        "schedulable": bool(record.get("schedulable", True)),
        "available_slots": json.dumps(record.get("available_slots") or {}),
        "occupied_slots": json.dumps(record.get("occupied_slots") or {}),
        "addr": record.get("addr"),
        "first_contact": record.get("first_contact"),
        "lost_at": record.get("lost_at"),
        "version": record.get("version"),
        "compute_plugins": json.dumps(plugins),
        "hardware_metadata": json.dumps(hardware),
        "local_config": json.dumps(local),
        "live_stat": json.dumps(live) if live is not None else None,
        "cpu_cur_pct": float(_number((node.get("cpu_util") or {}).get("pct"))),
        "mem_cur_bytes": float(_number((node.get("mem") or {}).get("current"))),
    }
