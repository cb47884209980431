"""The agent's runner client against a real runner (as 23.03's ``AbstractCodeRunner``): results
flushed as ``continued``, merged console chunks, runs that queue behind each other, the
exec-timeout watchdog, UTF-8 split across chunks, batch phases, input, completion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.agents.runner_client import RunnerClient
from tests.runner_process import RunnerProcess


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[RunnerProcess]:
    process = RunnerProcess(tmp_path)
    process.disconnect()  # the client under test is the agent
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def client(runner: RunnerProcess) -> AsyncIterator[RunnerClient]:
    connection = RunnerClient(runner.socket_path)
    await connection.check_status()
    try:
        yield connection
    finally:
        await connection.close()


async def test_output_without_an_end_is_flushed_as_continued(client: RunnerClient) -> None:
    code = "import time\nprint('a', flush=True)\ntime.sleep(0.8)\nprint('b')"
    first = await client.execute("r1", "query", code, flush_timeout=0.3)
    assert first["status"] == "continued" and first["exitCode"] is None
    assert first["console"] == [["stdout", "a\n"]] and first["runId"] == "r1"
    second = await client.execute("r1", "continue", flush_timeout=5)
    assert (second["status"], second["exitCode"], second["console"]) == (
        "finished",
        0,
        [["stdout", "b\n"]],
    )


async def test_consecutive_chunks_merge_into_one_console_item(client: RunnerClient) -> None:
    code = "import sys\nfor i in range(5):\n    print(i)\n"
    code += "sys.stderr.write('e1')\n_ = sys.stderr.write('e2')"
    result = await client.execute("r", "query", code, flush_timeout=5)
    assert result["console"] == [["stdout", "0\n1\n2\n3\n4\n"], ["stderr", "e1e2"]]


async def test_a_second_run_waits_for_the_first_to_finish(client: RunnerClient) -> None:
    slow = asyncio.create_task(
        client.execute("A", "query", "import time\ntime.sleep(0.6)\nprint('A')", flush_timeout=5)
    )
    await asyncio.sleep(0.05)
    started = time.monotonic()
    second = await client.execute("B", "query", "print('B')", flush_timeout=5)
    first = await slow
    assert time.monotonic() - started > 0.4  # B's result came only after A ran
    assert first["console"] == [["stdout", "A\n"]] and second["console"] == [["stdout", "B\n"]]


async def test_the_exec_timeout_watchdog_ends_a_run(runner: RunnerProcess) -> None:
    client = RunnerClient(runner.socket_path, exec_timeout_s=0.3)
    try:
        result = await client.execute("t", "query", "import time\ntime.sleep(3)", flush_timeout=5)
        assert result["status"] == "exec-timeout"
    finally:
        await client.close()


async def test_a_character_split_across_chunks_decodes(client: RunnerClient) -> None:
    command = "printf '\\342\\202'; sleep 0.3; printf '\\254\\n'"
    result = await client.execute("u", "batch", options={"exec": command}, flush_timeout=None)
    while result["status"] != "finished":
        result = await client.execute("u", "continue", flush_timeout=None)
    assert result["console"] == [["stdout", "€\n"]]


async def test_batch_phases_end_one_result_each(client: RunnerClient) -> None:
    options = {"clean": "echo c", "build": "echo b", "exec": "echo x; exit 5"}
    statuses = []
    result = await client.execute("b", "batch", options=options, flush_timeout=5)
    statuses.append((result["status"], result["exitCode"], result["console"]))
    while result["status"] != "finished":
        result = await client.execute("b", "continue", flush_timeout=5)
        statuses.append((result["status"], result["exitCode"], result["console"]))
    assert statuses == [
        ("clean-finished", 0, [["stdout", "c\n"]]),
        ("build-finished", 0, [["stdout", "b\n"]]),
        ("finished", 5, [["stdout", "x\n"]]),
    ]


async def test_waiting_input_then_input_continues(client: RunnerClient) -> None:
    asked = await client.execute("i", "query", "print('got', input('> '))", flush_timeout=5)
    assert asked["status"] == "waiting-input" and asked["options"] == {"is_password": False}
    assert asked["console"] == [["stdout", "> "]]
    done = await client.execute("i", "input", "42", flush_timeout=5)
    assert (done["status"], done["console"]) == ("finished", [["stdout", "got 42\n"]])


async def test_completion_and_interrupt(client: RunnerClient) -> None:
    assert "os" in await client.complete("import o")
    running = asyncio.create_task(client.execute("x", "query", "while True: pass", None))
    await asyncio.sleep(0.3)
    await client.interrupt()
    result = await asyncio.wait_for(running, 2)
    assert result["status"] == "finished" and "KeyboardInterrupt" in result["console"][0][1]


async def test_a_lost_connection_is_resumed_with_the_run_intact(
    client: RunnerClient, runner: RunnerProcess
) -> None:
    first = await client.execute(
        "z", "query", "import time\ntime.sleep(0.5)\nprint('late')", flush_timeout=0.1
    )
    assert first["status"] == "continued"
    assert client._writer is not None
    client._writer.close()  # the connection drops (as when the agent's socket breaks)
    await asyncio.sleep(0.7)
    result = await client.execute("z", "continue", flush_timeout=5)
    assert (result["status"], result["console"]) == ("finished", [["stdout", "late\n"]])


async def test_a_run_that_ended_before_the_caller_continued_keeps_its_records(
    client: RunnerClient,
) -> None:
    """The caller continues after a batch ran to its end (an API round trip is slower than
    ``echo``): the records wait for it instead of a new, empty run."""
    first = await client.execute("late", "batch", options={"exec": "echo done"}, flush_timeout=5)
    assert first["status"] == "clean-finished"
    await asyncio.sleep(0.5)  # meanwhile build and exec finish
    second = await client.execute("late", "continue", flush_timeout=1)
    third = await client.execute("late", "continue", flush_timeout=1)
    assert (second["status"], third["status"]) == ("build-finished", "finished")
    assert third["console"] == [["stdout", "done\n"]] and third["exitCode"] == 0
    after = await client.execute("next", "query", "print('next')", flush_timeout=5)
    assert after["console"] == [["stdout", "next\n"]]
