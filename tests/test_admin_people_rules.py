"""The people areas' pure rules (issue 29): how a mutation's input is read, who may grant a
role, and how a record is shown. The stack-level behaviour is in ``test_admin_people``."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from actors.domain.errors import InvalidAPIParameters
from actors.gateway.admin.people_filter import USER_FILTER_FIELDS, USER_ORDER_FIELDS, user_row
from actors.gateway.admin.people_inputs import (
    json_object,
    may_grant_role,
    page,
    refuse_unhonoured,
    role_of,
    slots_of,
    status_of,
    string_list,
)
from actors.gateway.admin.people_views import domain_view, parse_uuid, user_view
from actors.gateway.gql_filter import QueryLanguageError, parse_filter, parse_order, select

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class _Caller:
    access_key: str = "AK"
    domain: str = "lab"
    is_superadmin: bool = False
    may_act_for_others: bool = True


def test_json_strings_are_decoded_and_bad_ones_refused_by_name() -> None:
    assert json_object("allowed_vfolder_hosts", None) is None
    assert json_object("allowed_vfolder_hosts", '{"h": ["mount-in-session"]}') == {
        "h": ["mount-in-session"]
    }
    assert json_object("x", "") == {}
    for bad in ("{nope", "[1]", "3"):
        with pytest.raises(InvalidAPIParameters, match=r"^allowed_vfolder_hosts: "):
            json_object("allowed_vfolder_hosts", bad)
    with pytest.raises(InvalidAPIParameters, match="expected a JSON string, got dict"):
        json_object("total_resource_slots", {"cpu": 1})


def test_slots_read_as_23_03_reads_user_input() -> None:
    assert slots_of("total_resource_slots", '{"cpu": 8, "mem": "16g", "cuda.device": "2"}') == {
        "cpu": "8",
        "mem": "17179869184",
        "cuda.device": "2",
    }
    assert slots_of("total_resource_slots", "{}") == {}
    assert slots_of("total_resource_slots", None) is None
    for bad in ('{"cpu": -1}', '{"cpu": "lots"}', '{"mem": "Infinity"}'):
        with pytest.raises(InvalidAPIParameters, match=r"^total_resource_slots: "):
            slots_of("total_resource_slots", bad)


def test_what_cannot_be_honoured_is_refused_only_when_it_carries_a_value() -> None:
    refuse_unhonoured({"integration_id": None, "totp_activated": False}, "integration_id")
    refuse_unhonoured({"integration_id": ""}, "integration_id", "totp_activated")
    with pytest.raises(InvalidAPIParameters, match="integration_id, totp_activated"):
        refuse_unhonoured(
            {"integration_id": "ext", "totp_activated": True}, "integration_id", "totp_activated"
        )


def test_roles_statuses_and_lists_are_checked() -> None:
    assert role_of("monitor") == "monitor" and status_of("before-verification")
    with pytest.raises(InvalidAPIParameters, match=r"^role: 'root' is not one of"):
        role_of("root")
    with pytest.raises(InvalidAPIParameters, match=r"^status: 'gone'"):
        status_of("gone")
    assert string_list("group_ids", ["a", "b"]) == ["a", "b"]
    with pytest.raises(InvalidAPIParameters, match=r"^group_ids: "):
        string_list("group_ids", "a")


def test_nobody_grants_more_than_they_hold() -> None:
    admin, root = _Caller(), _Caller(is_superadmin=True)
    assert may_grant_role(admin, "admin") and may_grant_role(admin, "user")
    assert not may_grant_role(admin, "superadmin")
    assert may_grant_role(root, "superadmin")


def test_pages_are_bounded_like_sessions() -> None:
    assert page(list(range(10)), 3, 8) == [8, 9]
    for limit, offset in ((0, 0), (101, 0), (10, -1)):
        with pytest.raises(InvalidAPIParameters):
            page([], limit, offset)


def test_views_never_show_a_password_and_say_what_is_not_kept() -> None:
    record = {
        "user_id": "7b5f0a38-9a7f-4a8e-8f36-1f8f1d2f9c11",
        "username": "bob",
        "email": "bob@lab.org",
        "domain": "lab",
        "role": "admin",
        "status": "inactive",
        "has_password": True,
        "password_hash": "scrypt$14$8$1$c2FsdA==$aGFzaA==",  # never in a record; if it were
    }
    shown = user_view(record)
    assert "scrypt" not in json.dumps(shown) and "password_hash" not in shown
    assert shown["uuid"] == shown["id"] == record["user_id"]
    assert (shown["is_active"], shown["status"], shown["domain_name"]) == (False, "inactive", "lab")
    assert shown["status_info"] is None and shown["totp_activated"] is False
    domain = domain_view({"name": "lab", "total_resource_slots": {"cpu": "4"}})
    assert domain["total_resource_slots"] == '{"cpu": "4"}' and domain["integration_id"] is None
    assert parse_uuid("gid", "7B5F0A38-9A7F-4A8E-8F36-1F8F1D2F9C11") == record["user_id"]
    with pytest.raises(InvalidAPIParameters, match=r"^gid: not a UUID"):
        parse_uuid("gid", "default")


def test_user_list_filters_and_orders_over_23_03s_user_columns() -> None:
    users = [
        {"user_id": "1", "email": "a@lab.org", "role": "admin", "status": "active",
         "domain": "lab", "created_at": "2026-01-02T00:00:00.000Z"},
        {"user_id": "2", "email": "b@lab.org", "role": "user", "status": "before-verification",
         "domain": "lab", "created_at": "2026-01-01T00:00:00.000Z", "need_password_change": True},
        {"user_id": "3", "email": "c@else.org", "role": "superadmin", "status": "inactive",
         "domain": "else", "created_at": "2026-01-03T00:00:00.000Z",
         "allowed_client_ip": ["10.0.0.0/8"]},
    ]  # fmt: skip

    def emails(text: str, order: str = "") -> list[str]:
        keep = parse_filter(text, fields=USER_FILTER_FIELDS) if text else None
        sort = parse_order(order, fields=USER_ORDER_FIELDS) if order else None
        return [u["email"] for u in select([(user_row(u), u) for u in users], keep, sort)]

    assert emails('status == "ACTIVE"') == ["a@lab.org"]
    assert emails('role in ["ADMIN", "superadmin"]') == ["a@lab.org", "c@else.org"]
    assert emails('status == "before_verification"') == ["b@lab.org"]
    assert emails("need_password_change == true") == ["b@lab.org"]
    assert emails('email ilike "%@LAB.org"', "-created_at") == ["a@lab.org", "b@lab.org"]
    assert emails('created_at >= "2026-01-02"', "+email") == ["a@lab.org", "c@else.org"]
    assert emails('allowed_client_ip == "10.0.0.0/8"') == ["c@else.org"]
    assert emails("", "-domain_name,email") == ["a@lab.org", "b@lab.org", "c@else.org"]
    with pytest.raises(QueryLanguageError, match="unknown field 'password'"):
        emails('password == "x"')
    with pytest.raises(QueryLanguageError, match="unknown field 'allowed_client_ip'"):
        emails("", "allowed_client_ip")
