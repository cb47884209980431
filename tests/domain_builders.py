"""Small builders for domain tests: sessions, agents and a predicate context in one line."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from actors.domain.predicates import Occupancy, PredicateContext, QuotaPolicy
from actors.domain.scheduling import AgentInfo, PendingSession
from actors.domain.session import ClusterMode, KernelRole, SessionSpec, SessionType, expand_cluster
from actors.domain.slots import INTRINSIC_SLOTS, ResourceSlot, SlotType

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
G = 2**30
KNOWN = {**INTRINSIC_SLOTS, "cuda.device": SlotType.UNIQUE}
_counter = itertools.count(1)


def slots(cpu: float = 1, mem: int = G, **more: Any) -> ResourceSlot:
    extra = {k.replace("_", "."): v for k, v in more.items()}
    return ResourceSlot({"cpu": str(cpu), "mem": mem, **extra})


def make_session(
    access_key: str = "AK1",
    *,
    request: ResourceSlot | None = None,
    size: int = 1,
    mode: ClusterMode = ClusterMode.SINGLE_NODE,
    age_s: float | None = None,
    session_type: SessionType = SessionType.INTERACTIVE,
    starts_at: datetime | None = None,
    dependencies: tuple[uuid.UUID, ...] = (),
    role: KernelRole = KernelRole.COMPUTE,
    architecture: str = "x86_64",
    agents: tuple[str | None, ...] = (),
    project: uuid.UUID | None = None,
    domain: str = "default",
) -> SessionSpec:
    n = next(_counter)
    created = T0 + timedelta(seconds=n) if age_s is None else T0 - timedelta(seconds=age_s)
    return SessionSpec(
        session_id=uuid.uuid4(),
        name=f"s{n}",
        access_key=access_key,
        kernels=expand_cluster(
            size, [request or slots()], role=role, architecture=architecture, agents=agents
        ),
        created_at=created,
        session_type=session_type,
        cluster_mode=mode,
        starts_at=starts_at,
        dependencies=dependencies,
        project_id=project,
        domain=domain,
        startup_command="run" if session_type is SessionType.BATCH else None,
        creation_id=f"c{n}",
    )


def pending(*sessions: SessionSpec, retries: int = 0) -> list[PendingSession]:
    return [PendingSession(s, retries) for s in sessions]


def agent(agent_id: str, cpu: float = 16, mem: int = 64 * G, **more: Any) -> AgentInfo:
    arch = more.pop("architecture", "x86_64")
    return AgentInfo(agent_id, slots(cpu, mem, **more), architecture=arch)


def context(
    *,
    now: datetime | None = None,
    policies: dict[str, QuotaPolicy] | None = None,
    occupancy: Occupancy | None = None,
    **kwargs: Any,
) -> PredicateContext:
    return PredicateContext(
        now=now or T0 + timedelta(days=1),
        known_slot_types=KNOWN,
        occupancy=occupancy or Occupancy(),
        keypair_policies=policies or {},
        **kwargs,
    )
