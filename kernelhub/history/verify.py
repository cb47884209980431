"""``kh events verify``: fold the whole log and check what must always hold.

- **decode**: every entry decodes, and validates, with the current code (upcasters
  included).
- **versions**: each stream's versions run 1, 2, 3... in log order, with no gap and no
  repeat.
- **transition**: a session's status events come in an order the write side can produce
  (the table below). Nothing about a session's status follows its end.
- **once**: at most one ``session_started`` per session, and one end
  (``session_terminated`` or ``session_cancelled``), never both.
- **capacity**: every ledger reservation fit the agent's free capacity at that point in the
  log, that is its registered slots minus the holds the log shows on it.
- **release**: every kernel of an ended session had its hold released. Ends within
  ``grace_ms`` of the log's last event are not judged, since their releases may be on the
  way.
- **chain**: every entry's hash-chain link is what its content and place make it
  (:mod:`events.chain`): an entry edited, removed, inserted or moved behind the store's
  back is named.
- **checkpoint**: every signed checkpoint (``log_checkpointed`` in the log, and the file
  beside the master key) has a valid signature and agrees with the chain at its position;
  one in the file is in the log too. A chain recomputed after an edit fails here.

The verifier is fed raw log entries in order and keeps only what the checks need (per
stream: its version; per session: its status; per agent: capacity and holds), so memory
grows with the number of aggregates, not with the log.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from events import Event, EventCodec, default_codec, position_key
from events.chain import ChainVerifier, signature_holds
from events.errors import EventDecodeError

__all__ = ["STATUS_AFTER", "LogVerifier", "Violation"]

_ZERO = Decimal(0)
_RECENT_LINKS = 100_000
"""Links remembered for the log's own checkpoints (each signs a head read just before it
was appended: a few entries back, unless the log was very busy)."""
_NEW = "NEW"
_ENDED = frozenset({"TERMINATED", "CANCELLED"})
_LIVE = frozenset(
    {
        "SCHEDULED",
        "PREPARING",
        "PULLING",
        "RUNNING",
        "RESTARTING",
        "RUNNING_DEGRADED",
        "ERROR",
        "TERMINATING",
    }
)
_MAY_FOLLOW: Mapping[str, frozenset[str]] = {
    "session_enqueued": frozenset({_NEW}),
    "session_scheduled": frozenset({"PENDING"}),
    "session_preparing": frozenset({"SCHEDULED"}),
    "kernel_pulling": frozenset({"PREPARING", "PULLING"}),
    "session_started": frozenset({"PREPARING", "PULLING"}),
    "session_status_changed": _LIVE - {"TERMINATING"},
    "session_terminating": _LIVE - {"TERMINATING"},
    "session_terminated": frozenset(
        {"TERMINATING", "RUNNING", "RUNNING_DEGRADED", "ERROR", "RESTARTING"}
    ),
    "session_cancelled": frozenset({"PENDING", "SCHEDULED", "PREPARING", "PULLING"}),
}
"""Which statuses a session may be in when each status event is appended."""
STATUS_AFTER = {
    "session_enqueued": "PENDING",
    "session_scheduled": "SCHEDULED",
    "session_preparing": "PREPARING",
    "kernel_pulling": "PULLING",
    "session_started": "RUNNING",
    "session_terminating": "TERMINATING",
    "session_terminated": "TERMINATED",
    "session_cancelled": "CANCELLED",
}
"""The session status each status event leaves behind (``session_status_changed`` carries
its own): shared by verify, ``kh why`` and the chaos checker."""


@dataclass(frozen=True)
class Violation:
    rule: str
    position: str
    stream: str
    version: int | None
    type: str | None
    message: str

    def line(self) -> str:
        where = f"{self.stream} v{self.version}" if self.version is not None else self.stream
        return f"{self.rule:10} {self.position}  {where}  {self.type or '?'}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Hold:
    agent: str
    slots: dict[str, Decimal]
    session: str
    position: str


@dataclass
class LogVerifier:
    codec: EventCodec = default_codec
    grace_ms: int = 10_000
    violations: list[Violation] = field(default_factory=list)
    events: int = 0
    _versions: dict[str, int] = field(default_factory=dict)
    _status: dict[str, str] = field(default_factory=dict)
    _counts: dict[tuple[str, str], int] = field(default_factory=dict)
    _ended_ms: dict[str, int] = field(default_factory=dict)
    _capacity: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    _holds: dict[str, _Hold] = field(default_factory=dict)
    _used: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    """Per agent, the sum of its holds (kept with them, so a check never walks them all)."""
    _last_ms: int = 0
    checkpoint_key: bytes | None = None
    """The checkpoints' signing key (None: no master key here, signatures not judged)."""
    file_checkpoints: Sequence[Mapping[str, Any]] = ()
    """The checkpoint file's records (``position``, ``hash``, ``signature``)."""
    chain: ChainVerifier = field(default_factory=ChainVerifier)
    _recent: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _logged_checkpoints: set[str] = field(default_factory=set)

    head: tuple[str, str] | None = None
    """The chain's head as read before the entries (its entry must be among them)."""
    judges_head: bool = False
    """Whether ``head`` was read (then ``None`` means there was none: judged too)."""
    _first: tuple[int, int] | None = None
    _forgotten: tuple[int, int] | None = None
    """The newest position dropped from the remembered links (older ones are not judged)."""

    def __post_init__(self) -> None:
        watched = {str(c.get("position")) for c in self.file_checkpoints}
        if self.head is not None:
            watched.add(self.head[0])
        self.chain.watch(watched)

    # ---- feeding ------------------------------------------------------------------------------
    def feed(self, position: str, fields: Mapping[Any, Any]) -> None:
        self.events += 1
        broken = self.chain.feed(position, fields)
        if broken is not None:
            version = int(broken.version) if broken.version.isdigit() else None
            self._flag("chain", position, broken.stream, version, None, broken.why)
        if self._first is None:
            self._first = position_key(position)
        link = fields.get(b"h", fields.get("h"))
        if link is not None:
            self._recent[position] = link.decode() if isinstance(link, bytes) else str(link)
            if len(self._recent) > _RECENT_LINKS:
                dropped, _ = self._recent.popitem(last=False)
                self._forgotten = position_key(dropped)
        try:
            event = self.codec.decode(position, fields)
        except (EventDecodeError, ValueError) as exc:
            self._flag("decode", position, _field(fields, "s"), None, None, str(exc))
            return
        self._last_ms = event.position_ms
        self._check_version(event)
        if event.stream.startswith("session-"):
            self._check_session(event)
        if event.type.startswith("alloc_") or event.type == "agent_registered":
            self._check_ledger(event)
        if event.type == "log_checkpointed":
            self._check_checkpoint(event)

    def finish(self) -> list[Violation]:
        """The end-of-log checks (releases, the checkpoint file); every violation found, in
        log order."""
        for record in self.file_checkpoints:
            self._check_file_checkpoint(record)
        cut = self.chain.judge_head(self.head) if self.judges_head else None
        if cut is not None:
            self._flag("chain", cut.position, "log", None, None, cut.why)
        for kernel, hold in sorted(self._holds.items(), key=lambda item: item[1].position):
            ended = self._ended_ms.get(hold.session)
            if ended is not None and self._last_ms - ended > self.grace_ms:
                self._flag(
                    "release",
                    hold.position,
                    f"session-{hold.session}",
                    None,
                    "alloc_reserved",
                    f"kernel {kernel} of an ended session still holds {_plain(hold.slots)} "
                    f"on {hold.agent}",
                )
        return self.violations

    # ---- checks -------------------------------------------------------------------------------
    def _flag(
        self,
        rule: str,
        position: str,
        stream: str,
        version: int | None,
        kind: str | None,
        message: str,
    ) -> None:
        self.violations.append(Violation(rule, position, stream, version, kind, message))

    def _flag_event(self, rule: str, event: Event, message: str) -> None:
        self._flag(rule, event.position, event.stream, event.version, event.type, message)

    def _check_version(self, event: Event) -> None:
        expected = self._versions.get(event.stream, 0) + 1
        if event.version != expected:
            what = "a gap" if event.version > expected else "a repeat"
            self._flag_event(
                "versions", event, f"version {event.version} where {expected} was next ({what})"
            )
        self._versions[event.stream] = max(event.version, self._versions.get(event.stream, 0))

    def _check_checkpoint(self, event: Event) -> None:
        data: Any = event.data
        record = {"position": data.position, "hash": data.hash, "signature": data.signature}
        self._logged_checkpoints.add(data.position)
        if self.checkpoint_key is not None and not signature_holds(self.checkpoint_key, record):
            self._flag_event(
                "checkpoint", event, "its signature does not hold: not signed with this key"
            )
            return
        stored = self._recent.get(data.position)
        where = position_key(data.position)
        judged = self._first is not None and where >= self._first
        if stored is None and judged and (self._forgotten is None or where > self._forgotten):
            self._flag_event(
                "checkpoint",
                event,
                f"the log has no chained entry at {data.position}: removed or rewritten",
            )
        elif stored is not None and stored != data.hash:
            self._flag_event(
                "checkpoint",
                event,
                f"the chain at {data.position} is {stored[:12]}..., the checkpoint signed "
                f"{data.hash[:12]}...: the log before it was rewritten",
            )

    def _check_file_checkpoint(self, record: Mapping[str, Any]) -> None:
        position = str(record.get("position"))

        def flag(message: str) -> None:
            self._flag("checkpoint", position, "checkpoints-file", None, None, message)

        if self.checkpoint_key is not None and not signature_holds(self.checkpoint_key, record):
            flag("signature does not hold")
            return
        stored = self.chain.links.get(position)
        if stored is None:
            flag("the log has no entry with a link at this checkpoint's position: removed")
        elif stored != record.get("hash"):
            flag(
                f"the chain here is {stored[:12]}..., the checkpoint signed "
                f"{str(record.get('hash'))[:12]}...: the log before it was rewritten"
            )
        if position not in self._logged_checkpoints:
            flag("this signed checkpoint is in the file but not in the log: removed from Redis")

    def _check_session(self, event: Event) -> None:
        sid = event.stream.removeprefix("session-")
        kind = event.type
        current = self._status.get(sid, _NEW)
        if kind in ("session_started", "session_terminated", "session_cancelled"):
            key = (sid, "end" if kind != "session_started" else "start")
            self._counts[key] = self._counts.get(key, 0) + 1
            if self._counts[key] > 1:
                self._flag_event(
                    "once",
                    event,
                    "the session already " + ("started" if key[1] == "start" else "ended"),
                )
        allowed = _MAY_FOLLOW.get(kind)
        if allowed is None:
            return
        if current not in allowed:
            self._flag_event("transition", event, f"{kind} while the session is {current}")
        if current in _ENDED:
            return  # the end stands: nothing after it changes the status
        data: Any = event.data
        becomes = str(data.status) if kind == "session_status_changed" else STATUS_AFTER[kind]
        self._status[sid] = becomes
        if becomes in _ENDED:
            self._ended_ms[sid] = event.position_ms

    def _check_ledger(self, event: Event) -> None:
        data: Any = event.data
        if event.type == "agent_registered":
            self._capacity[data.agent_id] = _decimals(data.available_slots)
        elif event.type == "alloc_reserved":
            for allocation in data.allocations:
                agent, wanted = allocation.agent_id, _decimals(allocation.slots)
                free = self._free(agent)
                short = {k: v for k, v in wanted.items() if v > free.get(k, _ZERO)}
                if short:
                    self._flag_event(
                        "capacity",
                        event,
                        f"kernel {allocation.kernel_id} got {_plain(wanted)} on "
                        f"{agent} with only {_plain(free)} free",
                    )
                hold = _Hold(agent, wanted, str(data.session_id), event.position)
                self._put_hold(str(allocation.kernel_id), hold)
        elif event.type == "alloc_settled":
            held = self._holds.get(str(data.kernel_id))
            if held is not None:
                self._put_hold(
                    str(data.kernel_id),
                    _Hold(held.agent, _decimals(data.actual), held.session, held.position),
                )
        elif event.type == "alloc_released":
            self._drop_hold(str(data.kernel_id))

    def _put_hold(self, kernel: str, hold: _Hold) -> None:
        self._drop_hold(kernel)
        self._holds[kernel] = hold
        used = self._used.setdefault(hold.agent, {})
        for slot, amount in hold.slots.items():
            used[slot] = used.get(slot, _ZERO) + amount

    def _drop_hold(self, kernel: str) -> None:
        hold = self._holds.pop(kernel, None)
        if hold is not None:
            used = self._used[hold.agent]
            for slot, amount in hold.slots.items():
                used[slot] -= amount
                if not used[slot]:
                    del used[slot]  # as if the hold had never been there

    def _free(self, agent: str) -> dict[str, Decimal]:
        free = dict(self._capacity.get(agent, {}))
        for slot, amount in self._used.get(agent, {}).items():
            free[slot] = free.get(slot, _ZERO) - amount
        return free


def _decimals(slots: Mapping[str, Any]) -> dict[str, Decimal]:
    return {k: Decimal(str(v)) for k, v in slots.items()}


def _plain(slots: Mapping[str, Decimal]) -> str:
    return (
        "{"
        + ", ".join(f"{k}: {format(v.normalize(), 'f')}" for k, v in sorted(slots.items()))
        + "}"
    )


def _field(fields: Mapping[Any, Any], name: str) -> str:
    value = fields.get(name.encode(), fields.get(name, b"?"))
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
