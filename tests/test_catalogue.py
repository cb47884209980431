"""The catalogue holds Backend.AI 23.03's state events with their exact names and fields."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from events import PAYLOAD_TYPES, KernelLifecycleEventReason
from events.catalogue import (
    PAYLOAD_ADAPTER,
    AgentError,
    KernelTerminated,
    SessionEnqueued,
    SessionFailure,
)

pytestmark = pytest.mark.unit

STATE_EVENTS = {
    "agent_started": ["reason"],
    "agent_terminated": ["reason"],
    "agent_error": ["message", "traceback", "user", "context_env", "severity"],
    "kernel_preparing": ["kernel_id", "session_id", "reason", "creation_info"],
    "kernel_pulling": ["kernel_id", "session_id", "reason", "creation_info"],
    "kernel_creating": ["kernel_id", "session_id", "reason", "creation_info"],
    "kernel_started": ["kernel_id", "session_id", "reason", "creation_info"],
    "kernel_cancelled": ["kernel_id", "session_id", "reason", "creation_info"],
    "kernel_terminating": ["kernel_id", "session_id", "reason", "exit_code"],
    "kernel_terminated": ["kernel_id", "session_id", "reason", "exit_code"],
    "session_enqueued": ["session_id", "creation_id", "reason"],
    "session_scheduled": ["session_id", "creation_id", "reason"],
    "session_preparing": ["session_id", "creation_id", "reason"],
    "session_cancelled": ["session_id", "creation_id", "reason"],
    "session_started": ["session_id", "creation_id", "reason"],
    "session_terminating": ["session_id", "reason"],
    "session_terminated": ["session_id", "reason"],
    "session_success": ["session_id", "reason", "exit_code"],
    "session_failure": ["session_id", "reason", "exit_code"],
    "bgtask_done": ["task_id", "message"],
    "bgtask_cancelled": ["task_id", "message"],
    "bgtask_failed": ["task_id", "message"],
}

NOT_LOG_EVENTS = [
    "do_schedule",
    "do_prepare",
    "do_scale",
    "do_idle_check",
    "do_terminate_session",
    "do_sync_kernel_logs",
    "agent_heartbeat",
    "kernel_pull_progress",
    "execution_started",
    "execution_finished",
    "execution_timeout",
    "execution_cancelled",
    "bgtask_updated",
]


KERNELHUB_EVENTS = {
    "session_status_changed",
    "session_scheduling_failed",
    "session_activity",
    "agent_registered",
    "alloc_reserved",
    "alloc_settled",
    "alloc_released",
    "scheduling_pass",
    "starts_estimated",
    "log_checkpointed",
    "session_idle_warning",
    "domain_created",
    "domain_updated",
    "project_created",
    "project_updated",
    "project_member_added",
    "project_member_removed",
    "user_created",
    "user_updated",
    "keypair_issued",
    "keypair_updated",
    "keypair_policy_set",
    "scaling_group_set",
    "scaling_group_associated",
    "scaling_group_dissociated",
    "image_registered",
    "image_alias_set",
    "resource_preset_set",
    "manager_status_set",
    "domain_purged",
    "project_purged",
    "user_purged",
    "keypair_deleted",
    "keypair_policy_deleted",
    "resource_preset_deleted",
    "scaling_group_deleted",
    "image_alias_removed",
    "vfolder_created",
    "vfolder_renamed",
    "vfolder_updated",
    "vfolder_trashed",
    "vfolder_restored",
    "vfolder_purged",
    "vfolder_invited",
    "vfolder_invitation_answered",
    "vfolder_shared",
    "vfolder_unshared",
    "endpoint_created",
    "endpoint_scaled",
    "endpoint_route_added",
    "endpoint_route_status_changed",
    "endpoint_route_removed",
    "endpoint_traffic_ratio_changed",
    "endpoint_token_issued",
    "endpoint_destroying",
    "endpoint_destroyed",
}


def test_every_state_event_is_catalogued_with_upstream_fields_in_order() -> None:
    assert set(PAYLOAD_TYPES) == set(STATE_EVENTS) | KERNELHUB_EVENTS
    for name, fields in STATE_EVENTS.items():
        model_fields = PAYLOAD_TYPES[name].model_fields
        upstream = [
            f for f, info in model_fields.items() if f != "type" and info.exclude_if is None
        ]
        assert upstream == fields, name


def test_fields_added_later_are_optional_and_leave_old_bytes_alone() -> None:
    sid = uuid.uuid4()
    plain = SessionEnqueued(session_id=sid, creation_id="c")
    assert plain.data_dict() == {"session_id": str(sid), "creation_id": "c", "reason": ""}
    for name in STATE_EVENTS:
        for field, info in PAYLOAD_TYPES[name].model_fields.items():
            if info.exclude_if is not None:
                assert not info.is_required() and info.default is None, (name, field)


@pytest.mark.parametrize("name", NOT_LOG_EVENTS)
def test_commands_and_telemetry_are_not_log_events(name: str) -> None:
    assert name not in PAYLOAD_TYPES


def test_reason_enum_is_the_complete_2303_list_plus_oom_killed() -> None:
    values = {r.value for r in KernelLifecycleEventReason} - {"oom-killed"}  # docs/deviations.md
    assert len(values) == 26
    assert {
        "service-scaled-down",
        "not-found-in-manager",
        "idle-session-lifetime",
        "terminated-unknown-container",
        "resuming-agent-operation",
    } <= values


def test_from_value_gives_none_for_unknown_reasons() -> None:
    assert (
        KernelLifecycleEventReason.from_value("idle-timeout")
        is KernelLifecycleEventReason.IDLE_TIMEOUT
    )
    assert KernelLifecycleEventReason.from_value("no-such-reason") is None
    assert KernelLifecycleEventReason.from_value(None) is None


def test_upstream_defaults() -> None:
    sid, kid = uuid.uuid4(), uuid.uuid4()
    terminated = KernelTerminated(kernel_id=kid, session_id=sid)
    assert terminated.reason is KernelLifecycleEventReason.UNKNOWN
    assert terminated.exit_code == -1
    assert SessionEnqueued(session_id=sid, creation_id="c").reason == ""
    assert AgentError(message="disk full").severity == "error"


def test_payloads_reject_unknown_fields_and_bad_values() -> None:
    sid = uuid.uuid4()
    with pytest.raises(ValidationError, match="extra"):
        SessionEnqueued(session_id=sid, creation_id="c", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="session_id"):
        SessionEnqueued(session_id="not-a-uuid", creation_id="c")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="reason"):
        SessionFailure(session_id=sid, reason="exploded")  # type: ignore[arg-type]


def test_payloads_are_immutable() -> None:
    payload = SessionEnqueued(session_id=uuid.uuid4(), creation_id="c")
    with pytest.raises(ValidationError):
        payload.creation_id = "other"  # type: ignore[misc]


def test_discriminated_union_picks_the_class_by_type() -> None:
    sid = str(uuid.uuid4())
    parsed = PAYLOAD_ADAPTER.validate_python(
        {"type": "session_failure", "session_id": sid, "reason": "task-failed", "exit_code": 3}
    )
    assert isinstance(parsed, SessionFailure)
    assert parsed.reason is KernelLifecycleEventReason.TASK_FAILED
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        PAYLOAD_ADAPTER.validate_python({"type": "session_exploded", "session_id": sid})


def test_secret_fields_are_marked_and_redacted() -> None:
    from events.catalogue import SECRET_FIELDS, redact

    assert SECRET_FIELDS["keypair_issued"] == {"secret_key"}
    assert {t for t, fields in SECRET_FIELDS.items() if fields} == {
        "keypair_issued",
        "user_created",
        "user_updated",
    }
    assert SECRET_FIELDS["user_created"] == {"password_hash"}
    data = {"access_key": "AKIA0", "secret_key": "gAAAA-ciphertext", "user_id": "u"}
    assert redact("keypair_issued", data) == {**data, "secret_key": "***"}
    assert redact("session_enqueued", {"a": 1}) == {"a": 1}
