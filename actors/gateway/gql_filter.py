"""``compute_session_list``'s ``filter`` and ``order``: 23.03's query mini-languages, parsed
by our own small parser (no ``eval``, no SQL) and applied to read-model rows. Pure.

Why our own: the official client sends these strings as the user typed them
(``backend.ai ps --filter 'name ilike "%train%"' --order '-created_at'``), and a listing
that accepted them and ignored them answered a different question than the one asked.

The filter language, as 23.03 reads it (``ai.backend.manager.models.minilang.queryfilter``):

- a comparison ``FIELD OP VALUE``: ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``,
  ``contains``, ``in``, ``is``, ``isnot``, ``like``, ``ilike``;
- a value: a ``"string"`` (``\\"`` inside), a number, ``null``/``true``/``false``, or a
  ``[list, of, values]`` (for ``in``);
- ``!`` (not), ``&`` (and), ``|`` (or) and parentheses. 23.03's LALR parser resolves the
  ambiguity of an unparenthesised mix by shifting, so ``&`` and ``|`` bind equally and to
  the right (``a & b | c`` is ``a & (b | c)``) and ``!`` covers everything after it
  (``!a & b`` is ``!(a & b)``); we read them the same way, so a filter means here what it
  meant there. Parentheses say what one means either way.

Comparisons follow SQL: a missing value (``null``) matches no comparison but ``is null``
(``== null`` is ``is null``, as SQLAlchemy writes it); ``like`` is case-sensitive with
``%``, ``_`` and ``\\`` as the escape, ``ilike`` is not case-sensitive; a list field
(``image``, ``agent_ids``) matches when any item does; enum fields (``status``, ``type``,
``result``, ``cluster_mode``) take their names in either case.

The order language (``minilang.ordering``): comma-separated ``+field`` (ascending, the
default) or ``-field``. Ascending puts missing values last and descending first (as
PostgreSQL does); sessions equal on every key stay newest first.

A caller filters and orders only the sessions their scope lets them see, and only on
fields a listing shows them: an unknown field is refused (400, naming it and the fields
there are), never ignored. Everything is bounded: the text, the terms, the nesting, list
values and ``like`` patterns (and their ``%`` wildcards); ``like`` never backtracks; and the
text one request's filter compares over all its rows is bounded (:class:`WorkBudget`, a 400
past it), so no expression makes the gateway do unbounded work, however long the values.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ..domain.errors import InvalidAPIParameters
from ..domain.statuses import SessionStatus

__all__ = [
    "FILTER_FIELDS",
    "LOOKED_UP",
    "ORDER_FIELDS",
    "FieldSpec",
    "Filter",
    "FilterLimits",
    "Order",
    "QueryLanguageError",
    "WorkBudget",
    "fields_needing_lookup",
    "legacy_order",
    "like",
    "like_wildcards",
    "moment_of",
    "parse_filter",
    "parse_order",
    "select",
    "session_row",
]


class QueryLanguageError(InvalidAPIParameters):
    """A ``filter`` or ``order`` that cannot be read, or names what may not be used."""

    def __init__(self, argument: str, msg: str) -> None:
        super().__init__(f"{argument}: {msg}")
        self.data = {argument: msg}


@dataclass(frozen=True)
class FilterLimits:
    max_chars: int = 2_048
    """The client's filters are a few dozen characters."""
    max_terms: int = 32
    """Comparisons in one filter."""
    max_depth: int = 16
    """Nested parentheses and ``!``."""
    max_list: int = 100
    """Values in one ``[...]``."""
    max_pattern: int = 256
    """Characters of one ``like`` pattern or string value."""
    max_order_keys: int = 8
    max_wildcards: int = 16
    """``%`` runs in one ``like`` pattern (each one a search through the value)."""
    max_work: int = 50_000_000
    """Characters one request's filter may compare over all its rows (:class:`WorkBudget`):
    a few tenths of a second of the gateway's event loop at most."""


LIMITS = FilterLimits()

Kind = Literal["str", "enum", "int", "time", "list"]


@dataclass(frozen=True)
class _Field:
    kind: Kind
    names: tuple[str, ...] = ()
    """An enum's names, in their declared order (which is how it sorts)."""


FieldSpec = _Field
"""One column a listing may be filtered or ordered by (other listings than sessions' pass
their own ``fields`` to :func:`parse_filter` and :func:`parse_order`)."""

_STATUSES = tuple(s.name for s in SessionStatus)
_TYPES = ("INTERACTIVE", "BATCH", "INFERENCE")
_RESULTS = ("UNDEFINED", "SUCCESS", "FAILURE")
_CLUSTER_MODES = ("SINGLE_NODE", "MULTI_NODE")

FILTER_FIELDS: Mapping[str, _Field] = {
    "id": _Field("str"),
    "type": _Field("enum", _TYPES),
    "name": _Field("str"),
    "image": _Field("list"),
    "agent_ids": _Field("list"),
    "agent_id": _Field("list"),
    "agents": _Field("list"),
    "domain_name": _Field("str"),
    "group_name": _Field("str"),
    "user_email": _Field("str"),
    "user_id": _Field("str"),
    "full_name": _Field("str"),
    "access_key": _Field("str"),
    "scaling_group": _Field("str"),
    "cluster_mode": _Field("enum", _CLUSTER_MODES),
    "cluster_size": _Field("int"),
    "status": _Field("enum", _STATUSES),
    "status_info": _Field("str"),
    "result": _Field("enum", _RESULTS),
    "created_at": _Field("time"),
    "terminated_at": _Field("time"),
    "starts_at": _Field("time"),
    "scheduled_at": _Field("time"),
    "startup_command": _Field("str"),
}
"""23.03's ``ComputeSession._queryfilter_fieldspec``: what a listing shows of a session."""

ORDER_FIELDS: Mapping[str, _Field] = {
    name: FILTER_FIELDS[name]
    for name in (
        "id",
        "type",
        "name",
        "image",
        "agent_ids",
        "domain_name",
        "group_name",
        "user_email",
        "user_id",
        "full_name",
        "access_key",
        "scaling_group",
        "cluster_mode",
        "cluster_size",
        "status",
        "status_info",
        "result",
        "created_at",
        "terminated_at",
        "starts_at",
        "scheduled_at",
    )
}
"""23.03's ``ComputeSession._queryorder_colmap``."""

LOOKED_UP = frozenset({"group_name", "user_email", "full_name"})
"""Fields that are not in the session's record: the caller looks them up (only when a
filter or an order names them)."""

Row = Mapping[str, Any]


# ---- the rows ------------------------------------------------------------------------------
def moment_of(value: Any) -> datetime | None:
    """A record's ISO time as an aware datetime (a time without a zone is UTC); ``None``
    for none or for text that is no time: what filters and orders compare."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def session_row(
    record: Mapping[str, Any],
    group_name: str | None = None,
    user: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields a filter or an order reads, from a session's read-model record (and its
    project's name and its user, when the caller looked them up), typed for comparing."""
    kernels = list((record.get("kernels") or {}).values())
    images = sorted({str(k.get("image")) for k in kernels if k.get("image")})
    agents = sorted({str(k.get("agent")) for k in kernels if k.get("agent")})
    mode = str(record.get("cluster_mode") or "single-node").upper().replace("-", "_")
    user = user or {}
    return {
        "id": str(record.get("id")),
        "type": str(record.get("type") or "interactive").upper(),
        "name": record.get("name"),
        "image": images or ([record["image"]] if record.get("image") else []),
        "agent_ids": agents,
        "agent_id": agents,
        "agents": agents,
        "domain_name": record.get("domain"),
        "group_name": group_name,
        "user_email": user.get("email"),
        "user_id": None if record.get("user_id") is None else str(record["user_id"]),
        "full_name": user.get("full_name"),
        "access_key": record.get("access_key"),
        "scaling_group": record.get("scaling_group"),
        "cluster_mode": mode,
        "cluster_size": record.get("cluster_size"),
        "status": record.get("status"),
        "status_info": record.get("status_info") or None,
        "result": str(record.get("result") or "undefined").upper(),
        "created_at": moment_of(record.get("created_at")),
        "terminated_at": moment_of(record.get("terminated_at")),
        "starts_at": moment_of(record.get("starts_at")),
        "scheduled_at": moment_of((record.get("status_history") or {}).get("SCHEDULED")),
        "startup_command": record.get("startup_command"),
    }


# ---- tokens --------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*")
  | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<op>==|!=|>=|<=|>|<)
  | (?P<punct>[()\[\],&|!])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_WORD_OPS = frozenset({"contains", "in", "isnot", "is", "like", "ilike"})
_ATOMS: Mapping[str, Any] = {"null": None, "true": True, "false": False}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    at: int


def _tokens(text: str, argument: str) -> list[_Token]:
    found, at = [], 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise QueryLanguageError(argument, f"unexpected {text[at]!r} at {at}")
        kind = match.lastgroup or ""
        if kind != "space":
            found.append(_Token(kind, match.group(), at))
        at = match.end()
    return found


# ---- the filter ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Compare:
    field: str
    op: str
    value: Any
    kind: Kind = "str"


@dataclass(frozen=True)
class _Not:
    inner: _Node


@dataclass(frozen=True)
class _Combine:
    op: str
    left: _Node
    right: _Node


_Node = _Compare | _Not | _Combine


class Filter:
    """A parsed filter: which fields it reads, and whether a row matches."""

    def __init__(self, root: _Node, fields: frozenset[str]) -> None:
        self._root = root
        self.fields = fields

    def matches(self, row: Row, budget: WorkBudget | None = None) -> bool:
        """Whether ``row`` passes; the text compared is charged to ``budget``."""
        return _evaluate(self._root, row, budget) is True


def parse_filter(
    text: str, limits: FilterLimits = LIMITS, *, fields: Mapping[str, _Field] = FILTER_FIELDS
) -> Filter:
    """The filter ``text`` means over ``fields`` (a session listing's by default);
    :class:`QueryLanguageError` (a 400) when it cannot be read, names an unknown field,
    compares a field with what it cannot hold, or is past a bound."""
    if len(text) > limits.max_chars:
        raise QueryLanguageError("filter", f"longer than {limits.max_chars} characters")
    parser = _FilterParser(_tokens(text, "filter"), limits, fields)
    root = parser.expression(depth=0)
    if parser.position != len(parser.tokens):
        token = parser.tokens[parser.position]
        raise QueryLanguageError("filter", f"unexpected {token.text!r} at {token.at}")
    return Filter(root, frozenset(parser.fields))


class _FilterParser:
    def __init__(
        self, tokens: list[_Token], limits: FilterLimits, columns: Mapping[str, _Field]
    ) -> None:
        self.tokens = tokens
        self.limits = limits
        self.columns = columns
        self.position = 0
        self.terms = 0
        self.fields: set[str] = set()

    def _peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self, what: str) -> _Token:
        token = self._peek()
        if token is None:
            raise QueryLanguageError("filter", f"ends where {what} was expected")
        self.position += 1
        return token

    def _error(self, token: _Token, what: str) -> QueryLanguageError:
        return QueryLanguageError("filter", f"expected {what} at {token.at}, not {token.text!r}")

    def expression(self, depth: int) -> _Node:
        """``'!' expr | primary [('&'|'|') expr]``: 23.03's grammar with its conflicts
        resolved as its parser resolves them (shift: to the right)."""
        if depth > self.limits.max_depth:
            raise QueryLanguageError("filter", f"nested deeper than {self.limits.max_depth}")
        token = self._take("a comparison")
        if token.text == "!":
            return _Not(self.expression(depth + 1))
        if token.text == "(":
            node = self.expression(depth + 1)
            closing = self._take("')'")
            if closing.text != ")":
                raise self._error(closing, "')'")
        elif token.kind == "word" and token.text not in _ATOMS and token.text not in _WORD_OPS:
            node = self._comparison(token)
        else:
            raise self._error(token, "a field name, '(' or '!'")
        following = self._peek()
        if following is not None and following.text in ("&", "|"):
            self.position += 1
            return _Combine(following.text, node, self.expression(depth))
        return node

    def _comparison(self, name: _Token) -> _Compare:
        self.terms += 1
        if self.terms > self.limits.max_terms:
            raise QueryLanguageError("filter", f"more than {self.limits.max_terms} comparisons")
        field = self.columns.get(name.text)
        if field is None:
            known = ", ".join(sorted(self.columns))
            raise QueryLanguageError("filter", f"unknown field {name.text!r} (fields: {known})")
        op_token = self._take("an operator")
        op = op_token.text
        if not (op_token.kind == "op" or (op_token.kind == "word" and op in _WORD_OPS)):
            raise self._error(op_token, "an operator")
        value = self._value(depth=0)
        self.fields.add(name.text)
        checked = _checked(name.text, field, op, value, self.limits)
        return _Compare(name.text, op, checked, field.kind)

    def _value(self, depth: int) -> Any:
        token = self._take("a value")
        if token.kind == "string":
            if len(token.text) - 2 > self.limits.max_pattern:
                raise QueryLanguageError(
                    "filter", f"a string longer than {self.limits.max_pattern} characters"
                )
            return token.text[1:-1].replace('\\"', '"')
        if token.kind == "number":
            number = float(token.text)
            return int(number) if number.is_integer() and "." not in token.text else number
        if token.kind == "word" and token.text in _ATOMS:
            return _ATOMS[token.text]
        if token.text == "[" and depth == 0:
            items: list[Any] = []
            while True:
                following = self._peek()
                if following is not None and following.text == "]" and not items:
                    self.position += 1
                    return items
                items.append(self._value(depth + 1))
                if len(items) > self.limits.max_list:
                    raise QueryLanguageError(
                        "filter", f"a list of more than {self.limits.max_list} values"
                    )
                separator = self._take("',' or ']'")
                if separator.text == "]":
                    return items
                if separator.text != ",":
                    raise self._error(separator, "',' or ']'")
        raise self._error(token, "a value")


def _checked(name: str, field: _Field, op: str, value: Any, limits: FilterLimits) -> Any:
    """``value`` in the form comparing ``field`` with it takes; refused when the field
    cannot be compared that way (as 23.03 refuses a wrong enum name or date)."""

    def refuse(why: str) -> QueryLanguageError:
        return QueryLanguageError("filter", f"{name} {op} {value!r}: {why}")

    if op in ("is", "isnot"):
        if not (value is None or value is True or value is False):
            raise refuse("is/isnot take null, true or false")
        return value
    if value is None:
        if op not in ("==", "!="):
            raise refuse("null is compared with ==, !=, is or isnot only")
        return None
    if op == "in":
        if not isinstance(value, list):
            raise refuse("in takes a [list]")
        return [_scalar(name, field, "==", item, refuse) for item in value]
    if isinstance(value, list):
        raise refuse("a [list] goes with in only")
    if op in ("like", "ilike", "contains"):
        if field.kind not in ("str", "list") or not isinstance(value, str):
            raise refuse(f"{op} compares text fields with a string")
        if op != "contains" and like_wildcards(value) > limits.max_wildcards:
            raise refuse(f"more than {limits.max_wildcards} % wildcards")
        return value
    if op in ("<", "<=", ">", ">=") and field.kind == "enum":
        raise refuse(f"{op} does not order {name}; use == or in")
    return _scalar(name, field, op, value, refuse)


def _scalar(
    name: str,
    field: _Field,
    op: str,
    value: Any,
    refuse: Callable[[str], QueryLanguageError],
) -> Any:
    if field.kind == "enum":
        wanted = str(value)
        for candidate in (wanted, wanted.upper()):
            if candidate in field.names:
                return candidate
        raise refuse(f"expected one of {', '.join(field.names)} or their lower-case names")
    if field.kind == "time":
        moment = moment_of(value) if isinstance(value, str) else None
        if moment is None:
            raise refuse("expected an ISO 8601 time")
        return moment
    if field.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("expected an integer")
        return value
    if not isinstance(value, str):
        raise refuse("expected a string")
    return value


def _evaluate(node: _Node, row: Row, budget: WorkBudget | None = None) -> bool | None:
    """SQL's three-valued logic: ``None`` is "unknown" (a comparison with a missing value)."""
    if isinstance(node, _Not):
        inner = _evaluate(node.inner, row, budget)
        return None if inner is None else not inner
    if isinstance(node, _Combine):
        left, right = _evaluate(node.left, row, budget), _evaluate(node.right, row, budget)
        if node.op == "&":
            if left is False or right is False:
                return False
            return None if left is None or right is None else True
        if left is True or right is True:
            return True
        return None if left is None or right is None else False
    value = row.get(node.field)
    if node.kind == "list":
        items = list(value or ())
        if node.op in ("is", "isnot") or node.value is None:
            return _compare(items or None, node.op, node.value)
        results = [_compare(item, node.op, node.value, budget) for item in items]
        if any(r is True for r in results):
            return True
        return False
    return _compare(value, node.op, node.value, budget)


def _compare(value: Any, op: str, wanted: Any, budget: WorkBudget | None = None) -> bool | None:
    if op == "is" or (op == "==" and wanted is None):
        return value is wanted if isinstance(wanted, bool) else value is None
    if op == "isnot" or (op == "!=" and wanted is None):
        return value is not wanted if isinstance(wanted, bool) else value is not None
    if value is None:
        return None
    if op == "in":
        return value in wanted
    if op == "like":
        return like(str(value), wanted, budget=budget)
    if op == "ilike":
        return like(str(value), wanted, ignore_case=True, budget=budget)
    if op == "contains":
        text = str(value)
        if budget is not None:
            budget.charge(len(text) + len(wanted))
        return wanted in text
    try:
        if op == "==":
            return bool(value == wanted)
        if op == "!=":
            return bool(value != wanted)
        if op == "<":
            return bool(value < wanted)
        if op == "<=":
            return bool(value <= wanted)
        if op == ">":
            return bool(value > wanted)
        if op == ">=":
            return bool(value >= wanted)
    except TypeError:  # a value of another type than the field's (an old record): unknown
        return None
    raise ValueError(f"unknown operator {op!r}")  # the parser lets none through


class WorkBudget:
    """The character steps one request's filter may spend on its rows: ``like``, ``ilike``
    and ``contains`` read a value whole, and a value may be long (a ``startup_command`` is
    kept up to 64 KiB), so a cap on each pattern alone does not bound a listing of thousands
    of sessions. Past the budget the listing is refused (400) rather than let one caller
    hold the gateway's event loop, which every other tenant's requests wait on."""

    def __init__(self, steps: int) -> None:
        self.left = steps
        self.spent = 0

    def charge(self, steps: int) -> None:
        self.spent += steps
        self.left -= steps
        if self.left < 0:
            raise QueryLanguageError(
                "filter",
                "too much text to compare: narrow the listing (status, group_id, access_key) "
                "or use fewer or shorter like/ilike/contains comparisons on long fields",
            )


_Segment = str | re.Pattern[str]
"""A run of a ``like`` pattern between two ``%``: a literal, or (with ``_``) a regex of
fixed length without any repetition, so it never backtracks."""


@dataclass(frozen=True)
class _LikePattern:
    segments: tuple[tuple[_Segment, int], ...]
    """Each run between ``%``s with its length in characters; one run when no ``%``."""


@functools.lru_cache(maxsize=512)
def _like_pattern(pattern: str) -> _LikePattern:
    runs: list[list[str | None]] = [[]]  # characters; None for ``_``
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            runs[-1].append(pattern[index + 1])
            index += 2
            continue
        if char == "%":
            runs.append([])
        else:
            runs[-1].append(None if char == "_" else char)
        index += 1
    segments: list[tuple[_Segment, int]] = []
    for run in runs:
        if any(atom is None for atom in run):
            regex = "".join("." if atom is None else re.escape(atom) for atom in run)
            segments.append((re.compile(regex, re.DOTALL), len(run)))
        else:
            segments.append(("".join(atom for atom in run if atom is not None), len(run)))
    return _LikePattern(tuple(segments))


def like_wildcards(pattern: str) -> int:
    """The ``%`` runs of a ``like`` pattern (each one a segment to find)."""
    return len(_like_pattern(pattern).segments) - 1


def _at(segment: _Segment, value: str, at: int) -> bool:
    """Whether ``segment`` matches ``value`` at ``at`` exactly."""
    if isinstance(segment, str):
        return value.startswith(segment, at)
    return segment.match(value, at) is not None


def like(
    value: str, pattern: str, *, ignore_case: bool = False, budget: WorkBudget | None = None
) -> bool:
    """SQL ``LIKE``: ``%`` any run, ``_`` any one character, ``\\`` escapes the next.

    The pattern is split at ``%`` into fixed-length runs: the first must match at the start,
    the last at the end, and each one between is found leftmost after the one before (which
    is right for fixed-length runs: an earlier find leaves the most room for the rest). A
    literal run is found with ``str.find`` and a run with ``_`` by a regex with no
    repetition, so nothing backtracks: the cost is about len(value) for each literal run and
    len(value) x len(run) for a run with ``_``, charged to ``budget``."""
    if ignore_case:
        if budget is not None:
            budget.charge(len(value) + len(pattern))
        value, pattern = value.casefold(), pattern.casefold()
    segments = _like_pattern(pattern).segments
    if len(segments) == 1:
        segment, length = segments[0]
        if budget is not None:
            budget.charge(length + 1)
        return len(value) == length and _at(segment, value, 0)
    (first, first_len), (last, last_len) = segments[0], segments[-1]
    end = len(value) - last_len
    if budget is not None:
        budget.charge(first_len + last_len + 1)
    if end < first_len or not _at(first, value, 0) or not _at(last, value, end):
        return False
    at = first_len
    for segment, length in segments[1:-1]:
        if length == 0:
            continue
        if isinstance(segment, str):
            found = value.find(segment, at, end)
            if budget is not None:
                budget.charge((end if found < 0 else found + length) - at + length)
        else:
            hit = segment.search(value, at, end)
            found = -1 if hit is None else hit.start()
            if budget is not None:
                budget.charge(((end if found < 0 else found + length) - at + 1) * length)
        if found < 0:
            return False
        at = found + length
    return True


# ---- the order -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Order:
    keys: tuple[tuple[str, bool], ...]
    """(field, ascending), most significant first."""
    columns: Mapping[str, _Field] = field(
        default_factory=lambda: ORDER_FIELDS, compare=False, repr=False
    )
    """What the keys name (a session listing's by default)."""

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.keys)

    def sort(self, rows: Iterable[tuple[Row, Any]]) -> list[Any]:
        """The items paired with ``rows``, ordered; ties keep their given order."""
        pairs = list(rows)
        for name, ascending in reversed(self.keys):
            spec = self.columns[name]
            pairs.sort(key=lambda pair: _sort_key(pair[0].get(name), spec), reverse=not ascending)
        return [item for _, item in pairs]


def _sort_key(value: Any, field: _Field) -> tuple[bool, Any]:
    """Missing last when ascending (first when descending, the sort being reversed)."""
    if field.kind == "list":
        value = value[0] if value else None
    if value is None:
        return True, 0
    if field.kind == "enum":
        return False, field.names.index(value) if value in field.names else len(field.names)
    if field.kind == "time":
        return False, value.timestamp()
    return False, value


def parse_order(
    text: str, limits: FilterLimits = LIMITS, *, fields: Mapping[str, _Field] = ORDER_FIELDS
) -> Order:
    """``+a,-b``: the keys to sort by among ``fields``; unknown fields refused (400) as in
    :func:`parse_filter`."""
    if len(text) > limits.max_chars:
        raise QueryLanguageError("order", f"longer than {limits.max_chars} characters")
    keys: list[tuple[str, bool]] = []
    for part in text.split(","):
        item = part.strip()
        if not item:
            if text.strip():
                raise QueryLanguageError("order", "an empty key")
            continue
        ascending = not item.startswith("-")
        name = item[1:].strip() if item[0] in "+-" else item
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise QueryLanguageError("order", f"{item!r} is not [+|-]field")
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise QueryLanguageError("order", f"unknown field {name!r} (fields: {known})")
        keys.append((name, ascending))
        if len(keys) > limits.max_order_keys:
            raise QueryLanguageError("order", f"more than {limits.max_order_keys} keys")
    return Order(tuple(keys), fields)


def legacy_order(order_key: str | None, order_asc: bool | None) -> str | None:
    """The ``order_key``/``order_asc`` pair older clients send, as an order expression."""
    if not order_key:
        return None
    return ("+" if order_asc is None or order_asc else "-") + order_key


def fields_needing_lookup(*parsed: Filter | Order | None) -> set[str]:
    """Which looked-up fields (:data:`LOOKED_UP`) the parsed filter and order read."""
    wanted: set[str] = set()
    for item in parsed:
        if item is not None:
            wanted |= set(item.fields) & LOOKED_UP
    return wanted


def select(
    rows: Sequence[tuple[Row, Any]],
    keep: Filter | None,
    order: Order | None,
    budget: WorkBudget | None = None,
) -> list[Any]:
    """The items whose rows pass ``keep``, in ``order`` (else as given). One call is one
    request: the text its filter compares is bounded by ``budget`` (by default
    :attr:`FilterLimits.max_work`), past which :class:`QueryLanguageError` (a 400)."""
    spend = WorkBudget(LIMITS.max_work) if budget is None else budget
    kept = [(row, item) for row, item in rows if keep is None or keep.matches(row, spend)]
    return order.sort(kept) if order is not None else [item for _, item in kept]
