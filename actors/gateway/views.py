"""Read-model records in the shapes Backend.AI's API and GraphQL give them (``GET
/session/{ref}``, ``session info``, ``ps``): the names, the stringified and JSON-string fields,
the enum spellings."""

from __future__ import annotations

import json
import time
from typing import Any

__all__ = ["compute_container", "compute_session", "session_info", "start_estimate"]

_JSON = json.dumps


def _json_or_none(value: Any) -> str | None:
    return None if value is None else _JSON(value)


def _main_kernel(record: dict[str, Any]) -> dict[str, Any]:
    kernels = list((record.get("kernels") or {}).values())
    main = [k for k in kernels if k.get("cluster_role") == "main"]
    first: dict[str, Any] = (main or kernels or [{}])[0]
    return first


def session_info(
    record: dict[str, Any], idle_checks: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``GET /session/{ref}``: 23.03's get_info, camelCase, many values stringified;
    ``idleChecks`` is each idle checker's report (empty unless the session runs).
    ``sessionId`` and ``sessionName`` are kernelhub's additions: a name in the path becomes
    an id the caller can keep (clients ignore keys they do not know). ``environ`` names the
    variables with their values elided: the read model keeps only the names (a value may be
    a secret, and the read side is not where it belongs); the kernel has them all.
    ``mounts`` (kernelhub's addition) lists the virtual folders mounted, where and how
    (never their host paths)."""
    main = _main_kernel(record)
    created_ms = int(record.get("created_ms") or 0)
    return {
        "sessionId": str(record.get("id")),
        "sessionName": record.get("name"),
        "domainName": record.get("domain"),
        "groupId": str(record.get("project_id")),
        "userId": str(record.get("user_id")),
        "lang": record.get("image"),
        "image": record.get("image"),
        "architecture": record.get("architecture"),
        "registry": _registry(record.get("image", "")),
        "tag": record.get("tag"),
        "containerId": str(main.get("container_id")),
        "occupiedSlots": str(main.get("occupied_slots") or {}),
        "occupyingSlots": str(record.get("occupying_slots") or {}),
        "requestedSlots": str(record.get("requested_slots") or {}),
        "occupiedShares": str({}),
        "environ": str(dict.fromkeys(record.get("environ_keys") or [], "***")),
        "resourceOpts": str(record.get("resource_opts") or {}),
        "status": record.get("status"),
        "statusInfo": record.get("status_info") or "",
        "statusData": record.get("status_data"),
        "age": max(0, int(time.time() * 1000) - created_ms) if created_ms else 0,
        "creationTime": record.get("created_at"),
        "terminationTime": record.get("terminated_at"),
        "numQueriesExecuted": 0,
        "lastStat": None,
        "idleChecks": idle_checks or {},
        "mounts": [
            {k: m.get(k) for k in ("name", "vfid", "kernel_path", "mount_perm", "usage_mode")}
            for m in record.get("mounts") or ()
        ],
        **start_estimate(record),
        **idle_warning(record),
    }


def idle_warning(record: dict[str, Any]) -> dict[str, Any]:
    """kernelhub's addition for a RUNNING session warned of a reclaim ahead (docs/idle.md):
    ``idleWarning`` {checker, reason, reclaimAt, warnedAt}; absent when none stands (none
    given, or the session was used since)."""
    warning = record.get("idle_warning")
    if record.get("status") != "RUNNING" or not warning:
        return {}
    return {
        "idleWarning": {
            "checker": warning.get("checker"),
            "reason": warning.get("reason"),
            "reclaimAt": warning.get("reclaim_at"),
            "warnedAt": warning.get("warned_at"),
        }
    }


def start_estimate(record: dict[str, Any]) -> dict[str, Any]:
    """kernelhub's addition for a PENDING session: when the scheduler expects to place it
    (``estimatedStartAt``, ISO time; null when it cannot foresee it) and the interval
    (``estimatedStartInterval``: earliest, latest), with what the run times it assumed
    came from (``estimateBasis``: history, limit or default). Absent once it started."""
    estimate = record.get("start_estimate")
    if record.get("status") != "PENDING" or not estimate:
        return {}
    return {
        "estimatedStartAt": estimate.get("at"),
        "estimatedStartInterval": [estimate.get("earliest"), estimate.get("latest")],
        "estimateBasis": estimate.get("basis"),
        "estimatedOn": estimate.get("made_at"),
    }


def _registry(image: str) -> str:
    first = image.split("/", 1)[0] if "/" in image else ""
    return first if "." in first or ":" in first else "local"


def compute_container(kernel: dict[str, Any], session_id: str) -> dict[str, Any]:
    """A ``ComputeContainer`` with every field the CLI's ``session info`` reads."""
    return {
        "id": kernel.get("id"),
        "cluster_role": kernel.get("cluster_role"),
        "cluster_idx": kernel.get("cluster_idx"),
        "cluster_hostname": kernel.get("cluster_hostname"),
        "local_rank": kernel.get("local_rank"),
        "session_id": session_id,
        "image": kernel.get("image"),
        "architecture": kernel.get("architecture"),
        "registry": _registry(kernel.get("image", "")),
        "status": kernel.get("status"),
        "status_info": kernel.get("status_info") or None,
        "status_data": _json_or_none(kernel.get("status_data")),
        "status_changed": (kernel.get("status_history") or {}).get(kernel.get("status", "")),
        "agent": kernel.get("agent"),
        "agent_addr": kernel.get("agent_addr"),
        "container_id": kernel.get("container_id"),
        "resource_opts": _JSON({}),
        "occupied_slots": _JSON(kernel.get("occupied_slots") or {}),
        "preopen_ports": [],
        "live_stat": None,
        "last_stat": None,
        "created_at": kernel.get("created_at"),
        "terminated_at": kernel.get("terminated_at"),
    }


def compute_session(record: dict[str, Any]) -> dict[str, Any]:
    """A ``ComputeSession``: JSONString fields as JSON-encoded strings, enums as 23.03
    spells them (``INTERACTIVE``, ``UNDEFINED``)."""
    session_id = str(record.get("id"))
    main = _main_kernel(record)
    status = record.get("status", "")
    estimated = start_estimate(record)
    return {
        "id": session_id,
        "session_id": session_id,
        "main_kernel_id": main.get("id"),
        "tag": record.get("tag"),
        "name": record.get("name"),
        "type": str(record.get("type", "interactive")).upper(),
        "main_kernel_role": str(main.get("role", "COMPUTE")),
        "image": record.get("image"),
        "architecture": record.get("architecture"),
        "registry": _registry(record.get("image", "")),
        "cluster_mode": str(record.get("cluster_mode", "single-node")).upper().replace("-", "_"),
        "cluster_size": record.get("cluster_size", 1),
        "domain_name": record.get("domain"),
        "group_name": record.get("group_name") or "default",
        "group_id": record.get("project_id"),
        "user_id": record.get("user_id"),
        "access_key": record.get("access_key"),
        "status": status,
        "status_changed": (record.get("status_history") or {}).get(status),
        "status_info": record.get("status_info") or None,
        "status_data": _json_or_none(record.get("status_data")),
        "status_history": _JSON(record.get("status_history") or {}),
        "created_at": record.get("created_at"),
        "terminated_at": record.get("terminated_at"),
        "starts_at": record.get("starts_at"),
        "startup_command": record.get("startup_command"),
        "result": str(record.get("result", "undefined")).upper(),
        "exit_code": record.get("exit_code"),
        "abusing_reports": [],
        "idle_checks": _JSON({}),
        "scaling_group": record.get("scaling_group"),
        "service_ports": _JSON(main.get("service_ports") or []),
        "mounts": [m["name"] for m in record.get("mounts") or ()],
        "vfolder_mounts": [m["vfid"] for m in record.get("mounts") or ()],
        "occupying_slots": _JSON(record.get("occupying_slots") or {}),
        "occupied_slots": _JSON(record.get("occupying_slots") or {}),
        "requested_slots": _JSON(record.get("requested_slots") or {}),
        "num_queries": 0,
        "containers": [
            compute_container(k, session_id) for k in (record.get("kernels") or {}).values()
        ],
        "dependencies": [],
        "estimated_start_at": estimated.get("estimatedStartAt"),
        "estimated_start_interval": estimated.get("estimatedStartInterval"),
        "estimate_basis": estimated.get("estimateBasis"),
        "idle_warning": _JSON(warned)
        if (warned := idle_warning(record).get("idleWarning"))
        else None,
    }
