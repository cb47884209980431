"""Correlation ids, pure: bound in a context, carried by the events decided there and across
an actor call's keyword, found again in log text and ordered into ``kh trace``'s timeline."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime

import pytest

from actors.hosts._traced import traced_actor
from events import correlated, current_correlation, events_for_command, parse_correlation
from events.catalogue import SessionCancelled
from events.correlation import correlation_kwargs
from kernelhub.trace import TraceEntry, log_entries, render, timeline

pytestmark = pytest.mark.unit

CID = uuid.UUID("6f1c9a59-6d4b-4c55-9d57-13a1f6c1e0aa")


def cancelled() -> SessionCancelled:
    return SessionCancelled(session_id=uuid.uuid4(), creation_id="c", reason="user-requested")


def test_events_decided_under_a_correlation_carry_it_and_others_do_not() -> None:
    command = uuid.uuid4()
    assert events_for_command(command, [cancelled()])[0].correlation_id is None
    with correlated(CID):
        (event,) = events_for_command(command, [cancelled()])
        named = events_for_command(command, [cancelled()], correlation_id=None)[0]
        assert correlation_kwargs() == {"correlation_id": str(CID)}
    assert event.correlation_id == CID
    assert named.correlation_id is None  # the caller's own choice wins
    assert current_correlation() is None and correlation_kwargs() == {}


def test_a_malformed_or_absent_id_keeps_the_outer_one() -> None:
    with correlated(str(CID)):
        with correlated("not-a-uuid") as inner, correlated(None) as none:
            assert inner == none == CID
        other = uuid.uuid4()
        with correlated(other):
            assert current_correlation() == other
        assert current_correlation() == CID
    assert parse_correlation("") is None and parse_correlation(42) is None


async def test_tasks_spawned_under_a_correlation_inherit_it() -> None:
    async def spawned() -> uuid.UUID | None:
        await asyncio.sleep(0)
        return current_correlation()

    with correlated(CID):
        task = asyncio.create_task(spawned())
    assert await task == CID


async def test_a_traced_actor_takes_the_id_as_a_keyword_and_keeps_its_signature() -> None:
    @traced_actor
    class Shell:
        async def create(self, name: str, *, size: int = 1, **options: object) -> object:
            return (name, size, options, current_correlation())

        def plain(self) -> str:
            return "untouched"

    shell = Shell()
    assert await shell.create("a", size=2, correlation_id=str(CID)) == ("a", 2, {}, CID)
    assert await shell.create("b", extra=1) == ("b", 1, {"extra": 1}, None)
    parameters = inspect.signature(Shell.create).parameters
    assert list(parameters) == ["self", "name", "size", "correlation_id", "options"]
    with pytest.raises(TypeError):  # what Ray checks at the caller
        inspect.signature(Shell.create).bind(shell, "x", "too", "many")
    assert Shell().plain() == "untouched"

    class Clash:
        async def call(self, correlation_id: str) -> None: ...

    with pytest.raises(TypeError, match="its own 'correlation_id'"):
        traced_actor(Clash)


def line(**fields: object) -> str:
    record = {
        "timestamp": "2026-12-01T18:00:00.000100Z",
        "level": "info",
        "event": "x",
        "component": "sessions",
        "actor_name": "sessions:1",
        **fields,
    }
    return json.dumps(record)


def test_log_text_yields_only_kernelhubs_lines_for_the_id() -> None:
    other = str(uuid.uuid4())
    text = "\n".join(
        [
            ":job_id:01000000",
            f"Traceback mentioning {CID} but not JSON",
            json.dumps({"event": "no component", "correlation_id": str(CID)}),
            line(event="mine", correlation_id=str(CID), session="s-1"),
            line(event="someone else's", correlation_id=other),
            line(
                event="a batch",
                component="scheduler",
                actor_name="scheduler:default",
                correlation_ids=[other, str(CID)],
                timestamp="2026-12-01T18:00:00.000300Z",
            ),
            line(event="bad time", correlation_id=str(CID), timestamp="yesterday"),
        ]
    )
    found = list(log_entries(text, str(CID)))
    assert [(e.component, e.where, e.what) for e in found] == [
        ("sessions", "sessions:1", "mine"),
        ("scheduler", "scheduler:default", "a batch"),
    ]
    assert found[0].fields == {"session": "s-1"}
    assert found[0].time == datetime(2026, 12, 1, 18, 0, 0, 100, tzinfo=UTC)


def entry(ms: int, component: str, source: str = "log") -> TraceEntry:
    at = datetime(2026, 12, 1, 18, 0, 0, ms * 1000, tzinfo=UTC)
    return TraceEntry(
        time=at,
        source=source,
        component=component,  # type: ignore[arg-type]
        where=f"{component}:0",
        what="w",
    )


def test_the_timeline_is_in_time_order_events_first_and_filters_by_component() -> None:
    later, event, same_ms = entry(5, "agent"), entry(3, "events", "event"), entry(3, "gateway")
    assert timeline([later, same_ms, event]) == [event, same_ms, later]
    assert timeline([later, same_ms, event], ["agent", "gateway"]) == [same_ms, later]


def test_a_rendered_line_is_short_and_readable() -> None:
    stream = "session-0d7aba72-38b6-5831-8a02-043124523ae2"
    shown = TraceEntry(
        time=datetime(2026, 12, 1, 18, 48, 5, 503000, tzinfo=UTC),
        source="event",
        component="events",
        where=stream,
        what="session_enqueued",
        fields={"version": 1, "position": "1-0", "actor": "sessions:0"},
    )
    assert render(shown) == (
        "18:48:05.503  events     session-0d7aba72    session_enqueued  actor=sessions:0 version=1"
    )
    warned = entry(1, "agent").model_copy(update={"level": "warning", "fields": {"n": [1]}})
    assert render(warned).endswith("w [warning]  n=[1]")


def test_an_actors_log_lines_name_it_and_carry_the_bound_id() -> None:
    program = textwrap.dedent(
        f"""
        import structlog
        from actors.runtime.logs import configure_logging
        from events import correlated
        configure_logging("INFO", json=True, static={{"component": "agent", "actor_name": "a"}})
        log = structlog.get_logger("t")
        with correlated("{CID}"):
            log.info("inside")
        log.info("outside")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    inside, outside = (json.loads(x) for x in result.stderr.splitlines())
    assert (inside["component"], inside["actor_name"], inside["correlation_id"]) == (
        "agent",
        "a",
        str(CID),
    )
    assert "correlation_id" not in outside and outside["component"] == "agent"
