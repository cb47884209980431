"""Endpoint tokens (:mod:`actors.gateway.serving_tokens`): what the inference proxy accepts is
a token signed under this installation's key, for this endpoint, not expired; every way a
caller could bend one (another endpoint's, a later expiry, another key, garbage, a huge
header) is refused. And how long a token may be asked to live is bounded."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actors.domain.errors import InvalidAPIParameters
from actors.gateway.serving_tokens import (
    MAX_TOKEN,
    MAX_TOKEN_LIFETIME,
    EndpointTokens,
    InvalidEndpointToken,
    token_expiry,
)

pytestmark = pytest.mark.unit

KEY = b"k" * 32
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _signed(endpoint: uuid.UUID, expires: datetime, key: bytes = KEY) -> str:
    return EndpointTokens(key).sign(endpoint, uuid.uuid4(), expires)


def test_a_token_answers_its_endpoint_until_it_expires() -> None:
    endpoint, token_id = uuid.uuid4(), uuid.uuid4()
    expires = NOW + timedelta(hours=2)
    token = EndpointTokens(KEY).sign(endpoint, token_id, expires)
    claims = EndpointTokens(KEY).verify(token, endpoint, now=NOW.timestamp())
    assert (claims.endpoint_id, claims.token_id) == (endpoint, token_id)
    assert claims.expires_at == int(expires.timestamp())
    with pytest.raises(InvalidEndpointToken, match="expired"):
        EndpointTokens(KEY).verify(token, endpoint, now=expires.timestamp())


def test_another_endpoints_token_is_refused() -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    token = _signed(theirs, NOW + timedelta(days=1))
    with pytest.raises(InvalidEndpointToken, match="another endpoint"):
        EndpointTokens(KEY).verify(token, mine, now=NOW.timestamp())


def test_a_token_of_another_installation_is_refused() -> None:
    endpoint = uuid.uuid4()
    token = _signed(endpoint, NOW + timedelta(days=1), key=b"x" * 32)
    with pytest.raises(InvalidEndpointToken, match="signature"):
        EndpointTokens(KEY).verify(token, endpoint, now=NOW.timestamp())


def test_claims_rewritten_by_the_caller_break_the_signature() -> None:
    """A caller who moves the expiry (or the endpoint) in a real token's claims has a token
    whose MAC no longer matches."""
    endpoint = uuid.uuid4()
    token = _signed(endpoint, NOW + timedelta(minutes=1))
    body, mac = token.split(".")
    claims = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    forged_claims = claims.rsplit("|", 1)[0] + f"|{int(time.time()) + 10**8}"
    forged = base64.urlsafe_b64encode(forged_claims.encode()).rstrip(b"=").decode() + "." + mac
    with pytest.raises(InvalidEndpointToken, match="signature"):
        EndpointTokens(KEY).verify(forged, endpoint, now=NOW.timestamp())


@pytest.mark.parametrize(
    "token",
    ["", "abc", ".", "a.", ".b", "a.b.c", "!!!.???", "x" * (MAX_TOKEN + 1), "é.é"],
)
def test_garbage_is_refused_without_a_crash(token: str) -> None:
    with pytest.raises(InvalidEndpointToken):
        EndpointTokens(KEY).verify(token, uuid.uuid4(), now=NOW.timestamp())


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError):
        EndpointTokens(b"short")


@pytest.mark.parametrize(
    ("duration", "expected"),
    [("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)), ("3d", timedelta(days=3))],
)
def test_durations_as_the_client_sends_them(duration: str, expected: timedelta) -> None:
    assert token_expiry(duration, None, NOW) == NOW + expected


def test_valid_until_is_an_instant() -> None:
    at = NOW + timedelta(days=10)
    assert token_expiry(None, int(at.timestamp()), NOW) == at


@pytest.mark.parametrize(
    ("duration", "valid_until", "field"),
    [
        (None, None, "either"),
        ("1h", int(NOW.timestamp()) + 60, "either"),
        ("forever", None, "duration"),
        ("0s", None, "duration"),
        ("-5m", None, "duration"),
        ("400d", None, "duration"),
        ("99999999999999999999w", None, "duration"),
        (None, int(NOW.timestamp()) - 1, "valid_until"),
        (None, int((NOW + MAX_TOKEN_LIFETIME + timedelta(days=1)).timestamp()), "valid_until"),
        (None, 10**30, "valid_until"),
    ],
)
def test_lifetimes_out_of_bounds_are_refused_naming_the_field(
    duration: str | None, valid_until: int | None, field: str
) -> None:
    with pytest.raises(InvalidAPIParameters, match=field):
        token_expiry(duration, valid_until, NOW)


@pytest.mark.parametrize(
    "bend",
    [
        lambda t: t + "!!",
        lambda t: t + "==",
        lambda t: t[:-20] + "***" + t[-20:],
        lambda t: t.replace(".", ".=", 1),
        lambda t: " " + t,
        lambda t: t[:10] + "\n" + t[10:],
        lambda t: t.replace("-", "+").replace("_", "/"),
    ],
)
def test_a_token_has_exactly_one_spelling(bend: Any) -> None:
    """Review S11: the lenient base64 decoder verified a genuine token with junk appended or
    inserted, so one token had many strings (a deny-list or log keyed on it was bypassed)."""
    endpoint = uuid.uuid4()
    tokens = EndpointTokens(KEY)
    token = tokens.sign(endpoint, uuid.uuid4(), NOW + timedelta(days=1))
    assert tokens.verify(token, endpoint, now=NOW.timestamp())
    bent = bend(token)
    if bent == token:  # no '-' or '_' in this token to swap
        return
    with pytest.raises(InvalidEndpointToken):
        tokens.verify(bent, endpoint, now=NOW.timestamp())
