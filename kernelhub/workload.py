"""Synthetic but realistic event histories, written through the real store.

Benchmarks and tests need logs that look like a cluster's: agents registering, sessions
enqueued, scheduled (ledger + session in one ``append_multi``), started, ended, some
cancelled while pending, some failing predicates first, some still running at the end. The
stories of many sessions are interleaved at random (seeded), one append per step, exactly
as the write side will produce them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from actors.domain.session import kernel_creation_specs
from events import AnyPayload, NewEvent, RedisEventStore, StreamBatch
from events.catalogue import (
    AgentRegistered,
    AgentStarted,
    Allocation,
    AllocReleased,
    AllocReserved,
    AllocSettled,
    KernelCancelled,
    KernelCreating,
    KernelPlacement,
    KernelPreparing,
    KernelPulling,
    KernelStarted,
    KernelTerminated,
    KernelTerminating,
    PredicateFailure,
    SessionCancelled,
    SessionCreationSpec,
    SessionEnqueued,
    SessionFailure,
    SessionPreparing,
    SessionScheduled,
    SessionSchedulingFailed,
    SessionStarted,
    SessionSuccess,
    SessionTerminated,
    SessionTerminating,
)

__all__ = ["Step", "Workload", "append_steps"]

Step = list[tuple[str, list[AnyPayload]]]
"""One atomic append: (stream, payloads) for each stream it touches."""

G = 2**30


@dataclass
class Workload:
    """``sessions`` session stories over ``agents`` agents, interleaved with ``seed``."""

    sessions: int = 100
    agents: int = 10
    seed: int = 0
    scaling_group: str = "default"
    keypairs: int = 5
    stop_after: float = 1.0
    """Fraction of each story to tell (1.0: all; less leaves sessions mid-flight)."""
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def agent_ids(self) -> list[str]:
        return [f"i-node{n:04d}" for n in range(self.agents)]

    def capacity(self) -> dict[str, Decimal]:
        """Each agent's slots: enough for every session at once (stories interleave at
        random and hosts are picked at random, so the log stays one a ledger could have
        written: ``kh events verify`` checks every reservation against free capacity)."""
        most = 3 * 4  # the largest session: 3 kernels of 4 cpu / 4g
        cpu = max(64, most * self.sessions)
        return {"cpu": Decimal(cpu), "mem": Decimal(cpu * 4 * G)}

    def steps(self) -> Iterator[Step]:
        capacity = self.capacity()
        for agent_id in self.agent_ids():
            yield [
                (
                    f"agent-{agent_id}",
                    [
                        AgentRegistered(
                            agent_id=agent_id,
                            scaling_group=self.scaling_group,
                            available_slots=capacity,
                        ),
                        AgentStarted(reason="self-started"),
                    ],
                )
            ]
        stories = [self._story(n) for n in range(self.sessions)]
        live = [iter(s) for s in stories]
        while live:
            index = self._rng.randrange(len(live))
            step = next(live[index], None)
            if step is None:
                live.pop(index)
            else:
                yield step

    def _story(self, n: int) -> list[Step]:
        rng = self._rng
        sid = uuid.UUID(int=rng.getrandbits(128))
        stream = f"session-{sid}"
        alloc = f"alloc-{self.scaling_group}"
        size = rng.choice([1, 1, 1, 2, 3])
        kernels = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(size)]
        cpu, mem = Decimal(rng.choice([1, 2, 4])), Decimal(rng.choice([1, 2, 4]) * G)
        slots = {"cpu": cpu, "mem": mem}
        batch = rng.random() < 0.3
        creation = f"c{n}"
        spec = SessionCreationSpec(
            name=f"s{n}",
            access_key=f"AK{n % self.keypairs:04d}",
            domain="default",
            session_type="batch" if batch else "interactive",
            image="python:3.11",
            cluster_size=size,
            scaling_group=self.scaling_group,
            startup_command="python main.py" if batch else None,
            kernels=kernel_creation_specs(kernels, [slots] * size),
        )
        steps: list[Step] = [
            [(stream, [SessionEnqueued(session_id=sid, creation_id=creation, spec=spec)])]
        ]
        fate = rng.random()
        if fate < 0.1:  # cancelled while pending
            steps.append(
                [
                    (
                        stream,
                        [
                            *(
                                KernelCancelled(
                                    kernel_id=k, session_id=sid, reason="user-requested"
                                )
                                for k in kernels
                            ),
                            SessionCancelled(
                                session_id=sid, creation_id=creation, reason="user-requested"
                            ),
                        ],
                    )
                ]
            )
            return self._truncate(steps)
        if fate < 0.25:
            steps.append(
                [
                    (
                        stream,
                        [
                            SessionSchedulingFailed(
                                session_id=sid,
                                status_info="predicate-checks-failed",
                                retries=1,
                                failed_predicates=[
                                    PredicateFailure(name="concurrency", msg="too many")
                                ],
                                passed_predicates=["reserved_time", "dependencies"],
                            )
                        ],
                    )
                ]
            )
        hosts = [rng.choice(self.agent_ids()) for _ in kernels]
        steps.append(
            [
                (
                    alloc,
                    [
                        AllocReserved(
                            session_id=sid,
                            scaling_group=self.scaling_group,
                            allocations=[
                                Allocation(
                                    kernel_id=k,
                                    agent_id=h,
                                    slots=slots,
                                    free_before=self.capacity(),
                                )
                                for k, h in zip(kernels, hosts, strict=True)
                            ],
                        )
                    ],
                ),
                (
                    stream,
                    [
                        SessionScheduled(
                            session_id=sid,
                            creation_id=creation,
                            scaling_group=self.scaling_group,
                            placements=[
                                KernelPlacement(kernel_id=k, agent_id=h)
                                for k, h in zip(kernels, hosts, strict=True)
                            ],
                        )
                    ],
                ),
            ]
        )
        steps.append([(stream, [SessionPreparing(session_id=sid, creation_id=creation)])])
        for k in kernels:
            kernel_steps: list[AnyPayload] = [KernelPreparing(kernel_id=k, session_id=sid)]
            if rng.random() < 0.2:
                kernel_steps.append(
                    KernelPulling(kernel_id=k, session_id=sid, reason="python:3.11")
                )
            kernel_steps += [
                KernelCreating(kernel_id=k, session_id=sid),
                KernelStarted(
                    kernel_id=k,
                    session_id=sid,
                    creation_info={"container_id": k.hex, "kernel_host": "127.0.0.1"},
                ),
            ]
            steps.append([(stream, kernel_steps)])
        for k, h in zip(kernels, hosts, strict=True):
            steps.append(
                [(alloc, [AllocSettled(session_id=sid, kernel_id=k, agent_id=h, actual=slots)])]
            )
        steps.append([(stream, [SessionStarted(session_id=sid, creation_id=creation)])])
        reason = "user-requested"
        if batch:
            ok = rng.random() < 0.8
            result: AnyPayload = (
                SessionSuccess(session_id=sid, reason="task-done", exit_code=0)
                if ok
                else SessionFailure(session_id=sid, reason="task-failed", exit_code=1)
            )
            steps.append([(stream, [result])])
            reason = "task-finished"
        steps.append(
            [
                (
                    stream,
                    [
                        SessionTerminating(session_id=sid, reason=reason),
                        *(
                            KernelTerminating(kernel_id=k, session_id=sid, reason=reason)
                            for k in kernels
                        ),
                    ],
                )
            ]
        )
        for k in kernels:
            steps.append(
                [
                    (
                        stream,
                        [KernelTerminated(kernel_id=k, session_id=sid, reason=reason, exit_code=0)],
                    )
                ]
            )
        steps.append([(stream, [SessionTerminated(session_id=sid, reason=reason)])])
        for k, h in zip(kernels, hosts, strict=True):
            steps.append(
                [(alloc, [AllocReleased(session_id=sid, kernel_id=k, agent_id=h, slots=slots)])]
            )
        return self._truncate(steps)

    def _truncate(self, steps: list[Step]) -> list[Step]:
        if self.stop_after >= 1.0:
            return steps
        keep = max(1, int(len(steps) * self.stop_after * self._rng.random() * 2))
        return steps[:keep]


async def append_steps(store: RedisEventStore, steps: Sequence[Step] | Iterator[Step]) -> int:
    """Append each step atomically; returns the number of events appended."""
    count = 0
    for step in steps:
        await store.append_multi(
            StreamBatch(stream, [NewEvent(data=p) for p in payloads], None)
            for stream, payloads in step
        )
        count += sum(len(p) for _, p in step)
    return count
