"""Recorded demand, as what-if replays it: the agents a cluster had and the sessions its
users asked for, each with when it arrived and how long it ran.

One format for every source (an installation's log, a public trace): a source is a
function that returns a :class:`Workload` (:mod:`kernelhub.traces`). Everything is bounded
before the simulator sees it: a workload file is input like any other, and a value that
would make a simulated second cost unbounded work (a cluster size of a billion, an infinite
request) is refused with the field's name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from ..slots import INTRINSIC_SLOTS, ResourceSlot, SlotType

__all__ = [
    "FORMAT",
    "MAX_AGENTS",
    "MAX_JOBS",
    "Workload",
    "WorkloadAgent",
    "WorkloadJob",
]

FORMAT = "kernelhub-workload/1"
MAX_AGENTS = 100_000
MAX_JOBS = 2_000_000
MAX_CLUSTER_SIZE = 64
MAX_SECONDS = 1e10
"""About 317 years: any time or duration past it is not a record of a cluster."""
MAX_SLOTS = 64
MAX_DEPENDENCIES = 64
"""Kernels of one multi-node session (the gateway's own bound on ``cluster_size``)."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
SlotName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
Slots = Annotated[dict[SlotName, Decimal], Field(max_length=MAX_SLOTS)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]


def _bounded(slots: Slots) -> Slots:
    for name, value in slots.items():
        if not value.is_finite() or value < 0 or value > Decimal(2**64):
            raise ValueError(f"slot {name!r}: {value} is not an amount")
    return slots


class WorkloadAgent(BaseModel):
    """An agent as it was (its capacity does not change during a replay)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: Name
    capacity: Slots
    architecture: Name = "x86_64"
    model: str = ""
    """What the source calls the accelerator (a trace's GPU model), for reports only."""

    _check = field_validator("capacity")(_bounded)


class WorkloadJob(BaseModel):
    """One session as it was asked for, and what became of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: Name
    arrival_s: Seconds
    """Seconds from the workload's start."""
    owner: Name = "default"
    """Who asked (an access key): DRF's and the fairness measures' user."""
    group: Name = "default"
    session_type: Literal["interactive", "batch", "inference"] = "interactive"
    requested: Slots
    """Per kernel."""
    cluster_size: int = Field(default=1, ge=1, le=MAX_CLUSTER_SIZE)
    multi_node: bool = False
    run_s: Seconds | None = None
    """How long it ran once started; None: it never started, or never ended (see below)."""
    censored: bool = False
    """It was still running (or still pending) when the record ends: ``run_s`` is a lower
    bound, and a replay keeps it until the horizon."""
    dependencies: Annotated[tuple[Name, ...], Field(max_length=MAX_DEPENDENCIES)] = ()
    """Jobs that had to succeed first (``job_id``s)."""
    observed_wait_s: Seconds | None = None
    """What the recorded scheduler made it wait; None when it never started."""
    observed_agents: Annotated[tuple[Name, ...], Field(max_length=MAX_CLUSTER_SIZE)] | None = None
    """Where the recorded scheduler placed it (a log's workload; a trace has none)."""

    _check = field_validator("requested")(_bounded)

    @field_validator("arrival_s", "run_s", "observed_wait_s")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value


class Workload(BaseModel):
    """What a replay needs: agents, jobs (in arrival order), and the slot types they use."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["kernelhub-workload/1"] = "kernelhub-workload/1"
    source: Annotated[str, StringConstraints(max_length=1024)] = ""
    """Where it came from (a trace's name and folder, an installation's log)."""
    span_s: Seconds = 0
    """How long the record lasted: censored jobs run until then (0: unknown; a replay then
    runs until every job could have ended)."""
    slot_types: Annotated[dict[SlotName, SlotType], Field(max_length=MAX_SLOTS)] = Field(
        default_factory=lambda: dict(INTRINSIC_SLOTS)
    )
    agents: list[WorkloadAgent] = Field(max_length=MAX_AGENTS)
    jobs: list[WorkloadJob] = Field(max_length=MAX_JOBS)

    @field_validator("jobs")
    @classmethod
    def _in_arrival_order(cls, jobs: list[WorkloadJob]) -> list[WorkloadJob]:
        _unique("job_id", (j.job_id for j in jobs))
        return sorted(jobs, key=lambda j: (j.arrival_s, j.job_id))

    @field_validator("agents")
    @classmethod
    def _unique_agents(cls, agents: list[WorkloadAgent]) -> list[WorkloadAgent]:
        _unique("agent_id", (a.agent_id for a in agents))
        return agents

    @model_validator(mode="after")
    def _arrivals_within_the_record(self) -> Workload:
        last = self.jobs[-1].arrival_s if self.jobs else 0.0
        if self.span_s and last > self.span_s:
            raise ValueError(f"span_s {self.span_s} ends before the last arrival ({last})")
        return self

    def capacity(self) -> ResourceSlot:
        total = ResourceSlot()
        for agent in self.agents:
            total = total + ResourceSlot(agent.capacity)
        return total


def _unique(field: str, values: Iterable[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{field} {value[:80]!r} appears twice")
        seen.add(value)
