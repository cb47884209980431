"""The keys areas' pure rules (actors/gateway/admin/keys_rules.py and the policy field
checks): whose keypairs a caller lists and changes, and how each value the official client
sends is checked. The same rules run for real in tests/test_admin_keys.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from actors.domain.errors import GenericForbidden, InvalidAPIParameters, ObjectNotFound
from actors.gateway.admin.keypairs import FILTER_COLUMNS, filter_row
from actors.gateway.admin.keys_rules import (
    DEFAULT_RATE_CEILING,
    DomainGrants,
    bigint,
    bytes_of,
    count,
    domain_grants,
    exec_timeout,
    json_object,
    keypair_scope,
    policy_not_open,
    refuse_given,
    require_admin_flag_fits_role,
    require_grantable,
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


# ---- what a keypair may be given (review findings F16 and F10) -----------------------------
def test_an_admin_keypair_only_for_an_admin_user() -> None:
    """F16, the attacker a domain admin making a hidden admin: ``is_admin: true`` on a plain
    user's keypair is a 400 naming ``is_admin`` whoever asks. Before the fix nothing looked
    at the owner's role (this rule did not exist), so the flag was set."""
    with pytest.raises(InvalidAPIParameters, match="is_admin") as refused:
        require_admin_flag_fits_role(BOB_USER, True)
    assert "'user'" in refused.value.msg
    require_admin_flag_fits_role(BOB_USER, False)
    require_admin_flag_fits_role(BOB_USER, None)
    require_admin_flag_fits_role({**BOB_USER, "role": "admin"}, True)
    require_admin_flag_fits_role(ROOT_USER, True)


USERS = {
    "u-root": ROOT_USER,
    "u-bob": BOB_USER,
    "u-dana": {"user_id": "u-dana", "domain": "default", "role": "admin"},
    "u-rex": REX_USER,
}
KEYPAIRS = [
    {"user_id": "u-root", "resource_policy": "unlimited", "rate_limit": 10**9},
    {"user_id": "u-rex", "resource_policy": "rival-gold", "rate_limit": 50_000},
    {"user_id": "u-bob", "resource_policy": "lab-silver", "rate_limit": 20_000},
    {"user_id": "u-dana", "resource_policy": "default", "rate_limit": 1000},
]


def test_a_domains_grants_are_what_its_keypairs_hold_never_a_superadmins() -> None:
    default = domain_grants("default", USERS, KEYPAIRS)
    assert default == DomainGrants(frozenset({"default", "lab-silver"}), 20_000)
    rival = domain_grants("rival", USERS, KEYPAIRS)
    assert rival == DomainGrants(frozenset({"default", "rival-gold"}), 50_000)
    assert domain_grants("empty", USERS, KEYPAIRS).rate_ceiling == DEFAULT_RATE_CEILING


def _grant(caller: Who, **given: Any) -> None:
    grants = domain_grants(caller.domain, USERS, KEYPAIRS)
    require_grantable(
        caller,
        None if given.get("own") else grants,
        own=given.get("own", False),
        current=given.get("current"),
        own_keypairs=given.get("own_keypairs", ()),
        resource_policy=given.get("resource_policy"),
        rate_limit=given.get("rate_limit"),
    )


def test_a_domain_admin_gives_only_policies_open_to_their_domain() -> None:
    """F10, the attacker dana handing bob the superadmin's UNLIMITED policy (held only by the
    superadmin's keypair) or another domain's: refused with the very answer of a policy
    that does not exist (no oracle for global names). Before the fix any existing policy was
    given (there was no such rule)."""
    _grant(DANA, resource_policy="lab-silver")
    _grant(DANA, resource_policy="default")
    answers = set()
    for name in ("unlimited", "rival-gold", "no-such-policy"):
        with pytest.raises(ObjectNotFound) as refused:
            _grant(DANA, resource_policy=name)
        answers.add((refused.value.title, refused.value.msg.replace(name, "X")))
    unknown = policy_not_open(DANA, "X")
    assert answers == {(unknown.title, unknown.msg)}
    _grant(ROOT, resource_policy="rival-gold")  # a superadmin: unchanged


def test_a_domain_admin_raises_no_rate_limit_past_their_domains_highest() -> None:
    """F10: dana may set up to max(10000, the domain's highest: bob's 20000); above is 403
    naming rate_limit. Before the fix anything up to 2^31-1 was accepted."""
    _grant(DANA, rate_limit=20_000)
    with pytest.raises(GenericForbidden, match="rate_limit"):
        _grant(DANA, rate_limit=20_001)
    _grant(EVE, rate_limit=50_000)
    _grant(ROOT, rate_limit=2**31 - 1)


def test_a_domain_admin_does_not_raise_their_own_keypairs() -> None:
    """F10, the attacker dana raising her own quota: her own keypair's policy or rate limit
    may only be given as it is (the official client sends what it is told), and a keypair
    she issues herself gets nothing her keypairs do not hold. Before the fix she moved
    herself onto any policy and rate limit."""
    mine = {"user_id": "u-dana", "resource_policy": "default", "rate_limit": 1000}
    _grant(DANA, own=True, current=mine, resource_policy="default", rate_limit=1000)
    _grant(DANA, own=True, current=mine)  # is_active / is_admin only: no bound
    for given in ({"resource_policy": "lab-silver"}, {"rate_limit": 999}, {"rate_limit": 1001}):
        with pytest.raises(GenericForbidden, match="own"):
            _grant(DANA, own=True, current=mine, **given)
    _grant(DANA, own=True, own_keypairs=[mine], resource_policy="default", rate_limit=500)
    for given in ({"resource_policy": "lab-silver"}, {"rate_limit": 5000}):
        with pytest.raises(GenericForbidden, match="own"):
            _grant(DANA, own=True, own_keypairs=[mine], **given)
    _grant(ROOT, own=True, current=mine, resource_policy="unlimited", rate_limit=10**6)
