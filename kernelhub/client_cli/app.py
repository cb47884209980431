"""``kh run``, ``ps``, ``info``, ``rm``, ``logs``, ``exec``, ``upload``, ``download``, ``ls``,
``app`` and ``watch``: the client commands, on the SDK (so they go through the HTTP API and
its authentication like any other client), on typer and rich. :mod:`kernelhub.cli` puts
them in ``kh``'s one app, beside the operator's groups.

stdout carries the result and nothing else; status lines, spinners and progress bars go to
stderr and only on a terminal. ``--json`` prints the command's documented model
(:mod:`kernelhub.client_cli.output`). Exit codes: 0 ok, 1 user error (and code that
failed), 2 usage, 3 not found, 4 quota or pending timeout, 5 server or connection.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from ..sdk import Client, ClientConfig, Session
from ..sdk.errors import (
    ConnectionFailed,
    KernelhubSDKError,
    NotFound,
    PendingTimeout,
    QuotaExceeded,
    ServerError,
    SessionNotFound,
)
from ..sdk.models import Output, SessionInfo
from . import create_options as opts
from . import output
from .terminal import Feedback, describe_status
from .units import format_slots

__all__ = ["EXIT", "app"]

EXIT = {"ok": 0, "user": 1, "usage": 2, "not_found": 3, "quota": 4, "server": 5}
"""What ``kh``'s exit codes mean (docs/cli.md)."""

app = typer.Typer(
    help="kernelhub: event-sourced compute sessions on Ray and Redis.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
F = TypeVar("F", bound=Callable[..., Any])
JsonFlag = Annotated[bool, typer.Option("--json", help="print the result as JSON (docs/cli.md)")]
SessionRef = Annotated[str, typer.Argument(help="the session's name or id", metavar="SESSION")]


def exit_code_of(error: BaseException) -> int:
    if isinstance(error, NotFound | FileNotFoundError):
        return EXIT["not_found"]
    if isinstance(error, QuotaExceeded | PendingTimeout):
        return EXIT["quota"]
    if isinstance(error, ServerError | ConnectionFailed):
        return EXIT["server"]
    return EXIT["user"]


def usage(message: str) -> NoReturn:
    """A usage error: one line, exit 2 (as click's own, which print the usage first)."""
    print(f"kh: error: {message}", file=sys.stderr)
    raise typer.Exit(EXIT["usage"])


def handled(command: F) -> F:
    """SDK errors (and bad local paths) as one line on stderr and a meaningful exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (KernelhubSDKError, OSError, ValueError) as error:
            if os.environ.get("KH_DEBUG"):
                raise
            message = " ".join(str(error).split()) or type(error).__name__
            print(f"kh: error: {message}", file=sys.stderr)
            raise typer.Exit(exit_code_of(error)) from None

    return wrapper  # type: ignore[return-value]


def _client() -> Client:
    return Client(ClientConfig.load())


def _print_json(model: BaseModel) -> None:
    print(model.model_dump_json(by_alias=True))


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            usage(f"{flag} {item!r}: use KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


def _echo_output(out: Output) -> None:
    """One piece of console output where a terminal user expects it."""
    stream = sys.stdout if out.kind == "stdout" else sys.stderr
    stream.write(out.text if out.kind in ("stdout", "stderr") else f"[{out.kind}] {out.text}\n")
    stream.flush()


def _stdin_answer(prompt: str) -> str:
    """``input()`` in the session reads a line of this terminal's (or pipe's) stdin."""
    return sys.stdin.readline().rstrip("\n")


def _stream(session: Session, live: bool, **options: Any) -> tuple[int | None, str, str]:
    """Run code or a command, echoing its output as it comes unless ``live`` is off."""
    run = session.stream(input=_stdin_answer, **options)
    stdout: list[str] = []
    stderr: list[str] = []
    for out in run:
        (stdout if out.kind == "stdout" else stderr).append(out.text)
        if live:
            _echo_output(out)
    return run.exit_code, "".join(stdout), "".join(stderr)


def _exec_for(files: Sequence[str]) -> str:
    """The command that runs uploaded files: the runtime's heuristic (``main.py``, a
    Makefile) when it has something to find, else the first Python file."""
    names = [Path(f).name for f in files]
    if "main.py" in names or "Makefile" in names:
        return "*"
    first = next((f for f in files if f.endswith(".py")), None)
    return f"python3 {first}" if first else "*"


# ---- run --------------------------------------------------------------------------------------
@app.command(help="Start a session, run code (-c) or files in it, print what it printed.")
@handled
def run(
    image: Annotated[str, typer.Argument(help="image or alias, e.g. python", metavar="IMAGE")],
    files: Annotated[
        list[str] | None, typer.Argument(help="files to upload and run", metavar="[FILES]...")
    ] = None,
    code: Annotated[str | None, typer.Option("-c", "--code", help="code to run")] = None,
    rm: Annotated[bool, typer.Option("--rm", help="destroy the session afterwards")] = False,
    session_type: Annotated[str, typer.Option("--type", help="interactive or batch")] = (
        "interactive"
    ),
    exec_command: Annotated[
        str | None,
        typer.Option("--exec", help="the command that runs the files (batch: the startup command)"),
    ] = None,
    resource: Annotated[
        list[str] | None,
        typer.Option("-r", "--resource", help="a slot, e.g. -r cpu=1 -r mem=1g (repeatable)"),
    ] = None,
    env: opts.Env = None,
    name: Annotated[
        str | None, typer.Option("-n", "-t", "--name", help="the session's name")
    ] = None,
    preopen: opts.Preopen = None,
    max_wait: Annotated[
        float,
        typer.Option(
            "--max-wait", help="seconds to wait for it to start (0: no limit); exit 4 after"
        ),
    ] = 0,
    bootstrap_script: opts.BootstrapScript = None,
    bootstrap: opts.Bootstrap = None,
    tag: opts.Tag = None,
    callback_url: opts.CallbackUrl = None,
    starts_at: opts.StartsAt = None,
    resource_opts: opts.ResourceOpts = None,
    architecture: opts.Architecture = None,
    assign_agent: opts.AssignAgent = None,
    scaling_group: opts.ScalingGroup = None,
    cluster_size: opts.ClusterSize = 1,
    cluster_mode: opts.ClusterMode = None,
    domain: opts.Domain = None,
    group: opts.Group = None,
    owner: opts.Owner = None,
    depends: opts.Depends = None,
    mount: opts.Mount = None,
    as_json: JsonFlag = False,
) -> None:
    if session_type not in ("interactive", "batch"):
        usage(f"--type {session_type!r}: interactive or batch")
    if session_type == "batch" and (not exec_command or code or files):
        usage(
            "a batch session runs --exec CMD as its startup command "
            "(-c and FILES run in an interactive session)"
        )
    if session_type == "interactive" and code is None and not files:
        usage("give code (-c CODE) or FILES to run")
    try:
        options = opts.sdk_options(
            env=env,
            bootstrap_script=bootstrap_script,
            bootstrap=bootstrap,
            tag=tag,
            callback_url=callback_url,
            starts_at=starts_at,
            resource_opts=resource_opts,
            architecture=architecture,
            assign_agent=assign_agent,
            scaling_group=scaling_group,
            preopen=preopen,
            cluster_size=cluster_size,
            cluster_mode=cluster_mode,
            domain=domain,
            group=group,
            owner=owner,
            depends=depends,
            mount=mount,
        )
    except opts.OptionError as error:
        usage(str(error))
    feedback = Feedback(quiet=as_json)
    live = not as_json
    kind: Literal["interactive", "batch"] = "batch" if session_type == "batch" else "interactive"
    with _client() as client:
        try:
            with feedback.status(f"starting a {image} session") as show:
                session = client.create_session(
                    image,
                    name=name,
                    type=kind,
                    resources=_pairs(resource or [], "-r"),
                    timeout=max_wait or None,
                    on_status=show,
                    startup_command=exec_command if kind == "batch" else None,
                    **options,
                )
        except PendingTimeout as error:
            _settle_timeout(client, error, rm, feedback)
            raise
        feedback.note(f"∙ session {session.name} is running")
        removed = False
        try:
            if kind == "batch":
                with feedback.status(f"{session.name} RUNNING {exec_command}") as show:
                    ended = session.wait("ended", on_status=show)
                stdout, stderr, exit_code = session.logs(), "", ended.exit_code
                if live:
                    sys.stdout.write(stdout)
            else:
                exit_code, stdout, stderr = 0, "", ""
                if files:
                    with feedback.progress("uploading") as progress:
                        names = session.upload(files, progress=progress)
                    exit_code, stdout, stderr = _stream(
                        session, live, mode="batch", exec=exec_command or _exec_for(names)
                    )
                if code is not None and not exit_code:
                    exit_code, more_out, more_err = _stream(session, live, code=code)
                    stdout, stderr = stdout + more_out, stderr + more_err
            status = (session.refresh()).status
        finally:
            if rm:
                with contextlib.suppress(SessionNotFound):  # a batch session ends by itself
                    session.destroy()
                removed = True
                feedback.note(f"∙ session {session.name} destroyed")
    if as_json:
        _print_json(
            output.RunOutput(
                session_id=session.id,
                session_name=session.name,
                status=status,
                exit_code=exit_code,
                stdout=stdout,
                stderr=stderr,
                removed=removed,
                correlation_id=session.correlation_id,
            )
        )
    if exit_code:
        feedback.note(f"✗ exit code {exit_code}")
        raise typer.Exit(EXIT["user"])


def _settle_timeout(client: Client, error: PendingTimeout, rm: bool, feedback: Feedback) -> None:
    info: SessionInfo = error.session
    if rm:
        client.get_session(info.id).destroy(forced=True)
        feedback.note(f"∙ session {info.name} destroyed")
    else:
        feedback.note(f"∙ session {info.name} stays queued (kh rm {info.name} cancels it)")


# ---- sessions ---------------------------------------------------------------------------------
@app.command(help="List sessions (live ones unless --all or --status).")
@handled
def ps(
    all_: Annotated[bool, typer.Option("-a", "--all", help="ended ones too")] = False,
    status: Annotated[list[str] | None, typer.Option("--status", help="e.g. PENDING")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonFlag = False,
) -> None:
    with _client() as client:
        page = client.list_sessions("ALL" if all_ else status, limit=limit, offset=offset)
    if as_json:
        _print_json(page)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "ID", "STATUS", "INFO", "IMAGE", "SLOTS", "AGE"):
        table.add_column(column, no_wrap=column != "INFO")
    for item in page.items:
        info = item.pending_reason or item.status_info or ""
        slots = format_slots(item.occupying_slots or item.requested_slots)
        table.add_row(item.name, str(item.id)[:8], item.status, info, item.image, slots, _age(item))
    Console(soft_wrap=True).print(table)
    print(f"({len(page.items)} of {page.total})")


def _age(info: SessionInfo) -> str:
    if info.created_at is None:
        return ""
    seconds = int((datetime.now(UTC) - info.created_at).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def describe_idle_warning(warning: dict[str, Any]) -> str:
    """``kh info``'s line for a reclaim ahead (``idleWarning``)."""
    line = f"{warning.get('checker')} reclaims it at {warning.get('reclaimAt')}"
    if warning.get("checker") == "network_timeout":
        line += " unless it is used"
    return f"{line} (warned {warning.get('warnedAt')})"


@app.command(help="Show one session: status, why it waits, kernels, slots, idle checks.")
@handled
def info(ref: SessionRef, as_json: JsonFlag = False) -> None:
    with _client() as client:
        found = client.get_session(ref).info
    assert found is not None
    if as_json:
        _print_json(found)
        return
    rows = [
        ("session", f"{found.name} ({found.id})"),
        ("type", found.type),
        ("image", found.image),
        ("status", describe_status(found).removeprefix(found.name + " ")),
        ("status info", found.status_info or ""),
        ("result", found.result),
        ("exit code", "" if found.exit_code is None else str(found.exit_code)),
        ("tag", found.tag or ""),
        ("arch", found.architecture or ""),
        ("starts at", found.starts_at.isoformat() if found.starts_at else ""),
        ("owner", found.access_key or ""),
        ("group", found.scaling_group or ""),
        ("requested", _slots(found.requested_slots)),
        ("occupying", _slots(found.occupying_slots)),
        ("created", found.created_at.isoformat() if found.created_at else ""),
        ("ended", found.terminated_at.isoformat() if found.terminated_at else ""),
    ]
    for checker, report in sorted(found.idle_checks.items()):
        remaining = report.get("remaining") if isinstance(report, dict) else None
        rows.append(
            (
                f"idle {checker}",
                "not measured" if remaining is None else f"{float(remaining):.0f}s left",
            )
        )
    if found.idle_warning:
        rows.append(("idle warning", describe_idle_warning(found.idle_warning)))
    for key, value in rows:
        if value:
            print(f"{key:12} {value}")
    for kernel in found.kernels:
        code = "" if kernel.exit_code is None else f" exit {kernel.exit_code}"
        print(
            f"{'kernel':12} {kernel.hostname or kernel.id} on {kernel.agent}: {kernel.status}{code}"
        )


def _slots(slots: dict[str, str]) -> str:
    return format_slots(slots)


@app.command(help="Destroy sessions.")
@handled
def rm(
    refs: Annotated[list[str], typer.Argument(help="names or ids", show_default=False)],
    forced: Annotated[bool, typer.Option("-f", "--forced", help="even while starting")] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive", help="also the sessions that depend on it")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    removed = []
    with _client() as client:
        for ref in refs:
            session = client.get_session(ref)
            if session.info is not None and not session.info.is_live:
                raise SessionNotFound(
                    404,
                    {
                        "type": "session-not-found",
                        "title": "No such session.",
                        "msg": f"{ref} already ended ({session.info.status})",
                    },
                )
            session.destroy(forced=forced, recursive=recursive)
            removed.append(session.id)
            if not as_json:
                print(f"removed {session.name}")
    if as_json:
        _print_json(output.RmOutput(removed=removed))


@app.command(help="A session's kernel log (also after it ended).")
@handled
def logs(ref: SessionRef, as_json: JsonFlag = False) -> None:
    with _client() as client:
        session = client.get_session(ref)
        text = session.logs()
    if as_json:
        _print_json(output.LogsOutput(session_id=session.id, logs=text))
    else:
        sys.stdout.write(text)


@app.command("exec", help="Run code (-c) or a shell command (--exec) in a running session.")
@handled
def exec_(
    ref: SessionRef,
    code: Annotated[str | None, typer.Option("-c", "--code", help="code to run")] = None,
    command: Annotated[str | None, typer.Option("--exec", help="a shell command")] = None,
    as_json: JsonFlag = False,
) -> None:
    if (code is None) == (command is None):
        usage("give exactly one of -c CODE and --exec COMMAND")
    with _client() as client:
        session = client.get_session(ref)
        options: dict[str, Any] = (
            {"code": code} if command is None else {"mode": "batch", "exec": command}
        )
        run = session.stream(input=_stdin_answer, **options)
        console = []
        for out in run:
            console.append(out)
            if not as_json:
                _echo_output(out)
    if as_json:
        _print_json(
            output.ExecOutput(
                session_id=session.id,
                run_id=run.run_id or "",
                exit_code=run.exit_code,
                stdout="".join(o.text for o in console if o.kind == "stdout"),
                stderr="".join(o.text for o in console if o.kind != "stdout"),
            )
        )
    if run.exit_code:
        raise typer.Exit(EXIT["user"])


# ---- files ------------------------------------------------------------------------------------
@app.command(help="Copy local files into a session's work dir.")
@handled
def upload(
    ref: SessionRef,
    files: Annotated[list[str], typer.Argument(help="paths under --base-dir")],
    base_dir: Annotated[Path | None, typer.Option(help="default: the current dir")] = None,
    as_json: JsonFlag = False,
) -> None:
    feedback = Feedback(quiet=as_json)
    with _client() as client:
        session = client.get_session(ref)
        with feedback.progress("uploading") as progress:
            names = session.upload(files, base_dir=base_dir, progress=progress)
    if as_json:
        _print_json(output.UploadOutput(session_id=session.id, files=names))
    else:
        print("\n".join(names))


@app.command(help="Copy files or directories out of a session.")
@handled
def download(
    ref: SessionRef,
    files: Annotated[list[str], typer.Argument(help="paths in the session (work dir relative)")],
    dest: Annotated[Path, typer.Option(help="where to put them")] = Path("."),
    as_json: JsonFlag = False,
) -> None:
    feedback = Feedback(quiet=as_json)
    with _client() as client:
        session = client.get_session(ref)
        with feedback.progress("downloading") as progress:
            written = session.download(files, dest=dest, progress=progress)
    if as_json:
        _print_json(output.DownloadOutput(session_id=session.id, files=[str(p) for p in written]))
    else:
        print("\n".join(str(p) for p in written))


@app.command(help="List files in a session.")
@handled
def ls(
    ref: SessionRef,
    path: Annotated[str, typer.Argument(help="a path in the session")] = "/home/work",
    as_json: JsonFlag = False,
) -> None:
    with _client() as client:
        listing = client.get_session(ref).list_files(path)
    if as_json:
        _print_json(listing)
        return
    for entry in listing.files:
        when = entry.modified.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        print(f"{entry.mode} {entry.size:>10} {when} {entry.name}")


# ---- apps and events --------------------------------------------------------------------------
@app.command("app", help="Reach an app in a session through a local port (Ctrl-C stops).")
@handled
def app_(
    ref: SessionRef,
    service: Annotated[str, typer.Argument(help="the app, e.g. jupyter, or a preopen port")],
    bind: Annotated[str, typer.Option("-b", "--bind", help="[HOST:]PORT")] = "127.0.0.1:8080",
    as_json: JsonFlag = False,
) -> None:
    import asyncio

    from ..sdk import AsyncClient

    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        usage(f"--bind {bind!r}: use [HOST:]PORT")

    async def serve() -> None:
        async with AsyncClient(ClientConfig.load()) as client:
            session = await client.get_session(ref)
            services = await session.apps()
            async with session.forward_app(service, host=host or "127.0.0.1", port=int(port)) as (
                bound_host,
                bound_port,
            ):
                url = f"http://{bound_host}:{bound_port}"
                if as_json:
                    _print_json(
                        output.AppOutput(
                            session_id=session.id,
                            app=service,
                            url=url,
                            host=bound_host,
                            port=bound_port,
                            services=services,
                        )
                    )
                else:
                    print(f"{service} of {session.name} at {url} (Ctrl-C stops)")
                sys.stdout.flush()
                await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command(help="Follow session events as they happen (one session: until it ends).")
@handled
def watch(
    ref: Annotated[str | None, typer.Argument(help="a session (default: all of yours)")] = None,
    scope: Annotated[str, typer.Option(help="session, kernel or *")] = "*",
    as_json: JsonFlag = False,
) -> None:
    try:
        with _client() as client:
            for event in client.events(ref, scope=scope):
                if as_json:
                    _print_json(event)
                else:
                    known = event.exit_code is not None and event.exit_code >= 0  # -1: unknown
                    code = f" exit {event.exit_code}" if known else ""
                    print(f"{event.name:20} {event.session_name} {event.reason}{code}".rstrip())
                sys.stdout.flush()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
