"""Write a golden-corpus file for each catalogue type that has none yet.

The corpus (``tests/fixtures/events/``) pins the stored shape of every event: CI decodes each
file with the current code, so a change that would make old logs unreadable fails at once.
Existing files are never rewritten — that is the point of them. Run after adding an event
type: ``.venv/bin/python scripts/add_golden_events.py``.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from events import PAYLOAD_TYPES, NewEvent, default_codec
from tests.strategies import payloads_of

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "events"


SID = "5b1f9c1e-8a57-4a8e-9f0e-3c2d1b0a9f11"
KID = "0c8e6f7a-1d2b-4c3e-8f9a-7b6c5d4e3f21"
REALISTIC: dict[str, dict[str, object]] = {
    "agent_started": {"reason": "self-started"},
    "agent_terminated": {"reason": "agent-lost"},
    "agent_error": {
        "message": "docker daemon not answering",
        "traceback": None,
        "context_env": {"agent": "i-node1"},
        "severity": "critical",
    },
    "kernel_preparing": {"kernel_id": KID, "session_id": SID},
    "kernel_pulling": {
        "kernel_id": KID,
        "session_id": SID,
        "reason": "cr.backend.ai/stable/python:3.11-ubuntu22.04",
    },
    "kernel_creating": {"kernel_id": KID, "session_id": SID},
    "kernel_started": {
        "kernel_id": KID,
        "session_id": SID,
        "creation_info": {
            "id": KID,
            "container_id": "4f" * 32,
            "kernel_host": "127.0.0.1",
            "service_ports": [
                {
                    "name": "jupyter",
                    "protocol": "http",
                    "container_ports": [8080],
                    "host_ports": [30001],
                    "is_inference": False,
                }
            ],
            "resource_spec": {"slots": {"cpu": "1", "mem": "1073741824"}},
            "repl_in_port": 2000,
            "repl_out_port": 2001,
            "scaling_group": "default",
            "agent_addr": "unix:///run/kernelhub/agent.sock",
        },
    },
    "kernel_cancelled": {"kernel_id": KID, "session_id": SID, "reason": "pending-timeout"},
    "kernel_terminating": {"kernel_id": KID, "session_id": SID, "reason": "user-requested"},
    "kernel_terminated": {
        "kernel_id": KID,
        "session_id": SID,
        "reason": "self-terminated",
        "exit_code": 137,
    },
    "session_enqueued": {"session_id": SID, "creation_id": "ZpXDDyGxKtgR6bY9"},
    "session_scheduled": {"session_id": SID, "creation_id": "ZpXDDyGxKtgR6bY9"},
    "session_preparing": {"session_id": SID, "creation_id": "ZpXDDyGxKtgR6bY9"},
    "session_cancelled": {
        "session_id": SID,
        "creation_id": "ZpXDDyGxKtgR6bY9",
        "reason": "failed-to-start",
    },
    "session_started": {"session_id": SID, "creation_id": "ZpXDDyGxKtgR6bY9"},
    "session_terminating": {"session_id": SID, "reason": "idle-timeout"},
    "session_terminated": {"session_id": SID, "reason": "idle-timeout"},
    "session_success": {"session_id": SID, "reason": "task-done", "exit_code": 0},
    "session_failure": {"session_id": SID, "reason": "task-timeout", "exit_code": -2},
    "bgtask_done": {"task_id": "9d3c2b1a-0f1e-4d2c-8b3a-1e2f3a4b5c6d", "message": "pushed"},
    "bgtask_cancelled": {"task_id": "9d3c2b1a-0f1e-4d2c-8b3a-1e2f3a4b5c6d"},
    "bgtask_failed": {"task_id": "9d3c2b1a-0f1e-4d2c-8b3a-1e2f3a4b5c6d", "message": "no space"},
}


def example_payload(event_type: str) -> object:
    """A realistic payload where one is written above, else the simplest valid one."""
    if event_type in REALISTIC:
        return PAYLOAD_TYPES[event_type](**REALISTIC[event_type])
    found: list[object] = []

    @settings(
        max_examples=1, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(payloads_of(PAYLOAD_TYPES[event_type]))
    def pick(payload: object) -> None:
        found.append(payload)

    pick()
    return found[-1]


def main() -> None:
    CORPUS.mkdir(parents=True, exist_ok=True)
    for index, event_type in enumerate(sorted(PAYLOAD_TYPES), start=1):
        stream = {"agent": "agent-i-node1", "bgtask": "bgtask-9d3c2b1a"}.get(
            event_type.split("_")[0], f"session-{SID}"
        )
        path = CORPUS / f"{event_type}.v{PAYLOAD_TYPES[event_type].SCHEMA_VERSION}.json"
        if path.exists():
            continue
        event = NewEvent(
            data=example_payload(event_type),
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"kernelhub-golden/{event_type}"),
            occurred_at=datetime(2026, 11, 25, 12, 0, index, tzinfo=UTC),
            command_id=uuid.uuid5(uuid.NAMESPACE_URL, "kernelhub-golden/command"),
            actor="golden",
        )
        entry = {
            "position": f"1795600000000-{index}",
            "stream": stream,
            "version": index,
            "body": json.loads(default_codec.encode(event)),
        }
        path.write_text(json.dumps(entry, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        print(f"wrote {path.relative_to(CORPUS.parents[2])}")


if __name__ == "__main__":
    main()
