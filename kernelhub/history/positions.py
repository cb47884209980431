"""Points in the log as people name them: a log position, a time, or a while ago.

The log's positions are Redis stream IDs, ``<ms>-<seq>``, and the ms part is Redis server
time: the log is its own clock. So a time *is* a position (every event appended up to and
including that millisecond), and "as of 10 minutes ago" is 10 minutes before the log's
clock now, never this host's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from actors.domain.errors import InvalidAPIParameters
from actors.domain.session import parse_duration

__all__ = ["Cutoff", "iso_ms", "parse_cutoff", "position_before"]

_POSITION = re.compile(r"^\d+-\d+$")
_MAX_SEQ = 2**64 - 1


@dataclass(frozen=True)
class Cutoff:
    """Everything at or before ``until`` (a position Redis's XRANGE takes as its max)."""

    until: str
    shown: str
    """How the cutoff reads back to a person (the position, or the time)."""
    exact: bool = False
    """Given as a position (else a time: every event of that millisecond counts)."""

    @property
    def ms(self) -> int:
        return int(self.until.split("-", 1)[0])

    def after_for_since(self) -> str:
        """The (exclusive) start that reads every event from this point on."""
        if not self.exact:
            return f"{self.ms - 1}-{_MAX_SEQ}"
        return position_before(self.until)

    def includes(self, position: str) -> bool:
        ms, _, seq = position.partition("-")
        limit_ms, _, limit_seq = self.until.partition("-")
        return (int(ms), int(seq or 0)) <= (int(limit_ms), int(limit_seq or 0))


def position_before(position: str) -> str:
    """The position just before ``position`` (for XRANGE's exclusive starts)."""
    ms, _, seq = position.partition("-")
    return f"{ms}-{int(seq) - 1}" if int(seq or 0) > 0 else f"{int(ms) - 1}-{_MAX_SEQ}"


def iso_ms(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def parse_cutoff(text: str, now_ms: int) -> Cutoff:
    """``1796140800000-3`` (a position), ``2026-12-01T12:00:00Z`` (a time, UTC unless it
    says otherwise), ``10m`` or ``1h30m`` (that long before ``now_ms``, the log's clock)."""
    value = text.strip()
    if _POSITION.match(value):
        return Cutoff(value, value, exact=True)
    if value.isdigit():  # milliseconds since the epoch, as positions count them
        return Cutoff(f"{value}-{_MAX_SEQ}", iso_ms(int(value)))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is not None:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ms = int(moment.timestamp() * 1000)
        return Cutoff(f"{ms}-{_MAX_SEQ}", iso_ms(ms))
    try:
        ago = parse_duration(value.lstrip("-"))
    except InvalidAPIParameters:
        raise InvalidAPIParameters(
            f"not a time or position: {text!r} (use a position like 1796140800000-3, a time "
            "like 2026-12-01T12:00:00Z, or a while ago like 10m)"
        ) from None
    ms = now_ms - int(ago.total_seconds() * 1000)
    return Cutoff(f"{ms}-{_MAX_SEQ}", iso_ms(ms))
