"""An admin GraphQL error never quotes the value it refused (issue 29): graphql-core repeats
an invalid variable or literal whole, and the value of a ``create_user``'s input is a password.
Each case below answered the password before the errors were rewritten."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import execute, parse, validate

from actors.gateway.graphql import SCHEMA, _without_values

pytestmark = pytest.mark.unit

SECRET = "s3cret; at 'input.x'"
CREATE = (
    "mutation($e: String!, $input: UserInput!) { create_user(email: $e, props: $input) { ok } }"
)


def _answered(variables: dict[str, Any]) -> list[str]:
    result = execute(SCHEMA, parse(CREATE), root_value={}, variable_values=variables)
    return [_without_values(error)["message"] for error in result.errors or ()]


@pytest.mark.parametrize(
    "password_input",
    [
        {"password": SECRET, "domain_name": "default", "smuggled": 1},
        {"password": [SECRET], "domain_name": "default"},
        {"password": {"nested": SECRET}, "domain_name": "default"},
    ],
)
def test_a_refused_variable_is_named_not_quoted(password_input: dict[str, Any]) -> None:
    answered = _answered({"e": "a@b.c", "input": password_input})
    assert answered, "the input was meant to be refused"
    assert all(SECRET not in m and "s3cret" not in m for m in answered), answered
    assert all(m.startswith("Variable '$input' got an invalid value") for m in answered)


def test_the_reason_and_the_path_are_kept() -> None:
    (message,) = _answered({"e": "a@b.c", "input": {"password": 5, "domain_name": "default"}})
    assert message == (
        "Variable '$input' got an invalid value at 'input.password'; "
        "String cannot represent a non string value."
    )


def test_a_refused_literal_is_not_quoted_either() -> None:
    query = f'mutation {{ create_user(email: "a@b.c", props: ["{SECRET}"]) {{ ok }} }}'
    messages = [_without_values(e)["message"] for e in validate(SCHEMA, parse(query))]
    assert messages and all("s3cret" not in m for m in messages), messages


def test_an_admin_keypair_of_a_plain_user_administers_nothing() -> None:
    """The admin areas judge by the user's role (23.03's ``privileged_mutation``): a plain
    user whose keypair carries ``is_admin`` (made before that was refused, or by hand) is a
    plain user there, while a real admin stays one."""
    from actors.gateway.admin.roles import administering, may_manage_domain
    from actors.gateway.auth import Caller

    hidden = Caller(
        access_key="AKIAHIDDEN",
        user_id="u1",
        domain="lab",
        role="user",
        is_admin=True,
        keypair={},
        user={},
    )
    assert hidden.may_act_for_others  # what REST honours
    assert not administering(hidden).may_act_for_others
    assert not may_manage_domain(administering(hidden), "lab")
    admin = Caller("AKIAADMIN", "u2", "lab", "admin", False, {}, {})
    assert may_manage_domain(administering(admin), "lab")
