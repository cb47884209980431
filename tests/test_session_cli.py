"""How ``kh session show`` renders a session's idle checks (pure formatting)."""

from __future__ import annotations

import pytest

from kernelhub.session_cli import describe

pytestmark = pytest.mark.unit

RECORD = {
    "id": "s1",
    "name": "n",
    "type": "interactive",
    "status": "RUNNING",
    "status_info": "",
    "access_key": "AK",
    "scaling_group": "default",
    "requested_slots": {"cpu": "1"},
    "status_history": {"RUNNING": "2026-12-01T08:00:00.000Z"},
    "kernels": {},
}


def test_idle_checks_read_as_time_left() -> None:
    idle = {
        "network_timeout": {"remaining": 250.4, "remaining_time_type": "expire_after"},
        "session_lifetime": {"remaining": None, "remaining_time_type": "expire_after"},
        "utilization": {"remaining": 42, "remaining_time_type": "grace_period"},
    }
    lines = [line for line in describe(RECORD, idle) if line.startswith("idle")]
    assert lines == [
        "idle      network_timeout: in 4m 10s",
        "idle      session_lifetime: not measured",
        "idle      utilization: grace period ends 42s",
    ]
    expired = describe(RECORD, {"network_timeout": {"remaining": -1}})
    assert expired[-1] == "idle      network_timeout: expired"
