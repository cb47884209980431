"""The people areas' rules against the hostile review of issue 29 (F4, F5, F7, F12): each
test plays the attacker against a pure rule, and each says what the code before the fix did
with the same input. The signed-request versions are in ``test_admin_people``."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from graphql import GraphQLResolveInfo, graphql_sync

from actors.domain.errors import GenericForbidden, InvalidAPIParameters
from actors.gateway.admin.people_guard import (
    MAX_MEMBERS,
    admin_domain_refusal,
    inactive_domain_refusal,
    member_ids,
    outside_refusal,
    password_mutations,
    refuse_many_passwords,
)
from actors.gateway.admin.people_inputs import hosts_of, json_object, slots_of
from actors.gateway.graphql import SCHEMA

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class _Caller:
    access_key: str = "AK"
    domain: str = "lab"
    is_superadmin: bool = False
    may_act_for_others: bool = True


# ---- F5: JSONStrings bounded and shape-checked -------------------------------------------------
def _deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_object(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("rule", [hosts_of, lambda v: slots_of("allowed_vfolder_hosts", v)])
def test_an_over_deep_json_string_is_a_400_naming_the_field(rule: Any) -> None:
    """Before the fix a 5,000-deep array was a ``RecursionError`` out of ``json_object``
    (answered as a 200 with ``errors``), and a 900-deep object was decoded and stored (the
    event's validator then echoed its 900-level path)."""
    for text in (_deep_array(5000), _deep_object(900), _deep_object(5000)):
        with pytest.raises(InvalidAPIParameters) as refused:
            rule(text)
        assert refused.value.msg.startswith("allowed_vfolder_hosts: ")
        assert len(refused.value.msg) < 200  # nothing of the path or the text echoed back


def test_an_over_long_json_string_is_a_400_naming_the_field() -> None:
    """Before the fix a 78,890-byte object was accepted and stored in the immutable log."""
    huge = json.dumps({f"host-{i}": ["mount-in-session"] * 4 for i in range(1000)})
    assert len(huge) > 16 * 2**10
    for field, rule in (
        ("allowed_vfolder_hosts", hosts_of),
        ("total_resource_slots", lambda v: slots_of("total_resource_slots", v)),
        ("x", lambda v: json_object("x", v)),
    ):
        with pytest.raises(InvalidAPIParameters, match=rf"^{field}: ") as refused:
            rule(huge)
        assert len(refused.value.msg) < 200


def test_vfolder_hosts_are_host_to_permission_lists_only() -> None:
    """Arbitrary JSON under ``allowed_vfolder_hosts`` was stored as sent before the fix."""
    assert hosts_of('{"local:vol1": ["create-vfolder", "mount-in-session"]}') == {
        "local:vol1": ["create-vfolder", "mount-in-session"]
    }
    assert hosts_of(None) is None and hosts_of("") == {} and hosts_of("{}") == {}
    for bad in (
        '{"h": {"nested": {"deeper": 1}}}',
        '{"h": "mount-in-session"}',
        json.dumps({f"h{i}": [] for i in range(65)}),
        json.dumps({"h": ["p"] * 33}),
        json.dumps({"h": ["x" * 129]}),
        "[1]",
    ):
        with pytest.raises(InvalidAPIParameters, match=r"^allowed_vfolder_hosts: "):
            hosts_of(bad)


def test_slots_are_a_few_short_scalars() -> None:
    """A nested or huge slot amount was handed to the slot parser, whose error quoted it."""
    assert slots_of("total_resource_slots", '{"cpu": 2, "mem": "1g"}') == {
        "cpu": "2",
        "mem": "1073741824",
    }
    for bad in (
        json.dumps({"cpu": {"a": [1] * 1000}}),
        json.dumps({"cpu": "9" * 5000}),
        json.dumps({f"s{i}": 1 for i in range(17)}),
        json.dumps({"x" * 65: 1}),
        json.dumps({"cpu": True}),
    ):
        with pytest.raises(InvalidAPIParameters, match=r"^total_resource_slots: ") as refused:
            slots_of("total_resource_slots", bad)
        assert len(refused.value.msg) < 200


# ---- F4: password-setting mutations per document ------------------------------------------------
def _counted(query: str, variables: dict[str, Any] | None = None) -> list[int]:
    """What each resolver of ``query`` would see: the document's password-setting count."""
    seen: list[int] = []

    def probe(info: GraphQLResolveInfo, **_args: Any) -> None:
        seen.append(password_mutations(info))

    root = {name: probe for name in ("create_user", "modify_user", "delete_user")}
    result = graphql_sync(SCHEMA, query, root_value=root, variable_values=variables or {})
    assert not result.errors, result.errors
    return seen


PW = "long enough password"


def test_password_mutations_are_counted_over_the_whole_document() -> None:
    """Before the fix nothing counted them: eight aliases, eight scrypts per request."""
    three = "mutation($p: ModifyUserInput!) { a: modify_user(email: \"a@x\", props: $p) { ok } " \
        "b: modify_user(email: \"b@x\", props: $p) { ok } c: modify_user(email: \"c@x\", " \
        "props: $p) { ok } }"  # fmt: skip
    assert _counted(three, {"p": {"password": PW}}) == [3, 3, 3]  # the first already knows
    assert _counted(three, {"p": {"full_name": "x"}}) == [0, 0, 0]
    mixed = (
        'mutation { a: create_user(email: "a@x", props: {password: "' + PW + '", '
        'domain_name: "d"}) { ok } b: modify_user(email: "b@x", props: {password: "'
        + PW
        + '"}) { ok } c: modify_user(email: "c@x", props: {role: "user"}) { ok } '
        'd: delete_user(email: "d@x") { ok } }'
    )
    assert _counted(mixed) == [2, 2, 2, 2]
    fragment = (
        "mutation($p: ModifyUserInput!) { ...F } fragment F on Mutation { "
        'a: modify_user(email: "a@x", props: $p) { ok } '
        'b: modify_user(email: "b@x", props: $p) { ok } '
        'c: modify_user(email: "c@x", props: $p) @skip(if: true) { ok } }'
    )
    assert _counted(fragment, {"p": {"password": PW}}) == [2, 2]


def test_a_third_password_in_one_document_is_a_400_naming_the_bound() -> None:
    query = "mutation($p: ModifyUserInput!) { " + " ".join(
        f'm{i}: modify_user(email: "u{i}@x", props: $p) {{ ok }}' for i in range(8)
    ) + " }"  # fmt: skip
    refusals: list[str] = []

    def probe(info: GraphQLResolveInfo, **_args: Any) -> None:
        try:
            refuse_many_passwords(info)
        except InvalidAPIParameters as refused:
            refusals.append(refused.msg)

    graphql_sync(
        SCHEMA, query, root_value={"modify_user": probe}, variable_values={"p": {"password": PW}}
    )
    assert len(refusals) == 8 and "at most 2 password-setting mutations" in refusals[0]
    assert "not 8" in refusals[0] and PW not in refusals[0]


# ---- F7: inactive domains ---------------------------------------------------------------------
def test_a_domain_admin_of_an_inactive_domain_administers_nothing() -> None:
    """Before the fix nothing looked at the caller's domain: adminB of a deleted domain
    went on creating users in it."""
    admin, root = _Caller(), _Caller(is_superadmin=True)
    refusal = admin_domain_refusal(admin, {"name": "lab", "is_active": False})
    assert isinstance(refusal, GenericForbidden) and "'lab' is inactive" in refusal.msg
    assert isinstance(admin_domain_refusal(admin, None), GenericForbidden)  # purged
    assert admin_domain_refusal(admin, {"name": "lab", "is_active": True}) is None
    assert admin_domain_refusal(admin, {"name": "lab"}) is None  # records before the flag
    assert admin_domain_refusal(root, {"name": "lab", "is_active": False}) is None


def test_nothing_is_created_in_or_changed_within_an_inactive_domain() -> None:
    refusal = inactive_domain_refusal("dead", {"name": "dead", "is_active": False})
    assert isinstance(refusal, InvalidAPIParameters)
    assert refusal.msg.startswith("domain_name: domain 'dead' is inactive")
    assert inactive_domain_refusal("live", {"name": "live", "is_active": True}) is None


# ---- F12: membership lists ----------------------------------------------------------------------
def test_membership_lists_are_bounded_and_deduplicated() -> None:
    """Before the fix 1,500 ids (or 1,500 copies of one) were 1,500 commands, each waiting
    for the read model."""
    one = str(uuid.uuid4())
    assert member_ids("user_uuids", [one, one.upper(), one]) == [one]
    assert member_ids("user_uuids", None) == []
    ids = [str(uuid.uuid4()) for _ in range(MAX_MEMBERS)]
    assert member_ids("group_ids", ids) == ids
    for many in ([*ids, one], [one] * 1500):
        with pytest.raises(InvalidAPIParameters, match=r"^user_uuids: at most 100 ids"):
            member_ids("user_uuids", many)


def test_a_refusal_quotes_a_few_ids_not_all() -> None:
    """Before the fix the refusal listed every outside id (up to the 64 KiB body)."""
    outside = [str(uuid.uuid4()) for _ in range(50)]
    refusal = outside_refusal("user_uuids", "users of domain 'lab'", outside)
    assert sum(i in refusal.msg for i in outside) == 3 and refusal.msg.endswith("and 47 more")
    assert outside_refusal("group_ids", "groups", outside[:2]).msg.endswith(outside[1])
