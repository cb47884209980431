"""Passwords at the front door (issue 29): ``POST /auth/authorize`` trades an e-mail and
password for the user's keypair, ``POST /auth/update-password`` changes one's own, against a
real ``kh up`` (the process backend: no kernel is started). The attacker guesses passwords
(bounded per account and per peer), probes which e-mails exist (every refusal reads the
same), and looks for the password in Redis (it is nowhere)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from actors.domain.commands.tenancy import CreateUser, IssueKeypair
from actors.domain.passwords import hash_password
from actors.gateway.login import LOGIN_ATTEMPTS
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox
from kernelhub.testing import eventually
from projections.tenancy_queries import TenancyLookups

from .khstack import Stack, exchange, signed_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "tr0ub4dor&3-lab"


@dataclass
class World:
    stack: Stack
    email: str
    access_key: str
    secret_key: str


async def _user(stack: Stack, name: str, password: str, **extra: Any) -> tuple[str, str]:
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        box = SecretBox.from_file(stack.root / "data" / "master.key")
        tenancy = await TenancyService(store, box).load()
        user = await tenancy.handle(
            CreateUser(
                username=name,
                email=f"{name}@kernelhub.local",
                domain="default",
                password_hash=hash_password(password),
                **extra,
            )
        )
        keys = await tenancy.handle(IssueKeypair(user_id=user))
        lookups = TenancyLookups(store)
        await eventually(lambda: lookups.keypair(keys[0]), timeout=20, message="projected")
        return keys
    finally:
        await store.close()


@pytest.fixture(scope="module")
def world(process_stack: Stack) -> World:
    stack = process_stack  # the shared one, on the process backend
    access_key, secret_key = asyncio.run(_user(stack, "lena", PASSWORD))
    return World(stack, "lena@kernelhub.local", access_key, secret_key)


def authorize(world: World, email: str, password: str, domain: str = "default") -> tuple[int, dict]:
    body = {"type": "keypair", "domain": domain, "username": email, "password": password}
    endpoint = world.stack.exports["BACKEND_ENDPOINT"]
    headers = {"Content-Type": "application/json"}
    return exchange(endpoint + "/auth/authorize", "POST", headers, json.dumps(body).encode())


def test_the_right_password_gives_the_users_keypair(world: World) -> None:
    status, body = authorize(world, world.email, PASSWORD)
    assert status == 200, body
    assert body["data"]["access_key"] == world.access_key
    assert body["data"]["secret_key"] == world.secret_key
    assert body["data"]["role"] == "user"
    endpoint = world.stack.exports["BACKEND_ENDPOINT"]
    data = body["data"]
    status, _ = signed_request(
        endpoint, "GET", "/auth/role", data["access_key"], data["secret_key"]
    )
    assert status != 401


def test_a_wrong_password_and_an_unknown_account_read_the_same(world: World) -> None:
    wrong = authorize(world, world.email, "not the password")
    unknown = authorize(world, f"{uuid.uuid4().hex}@kernelhub.local", "not the password")
    other_domain = authorize(world, world.email, PASSWORD, domain="elsewhere")
    assert wrong[0] == unknown[0] == other_domain[0] == 401
    assert wrong[1] == unknown[1] == other_domain[1]
    assert "secret" not in json.dumps(wrong[1])


def test_guessing_is_bounded_per_account(world: World) -> None:
    """An attacker guessing one account's password is stopped after :data:`LOGIN_ATTEMPTS`
    failures (429), even with the right password after that, while another account (the
    same address, well under its own, larger limit) still logs in."""
    victim = "guessme"
    asyncio.run(_user(world.stack, victim, PASSWORD))
    email = f"{victim}@kernelhub.local"
    answers = [authorize(world, email, f"guess-{i:04d}")[0] for i in range(LOGIN_ATTEMPTS)]
    assert set(answers) == {401}
    assert authorize(world, email, PASSWORD)[0] == 429
    assert authorize(world, world.email, PASSWORD)[0] == 200


def test_a_password_is_changed_by_its_owner_and_never_stored_in_clear(world: World) -> None:
    endpoint = world.stack.exports["BACKEND_ENDPOINT"]
    owner = asyncio.run(_user(world.stack, "rotates", PASSWORD))
    new = "a-much-longer-passphrase-2026"

    def update(old: str, first: str, second: str) -> tuple[int, object]:
        body = {"old_password": old, "new_password": first, "new_password2": second}
        data = json.dumps(body).encode()
        return signed_request(endpoint, "POST", "/auth/update-password", *owner, data)

    assert update(PASSWORD, new, new + "x")[0] == 400
    assert update("not the old one", new, new)[0] == 401
    assert update(PASSWORD, "short", "short")[0] == 400
    assert update(PASSWORD, new, new)[0] == 200
    email = "rotates@kernelhub.local"
    assert authorize(world, email, new)[0] == 200

    async def everything() -> bytes:
        store = RedisEventStore.from_url(world.stack.exports["KH_REDIS_URL"])
        dumped = b""
        try:
            async for key in store.redis.scan_iter(match="*"):
                kind = await store.redis.type(key)
                if kind == b"hash":
                    pairs = (await store.redis.hgetall(key)).items()
                    dumped += b"".join(k + v for k, v in pairs)
                elif kind == b"stream":
                    for _, fields in await store.redis.xrange(key):
                        dumped += b"".join(fields.values())
                elif kind == b"string":
                    dumped += await store.redis.get(key) or b""
                elif kind == b"zset":
                    dumped += b"".join(await store.redis.zrange(key, 0, -1))
        finally:
            await store.close()
        return dumped

    dumped = asyncio.run(everything())
    assert PASSWORD.encode() not in dumped and new.encode() not in dumped


def test_a_password_opens_no_more_than_a_signature(world: World) -> None:
    """A user kept to other networks gets no keypair from this address (the keypair would
    be refused here anyway, and its secret must not reach the network the rule keeps it
    from); refused the same before the rule existed only for signatures."""
    asyncio.run(_user(world.stack, "fenced", PASSWORD, allowed_client_ip=["10.0.0.0/8"]))
    status, body = authorize(world, "fenced@kernelhub.local", PASSWORD)
    assert status == 401 and "secret" not in json.dumps(body)
    assert "not allowed" in body["title"] + str(body.get("msg", ""))
    asyncio.run(_user(world.stack, "near", PASSWORD, allowed_client_ip=["127.0.0.1/32"]))
    assert authorize(world, "near@kernelhub.local", PASSWORD)[0] == 200
