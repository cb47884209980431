"""The keys areas' pure rules (actors/gateway/admin/keys_rules.py and the policy field
checks): whose keypairs a caller lists and changes, and how each value the official client
sends is checked. The same rules run for real in tests/test_admin_keys.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from actors.domain.errors import GenericForbidden, InvalidAPIParameters
from actors.gateway.admin.keypairs import FILTER_COLUMNS, filter_row
from actors.gateway.admin.keys_rules import (
    bigint,
    bytes_of,
    count,
    exec_timeout,
    json_object,
    keypair_scope,
    refuse_given,
    require_keypair_admin,
    shared_memory,
    slots,
    vfolder_hosts,
)
from actors.gateway.admin.policies import policy_changes, policy_view
from actors.gateway.gql_filter import QueryLanguageError, parse_filter, parse_order, select

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Who:
    """What the rules read of a caller (the gateway's ``Caller`` is one)."""

    access_key: str
    domain: str
    role: str = "user"
    is_admin: bool = False

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"

    @property
    def may_act_for_others(self) -> bool:
        return self.is_superadmin or self.role == "admin" or self.is_admin


ROOT = Who("AKROOT", "default", "superadmin")
DANA = Who("AKDANA", "default", "admin")  # a domain admin of default
EVE = Who("AKEVE", "rival", "admin")  # a domain admin of another domain
BOB = Who("AKBOB", "default")
BOB_USER = {"user_id": "u-bob", "domain": "default", "role": "user", "email": "bob@x"}
ROOT_USER = {"user_id": "u-root", "domain": "default", "role": "superadmin"}
REX_USER = {"user_id": "u-rex", "domain": "rival", "role": "user"}


def test_a_superadmin_lists_every_keypair_or_one_domains() -> None:
    assert keypair_scope(ROOT, "u-root", "root@x", None, None).admits(REX_USER)
    scope = keypair_scope(ROOT, "u-root", "root@x", "rival", None)
    assert scope.admits(REX_USER) and not scope.admits(BOB_USER)


def test_a_domain_admin_lists_their_domain_but_no_superadmin() -> None:
    scope = keypair_scope(DANA, "u-dana", "dana@x", None, None)
    assert scope.admits(BOB_USER)
    assert not scope.admits(ROOT_USER)  # a superadmin's keypair is not a domain admin's
    assert not scope.admits(REX_USER)
    with pytest.raises(GenericForbidden):
        keypair_scope(EVE, "u-eve", "eve@x", "default", None)


def test_a_user_lists_their_own_keypairs_only() -> None:
    scope = keypair_scope(BOB, "u-bob", "bob@x", None, None)
    assert scope.admits(BOB_USER)
    assert not scope.admits({**BOB_USER, "user_id": "u-dana"})
    assert keypair_scope(BOB, "u-bob", "bob@x", "default", "bob@x").admits(BOB_USER)
    for domain, email in (("rival", None), (None, "root@x")):
        with pytest.raises(GenericForbidden):
            keypair_scope(BOB, "u-bob", "bob@x", domain, email)


def test_keypair_mutations_are_an_admins_of_the_owners_domain() -> None:
    require_keypair_admin(ROOT, ROOT_USER, "x")
    require_keypair_admin(ROOT, None, "x")  # a superadmin may clean up an orphan
    require_keypair_admin(DANA, BOB_USER, "x")
    refused = [
        (DANA, ROOT_USER),  # never a superadmin's
        (EVE, BOB_USER),  # never another domain's
        (EVE, None),  # an unknown owner reads the same
        (BOB, BOB_USER),  # a user changes none, not even their own
    ]
    for who, owner in refused:
        with pytest.raises(GenericForbidden):
            require_keypair_admin(who, owner, "x")
    # a keypair flagged admin acts as an admin of its domain (kernelhub's Caller rule)
    require_keypair_admin(Who("AKFLAG", "default", is_admin=True), BOB_USER, "x")


def test_a_legacy_field_is_refused_only_when_given() -> None:
    refuse_given({"concurrency_limit": None, "rate_limit": 5}, {"concurrency_limit": "no"})
    with pytest.raises(InvalidAPIParameters, match="concurrency_limit"):
        refuse_given({"concurrency_limit": 3}, {"concurrency_limit": "no"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"cpu": "4", "mem": "8g"}', {"cpu": "4", "mem": str(8 * 2**30)}),
        ({"cpu": 2.5}, {"cpu": "2.5"}),
        ("{}", {}),
        ('{"cuda.shares": "0.5"}', {"cuda.shares": "0.5"}),
    ],
)
def test_slots_are_parsed_to_plain_decimals(value: Any, expected: dict[str, str]) -> None:
    assert slots(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "{not json",
        "[1, 2]",
        '{"cpu": "-1"}',
        '{"cpu": "NaN"}',
        '{"cpu": "1e100000000"}',
        '{"Bad Name": "1"}',
        '{"mem": "1.5"}',
        42,
        json.dumps({f"s{i}": "1" for i in range(40)}),
    ],
)
def test_bad_slots_are_refused_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidAPIParameters) as refused:
        slots(value)
    assert "total_resource_slots" in refused.value.msg


def test_json_strings_bigints_and_counts_are_checked() -> None:
    assert json_object('{"a": 1}', "f") == {"a": 1}
    for bad in ("NaN", '"text"', "x" * 20_000):
        with pytest.raises(InvalidAPIParameters, match="f:"):
            json_object(bad, "f")
    assert bigint(2**40, "size") == 2**40
    assert bigint("1099511627776", "size") == 2**40
    for bad_int in (-1, 2**63, True, 1.5, "1g"):
        with pytest.raises(InvalidAPIParameters, match="size"):
            bigint(bad_int, "size")
    with pytest.raises(InvalidAPIParameters, match="rate_limit"):
        count(-5, "rate_limit")
    assert exec_timeout(None) is None and exec_timeout(30) == 30.0
    for bad_timeout in (-1, float("inf"), "10"):
        with pytest.raises(InvalidAPIParameters, match="exec_timeout_s"):
            exec_timeout(bad_timeout)


def test_vfolder_hosts_and_shared_memory_are_bounded() -> None:
    hosts = '{"local:volume1": ["create-vfolder", "mount-in-session"]}'
    assert vfolder_hosts(hosts) == {"local:volume1": ["create-vfolder", "mount-in-session"]}
    for bad in ('{"h": "rw"}', '{"h": [1]}', '{"": []}'):
        with pytest.raises(InvalidAPIParameters, match="allowed_vfolder_hosts"):
            vfolder_hosts(bad)
    assert shared_memory("64m") == str(64 * 2**20)
    assert shared_memory(None) is None
    for bad_size in ("lots", "1.5", "inf", True):
        with pytest.raises(InvalidAPIParameters, match="shared_memory"):
            shared_memory(bad_size)
    assert bytes_of("1g") == 2**30 and bytes_of(str(2**20)) == 2**20 and bytes_of("?") is None


def test_a_policy_takes_the_given_fields_checked_and_shows_json_strings() -> None:
    changes = policy_changes(
        {
            "default_for_unspecified": "LIMITED",
            "total_resource_slots": '{"cpu": "2"}',
            "max_concurrent_sessions": 1,
            "max_vfolder_size": 2**40,
            "idle_timeout": None,  # null: not given
            "exec_timeout_s": 60,
        }
    )
    assert changes == {
        "default_for_unspecified": "LIMITED",
        "total_resource_slots": {"cpu": "2"},
        "max_concurrent_sessions": 1,
        "max_vfolder_size": 2**40,
        "exec_timeout_s": 60.0,
    }
    for bad in (
        {"default_for_unspecified": "SOMETIMES"},
        {"max_containers_per_session": 0},
        {"nonsense": 1},
    ):
        with pytest.raises(InvalidAPIParameters):
            policy_changes(bad)
    view = policy_view({"name": "p", **changes})
    assert json.loads(view["total_resource_slots"]) == {"cpu": "2"}
    assert json.loads(view["allowed_vfolder_hosts"]) == {}
    assert view["exec_timeout_s"] == 60.0


def test_keypair_list_filters_and_orders_by_23_03s_columns() -> None:
    owners = {"u-bob": {"email": "bob@x", "full_name": "Bob"}, "u-ann": {"email": "ann@x"}}
    records: list[dict[str, Any]] = [
        {
            "access_key": "AK1",
            "user_id": "u-bob",
            "is_active": True,
            "rate_limit": 10,
            "created_at": "2026-01-01T00:00:00Z",
            "resource_policy": "default",
        },
        {
            "access_key": "AK2",
            "user_id": "u-bob",
            "is_active": False,
            "rate_limit": 30,
            "created_at": "2026-01-03T00:00:00Z",
            "resource_policy": "gpu",
        },
        {
            "access_key": "AK3",
            "user_id": "u-ann",
            "is_admin": True,
            "rate_limit": 20,
            "created_at": "2026-01-02T00:00:00Z",
            "resource_policy": "default",
        },
    ]
    rows = [(filter_row(r, owners[str(r["user_id"])]), r["access_key"]) for r in records]

    def chosen(text: str, order: str = "") -> list[str]:
        keep = parse_filter(text, fields=FILTER_COLUMNS) if text else None
        sort = parse_order(order, fields=FILTER_COLUMNS) if order else None
        return select(rows, keep, sort)

    assert chosen('email == "bob@x"') == ["AK1", "AK2"]
    assert chosen("is_active == false") == ["AK2"]
    assert chosen("is_admin == true") == ["AK3"]
    assert chosen("rate_limit >= 20", "-rate_limit") == ["AK2", "AK3"]
    assert chosen('created_at > "2026-01-01T12:00:00Z"', "+created_at") == ["AK3", "AK2"]
    assert chosen('resource_policy == "default" & full_name == "Bob"') == ["AK1"]
    for bad in ("nope == 1", 'rate_limit == "x"'):
        with pytest.raises(QueryLanguageError):
            chosen(bad)
