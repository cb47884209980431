"""Logs are JSON lines off a terminal and carry the command and correlation ids."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

PROGRAM = textwrap.dedent(
    """
    from kernelhub.logging import bind_command, configure_logging, get_logger
    configure_logging("INFO")
    log = get_logger("kernelhub.test")
    with bind_command("cmd-1", correlation_id="corr-9", session="s-1"):
        log.info("session enqueued", shard=3)
    log.info("outside")
    log.debug("hidden at INFO")
    """
)


def test_json_lines_with_bound_ids_when_not_a_tty() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=30, check=True
    )
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["session enqueued", "outside"]
    inside, outside = lines
    assert inside["command_id"] == "cmd-1"
    assert inside["correlation_id"] == "corr-9"
    assert inside["session"] == "s-1" and inside["shard"] == 3
    assert inside["level"] == "info" and inside["timestamp"].endswith("Z")
    assert "command_id" not in outside
