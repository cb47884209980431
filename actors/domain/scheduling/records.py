"""Read-model records and log facts as the scheduler uses them: a pending session's spec,
what the last scheduling failure showed, what an agent said it allocated, an agent as a pass
sees it, a scaling group's settings. Pure conversions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from events.catalogue import AgentRegistered, SessionSchedulingFailed

from ..scaling_groups import ScalingGroup
from ..session import ClusterMode, KernelRole, KernelSpec, SessionSpec, SessionType
from ..slots import ResourceSlot
from .schedule import AgentInfo

__all__ = [
    "actual_allocation",
    "agent_info_of",
    "failure_key",
    "recorded_failure",
    "scaling_group_of",
    "slots_of",
    "spec_of",
]


def failure_key(failure: SessionSchedulingFailed) -> tuple[Any, ...]:
    return (
        failure.status_info,
        tuple((p.name, p.msg) for p in failure.failed_predicates),
        failure.msg,
    )


def recorded_failure(record: dict[str, Any]) -> tuple[Any, ...] | None:
    """What the read model shows of the last scheduling failure (``None``: none yet)."""
    scheduler = (record.get("status_data") or {}).get("scheduler")
    if not scheduler or record["status_info"] not in (
        "predicate-checks-failed",
        "no-available-instances",
        "scheduler-error",
    ):
        return None
    failed = tuple((p["name"], p.get("msg", "")) for p in scheduler.get("failed_predicates", ()))
    return (record["status_info"], failed, scheduler.get("msg"))


def actual_allocation(creation_info: Mapping[str, Any]) -> ResourceSlot | None:
    """What the agent says it allocated (``occupied_slots`` in the creation info), if it
    says; otherwise the reservation stands as it is."""
    occupied = creation_info.get("occupied_slots")
    return slots_of(occupied) if isinstance(occupied, dict) and occupied else None


def slots_of(values: Mapping[str, str]) -> ResourceSlot:
    """Slots from their wire form (amounts as decimal strings)."""
    return ResourceSlot({k: Decimal(v) for k, v in values.items()})


def spec_of(record: dict[str, Any]) -> SessionSpec:
    """A pending session as the policy sees it, from its read-model record."""
    kernels = tuple(
        KernelSpec(
            kernel_id=uuid.UUID(k["id"]),
            cluster_role=k["cluster_role"],
            cluster_idx=k["cluster_idx"],
            local_rank=k["local_rank"],
            cluster_hostname=k["cluster_hostname"],
            requested_slots=slots_of(k["requested_slots"]),
            image=k["image"],
            architecture=k["architecture"],
            role=KernelRole(k["role"]),
            agent=k["agent"],
        )
        for k in sorted(record["kernels"].values(), key=lambda k: k["local_rank"])
    )
    starts_at = record.get("starts_at")
    return SessionSpec(
        session_id=uuid.UUID(record["id"]),
        name=record["name"] or record["id"],
        access_key=record["access_key"] or "",
        kernels=kernels,
        created_at=datetime.fromtimestamp(record["created_ms"] / 1000, UTC),
        session_type=SessionType(record["type"]),
        cluster_mode=ClusterMode(record["cluster_mode"]),
        user_id=uuid.UUID(record["user_id"]) if record.get("user_id") else None,
        project_id=uuid.UUID(record["project_id"]) if record.get("project_id") else None,
        domain=record["domain"] or "default",
        scaling_group=record["scaling_group"],
        dependencies=tuple(uuid.UUID(d) for d in record["dependencies"]),
        starts_at=datetime.fromisoformat(starts_at.replace("Z", "+00:00")) if starts_at else None,
        startup_command=record.get("startup_command"),
        creation_id=record["creation_id"] or "",
    )


def agent_info_of(agent_id: str, registration: AgentRegistered, *, alive: bool) -> AgentInfo:
    """An agent as a pass sees it, from its latest registration."""
    return AgentInfo(
        agent_id,
        ResourceSlot(registration.available_slots),
        architecture=registration.architecture,
        schedulable=registration.schedulable,
        alive=alive,
    )


def scaling_group_of(name: str, record: Mapping[str, Any] | None) -> ScalingGroup:
    """A scaling group's settings from its tenancy record (none: the defaults)."""
    record = record or {}
    return ScalingGroup(
        name,
        scheduler=record.get("scheduler", "fifo"),
        pending_timeout=float(record.get("pending_timeout", 0)),
        scheduler_config=record.get("scheduler_config") or {},
        agent_selector=record.get("agent_selector"),
    )
