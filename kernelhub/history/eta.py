"""``kh eta``: the start times the scheduler foresees, and how right it has been.

Every pending session's estimate is kept in its read-model record; the first one stays
once it starts, with how far off it was (``start_estimate_error_s``: the start it foresaw
against its scheduling decision). Calibration judges the first estimate, the one a user
saw when the session was queued: a later one, made a second before the start, would flatter.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

__all__ = ["MIN_WAIT_S", "calibration"]

MIN_WAIT_S = 60.0
"""Sessions that waited less are left out: an estimate of "now" is right by construction."""
WITHIN = 0.5


def calibration(
    records: Iterable[dict[str, Any]], min_wait_s: float = MIN_WAIT_S
) -> dict[str, Any]:
    """Median absolute error (seconds) and the share of estimates within ±50% of the wait,
    over the sessions that started after waiting at least ``min_wait_s``."""
    errors: list[float] = []
    within = 0
    estimated = 0
    for record in records:
        error, waited = record.get("start_estimate_error_s"), record.get("waited_s")
        if error is None or waited is None:
            continue
        estimated += 1
        if waited < min_wait_s:
            continue
        errors.append(abs(float(error)))
        within += abs(float(error)) <= WITHIN * float(waited)
    return {
        "estimated_and_started": estimated,
        "judged": len(errors),
        "min_wait_s": min_wait_s,
        "median_abs_error_s": round(statistics.median(errors), 1) if errors else None,
        "within_50pct": round(within / len(errors), 3) if errors else None,
    }
