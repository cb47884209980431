"""What a test run left running: kernelhub's processes and containers that outlived the suite.

A green run once left two ``redis-server`` processes behind (a failed one more), and nobody
saw: the next run on the same machine then shares its CPUs with them, or trips over their
ports. Every fixture stops what it started; this is the check that says when one did not.

Which processes are the run's own: everything the suite starts inherits its environment, so
the run writes one mark into it (``KERNELHUB_TEST_RUN=<id>``, kept when ``.ci/run`` set it
first) and a process carrying that mark is the run's. Kernels are started with an
environment of their own (the process backend builds one from scratch), so a process is the
run's too when its command line or environment names a directory the run made (pytest's
base temp dir, each ``kh up``'s temporary root). Containers carry kernelhub's owner label and
bind directories of the run's. Other people's stacks on the same machine (another helper's
``kh up``, dockerd itself) carry neither, and are never named.

``python -m tests.leftovers --kill`` is ``.ci/run``'s last step: it names what the run left
and kills it."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MARK = "KERNELHUB_TEST_RUN"
"""The environment variable every process the suite starts inherits (not ``KH_``-prefixed:
some fixtures drop ``KH_*`` from the environment they give a stack)."""

OWNER_LABEL = "ai.backend.owner"
"""The label kernelhub's Docker backend puts on every kernel container."""

KERNELHUB_LIKE = re.compile(
    rb"redis-server|raylet|gcs_server|ray::|/ray/|ray start|kernel_runner|kernelhub"
)
"""What counts as kernelhub's among the run's processes (its Redis, Ray's daemons and
workers, kernels, ``kh``): a helper like multiprocessing's resource tracker is not a leak."""

NEVER = re.compile(rb"^(dockerd|containerd|containerd-shim[^\0]*|docker-proxy)\0")
"""dockerd and its helpers are the machine's, even when started from a shell with the mark."""


@dataclass(frozen=True)
class Leftover:
    kind: str  # "process" or "container"
    ident: str  # pid, or container id
    what: str  # the command line, or the container's name and image

    def __str__(self) -> str:
        return f"{self.kind} {self.ident}: {self.what}"


def run_mark() -> str:
    """This run's mark, set in our environment (so every child inherits it) if not yet."""
    return os.environ.setdefault(MARK, f"pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}")


_roots: list[str] = []


def _dirs_file(mark: str) -> Path:
    """Where the run lists its directories as it makes them, so ``.ci/run``'s last step
    knows them too, even when pytest itself was killed before it could check."""
    return Path(tempfile.gettempdir()) / f"kernelhub-test-run-{mark}.dirs"


def track(root: str | os.PathLike[str]) -> None:
    """A directory the run made, whose mention makes a process or a container the run's
    (named with its trailing slash: ``pytest-12`` must not name ``pytest-123/``'s)."""
    named = os.path.join(str(root), "")
    if named not in _roots:
        _roots.append(named)
        with contextlib.suppress(OSError), _dirs_file(run_mark()).open("a") as listed:
            listed.write(named + "\n")


def roots() -> list[str]:
    return list(_roots)


def forget(mark: str) -> None:
    """Drop the run's list of directories (a run that ``.ci/run`` did not mark)."""
    _dirs_file(mark).unlink(missing_ok=True)


def _ancestors() -> set[int]:
    """Our own pid and our parents': the shell that ran the suite carries the mark too."""
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def processes(
    mark: str, needles: Iterable[str] = (), *, group: int | None = None, session: int | None = None
) -> list[Leftover]:
    """The run's kernelhub processes still alive (zombies are dead: their parent reaps them).

    A process is the run's when it names one of ``needles`` (its command line, environment
    or working directory), or when it looks like kernelhub's and carries the run's mark, or
    is in the run's process ``group`` or ``session``: ``redis-server`` rewrites the memory
    that ``/proc/PID/environ`` shows (its process title), so a server the suite started with
    the suite's environment no longer shows the mark, but it stays in the suite's group."""
    wanted = f"{MARK}={mark}\0".encode()
    names = [n.encode() for n in needles if n]
    skip = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes() + b"\0"
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cwd = os.fsencode(os.readlink(entry / "cwd")) + b"/"
        except (OSError, IndexError):
            continue
        state, pgid, sid = stat[0], int(stat[2]), int(stat[3])
        if not cmdline or state == "Z" or NEVER.match(cmdline):
            continue
        text = cmdline + b"\0" + environ + b"\0" + cwd
        named = any(n in text for n in names)
        kin = wanted in environ or pgid == group or sid == session
        if named or (kin and KERNELHUB_LIKE.search(cmdline)):
            found.append(Leftover("process", entry.name, _shown(cmdline)))
    return sorted(found, key=lambda leftover: int(leftover.ident))


def _shown(cmdline: bytes) -> str:
    """A command line to read in a report: ``python -c <code>`` without the code (the
    kernel runner's boot line is long, and what follows it says which kernel)."""
    argv = cmdline.rstrip(b"\0").decode(errors="replace").split("\0")
    if len(argv) > 2 and argv[1] == "-c":
        argv[2] = "..."
    return " ".join(argv)[:240]


def containers(needles: Iterable[str]) -> list[Leftover]:
    """Kernel containers (kernelhub's owner label) that bind or name a directory of the run's.
    No Docker here is no container."""
    names = [n for n in needles if n]
    if not names:
        return []
    try:
        listed = subprocess.run(
            ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={OWNER_LABEL}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        ids = listed.stdout.split() if listed.returncode == 0 else []
        if not ids:
            return []
        inspected = subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = []
    for container in json.loads(inspected.stdout or "[]"):
        config, host = container.get("Config") or {}, container.get("HostConfig") or {}
        text = json.dumps([container.get("Mounts"), host.get("Binds"), config.get("Env")])
        if any(n in text for n in names):
            what = f"{container.get('Name', '').lstrip('/')} ({config.get('Image')})"
            found.append(Leftover("container", container["Id"][:12], what))
    return found


def leftovers(
    mark: str,
    needles: Sequence[str],
    before: Iterable[Leftover] = (),
    *,
    group: int | None = None,
    session: int | None = None,
) -> list[Leftover]:
    """Everything of the run's still there, less what was there already (``before``)."""
    known = {(old.kind, old.ident) for old in before}
    found = processes(mark, needles, group=group, session=session) + containers(needles)
    return [left for left in found if (left.kind, left.ident) not in known]


def kill(found: Iterable[Leftover]) -> None:
    """SIGKILL the processes, remove the containers (what the next run must not meet)."""
    for left in found:
        if left.kind == "process":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(left.ident), signal.SIGKILL)
        else:
            subprocess.run(["docker", "rm", "-f", left.ident], capture_output=True, timeout=60)


def main(argv: Sequence[str] | None = None) -> int:
    """``.ci/run``'s last step: name what the run (``$KERNELHUB_TEST_RUN``, or this shell's
    session: ``.ci/run`` runs alone) left, kill it with ``--kill``; exit 0 either way (the
    suite's own check already failed the run)."""
    parser = argparse.ArgumentParser(prog="python -m tests.leftovers")
    parser.add_argument("--kill", action="store_true", help="kill what is found")
    parser.add_argument("needles", nargs="*", help="directories whose mention makes it ours")
    args = parser.parse_args(argv)
    mark = os.environ.get(MARK)
    if not mark:
        print(f"ci: {MARK} is not set: cannot tell what the run started", file=sys.stderr)
        return 0
    listed = _dirs_file(mark)
    with contextlib.suppress(OSError):
        args.needles += listed.read_text().split()
    found = leftovers(mark, args.needles, session=os.getsid(0))
    listed.unlink(missing_ok=True)
    if found:
        print("ci: left running: " + "; ".join(map(str, found)), file=sys.stderr)
        if args.kill:
            kill(found)
    else:
        print("ci: left running: nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
