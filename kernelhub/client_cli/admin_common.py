"""What every ``kh admin`` command shares: the connection (the same config, keypair and
signing as the other client commands), confirmation of destructive commands, password
prompts, the parsers for slots, sizes and durations, and the table / ``--json`` printers.

Confirmation is a rule of its own here, not a prompt in each command: a destructive command
asks on a terminal and is refused (one line, exit 2) when nothing can answer, so a script
that forgot ``--yes`` stops rather than hangs or deletes.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ..sdk import APIError, Client, ClientConfig
from ..sdk.admin import Admin, AdminPage
from .app import EXIT, exit_code_of, usage
from .app import handled as client_handled
from .units import format_slots, is_bytes_slot

__all__ = [
    "Column",
    "Force",
    "JsonFlag",
    "Limit",
    "Offset",
    "Yes",
    "confirm",
    "connected",
    "default_domain",
    "field",
    "handled",
    "new_password",
    "parse_duration",
    "parse_json_object",
    "parse_size",
    "parse_slots",
    "print_json",
    "print_listing",
    "print_mutation",
    "print_page",
    "print_record",
    "print_table",
    "show",
    "split_list",
    "stdin_is_terminal",
]

JsonFlag = Annotated[bool, typer.Option("--json", help="print the result as JSON (docs/cli.md)")]
Yes = Annotated[bool, typer.Option("-y", "--yes", help="do not ask for confirmation")]
Force = Annotated[
    bool, typer.Option("--force", help="even when the user has live sessions (they are ended)")
]
Limit = Annotated[int, typer.Option(min=1, max=100, help="page size")]
Offset = Annotated[int, typer.Option(min=0, help="where the page starts")]

Column = tuple[str, Callable[[Mapping[str, Any]], str]]
"""A table column: its header and how a record shows in it."""
F = TypeVar("F", bound=Callable[..., Any])


def handled(command: F) -> F:
    """As the client commands' (one line, an exit code, no traceback), and a server's
    refusal also names its status and problem type: ``... (403 generic-forbidden)``, so an
    admin tells "not allowed" from "no such thing" from "bad input" at a glance."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except APIError as error:
            if os.environ.get("KH_DEBUG"):
                raise
            message = " ".join(str(error).split())
            print(f"kh: error: {message} ({error.status} {error.slug})", file=sys.stderr)
            raise typer.Exit(exit_code_of(error)) from None

    return client_handled(wrapper)  # type: ignore[return-value]


# ---- the connection ---------------------------------------------------------------------------
@contextmanager
def connected() -> Iterator[Admin]:
    """The admin operations as the configured keypair (``BACKEND_*`` or ``kh up``'s file)."""
    with Client(ClientConfig.load()) as client:
        yield Admin(client)


def default_domain() -> str:
    """The domain the configuration names (``BACKEND_DOMAIN``, else ``default``)."""
    return ClientConfig.load().domain


# ---- confirmation and passwords ---------------------------------------------------------------
def stdin_is_terminal() -> bool:
    """Whether a person can answer a prompt (a function, so tests can stand in for one)."""
    return sys.stdin.isatty()


def confirm(action: str, yes: bool) -> None:
    """Go on with ``action`` (e.g. ``purge domain lab``) only when confirmed: ``--yes``, or a
    "y" typed at the terminal. Without a terminal and without ``--yes``: refused, exit 2."""
    if yes:
        return
    if not stdin_is_terminal():
        usage(f"{action}: pass --yes to confirm (stdin is not a terminal to ask on)")
    if not typer.confirm(f"{action}?", default=False, err=True):
        print("kh: not confirmed, nothing done", file=sys.stderr)
        raise typer.Exit(EXIT["user"])


def new_password(given: str | None, from_stdin: bool) -> str:
    """The password: given, or one line of stdin (``--password-stdin``), or typed twice at
    the terminal without echo. Never printed."""
    if given is not None and from_stdin:
        usage("give --password or --password-stdin, not both")
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif given is not None:
        password = given
    elif stdin_is_terminal():
        password = str(
            typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
        )
    else:
        usage("give --password or --password-stdin (stdin is not a terminal to ask on)")
    if not password:
        usage("the password is empty")
    return password


# ---- parsers ----------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(?:i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_S = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_DURATION_S["d"] = Decimal(86400)


def parse_size(text: str, flag: str) -> int:
    """Bytes from ``512m``, ``8g``, ``1.5t`` (1024-based, as ``kh run -r mem=...``) or a plain
    count."""
    match = _SIZE.match(text)
    if match is None:
        usage(f"{flag} {text!r}: a size such as 512m, 8g or a byte count")
    number, unit = Decimal(match.group(1)), match.group(2).lower()
    scale = 1024 ** (" kmgtpe".index(unit) if unit else 0)
    size = number * scale
    if size != size.to_integral_value():
        usage(f"{flag} {text!r}: not a whole number of bytes")
    return int(size)


def parse_duration(text: str, flag: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``2h`` or ``1d``."""
    match = _DURATION.match(text)
    if match is None:
        usage(f"{flag} {text!r}: a duration such as 90, 30m, 2h or 1d")
    unit = (match.group(2) or "s").lower()
    return float(Decimal(match.group(1)) * _DURATION_S[unit])


def parse_slots(text: str, flag: str) -> dict[str, str]:
    """``cpu=4,mem=8g,cuda.device=1`` (or the official client's JSON object) as the slots
    the schema takes: each amount a decimal string, memory in bytes."""
    stripped = text.strip()
    if stripped.startswith("{"):
        pairs = [(str(k), str(v)) for k, v in parse_json_object(stripped, flag).items()]
    else:
        pairs = []
        for item in filter(None, (part.strip() for part in stripped.split(","))):
            name, sep, amount = item.partition("=")
            if not sep or not name.strip() or not amount.strip():
                usage(f"{flag} {item!r}: use SLOT=AMOUNT, e.g. cpu=4,mem=8g")
            pairs.append((name.strip(), amount.strip()))
    slots: dict[str, str] = {}
    for name, amount in pairs:
        if name in slots:
            usage(f"{flag}: {name} given twice")
        if is_bytes_slot(name):
            slots[name] = str(parse_size(amount, f"{flag} {name}"))
            continue
        try:
            count = Decimal(amount)
        except InvalidOperation:
            usage(f"{flag} {name}={amount}: not a number")
        if not count.is_finite() or count < 0:
            usage(f"{flag} {name}={amount}: not a finite amount of at least 0")
        slots[name] = format(count.normalize(), "f")
    return slots


def parse_json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        usage(f"{flag}: not JSON ({error})")
    if not isinstance(value, dict):
        usage(f"{flag}: a JSON object, e.g. '{{}}'")
    return value


def split_list(text: str | None) -> list[str] | None:
    """``a,b`` -> ``["a", "b"]``; None stays None (not given: unchanged)."""
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


# ---- printing ---------------------------------------------------------------------------------
def print_json(value: Any) -> None:
    print(json.dumps(value, default=str))


def show(value: Any) -> str:
    """A value in a table cell: slots as ``kh ps`` shows them, lists joined, nothing as ``-``
    only where nothing is the point (empty strings stay empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        if all(isinstance(v, str | int | float) for v in value.values()):
            return format_slots(value) if value else "{}"
        return json.dumps(value)
    if isinstance(value, list):
        return ", ".join(
            show(v) if not isinstance(v, dict) else str(v.get("name", v)) for v in value
        )
    return str(value)


def field(name: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda record: show(record.get(name))


def print_table(columns: Sequence[Column], records: Sequence[Mapping[str, Any]]) -> None:
    """On a terminal, fitted to its width (long cells fold); into a pipe or a file, each row
    on one line whatever its length, so ``grep`` and ``awk`` see whole values."""
    table = Table(box=None, pad_edge=False)
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for record in records:
        table.add_row(*(cell(record) for _, cell in columns))
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else _PIPE_WIDTH).print(table)


_PIPE_WIDTH = 4096
"""Wide enough for any admin row; a table is only as wide as its cells need."""


def print_listing(
    columns: Sequence[Column], records: Sequence[Mapping[str, Any]], as_json: bool
) -> None:
    """A whole listing: ``{"items": [...], "total": n}`` with ``--json``, else a table."""
    if as_json:
        print_json({"items": list(records), "total": len(records)})
        return
    print_table(columns, records)
    print(f"({len(records)})")


def print_page(columns: Sequence[Column], page: AdminPage, as_json: bool) -> None:
    """One page: ``{"items", "total", "offset", "limit"}`` with ``--json``, else a table and
    how many of how many."""
    if as_json:
        print_json(page.model_dump())
        return
    print_table(columns, page.items)
    print(f"({len(page.items)} of {page.total})")


def print_record(record: Mapping[str, Any], as_json: bool) -> None:
    """One record: the object with ``--json``, else one ``key  value`` line per field."""
    if as_json:
        print_json(dict(record))
        return
    width = max((len(k) for k in record), default=0)
    for key, value in record.items():
        print(f"{key.replace('_', ' '):{width}}  {show(value)}".rstrip())


def print_mutation(answer: Mapping[str, Any], done: str, as_json: bool) -> None:
    """A mutation's answer ``{ok, msg, ...}`` with ``--json``, else the line ``done``."""
    if as_json:
        print_json(dict(answer))
    else:
        print(done)
