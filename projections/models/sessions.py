"""Sessions and their kernels, as users list and inspect them (Backend.AI's ``sessions`` and
``kernels`` rows), plus the pending queue and usage intervals derived from them.

The fold records what the events say; it never decides a status itself (the write side did,
and said so in the log). Records keep ``status_history`` with Backend.AI's merge rule, the
``status_info`` of the last change and the ``status_data`` the spec describes.

Indexes (relative to the generation prefix; named in :class:`events.keys.SessionIndexes`):
``i:all``, ``i:owner:<ak>``, ``i:status:<STATUS>``, ``i:type:<type>``, ``i:sg:<group>``,
``i:project:<id>``, ``i:dependants:<id>`` (sessions depending on ``<id>``),
``i:vfolder:<folder hex>`` (sessions not ended that mount the folder) (sorted sets by
creation time); ``i:pending:<group>`` (PENDING sessions in
scheduling order); ``i:name:<ak>`` (name -> latest id); ``i:kernel`` (kernel id -> session
id); ``i:usage:open:<scope>`` (running: id -> interval) and ``i:usage:closed:<scope>``
(ended intervals scored by their end), for scopes ``keypair:``, ``user:``, ``project:``,
``domain:`` and ``group:`` (the scaling group: what ``fair_share`` charges).

Two lexicographic indexes (every score 0, read by ``ZRANGEBYLEX``) resolve references the
way 23.03 does: ``i:refs:name:<ak>`` holds ``<name> <id>`` for each session of a keypair (so
a name reused after its first session ended finds both, and a name prefix finds each name),
and ``i:refs:id:<ak>`` each session id (an id prefix) (``SessionIndexes.ref_names`` and
``ref_ids``). ``i:refs:live:<ak>`` (``ref_live_names``) holds ``<name> <id>`` only while the
session has not ended (CANCELLED, TERMINATED), so a live session is found by its name in a
few reads however many ended sessions bore the name before (``i:refs:name`` is in id order,
and a name used thousands of times has more members than one lookup may read). Names follow
the name rule (no space), so the space parts a name from its id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from events import StoredEvent, canonical_dumps
from events.keys import SessionIndexes as Index

from ..base import IndexedProjection, IndexEntries, Record, RecordRef, WorkingSet, iso_of
from ..slots import slots_json, sum_slots

__all__ = ["SessionsProjection", "usage_scopes"]

KIND = "session"
_ENDED = frozenset({"CANCELLED", "TERMINATED"})
"""The statuses a session never leaves (``DEAD_SESSION_STATUSES``)."""


_TERMINAL = ("TERMINATED", "CANCELLED")
_MOUNT_FIELDS = ("name", "vfid", "kernel_path", "mount_perm", "usage_mode")
"""What the read model keeps of each mount (``VFolderMountSpec``): not the host path, which
is the storage host's business, not a tenant's."""


def _new_kernel(kernel_id: str) -> Record:
    return {
        "id": kernel_id,
        "cluster_role": "main",
        "cluster_idx": 1,
        "local_rank": 0,
        "cluster_hostname": "main1",
        "role": "COMPUTE",
        "image": "",
        "architecture": "x86_64",
        "status": "PENDING",
        "status_info": "",
        "status_data": None,
        "status_history": {},
        "agent": None,
        "agent_addr": None,
        "requested_slots": {},
        "occupied_slots": {},
        "container_id": None,
        "exit_code": None,
        "service_ports": [],
        "kernel_host": None,
        "created_at": None,
        "terminated_at": None,
    }


def _new_session(session_id: str, event: StoredEvent) -> Record:
    return {
        "id": session_id,
        "name": None,
        "creation_id": None,
        "access_key": None,
        "user_id": None,
        "project_id": None,
        "domain": None,
        "type": "interactive",
        "image": "",
        "architecture": "x86_64",
        "cluster_mode": "single-node",
        "cluster_size": 1,
        "scaling_group": None,
        "status": "PENDING",
        "status_info": "",
        "status_data": None,
        "status_history": {},
        "created_at": iso_of(event.position_ms),
        "created_ms": event.position_ms,
        "order": _order(event.position),
        "terminated_at": None,
        "starts_at": None,
        "startup_command": None,
        "dependencies": [],
        "result": "undefined",
        "requested_slots": {},
        "occupying_slots": {},
        "usage_slots": {},
        "running_since_ms": None,
        "ended_ms": None,
        "kernels": {},
        "version": 0,
        "position": event.position,
        "stream_version": 0,
    }


def _order(position: str) -> int:
    """Scheduling order from the enqueue position: ms * 1000 + sequence."""
    ms, _, seq = position.partition("-")
    return int(ms) * 1000 + min(int(seq or 0), 999)


def _set_status(record: Record, status: str, at: str, info: str | None = None) -> None:
    record["status"] = status
    record["status_history"][status] = at  # merge: a later visit overwrites the time
    if info is not None:
        record["status_info"] = info


def _occupying(record: Record) -> dict[str, str]:
    """What the session's kernels hold now (those not PENDING, CANCELLED or TERMINATED)."""
    return sum_slots(
        k["occupied_slots"]
        for k in record["kernels"].values()
        if k["status"] not in ("PENDING", "CANCELLED", "TERMINATED")
    )


def _kernel(record: Record, kernel_id: Any) -> Record:
    kid = str(kernel_id)
    if kid not in record["kernels"]:
        record["kernels"][kid] = _new_kernel(kid)
    kernel: Record = record["kernels"][kid]
    return kernel


def _end(record: Record, event: StoredEvent, status: str, reason: str) -> None:
    at = iso_of(event.position_ms)
    _set_status(record, status, at, reason)
    record["terminated_at"] = at
    record["ended_ms"] = event.position_ms


def _on_enqueued(record: Record, event: StoredEvent) -> None:
    data = event.data
    record["creation_id"] = data["creation_id"]
    if event.body.get("correlation_id"):  # the API call that made it, for the scheduler's logs
        record["correlation_id"] = event.body["correlation_id"]
    spec = data.get("spec")
    if spec is not None:
        record.update(
            name=spec["name"],
            access_key=spec["access_key"],
            domain=spec.get("domain", "default"),
            user_id=spec.get("user_id"),
            project_id=spec.get("project_id"),
            type=spec.get("session_type", "interactive"),
            image=spec.get("image", ""),
            architecture=spec.get("architecture", "x86_64"),
            cluster_mode=spec.get("cluster_mode", "single-node"),
            cluster_size=spec.get("cluster_size", 1),
            scaling_group=spec["scaling_group"],
            dependencies=list(spec.get("dependencies") or []),
            starts_at=spec.get("starts_at"),
            startup_command=spec.get("startup_command"),
        )
        if spec.get("preopen_ports"):  # added later: records of older sessions stay as they were
            record["preopen_ports"] = list(spec["preopen_ports"])
        for key in ("tag", "resource_opts", "exec_timeout_s"):
            if spec.get(key) is not None:  # added later, as preopen_ports
                record[key] = spec[key]
        if spec.get("mounts"):  # added later: where the session's folders are, not the host's
            record["mounts"] = [
                {key: m[key] for key in _MOUNT_FIELDS if key in m} for m in spec["mounts"]
            ]
        if spec.get("environ"):  # the names only: values may be secrets the owner typed
            record["environ_keys"] = sorted(spec["environ"])
        for k in spec["kernels"]:
            kernel = _kernel(record, k["kernel_id"])
            requested = slots_json(k["requested_slots"])
            kernel.update(
                cluster_role=k.get("cluster_role", "main"),
                cluster_idx=k.get("cluster_idx", 1),
                local_rank=k.get("local_rank", 0),
                cluster_hostname=k.get("cluster_hostname", "main1"),
                role=k.get("role", "COMPUTE"),
                image=k.get("image") or record["image"],
                architecture=k.get("architecture", "x86_64"),
                agent=k.get("agent"),
                requested_slots=requested,
                occupied_slots=requested,
            )
        record["requested_slots"] = sum_slots(
            k["requested_slots"] for k in record["kernels"].values()
        )
    at = iso_of(event.position_ms)
    _set_status(record, "PENDING", at, data.get("reason", ""))
    for kernel in record["kernels"].values():
        kernel["created_at"] = at
        _set_status(kernel, "PENDING", at, "")


def _on_scheduled(record: Record, event: StoredEvent) -> None:
    data = event.data
    at = iso_of(event.position_ms)
    _set_status(record, "SCHEDULED", at, "scheduled")
    first = record.get("first_start_estimate")
    if first and first.get("at"):
        # how far off the first estimate was (positive: it started later than foreseen)
        started_s = event.position_ms / 1000
        record["start_estimate_error_s"] = round(started_s - _seconds_of(first["at"]), 3)
        record["waited_s"] = round((event.position_ms - record["created_ms"]) / 1000, 3)
    record["status_data"] = {}
    if data.get("scaling_group"):
        record["scaling_group"] = data["scaling_group"]
    for placement in data.get("placements") or ():
        kernel = _kernel(record, placement["kernel_id"])
        kernel["agent"] = placement["agent_id"]
        kernel["agent_addr"] = placement.get("agent_addr")
    for kernel in record["kernels"].values():
        _set_status(kernel, "SCHEDULED", at, "scheduled")
        kernel["status_data"] = {}


def _seconds_of(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def _on_estimated(record: Record, estimate: dict[str, Any], event: StoredEvent) -> None:
    """A start-time estimate for a pending session: the latest shown, the first kept (the
    one its error is measured on when it starts)."""
    made = iso_of(event.position_ms)
    shown = {
        "at": estimate.get("at"),
        "earliest": estimate.get("earliest"),
        "latest": estimate.get("latest"),
        "basis": estimate.get("basis", "default"),
        "made_at": made,
    }
    record["start_estimate"] = shown
    if not record.get("first_start_estimate") and shown["at"]:
        record["first_start_estimate"] = shown


def _on_preparing(record: Record, event: StoredEvent) -> None:
    at = iso_of(event.position_ms)
    _set_status(record, "PREPARING", at, "")
    record["status_data"] = {}
    for kernel in record["kernels"].values():
        if kernel["status"] == "SCHEDULED":
            _set_status(kernel, "PREPARING", at, "")
            kernel["status_data"] = {}


def _kernel_status(
    status: str, *, session_status: str | None = None
) -> Callable[[Record, StoredEvent], None]:
    def handle(record: Record, event: StoredEvent) -> None:
        at = iso_of(event.position_ms)
        kernel = _kernel(record, event.data["kernel_id"])
        _set_status(kernel, status, at, event.data.get("reason", ""))
        if session_status is not None:
            _set_status(record, session_status, at)

    return handle


def _on_kernel_started(record: Record, event: StoredEvent) -> None:
    data = event.data
    kernel = _kernel(record, data["kernel_id"])
    _set_status(kernel, "RUNNING", iso_of(event.position_ms), data.get("reason", ""))
    info = data.get("creation_info") or {}
    kernel["container_id"] = info.get("container_id")
    kernel["kernel_host"] = info.get("kernel_host")
    kernel["service_ports"] = info.get("service_ports") or []
    kernel["attached_devices"] = info.get("attached_devices") or {}


def _on_kernel_cancelled(record: Record, event: StoredEvent) -> None:
    kernel = _kernel(record, event.data["kernel_id"])
    at = iso_of(event.position_ms)
    _set_status(kernel, "CANCELLED", at, event.data.get("reason", ""))
    kernel["terminated_at"] = at


def _on_kernel_terminating(record: Record, event: StoredEvent) -> None:
    kernel = _kernel(record, event.data["kernel_id"])
    _set_status(
        kernel, "TERMINATING", iso_of(event.position_ms), event.data.get("reason", "unknown")
    )
    kernel["status_data"] = {"kernel": {"exit_code": None}, "session": {"status": "terminating"}}


def _on_kernel_terminated(record: Record, event: StoredEvent) -> None:
    data = event.data
    kernel = _kernel(record, data["kernel_id"])
    at = iso_of(event.position_ms)
    exit_code = data.get("exit_code", -1)
    _set_status(kernel, "TERMINATED", at, data.get("reason", "unknown"))
    kernel["terminated_at"] = at
    kernel["exit_code"] = exit_code
    status_data = dict(kernel["status_data"] or {})
    status_data["kernel"] = {**(status_data.get("kernel") or {}), "exit_code": exit_code}
    kernel["status_data"] = status_data


def _on_session_started(record: Record, event: StoredEvent) -> None:
    _set_status(record, "RUNNING", iso_of(event.position_ms), event.data.get("reason", ""))
    record["status_data"] = None
    if record["running_since_ms"] is None:
        record["running_since_ms"] = event.position_ms
        record["usage_slots"] = _occupying(record)


def _on_session_terminating(record: Record, event: StoredEvent) -> None:
    _set_status(record, "TERMINATING", iso_of(event.position_ms), event.data.get("reason", ""))


def _on_session_ended(status: str) -> Callable[[Record, StoredEvent], None]:
    def handle(record: Record, event: StoredEvent) -> None:
        _end(record, event, status, event.data.get("reason", ""))
        if event.data.get("error"):  # an agent failed to start it (23.03 status_data.error)
            record["status_data"] = {"error": event.data["error"]}

    return handle


def _on_result(result: str) -> Callable[[Record, StoredEvent], None]:
    def handle(record: Record, event: StoredEvent) -> None:
        record["result"] = result
        record["exit_code"] = event.data.get("exit_code")  # the batch command's, not the kernel's

    return handle


def _on_status_changed(record: Record, event: StoredEvent) -> None:
    data = event.data
    at = iso_of(event.position_ms)
    _set_status(record, data["status"], at, data.get("status_info", ""))
    record["status_data"] = data.get("status_data")
    if data["status"] == "RESTARTING":  # each kernel comes back with its kernel_started
        for kernel in record["kernels"].values():
            if kernel["status"] == "RUNNING":
                _set_status(kernel, "RESTARTING", at, "restarting")


def _on_activity(record: Record, event: StoredEvent) -> None:
    record["last_activity"] = event.data["last_access"]
    warning = record.get("idle_warning")
    if (
        warning
        and warning["checker"] == "network_timeout"  # a lifetime does not move
        and event.data["last_access"] * 1000 > warning["warned_ms"]
    ):
        del record["idle_warning"]  # used since the warning: that reclaim is off


def _on_idle_warning(record: Record, event: StoredEvent) -> None:
    data = event.data
    record["idle_warning"] = {
        "checker": data["checker"],
        "reason": data["reason"],
        "reclaim_at": iso_of(int(data["deadline"] * 1000)),
        "warned_at": iso_of(event.position_ms),
        "warned_ms": event.position_ms,
    }


def _on_scheduling_failed(record: Record, event: StoredEvent) -> None:
    data = event.data
    record["status_info"] = data["status_info"]
    scheduler: Record = {
        "retries": data["retries"],
        "last_try": iso_of(event.position_ms),
        "failed_predicates": [
            {"name": p["name"], "msg": p.get("msg", "")}
            for p in data.get("failed_predicates") or ()
        ],
        "passed_predicates": [{"name": n} for n in data.get("passed_predicates") or ()],
    }
    if data.get("msg") is not None:
        scheduler["msg"] = data["msg"]
    record["status_data"] = {**(record["status_data"] or {}), "scheduler": scheduler}


def _on_alloc_settled(record: Record, event: StoredEvent) -> None:
    kernel = _kernel(record, event.data["kernel_id"])
    kernel["occupied_slots"] = slots_json(event.data["actual"])


_HANDLERS: dict[str, Callable[[Record, StoredEvent], None]] = {
    "session_enqueued": _on_enqueued,
    "session_scheduled": _on_scheduled,
    "session_preparing": _on_preparing,
    "kernel_pulling": _kernel_status("PULLING", session_status="PULLING"),  # B15
    "kernel_creating": _kernel_status("PREPARING"),
    "kernel_started": _on_kernel_started,
    "kernel_cancelled": _on_kernel_cancelled,
    "kernel_terminating": _on_kernel_terminating,
    "kernel_terminated": _on_kernel_terminated,
    "session_started": _on_session_started,
    "session_cancelled": _on_session_ended("CANCELLED"),
    "session_terminating": _on_session_terminating,
    "session_terminated": _on_session_ended("TERMINATED"),
    "session_success": _on_result("success"),
    "session_failure": _on_result("failure"),
    "session_status_changed": _on_status_changed,
    "session_scheduling_failed": _on_scheduling_failed,
    "alloc_settled": _on_alloc_settled,
    "session_activity": _on_activity,
    "session_idle_warning": _on_idle_warning,
}


def usage_scopes(record: Record) -> list[str]:
    scopes = []
    for kind, key in (
        ("keypair", "access_key"),
        ("user", "user_id"),
        ("project", "project_id"),
        ("domain", "domain"),
        ("group", "scaling_group"),
    ):
        if record.get(key):
            scopes.append(f"{kind}:{record[key]}")
    return scopes


class SessionsProjection(IndexedProjection):
    name = "sessions"
    version = 8
    types = frozenset(_HANDLERS) | {"starts_estimated"}

    def refs(self, event: StoredEvent) -> Iterable[RecordRef]:
        if event.type == "starts_estimated":
            return [(KIND, e["session_id"]) for e in event.data["estimates"]]
        if event.type not in _HANDLERS:
            return ()
        return ((KIND, event.data["session_id"]),)

    def apply(self, event: StoredEvent, records: WorkingSet) -> None:
        if event.type == "starts_estimated":
            for estimate in event.data["estimates"]:
                found = records.get(KIND, estimate["session_id"])
                if found is not None and found["status"] == "PENDING":
                    _on_estimated(found, estimate, event)
                    found["version"] += 1
                    found["position"] = event.position
            return
        handler = _HANDLERS.get(event.type)
        if handler is None:
            return
        session_id = event.data["session_id"]
        record = records.get(KIND, session_id)
        if record is None:
            record = _new_session(session_id, event)
            records.put(KIND, session_id, record)  # changed in place from here on
        handler(record, event)
        record["version"] += 1
        record["position"] = event.position
        if event.stream == f"session-{session_id}":
            record["stream_version"] = event.version  # the writers' expected version

    def finalize(self, ref: RecordRef, record: Record) -> None:
        record["occupying_slots"] = _occupying(record)

    def zset_entries(self, ref: RecordRef, record: Record) -> IndexEntries:
        sid, created = record["id"], record["created_ms"]
        entries: IndexEntries = {
            (Index.ALL, sid): created,
            (Index.status(record["status"]), sid): created,
            (Index.type(record["type"]), sid): created,
        }
        if record["access_key"]:
            entries[(Index.owner(record["access_key"]), sid)] = created
            entries[(Index.ref_ids(record["access_key"]), sid)] = 0
            if record["name"]:
                entries[(Index.ref_names(record["access_key"]), f"{record['name']} {sid}")] = 0
                if record["status"] not in _ENDED:
                    entries[
                        (Index.ref_live_names(record["access_key"]), f"{record['name']} {sid}")
                    ] = 0
        if record["scaling_group"]:
            entries[(Index.scaling_group(record["scaling_group"]), sid)] = created
            if record["status"] == "PENDING":
                entries[(Index.pending(record["scaling_group"]), sid)] = record["order"]
        if record["project_id"]:
            entries[(Index.project(record["project_id"]), sid)] = created
        for dependency in record["dependencies"]:
            entries[(Index.dependants(dependency), sid)] = created
        if record["status"] not in _ENDED:
            for mount in record.get("mounts") or ():
                entries[(Index.mounting(mount["vfid"]), sid)] = created
        if record["running_since_ms"] is not None and record["ended_ms"] is not None:
            interval = canonical_dumps(
                {
                    "session": sid,
                    "owner": record["access_key"],
                    "project": record["project_id"],
                    "start": record["running_since_ms"],
                    "end": record["ended_ms"],
                    "slots": record["usage_slots"] or record["requested_slots"],
                }
            )
            for scope in usage_scopes(record):
                entries[(Index.usage_closed(scope), interval)] = record["ended_ms"]
        return entries

    def hash_entries(self, ref: RecordRef, record: Record) -> IndexEntries:
        sid = record["id"]
        entries: IndexEntries = {(Index.KERNEL, kid): sid for kid in record["kernels"]}
        if record["access_key"] and record["name"]:
            entries[(Index.name(record["access_key"]), record["name"])] = sid
        if record["running_since_ms"] is not None and record["ended_ms"] is None:
            interval = canonical_dumps(
                {
                    "session": sid,
                    "owner": record["access_key"],
                    "project": record["project_id"],
                    "start": record["running_since_ms"],
                    "slots": record["usage_slots"] or record["requested_slots"],
                }
            )
            for scope in usage_scopes(record):
                entries[(Index.usage_open(scope), sid)] = interval
        return entries
