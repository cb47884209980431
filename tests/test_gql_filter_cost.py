"""What one GraphQL ``filter`` may cost the gateway (issue 28 review, H2): ``like``,
``ilike`` and ``contains`` read a value whole, a ``startup_command`` is kept up to 64 KiB,
and a listing filters up to 5000 of the caller's own sessions on the gateway's event loop,
which every other tenant's requests wait on. Before the fix, one row and a 1957-character
filter of ``like "%aaa…ab"`` terms took 22 s (a backtracking matcher, value x pattern).

Each test plays the tenant who writes the filter and bounds the *work* (the characters the
matcher is charged for), with a generous wall-clock bound beside it. Pure.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import pytest

from actors.gateway.gql_filter import (
    LIMITS,
    QueryLanguageError,
    WorkBudget,
    like,
    parse_filter,
    select,
    session_row,
)

pytestmark = pytest.mark.unit

_LONG = "a" * 65_536


def _rows(count: int, command: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    records = [
        {"id": str(i), "name": f"job-{i}", "startup_command": command, "kernels": {}}
        for i in range(count)
    ]
    return [(session_row(record), record) for record in records]


def test_the_reviews_like_filter_on_one_long_row_is_cheap() -> None:
    term = 'startup_command like "%' + "a" * 252 + 'b"'
    keep = parse_filter(" | ".join([term] * 7))
    budget = WorkBudget(LIMITS.max_work)
    started = time.monotonic()
    assert select(_rows(1, _LONG), keep, None, budget) == []
    assert time.monotonic() - started < 2.0
    # anchored at the end, each term reads the last 253 characters, not 64 KiB x 253
    assert budget.spent < 10_000, budget.spent


@pytest.mark.parametrize(
    "term",
    [
        'startup_command like "%' + "a_" * 120 + 'b%"',  # runs with _ (value x run)
        'startup_command like "%' + "a%" * 14 + 'b%"',  # many runs
        'startup_command ilike "%b%"',  # a casefold of each value
        'startup_command contains "b"',
    ],
)
def test_the_costliest_filters_over_5000_long_rows_are_refused_within_the_budget(
    term: str,
) -> None:
    repeats = min(LIMITS.max_terms, LIMITS.max_chars // (len(term) + 3))
    keep = parse_filter(" | ".join([term] * repeats))
    budget = WorkBudget(LIMITS.max_work)
    started = time.monotonic()
    with pytest.raises(QueryLanguageError, match="too much text to compare") as refused:
        select(_rows(5000, _LONG), keep, None, budget)
    assert time.monotonic() - started < 2.0
    assert refused.value.data.keys() == {"filter"}
    # the last charge may pass the budget by one value's search at most
    assert budget.spent <= LIMITS.max_work + len(_LONG) * LIMITS.max_pattern


def test_an_ordinary_filter_over_5000_ordinary_rows_stays_well_within_the_budget() -> None:
    keep = parse_filter('name like "job-1%" | startup_command ilike "%train_%epochs%"')
    budget = WorkBudget(LIMITS.max_work)
    chosen = select(_rows(5000, "python train.py --epochs 10"), keep, None, budget)
    assert len(chosen) == 5000
    assert budget.spent < LIMITS.max_work // 20


def test_a_pattern_with_more_wildcards_than_the_bound_is_refused_naming_the_filter() -> None:
    with pytest.raises(QueryLanguageError, match="more than 16 % wildcards"):
        parse_filter('startup_command like "' + "a%" * 17 + '"')
    parse_filter('startup_command like "' + "a%" * 16 + '"')  # at the bound: read


def _reference(value: str, pattern: str, ignore_case: bool) -> bool:
    """SQL LIKE by a regex: right, but only for the short strings of this test."""
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            out.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        out.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        index += 1
    if ignore_case:
        value, pattern = value.casefold(), pattern.casefold()
        return _reference(value, pattern, False)
    return re.fullmatch("".join(out), value, re.DOTALL) is not None


def test_like_means_sql_like_on_random_short_values_and_patterns() -> None:
    rnd = random.Random(28)
    for _ in range(20_000):
        value = "".join(rnd.choice("aAb%_\\\n") for _ in range(rnd.randint(0, 8)))
        pattern = "".join(rnd.choice("aAb%_\\") for _ in range(rnd.randint(0, 7)))
        ignore_case = rnd.random() < 0.3
        assert like(value, pattern, ignore_case=ignore_case) == _reference(
            value, pattern, ignore_case
        ), (value, pattern, ignore_case)


def test_a_listing_filters_and_orders_by_its_own_columns() -> None:
    """The admin listings (users, keypairs, agents) use the same languages over their own
    columns: a session column is unknown there, and theirs sort as their kinds say."""
    from actors.gateway.gql_filter import FieldSpec, parse_filter, parse_order, select

    columns = {
        "email": FieldSpec("str"),
        "status": FieldSpec("enum", ("ACTIVE", "INACTIVE", "DELETED")),
        "rate_limit": FieldSpec("int"),
    }
    rows = [
        ({"email": "a@lab.org", "status": "DELETED", "rate_limit": 5}, "a"),
        ({"email": "b@lab.org", "status": "ACTIVE", "rate_limit": 50}, "b"),
        ({"email": "c@lab.org", "status": "INACTIVE", "rate_limit": 500}, "c"),
    ]
    keep = parse_filter('email like "%@lab.org" & rate_limit >= 50', fields=columns)
    assert select(rows, keep, parse_order("-status", fields=columns)) == ["c", "b"]
    assert select(rows, None, parse_order("+status", fields=columns)) == ["b", "c", "a"]
    with pytest.raises(QueryLanguageError, match="unknown field 'cluster_size'"):
        parse_filter("cluster_size > 1", fields=columns)
    with pytest.raises(QueryLanguageError, match="unknown field 'name'"):
        parse_order("+name", fields=columns)
