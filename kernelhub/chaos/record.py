"""The client's own record of what the system acknowledged: the checker's other witness.

Only what the client was told counts as acknowledged (a 2xx answer, or an append that
returned positions); anything that failed or timed out is "unknown" and judged leniently
(it may or may not have happened, but never twice).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ClientRecord", "CreateAck", "DestroyAck", "ExecRecord", "ProbeAppend"]


@dataclass
class CreateAck:
    """One create the workload sent (``session_id`` set once the gateway acknowledged it)."""

    name: str
    kind: str
    """``sim`` (placed on a simulated agent) or ``exec`` (the process agent: code runs)."""
    sent_at: float
    session_id: str | None = None
    acked_at: float | None = None
    status: str | None = None
    """The status the acknowledgement named (RUNNING, or TIMEOUT while it was still queued)."""
    attempts: int = 0
    error: str | None = None


@dataclass
class DestroyAck:
    session_id: str
    sent_at: float
    acked_at: float | None = None
    attempts: int = 0
    error: str | None = None


@dataclass
class ExecRecord:
    """One execution: ``token`` is appended to the run's ledger file by the code itself, so
    a final read of that file says how many times it really ran."""

    session_id: str
    token: str
    sent_at: float
    result: str | None = None
    """The console output, when the execution returned one (then it must have run once)."""
    count_seen: int | None = None
    """How many times the code found its token in the ledger when it ran (1 if run once)."""
    error: str | None = None


@dataclass
class ProbeAppend:
    """An event appended straight to the store (``appendfsync always``): its command id and
    the position the store acknowledged, so a lost acknowledged write is named exactly."""

    command_id: str
    stream: str
    event_id: str
    position: str | None = None
    acked_at: float | None = None
    error: str | None = None


@dataclass
class ClientRecord:
    creates: list[CreateAck] = field(default_factory=list)
    destroys: list[DestroyAck] = field(default_factory=list)
    executions: list[ExecRecord] = field(default_factory=list)
    probes: list[ProbeAppend] = field(default_factory=list)
    retried_503: int = 0
    """Answers 503 (the log unreachable) that the workload waited out and retried."""
    errors: dict[str, int] = field(default_factory=dict)
    """Other failures by kind (``create:500``, ``exec:ConnectError``...)."""

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def acked_creates(self) -> list[CreateAck]:
        return [c for c in self.creates if c.session_id is not None]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> ClientRecord:
        raw: dict[str, Any] = json.loads(path.read_text())
        return cls(
            creates=[CreateAck(**c) for c in raw["creates"]],
            destroys=[DestroyAck(**d) for d in raw["destroys"]],
            executions=[ExecRecord(**e) for e in raw["executions"]],
            probes=[ProbeAppend(**p) for p in raw["probes"]],
            retried_503=raw["retried_503"],
            errors=raw["errors"],
        )
