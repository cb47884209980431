"""The verdict on a chaos run, from two witnesses only: the log and the client's record.

Nothing the actors hold in memory, no projection is trusted (the projections are judged
against a rebuild from the log). The invariants, each a ``rule`` on its findings:

- ``verify:<rule>``: ``kh events verify`` (:class:`~kernelhub.history.verify.LogVerifier`)
  over the whole log: decoding, stream versions, status transitions, one start and one end
  per session, and every ledger reservation within the agent's capacity at that point of
  the history (``verify:capacity``: no ledger ever held more than an agent offers).
- ``acked_lost``: an acknowledged create whose session has no ``session_enqueued``, an
  acknowledged destroy whose session never began to end, an acknowledged append whose event
  is not at the position the store returned.
- ``not_ended``: a session whose destroy was acknowledged that is not TERMINATED or
  CANCELLED (verify's ``once`` covers "exactly one" end).
- ``stuck``: a session in a transitional status (PENDING, SCHEDULED, PREPARING, PULLING,
  TERMINATING, RESTARTING) whose last status event is older than ``stuck_after_s`` by the
  log's clock now (Redis ``TIME``, never earlier than the head: once the system settled the
  head is the last session's own event, and a session stuck since then would never age).
  One younger than that is not judged yet: :attr:`Verdict.undecided_s` says how long until
  it is, and the driver checks again after it.
- ``duplicate_create``: two sessions in the log under one name the workload created once
  (a retried create that was not recognised as a retry).
- ``exec_twice``: an execution that returned a result whose token is not in the ledger
  file exactly once (or whose own output counted more than one); ``exec_unknown_twice``:
  one without a result that ran more than once.
- ``projection``: a read model that differs from a rebuild from the log.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from events import RedisEventStore, position_key
from events.archive import merged_entries
from kernelhub.history.verify import STATUS_AFTER, LogVerifier

from .record import ClientRecord
from .workload import PROBE_STREAM_PREFIX

__all__ = ["Finding", "Verdict", "check"]

TRANSITIONAL = frozenset(
    {"PENDING", "SCHEDULED", "PREPARING", "PULLING", "TERMINATING", "RESTARTING"}
)
ENDED = frozenset({"TERMINATED", "CANCELLED"})
_ENDING = frozenset({"session_terminating", "session_terminated", "session_cancelled"})


@dataclass(frozen=True)
class Finding:
    rule: str
    subject: str
    message: str


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    events: int = 0
    sessions: int = 0
    """Sessions the workload had acknowledged."""
    ended: int = 0
    running: int = 0
    executions_checked: int = 0
    projections_checked: list[str] = field(default_factory=list)
    undecided_s: float = 0.0
    """How long until the youngest session still in a transitional status passes its
    deadline (0: none is waiting to be judged)."""

    @property
    def ok(self) -> bool:
        return not self.findings

    def count(self, prefix: str) -> int:
        return sum(1 for f in self.findings if f.rule.startswith(prefix))

    @property
    def acked_lost(self) -> int:
        return self.count("acked_lost")

    @property
    def stuck(self) -> int:
        return self.count("stuck")

    @property
    def verify_ok(self) -> bool:
        return self.count("verify:") == 0

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "sessions": self.sessions,
            "acked_lost": self.acked_lost,
            "stuck": self.stuck,
            "verify_ok": self.verify_ok,
            "by_rule": dict(Counter(f.rule for f in self.findings)),
            "first": [asdict(f) for f in self.findings[:20]],
        }


@dataclass
class _Session:
    name: str | None = None
    status: str = "NEW"
    changed_ms: int = 0
    ending: bool = False


async def check(
    store: RedisEventStore,
    record: ClientRecord,
    ledger: Path | None,
    *,
    stuck_after_s: float = 120.0,
    projections: bool = True,
) -> Verdict:
    verdict = Verdict()
    sessions, event_ids, head_ms = await _read_log(store, verdict)
    now_ms = max(head_ms, int(await store.server_time() * 1000))
    _judge_acks(record, sessions, event_ids, verdict)
    _judge_statuses(record, sessions, now_ms, stuck_after_s, verdict)
    _judge_executions(record, ledger, verdict)
    if projections:
        await _judge_projections(store, verdict)
    return verdict


async def _read_log(
    store: RedisEventStore, verdict: Verdict
) -> tuple[dict[str, _Session], dict[str, str], int]:
    verifier = LogVerifier(store.codec, head=await store.chain_head(), judges_head=True)
    sessions: dict[str, _Session] = {}
    event_ids: dict[str, str] = {}
    last_ms = 0
    async for position, fields in merged_entries(store):
        verifier.feed(position, fields)
        last_ms = position_key(position)[0]
        try:
            event = store.codec.decode(position, fields)
        except Exception:  # verify reports it (decode)
            continue
        if event.stream.startswith(PROBE_STREAM_PREFIX):
            event_ids[str(event.event_id)] = position
        if not event.stream.startswith("session-"):
            continue
        sid = event.stream.removeprefix("session-")
        state = sessions.setdefault(sid, _Session())
        kind = event.type
        if kind == "session_enqueued":
            spec = getattr(event.data, "spec", None)
            state.name = getattr(spec, "name", None)
        if kind in _ENDING:
            state.ending = True
        status = STATUS_AFTER.get(kind)
        if kind == "session_status_changed":
            status = str(getattr(event.data, "status", "") or "") or None
        if status:
            state.status, state.changed_ms = status, last_ms
    verdict.events = verifier.events
    for violation in verifier.finish():
        verdict.findings.append(
            Finding(f"verify:{violation.rule}", violation.stream, violation.line())
        )
    return sessions, event_ids, last_ms


def _judge_acks(
    record: ClientRecord,
    sessions: dict[str, _Session],
    event_ids: dict[str, str],
    verdict: Verdict,
) -> None:
    for create in record.acked_creates():
        verdict.sessions += 1
        assert create.session_id is not None
        state = sessions.get(create.session_id)
        if state is None or state.name is None:
            verdict.findings.append(
                Finding("acked_lost", create.session_id, f"create of {create.name} acknowledged")
            )
    for destroy in record.destroys:
        if destroy.acked_at is None:
            continue
        state = sessions.get(destroy.session_id)
        if state is None or not state.ending:
            verdict.findings.append(
                Finding("acked_lost", destroy.session_id, "destroy acknowledged, no end in log")
            )
    for probe in record.probes:
        if probe.position is None:
            continue
        found = event_ids.get(probe.event_id)
        if found != probe.position:
            verdict.findings.append(
                Finding(
                    "acked_lost",
                    probe.stream,
                    f"append acknowledged at {probe.position}, log has {found}",
                )
            )


def _judge_statuses(
    record: ClientRecord,
    sessions: dict[str, _Session],
    now_ms: int,
    stuck_after_s: float,
    verdict: Verdict,
) -> None:
    names = {c.name for c in record.creates}
    destroyed = {d.session_id for d in record.destroys if d.acked_at is not None}
    per_name = Counter(s.name for s in sessions.values() if s.name in names)
    for name, count in per_name.items():
        if count > 1:
            verdict.findings.append(
                Finding("duplicate_create", str(name), f"{count} sessions under one name")
            )
    for sid, state in sessions.items():
        if state.name not in names:
            continue
        if state.status in ENDED:
            verdict.ended += 1
        elif state.status == "RUNNING":
            verdict.running += 1
        if sid in destroyed and state.status not in ENDED:
            verdict.findings.append(
                Finding("not_ended", sid, f"{state.name} destroyed, still {state.status}")
            )
        age_s = (now_ms - state.changed_ms) / 1000
        if state.status not in TRANSITIONAL:
            continue
        if age_s > stuck_after_s:
            verdict.findings.append(
                Finding("stuck", sid, f"{state.name} {state.status} for {age_s:.0f} s")
            )
        else:
            verdict.undecided_s = max(verdict.undecided_s, stuck_after_s - age_s)


def _judge_executions(record: ClientRecord, ledger: Path | None, verdict: Verdict) -> None:
    if ledger is None or not record.executions:
        return
    try:
        counts = Counter(ledger.read_text().split())
    except FileNotFoundError:
        counts = Counter()
    for run in record.executions:
        ran = counts.get(run.token, 0)
        if run.result is not None:
            verdict.executions_checked += 1
            if ran != 1 or run.count_seen not in (None, 1):
                verdict.findings.append(
                    Finding(
                        "exec_twice",
                        run.token,
                        f"returned a result; ledger has it {ran}x, it saw {run.count_seen}",
                    )
                )
        elif ran > 1:
            verdict.findings.append(
                Finding("exec_unknown_twice", run.token, f"no result; ledger has it {ran}x")
            )


async def _judge_projections(store: RedisEventStore, verdict: Verdict) -> None:
    """Each read model against a rebuild at the same log head (retried if the log moved
    while the rebuild ran: what changed would differ for that reason alone)."""
    from projections.models import default_projections
    from projections.runtime import Projector

    from .recovery import projections_caught_up

    projector = Projector(store, default_projections())
    for name in list(projector.projections):
        for attempt in range(3):
            head = await store.head()
            for _ in range(300):
                if await projections_caught_up(store, head):
                    break
                await asyncio.sleep(0.1)
            live_number = await store.read_models.active_number(name)
            if live_number is None:  # every projection runs on a chaos stack
                verdict.findings.append(Finding("projection", name, "no generation serves reads"))
                break
            live = await store.read_models.dump(name, live_number)
            generation = await projector.rebuild(name)
            rebuilt = await store.read_models.dump(name, generation)
            if await store.head() != head and attempt < 2:
                continue
            verdict.projections_checked.append(name)
            if live != rebuilt:
                differing = sorted(
                    k for k in set(live) | set(rebuilt) if live.get(k) != rebuilt.get(k)
                )
                verdict.findings.append(
                    Finding("projection", name, f"differs from a rebuild at {differing[:5]}")
                )
            break
    await projector.wait_cleanup()
