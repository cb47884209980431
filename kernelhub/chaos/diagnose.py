"""What to keep when a chaos run's verdict is not clean, before the stack goes: ``kh status``,
``kh why`` for each session a finding names, the log's tail, and the error lines of the
actors' Ray logs, so the finding can be explained after the stack is gone."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from .checker import Verdict
from .stack import ChaosStack, ray_session_dir

__all__ = ["diagnose"]

_SESSION_RULES = ("stuck", "not_ended", "acked_lost", "duplicate_create")


def diagnose(stack: ChaosStack, verdict: Verdict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    out = [_run(stack, "status"), _run(stack, "events", "tail", "-n", "300")]
    subjects = [f.subject for f in verdict.findings if f.rule in _SESSION_RULES]
    for subject in dict.fromkeys(subjects[:8]):
        out.append(_run(stack, "why", subject))
    (directory / "diagnosis.txt").write_text("\n\n".join(out))
    session = ray_session_dir(stack.root)
    if session is None:
        return
    lines: list[str] = []
    for log in sorted((session / "logs").glob("worker-*.err")):
        with contextlib.suppress(OSError):
            text = log.read_text(errors="replace").splitlines()
            hits = [n for n, line in enumerate(text) if "Error" in line or "Traceback" in line]
            for n in hits[:20]:
                lines += [f"{log.name}:{n}: {x}" for x in text[n : n + 6]]
    (directory / "ray-errors.txt").write_text("\n".join(lines[:5000]))


def _run(stack: ChaosStack, *args: str) -> str:
    try:
        done = stack.kh(*args, timeout=60, KH_REDIS_URL=stack.redis_url)
    except subprocess.TimeoutExpired:
        return f"$ kh {' '.join(args)}\n(timed out)"
    return f"$ kh {' '.join(args)}\n{done.stdout}{done.stderr}"
