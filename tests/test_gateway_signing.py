"""The request signature (:mod:`kernelhub.signing`) against known-answer vectors computed
by the official client's own ``generate_signature`` (``backend.ai-client`` 23.3.12,
``ai/backend/client/auth.py``; docs/gateway.md, Requests)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kernelhub.signing import (
    SignatureError,
    parse_authorization,
    parse_date,
    sign,
    string_to_sign,
)

pytestmark = pytest.mark.unit
AK, SK = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DATE = "2023-06-15T12:34:56.789012+00:00"
VERSION = "v7.20230615"


def test_vector_a_get_with_a_query_string() -> None:
    text = string_to_sign(
        "GET",
        "/session/mysess?owner_access_key=AKIAEXAMPLE",
        DATE,
        "127.0.0.1:8091",
        "text/plain",
        VERSION,
    )
    assert text == (
        "GET\n/session/mysess?owner_access_key=AKIAEXAMPLE\n2023-06-15T12:34:56.789012+00:00\n"
        "host:127.0.0.1:8091\ncontent-type:text/plain\nx-backendai-version:v7.20230615\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    signature = sign(SK, parse_date(DATE), "127.0.0.1:8091", text)
    assert signature == "c5d86122a91e45aec9dc69d367f28667b5261abf8845c3967701e6830f7ca567"


def test_vector_b_post_json() -> None:
    text = string_to_sign("POST", "/session", DATE, "127.0.0.1:8091", "application/json", VERSION)
    signature = sign(SK, parse_date(DATE), "127.0.0.1:8091", text)
    assert signature == "bdf37bc17831cfac951cb2efbc8bc6abd4836e56f3f817cb5b133d0c5939020e"


def test_vector_c_a_date_without_microseconds() -> None:
    date = "2024-01-02T03:04:05+00:00"
    text = string_to_sign("POST", "/admin/gql", date, "localhost:8080", "application/json", VERSION)
    signature = sign("sk", parse_date(date), "localhost:8080", text)
    assert signature == "99041e24691e40fc8378d61716cf632648359f0d4592f01a7cb562695e513285"


def test_the_authorization_header_is_parsed() -> None:
    credential = parse_authorization(
        f"BackendAI signMethod=HMAC-SHA256, credential={AK}:C5D86122a91e"
    )
    assert (credential.hash_type, credential.access_key, credential.signature) == (
        "sha256",
        AK,
        "c5d86122a91e",
    )
    assert parse_authorization("Sorna signMethod=HMAC-SHA256, credential=a:b").access_key == "a"


MALFORMED = [
    "Bearer x",
    "BackendAI",
    "BackendAI signMethod=HMAC-SHA256",
    "BackendAI signMethod=RSA-SHA256, credential=a:b",
    "BackendAI signMethod=HMAC-SHA256, credential=nocolon",
]


@pytest.mark.parametrize("header", MALFORMED)
def test_a_malformed_authorization_header_is_refused(header: str) -> None:
    with pytest.raises(SignatureError):
        parse_authorization(header)


def test_dates_in_iso_and_rfc_1123_and_without_a_zone() -> None:
    assert parse_date("Thu, 15 Jun 2023 12:34:56 GMT") == datetime(
        2023, 6, 15, 12, 34, 56, tzinfo=UTC
    )
    assert parse_date("2023-06-15T12:34:56").tzinfo is UTC
    with pytest.raises(SignatureError):
        parse_date("yesterday")
