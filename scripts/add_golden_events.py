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
PID = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
UID = "3b0f7a4e-8d1c-4c2b-9e6f-5a4d3c2b1a09"
REALISTIC: dict[str, dict[str, object]] = {
    "session_activity": {"session_id": SID, "last_access": 1795599990.25},
    "session_idle_warning": {
        "session_id": SID,
        "checker": "network_timeout",
        "reason": "idle-timeout",
        "deadline": 1795600590.25,
        "remaining": 600.0,
        "last_access": 1795599990.25,
    },
    "vfolder_renamed": {"folder_id": KID, "name": "datasets-2026"},
    "vfolder_created": {
        "folder_id": KID,
        "name": "datasets",
        "host": "local:default",
        "domain": "default",
        "ownership_type": "user",
        "user": UID,
        "creator": "alice@example.com",
        "usage_mode": "data",
        "permission": "rw",
        "max_size": 1073741824,
        "cloneable": True,
    },
    "endpoint_created": {
        "endpoint_id": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
        "name": "llama-chat",
        "image": "cr.backend.ai/stable/python:3.11-ubuntu22.04",
        "model": KID,
        "model_version": 1,
        "model_mount_destination": "/models",
        "resource_slots": {"cpu": "2", "mem": "4294967296"},
        "resource_opts": {"shmem": 67108864},
        "scaling_group": "default",
        "cluster_mode": "single-node",
        "cluster_size": 1,
        "environ": {"MODEL_NAME": "llama"},
        "open_to_public": False,
        "desired_session_count": 2,
        "owner": UID,
        "access_key": "AKIAIOSFODNN7EXAMPLE",
        "project_id": PID,
        "domain": "default",
    },
    "endpoint_route_added": {
        "endpoint_id": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
        "route_id": "1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b",
        "session_id": SID,
        "traffic_ratio": 1.0,
    },
    "endpoint_token_issued": {
        "endpoint_id": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
        "token_id": "2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d",
        "expires_at": "2026-12-25T12:00:00Z",
    },
    "resource_preset_set": {
        "name": "small",
        "resource_slots": {"cpu": "1", "mem": "2147483648"},
        "shared_memory": "64m",
    },
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
    "session_status_changed": {
        "session_id": SID,
        "status": "RUNNING_DEGRADED",
        "status_info": "kernel-error",
    },
    "session_scheduling_failed": {
        "session_id": SID,
        "status_info": "predicate-checks-failed",
        "retries": 2,
        "failed_predicates": [
            {"name": "concurrency", "msg": "You cannot run more than 2 concurrent sessions"}
        ],
        "passed_predicates": ["reserved_time", "dependencies"],
    },
    "agent_registered": {
        "agent_id": "i-node1",
        "scaling_group": "default",
        "available_slots": {"cpu": "16", "mem": "68719476736", "cuda.device": "2"},
        "addr": "unix:///run/kernelhub/agent.sock",
        "version": "0.1.0",
    },
    "alloc_reserved": {
        "session_id": SID,
        "scaling_group": "default",
        "allocations": [
            {
                "kernel_id": KID,
                "agent_id": "i-node1",
                "slots": {"cpu": "1", "mem": "1073741824"},
                "free_before": {"cpu": "16", "mem": "68719476736"},
            }
        ],
    },
    "alloc_settled": {
        "session_id": SID,
        "kernel_id": KID,
        "agent_id": "i-node1",
        "actual": {"cpu": "1", "mem": "1073741824"},
    },
    "alloc_released": {
        "session_id": SID,
        "kernel_id": KID,
        "agent_id": "i-node1",
        "slots": {"cpu": "1", "mem": "1073741824"},
    },
    "domain_created": {"name": "default", "description": "the default domain"},
    "domain_updated": {"name": "default", "total_resource_slots": {"cpu": "64"}},
    "project_created": {"project_id": PID, "name": "default", "domain": "default"},
    "project_updated": {"project_id": PID, "is_active": False},
    "project_member_added": {"project_id": PID, "user_id": UID},
    "project_member_removed": {"project_id": PID, "user_id": UID},
    "user_created": {
        "user_id": UID,
        "username": "admin",
        "email": "admin@kernelhub.local",
        "domain": "default",
        "role": "superadmin",
    },
    "user_updated": {"user_id": UID, "status": "inactive"},
    "keypair_issued": {
        "access_key": "AKIAKERNELHUB0000001",
        "user_id": UID,
        "is_admin": True,
        "secret_key": "gAAAAABn-ciphertext-not-a-real-secret-ZmVybmV0dG9rZW4=",
    },
    "keypair_updated": {"access_key": "AKIAKERNELHUB0000001", "is_active": False},
    "keypair_deleted": {"access_key": "AKIAKERNELHUB0000002", "scaling_groups": ["gpu"]},
    "user_purged": {
        "user_id": UID,
        "access_keys": ["AKIAKERNELHUB0000002"],
        "project_ids": [PID],
        "scaling_groups": ["gpu"],
    },
    "domain_purged": {"name": "old-lab", "scaling_groups": ["default"]},
    "project_purged": {"project_id": PID, "members": [UID], "scaling_groups": []},
    "keypair_policy_deleted": {"name": "students-2025"},
    "resource_preset_deleted": {"name": "small"},
    "scaling_group_deleted": {"name": "gpu-old"},
    "image_alias_removed": {"alias": "python"},
    "keypair_policy_set": {
        "name": "default",
        "max_concurrent_sessions": 5,
        "total_resource_slots": {"cpu": "16", "mem": "68719476736"},
        "default_for_unspecified": "LIMITED",
        "idle_timeout": 600,
    },
    "scaling_group_set": {
        "name": "default",
        "scheduler": "fifo",
        "pending_timeout": 3600.0,
        "scheduler_config": {"num_retries_to_skip": 2},
    },
    "scaling_group_associated": {"name": "default", "target_kind": "domain", "target": "default"},
    "scaling_group_dissociated": {
        "name": "default",
        "target_kind": "keypair",
        "target": "AKIAKERNELHUB0000001",
    },
    "image_registered": {
        "name": "kernelhub/python:3.11",
        "labels": {
            "ai.backend.kernelspec": "1",
            "ai.backend.resource.min.cpu": "1",
            "ai.backend.resource.min.mem": "256m",
            "ai.backend.role": "COMPUTE",
        },
    },
    "image_alias_set": {"alias": "python", "target": "kernelhub/python:3.11"},
}

STREAMS = {
    "agent": "agent-i-node1",
    "bgtask": "bgtask-9d3c2b1a",
    "alloc": "alloc-default",
    "domain": "tenancy-domains",
    "project": "tenancy-projects",
    "user": "tenancy-users",
    "keypair": "tenancy-keypairs",
    "scaling": "tenancy-sgroups",
    "image": "image-catalogue",
    "endpoint": "endpoint-9e8d7c6b5a4f4e3d8c2b1a0f9e8d7c6b",
}

VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    # events with the optional fields kernelhub added, beside their plain upstream shape
    "session_enqueued.v1.with-spec": (
        "session_enqueued",
        {
            "session_id": SID,
            "creation_id": "ZpXDDyGxKtgR6bY9",
            "spec": {
                "name": "train-1",
                "access_key": "AKIAIOSFODNN7EXAMPLE",
                "user_id": "3b0f7a4e-8d1c-4c2b-9e6f-5a4d3c2b1a09",
                "domain": "default",
                "session_type": "batch",
                "image": "python:3.11",
                "cluster_size": 1,
                "scaling_group": "default",
                "startup_command": "python train.py",
                "starts_at": "2026-11-25T13:00:00Z",
                "kernels": [
                    {"kernel_id": KID, "requested_slots": {"cpu": "1", "mem": "1073741824"}}
                ],
            },
        },
    ),
    "session_scheduled.v1.with-placements": (
        "session_scheduled",
        {
            "session_id": SID,
            "creation_id": "ZpXDDyGxKtgR6bY9",
            "scaling_group": "default",
            "placements": [{"kernel_id": KID, "agent_id": "i-node1"}],
        },
    ),
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
    wanted = [
        (f"{t}.v{PAYLOAD_TYPES[t].SCHEMA_VERSION}", t, None) for t in sorted(PAYLOAD_TYPES)
    ] + [(name, t, values) for name, (t, values) in VARIANTS.items()]
    for index, (name, event_type, values) in enumerate(wanted, start=1):
        stream = STREAMS.get(event_type.split("_")[0], f"session-{SID}")
        path = CORPUS / f"{name}.json"
        if path.exists():
            continue
        payload = (
            PAYLOAD_TYPES[event_type](**values)
            if values is not None
            else example_payload(event_type)
        )
        event = NewEvent(
            data=payload,
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"kernelhub-golden/{event_type}"),
            occurred_at=datetime(2026, 11, 25, 12, index // 60, index % 60, tzinfo=UTC),
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
