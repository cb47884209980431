"""Public traces turned into what-if workloads (docs/whatif.md, "Traces").

A trace format is a name and a function from a folder to a
:class:`~actors.domain.whatif.Workload`; ``kh import-trace FORMAT DIR`` writes the result
as a workload file for ``kh whatif``. Reading is bounded (rows, line length) and every
refusal names the file, the line and the column: a trace is input like any other.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from actors.domain.slots import INTRINSIC_SLOTS, SlotType
from actors.domain.whatif import Workload, WorkloadAgent, WorkloadJob
from actors.domain.whatif.workload import MAX_AGENTS, MAX_JOBS

from .errors import KernelhubError

__all__ = ["FORMATS", "TraceError", "import_alibaba_gpu_v2023", "import_trace"]

T = TypeVar("T")
MIB = 2**20
MAX_FILE_BYTES = 256 * 2**20
MAX_NUMBER = Decimal(10**12)
"""Milli-CPUs, MiB, GPUs, seconds: no trace field is larger."""


class TraceError(KernelhubError):
    pass


def _rows(path: Path, limit: int, first: int | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """The file's rows (its ``first`` only, when asked; at most ``limit``: one more is
    refused, not dropped), each with its line number; a row csv cannot read (a field over
    128 KiB, bytes that are not UTF-8) is refused with its line."""
    if not path.is_file():
        raise TraceError(f"{path}: not found (is this the trace's folder?)")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise TraceError(f"{path}: larger than {MAX_FILE_BYTES // MIB} MiB")
    with path.open("rb") as f:
        reader = csv.DictReader(_decoded(path, f))
        line = 1
        try:
            for n, row in enumerate(reader):
                line = reader.line_num
                if first is not None and n >= first:
                    return
                if n >= limit:
                    raise TraceError(f"{path.name}: more than {limit} rows")
                yield line, row
        except csv.Error as exc:
            raise TraceError(f"{path.name}:{line + 1}: unreadable: {str(exc)[:120]}") from None


def _decoded(path: Path, lines: Iterable[bytes]) -> Iterator[str]:
    """Each line as text, or a refusal naming the line that is not UTF-8 (decoding the
    whole buffer would name a line thousands before it)."""
    for number, raw in enumerate(lines, 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TraceError(f"{path.name}:{number}: unreadable: {exc.reason}") from None


def _number(path: Path, line: int, row: dict[str, str], column: str) -> Decimal:
    text = (row.get(column) or "").strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise TraceError(f"{path.name}:{line}: {column} is not a number: {text[:40]!r}") from None
    if not value.is_finite() or value < 0 or value > MAX_NUMBER:
        raise TraceError(f"{path.name}:{line}: {column} is not a number from 0 to {MAX_NUMBER}")
    return value


def _optional(path: Path, line: int, row: dict[str, str], column: str) -> Decimal | None:
    return _number(path, line, row, column) if (row.get(column) or "").strip() else None


def import_alibaba_gpu_v2023(folder: Path, limit: int | None = None) -> Workload:
    """Alibaba's cluster-trace-gpu-v2023 (``openb_*.csv``; the mapping is docs/whatif.md's):
    nodes become agents offering ``cuda.shares`` for their GPUs; tasks become sessions
    asking ``cuda.shares`` for a GPU fraction or whole GPUs, arriving at their creation time,
    running from their scheduled time to their deletion time."""
    nodes_csv = folder / "openb_node_list_all_node.csv"
    pods_csv = folder / "openb_pod_list_default.csv"
    agents = []
    for line, row in _rows(nodes_csv, MAX_AGENTS):
        capacity = {
            "cpu": _number(nodes_csv, line, row, "cpu_milli") / 1000,
            "mem": _number(nodes_csv, line, row, "memory_mib") * MIB,
        }
        gpus = _number(nodes_csv, line, row, "gpu")
        if gpus:
            capacity["cuda.shares"] = gpus
        agents.append(
            _valid(
                nodes_csv,
                line,
                WorkloadAgent,
                agent_id=row.get("sn") or f"node-{line}",
                capacity=capacity,
                model=(row.get("model") or "")[:64],
            )
        )
    rows = []
    span = Decimal(0)
    for line, row in _rows(pods_csv, MAX_JOBS, first=limit):
        created = _number(pods_csv, line, row, "creation_time")
        scheduled = _optional(pods_csv, line, row, "scheduled_time")
        deleted = _optional(pods_csv, line, row, "deletion_time")
        span = max(span, created, deleted or Decimal(0))
        rows.append((line, row, created, scheduled, deleted))
    jobs = []
    for line, row, created, scheduled, deleted in rows:
        num_gpu = _number(pods_csv, line, row, "num_gpu")
        gpu_milli = _number(pods_csv, line, row, "gpu_milli")
        requested = {
            "cpu": _number(pods_csv, line, row, "cpu_milli") / 1000,
            "mem": _number(pods_csv, line, row, "memory_mib") * MIB,
        }
        if num_gpu == 1 and 0 < gpu_milli < 1000:
            requested["cuda.shares"] = gpu_milli / 1000
        elif num_gpu:
            requested["cuda.shares"] = num_gpu
        qos = (row.get("qos") or "").strip() or "none"
        # ``pod_phase`` is the phase a task was deleted in: a Running task with a deletion
        # time ran until then (a service taken down), one deleted when the record ends was
        # still running (censored). A task never scheduled was withdrawn while pending (in
        # minutes): it has no run time, and a replay leaves it out.
        ran = scheduled is not None and deleted is not None
        jobs.append(
            _valid(
                pods_csv,
                line,
                WorkloadJob,
                job_id=row.get("name") or f"task-{line}",
                arrival_s=float(created),
                owner=qos,
                session_type="batch" if qos == "BE" else "interactive",
                requested=requested,
                run_s=float(deleted - scheduled) if ran else None,  # type: ignore[operator]
                censored=scheduled is not None and (deleted is None or deleted >= span),
                observed_wait_s=(
                    float(max(Decimal(0), scheduled - created)) if scheduled is not None else None
                ),
            )
        )
    return Workload(
        source=f"alibaba-gpu-v2023 {folder}",
        span_s=float(span),
        slot_types={**INTRINSIC_SLOTS, "cuda.shares": SlotType.COUNT},
        agents=agents,
        jobs=jobs,
    )


def _valid(path: Path, line: int, kind: type[T], /, **fields: Any) -> T:
    try:
        return kind(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TraceError(f"{path.name}:{line}: {where}: {first['msg']}") from None


FORMATS: dict[str, Callable[[Path, int | None], Workload]] = {
    "alibaba-gpu-v2023": import_alibaba_gpu_v2023,
}


def import_trace(name: str, folder: Path, limit: int | None = None) -> Workload:
    if name not in FORMATS:
        raise TraceError(f"unknown trace format {name!r} (known: {', '.join(sorted(FORMATS))})")
    return FORMATS[name](folder, limit)
