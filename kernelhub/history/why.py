"""``kh why <session>``: why a session waits, or why it ended, told from its own history.

Everything comes from the session's stream:
- the scheduler's recorded attempts (``session_scheduling_failed``: the predicates that
  failed and their messages);
- the placement;
- the noted activity;
- the reaper's evidence on ``session_terminating``;
- each kernel's end (reason and exit code);
- an agent's start error on ``session_cancelled``.

So the answer is the same tomorrow as today, and it needs no read model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from events import Event

from .positions import iso_ms
from .verify import STATUS_AFTER

__all__ = ["Explanation", "explain"]


@dataclass
class Explanation:
    session_id: str
    name: str
    status: str
    since: str
    lines: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "name": self.name,
            "status": self.status,
            "since": self.since,
            "because": self.lines,
        }


def _span(ms: float) -> str:
    seconds = max(0, int(ms / 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes}m {seconds}s" if hours else f"{minutes}m {seconds}s"


def explain(events: Sequence[Event], now_ms: int) -> Explanation:
    """Why the session of ``events`` (its whole stream, in order) is where it is."""
    first: Any = events[0].data
    spec = getattr(first, "spec", None)
    status, since_ms = "PENDING", events[0].position_ms
    for event in events:
        new = STATUS_AFTER.get(event.type)
        if event.type == "session_status_changed":
            new = str(event.data.status)  # type: ignore[union-attr]
        if new is not None and new != status:
            status, since_ms = new, event.position_ms
    out = Explanation(str(first.session_id), spec.name if spec else "", status, iso_ms(since_ms))
    if status == "PENDING":
        _why_pending(events, now_ms - since_ms, out)
    elif status in ("TERMINATED", "CANCELLED", "TERMINATING"):
        _why_ended(events, out)
    else:
        _where(events, out)
    return out


def _why_pending(events: Sequence[Event], waited_ms: int, out: Explanation) -> None:
    out.lines.append(f"pending for {_span(waited_ms)}")
    failures = [e for e in events if e.type == "session_scheduling_failed"]
    if not failures:
        out.lines.append("no scheduling attempt has failed: waiting for the scheduler's next pass")
        return
    last: Any = failures[-1].data
    out.lines.append(
        f"scheduling attempts have failed since {iso_ms(failures[0].position_ms)}; "
        f"as last recorded (retry {last.retries}, "
        f"{iso_ms(failures[-1].position_ms)}):"
    )
    for failure in last.failed_predicates or ():
        out.lines.append(f"  {failure.name}: {failure.msg or 'failed'}")
    if not last.failed_predicates:
        out.lines.append(f"  {last.status_info}: {last.msg or 'no agent can host it now'}")


def _where(events: Sequence[Event], out: Explanation) -> None:
    agents = sorted(
        {
            p.agent_id
            for e in events
            if e.type == "session_scheduled"
            for p in (getattr(e.data, "placements", None) or ())
        }
    )
    if agents:
        out.lines.append(f"placed on {', '.join(agents)}")
    activity = [e for e in events if e.type == "session_activity"]
    if activity:
        last: Any = activity[-1].data
        out.lines.append(f"last activity noted at {iso_ms(int(last.last_access * 1000))}")


def _why_ended(events: Sequence[Event], out: Explanation) -> None:
    _where(events, out)
    for event in events:
        data: Any = event.data
        if event.type == "session_terminating":
            out.lines.append(
                f"destroy asked at {iso_ms(event.position_ms)}: {data.reason or 'no reason given'}"
            )
            if data.idle:
                out.lines += _idle_evidence(data.reason, data.idle)
        elif event.type == "kernel_terminated":
            out.lines.append(
                f"kernel {str(data.kernel_id)[:8]} ended {data.reason} (exit code {data.exit_code})"
            )
        elif event.type in ("session_success", "session_failure"):
            out.lines.append(
                f"batch command {event.type.removeprefix('session_')} (exit code {data.exit_code})"
            )
        elif event.type == "session_cancelled":
            out.lines.append(f"cancelled at {iso_ms(event.position_ms)}: {data.reason}")
            if data.error:
                error = data.error
                out.lines.append(
                    f"  {error.get('name', 'error')} on {error.get('agent_id', '?')}: "
                    f"{error.get('repr', '')}"
                )
        elif event.type == "session_terminated":
            out.lines.append(f"ended at {iso_ms(event.position_ms)}: {data.reason}")


def _idle_evidence(reason: str, evidence: dict[str, Any]) -> list[str]:
    """The reaper's evidence in words."""
    judged = float(evidence.get("judged_at") or 0)
    reports = evidence.get("reports") or {}
    if reason == "idle-timeout" and evidence.get("last_access"):
        last = float(evidence["last_access"])
        return [
            f"  no activity for {_span((judged - last) * 1000)}: the last at "
            f"{iso_ms(int(last * 1000))}, judged idle at {iso_ms(int(judged * 1000))}"
        ]
    if reason == "idle-session-lifetime":
        return [
            f"  the session outlived its policy's max_session_lifetime "
            f"(judged at {iso_ms(int(judged * 1000))})"
        ]
    if reason == "idle-utilization":
        extra = (reports.get("utilization") or {}).get("extra") or {}
        used = ", ".join(
            f"{metric} {'n/a' if avg is None else round(float(avg), 1)} (threshold {limit})"
            for metric, (avg, limit) in sorted((extra.get("resources") or {}).items())
        )
        operator = extra.get("thresholds_check_operator", "and")
        return [f"  utilization under its thresholds over the window ({operator}): {used}"]
    return []
