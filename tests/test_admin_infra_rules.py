"""The infrastructure areas' pure rules (actors/gateway/admin/infra_rules.py): what a
scaling group's input becomes, what kernelhub refuses to pretend to honour, and how images
and agents are shown in 23.03's shapes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from actors.domain.commands.tenancy import SetScalingGroup
from actors.domain.errors import GenericBadRequest, InvalidAPIParameters
from actors.gateway.admin.infra_rules import (
    AGENT_FIELDS,
    INVALID_GROUP,
    agent_row,
    agent_view,
    decode_json_object,
    image_parts,
    image_view,
    is_operation_image,
    node_live_stat,
    parse_agent_status,
    project_refusal,
    require_no_preset_names,
    scaling_group_settings,
    scaling_group_view,
)

pytestmark = pytest.mark.unit

CLI_ADD = {
    "description": "gpus",
    "is_active": True,
    "is_public": False,
    "driver": "static",
    "driver_opts": "{}",
    "scheduler": "fifo",
    "scheduler_opts": "{}",
    "use_host_network": False,
    "wsproxy_addr": None,
    "wsproxy_api_token": None,
}
"""What ``backend.ai admin scaling-group add gpu -d gpus -p`` sends."""


def test_the_clients_add_becomes_a_whole_set_command() -> None:
    settings = scaling_group_settings(CLI_ADD)
    command = SetScalingGroup(name="gpu", **settings)
    assert command.is_public is False and command.description == "gpus"
    assert command.scheduler == "fifo" and command.driver == "static"


def test_the_sdks_nulls_are_not_given() -> None:
    """The SDK's ``create`` sends ``driver=None`` and ``json.dumps(None)`` for the opts."""
    settings = scaling_group_settings(
        {**CLI_ADD, "driver": None, "scheduler": None, "driver_opts": "null"}
    )
    assert settings["driver"] == "static" and settings["scheduler"] == "fifo"


@pytest.mark.parametrize(
    ("props", "named"),
    [
        ({"driver": "aws"}, "driver"),
        ({"driver_opts": '{"region": "x"}'}, "driver_opts"),
        ({"scheduler": "magic"}, "scheduler"),
        ({"wsproxy_addr": "http://proxy:5050"}, "wsproxy_addr"),
        ({"wsproxy_api_token": "t"}, "wsproxy_api_token"),
        ({"use_host_network": True}, "use_host_network"),
        ({"scheduler_opts": '{"bogus": 1}'}, "scheduler_opts"),
        ({"scheduler_opts": '{"allowed_session_types": ["gaming"]}'}, "allowed_session_types"),
        ({"scheduler_opts": '{"pending_timeout": -1}'}, "pending_timeout"),
        ({"scheduler_opts": '{"pending_timeout": "soon"}'}, "pending_timeout"),
        ({"scheduler_opts": '{"config": {"num_retries_to_skip": -2}}'}, "config"),
        ({"scheduler_opts": '{"config": {"num_retries": 2}}'}, "num_retries"),
        ({"scheduler": "drf", "scheduler_opts": '{"config": {"drf_share": "x"}}'}, "drf_share"),
        (
            {"scheduler": "fair_share", "scheduler_opts": '{"config": {"half_life": "1s"}}'},
            "half_life",
        ),
        (
            {"scheduler": "fair_share", "scheduler_opts": '{"config": {"weights": {"cpu": -1}}}'},
            "weights",
        ),
        ({"scheduler": "fifo", "scheduler_opts": '{"config": {"half_life": "1d"}}'}, "half_life"),
        ({"scheduler_opts": "[1]"}, "scheduler_opts"),
        ({"scheduler_opts": "{nope"}, "scheduler_opts"),
        ({"scheduler_opts": {"a": 1}}, "scheduler_opts"),
        ({"is_public": "yes"}, "is_public"),
    ],
)
def test_what_kernelhub_cannot_honour_is_refused_by_name(
    props: dict[str, object], named: str
) -> None:
    with pytest.raises(InvalidAPIParameters) as refused:
        scaling_group_settings({**CLI_ADD, **props})
    assert named in str(refused.value)


def test_scheduler_opts_are_read_as_23_03_reads_them() -> None:
    opts = {
        "allowed_session_types": ["batch"],
        "pending_timeout": "10m",
        "config": {"num_retries_to_skip": 3},
        "agent_selector": "dispersed",
    }
    settings = scaling_group_settings({**CLI_ADD, "scheduler_opts": json.dumps(opts)})
    assert settings["allowed_session_types"] == ["batch"]
    assert settings["pending_timeout"] == 600.0
    assert settings["scheduler_config"] == {"num_retries_to_skip": 3}
    assert settings["agent_selector"] == "dispersed"
    view = scaling_group_view({"name": "g", **settings})
    shown = json.loads(view["scheduler_opts"])
    assert shown == {
        "allowed_session_types": ["batch"],
        "pending_timeout": 600.0,
        "config": {"num_retries_to_skip": 3},
        "agent_selector": "dispersed",
    }
    assert view["wsproxy_addr"] is None and json.loads(view["driver_opts"]) == {}


def test_fair_share_takes_its_half_life_and_weights() -> None:
    opts = {"config": {"half_life": "1d", "weights": {"cuda.device": 20, "cpu": 1}}}
    settings = scaling_group_settings(
        {**CLI_ADD, "scheduler": "fair_share", "scheduler_opts": json.dumps(opts)}
    )
    assert settings["scheduler"] == "fair_share"
    assert settings["scheduler_config"] == opts["config"]


def test_modify_overlays_what_it_is_given_on_the_current_record() -> None:
    current = {
        "name": "g",
        "description": "old",
        "is_public": False,
        "scheduler": "drf",
        "scheduler_config": {"drf_share": "sum"},
        "pending_timeout": 30.0,
        "for": [["domain", "default"]],
    }
    settings = scaling_group_settings({"description": "new"}, current)
    assert settings["description"] == "new" and settings["is_public"] is False
    assert settings["scheduler"] == "drf" and settings["scheduler_config"] == {"drf_share": "sum"}
    assert settings["pending_timeout"] == 30.0 and "for" not in settings
    # a scheduler whose options the kept config does not fit is refused, not half-applied
    with pytest.raises(InvalidAPIParameters, match="drf_share"):
        scaling_group_settings({"scheduler": "fifo"}, current)


def test_json_string_arguments_are_objects_or_null() -> None:
    assert decode_json_object("x", None) is None
    assert decode_json_object("x", "null") is None
    assert decode_json_object("x", '{"a": 1}') == {"a": 1}
    for bad in ('"text"', "3", "[]"):
        with pytest.raises(InvalidAPIParameters, match="x"):
            decode_json_object("x", bad)


@pytest.mark.parametrize(
    ("reference", "parts"),
    [
        ("kernelhub/python:3.11", ("local", "kernelhub/python", "3.11")),
        ("cr.backend.ai/stable/python:3.9", ("cr.backend.ai", "stable/python", "3.9")),
        ("localhost:5000/lab/torch:2.1", ("localhost:5000", "lab/torch", "2.1")),
        ("localhost:5000/lab/torch", ("localhost:5000", "lab/torch", "latest")),
        ("python", ("local", "python", "latest")),
    ],
)
def test_an_image_reference_splits_as_23_03_shows_it(
    reference: str, parts: tuple[str, str, str]
) -> None:
    assert image_parts(reference) == parts


def test_an_image_view_has_what_the_clients_table_formats() -> None:
    record = {
        "name": "kernelhub/python:3.11",
        "architecture": "x86_64",
        "labels": {"ai.backend.resource.min.cpu": "1", "ai.backend.features": "batch query"},
    }
    view = image_view(record, ["python", "py"])
    assert view["aliases"] == ["py", "python"] and view["size_bytes"] == 0
    assert view["resource_limits"] == [{"key": "cpu", "min": "1", "max": None}]
    assert not is_operation_image(record)
    assert is_operation_image({"labels": {"ai.backend.features": "operation batch"}})


def test_agent_status_names_are_checked() -> None:
    assert parse_agent_status(None) is None and parse_agent_status("alive") == "ALIVE"
    with pytest.raises(InvalidAPIParameters, match="status"):
        parse_agent_status("SLEEPING")


def test_an_agents_live_stat_is_its_kernels_share_of_it() -> None:
    kernels = [
        {"cpu_util": {"current": "150"}, "mem": {"current": "1073741824"}},
        {"cpu_util": {"current": "50"}, "mem": {"current": "1073741824"}},
    ]
    devices = {"cuda": {"0": {"utilization": 40}}}
    live = node_live_stat({"cpu": "4", "mem": "8589934592"}, kernels, devices)
    assert live["node"]["cpu_util"]["pct"] == "50"
    assert live["node"]["mem"]["current"] == "2147483648"
    assert live["node"]["mem"]["pct"] == "25"
    assert live["devices"]["cuda_util"]["0"]["unit_hint"] == "pct"
    view = agent_view(
        {"id": "i-1", "status": "ALIVE", "available_slots": {"cpu": "4"}, "occupied_slots": {}},
        live,
    )
    assert view["cpu_cur_pct"] == 50.0 and view["mem_cur_bytes"] == 2147483648.0
    assert json.loads(view["available_slots"]) == {"cpu": "4"}
    idle = agent_view({"id": "i-2", "status": "LOST"})
    assert idle["cpu_cur_pct"] == 0.0 and idle["live_stat"] is None


def test_agent_list_filters_and_orders_on_the_agents_columns() -> None:
    from actors.gateway.gql_filter import parse_filter, parse_order, select

    records = [
        {"id": "i-b", "status": "ALIVE", "first_contact": "2026-01-02T00:00:00+00:00"},
        {"id": "i-a", "status": "LOST", "first_contact": "2026-01-01T00:00:00+00:00"},
        {"id": "i-c", "status": "ALIVE", "first_contact": None},
    ]
    rows = [(agent_row(r), r["id"]) for r in records]
    keep = parse_filter('status == "alive"', fields=AGENT_FIELDS)
    assert select(rows, keep, None) == ["i-b", "i-c"]
    since = parse_filter('first_contact >= "2026-01-01T12:00:00Z"', fields=AGENT_FIELDS)
    assert select(rows, since, None) == ["i-b"]
    assert select(rows, None, parse_order("-id", fields=AGENT_FIELDS)) == ["i-c", "i-b", "i-a"]
    for bad in ('name == "x"', 'status == "NAPPING"', "first_contact > 3"):
        with pytest.raises(InvalidAPIParameters):
            parse_filter(bad, fields=AGENT_FIELDS)


# ---- review findings F8 and F9 ----------------------------------------------------------------
@dataclass(frozen=True)
class Who:
    access_key: str
    domain: str
    role: str = "user"

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"

    @property
    def may_act_for_others(self) -> bool:
        return self.role in ("admin", "superadmin")


def test_another_domains_project_reads_as_an_unknown_one() -> None:
    """F8, the attacker an admin (or user) of ``lab2`` probing a project id of ``default``:
    ``GET /scaling-groups?group=`` must answer exactly what an unknown id gets. Before the
    fix the other domain's project answered "You can only set the domain to the owner's
    domain." (scope.creation_refusal's text) and so told that the id exists."""
    theirs = {"project_id": "p1", "domain": "default", "members": ["u-m"], "is_active": True}
    for caller in (Who("AKA", "lab2", "admin"), Who("AKU", "lab2")):
        assert project_refusal(caller, "u-x", theirs) == INVALID_GROUP
        assert project_refusal(caller, "u-x", None) == INVALID_GROUP
    assert project_refusal(Who("AKM", "default"), "u-m", theirs) is None  # a member
    assert project_refusal(Who("AKS", "other", "superadmin"), "u-s", theirs) is None


def test_a_scaling_group_a_preset_names_is_not_deleted() -> None:
    """F9, the dangling reference: deleting a group that resource presets name is a 400
    naming the presets. Before the fix only agents and sessions were looked at, and the
    presets kept a group name that no longer existed."""
    presets = [
        {"name": "gpu-big", "scaling_group_name": "gpus"},
        {"name": "cpu", "scaling_group_name": None},
        {"name": "gpu-small", "scaling_group_name": "gpus"},
    ]
    with pytest.raises(GenericBadRequest, match="gpu-big, gpu-small"):
        require_no_preset_names("gpus", presets)
    require_no_preset_names("cpus", presets)
