"""The tenancy core of the admin surface (issue 29) against a real Redis: records removed
(and everything that named them with them), who asked recorded in every event's envelope,
and passwords kept only as slow hashes.

The removal folds are checked three ways that must agree: the writer's in-memory state,
the tenancy read model, and the auth cache that decides who may sign a request."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.domain.commands.tenancy import (
    AddMember,
    Associate,
    CreateDomain,
    CreateProject,
    CreateUser,
    DeleteKeypair,
    DeletePolicy,
    DeleteScalingGroup,
    IssueKeypair,
    PurgeDomain,
    PurgeProject,
    PurgeUser,
    RegisterImage,
    RemoveAlias,
    SetAlias,
    SetPolicy,
    SetScalingGroup,
    UpdateProject,
    UpdateUser,
)
from actors.domain.errors import GenericBadRequest, InvalidAPIParameters
from actors.domain.passwords import check_password, hash_password, verify_password
from actors.tenancy.auth import AuthCache
from actors.tenancy.writer import TenancyService
from events import Initiator, RedisEventStore
from events.catalogue import UserCreated, redact
from events.secrets import SecretBox
from kernelhub.history.render import event_line
from kernelhub.testing import eventually
from projections.models import TenancyProjection
from projections.runtime import Projector
from projections.tenancy_queries import TenancyLookups

pytestmark = pytest.mark.redis

ADMIN = Initiator(access_key="AKIAADMIN", email="root@lab.org", role="superadmin", peer="::1")


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox.from_file(tmp_path / "master.key", create=True)


@pytest.fixture
async def tenancy(store: RedisEventStore, box: SecretBox) -> AsyncIterator[TenancyService]:
    service = await TenancyService(store, box).load()
    await service.handle(CreateDomain(name="lab"))
    await service.handle(SetPolicy(name="default"))
    await service.handle(SetScalingGroup(name="gpu"))
    yield service


async def fold(store: RedisEventStore) -> TenancyLookups:
    await Projector(store, [TenancyProjection()]).catch_up()
    return TenancyLookups(store)


async def test_a_purged_user_takes_their_keypairs_memberships_and_associations(
    store: RedisEventStore, tenancy: TenancyService, box: SecretBox
) -> None:
    uid = await tenancy.handle(CreateUser(username="bob", email="bob@lab.org", domain="lab"))
    pid = await tenancy.handle(CreateProject(name="ml", domain="lab"))
    await tenancy.handle(AddMember(project_id=pid, user_id=uid))
    access_key, _ = await tenancy.handle(IssueKeypair(user_id=uid))
    await tenancy.handle(Associate(name="gpu", target_kind="keypair", target=access_key))
    auth = await AuthCache(store, box).start()
    try:
        assert auth.lookup(access_key) is not None
        await tenancy.handle(PurgeUser(user_id=uid, initiator=ADMIN))
        await eventually(lambda: auth.lookup(access_key) is None, timeout=2)
    finally:
        await auth.stop()
    state = tenancy.state
    assert str(uid) not in state.users and access_key not in state.keypairs
    assert state.projects[str(pid)]["members"] == []
    assert state.sgroups["gpu"]["for"] == []
    lookups = await fold(store)
    assert await lookups.user(str(uid)) is None
    assert await lookups.keypair(access_key) is None
    assert await lookups.keypairs_of(str(uid)) == []
    assert (await lookups.project(str(pid)) or {})["members"] == []
    assert await lookups.allowed_scaling_groups("lab", None, access_key) == []
    assert [u["username"] for u in await lookups.every("user")] == []
    assert await lookups.user_by_email("bob@lab.org") is None
    # the purge says what it took, so any reader folds it alone
    (purged,) = [e for e in await store.read_stream("tenancy-users") if e.type == "user_purged"]
    assert purged.data.access_keys == [access_key]  # type: ignore[union-attr]
    assert purged.data.project_ids == [pid]  # type: ignore[union-attr]
    assert purged.initiator == ADMIN
    # a retried purge is harmless
    await tenancy.handle(PurgeUser(user_id=uid))
    assert len(await store.read_stream("tenancy-users")) == 2


async def test_removals_refuse_what_is_still_referred_to(
    store: RedisEventStore, tenancy: TenancyService
) -> None:
    uid = await tenancy.handle(CreateUser(username="ana", email="ana@lab.org", domain="lab"))
    await tenancy.handle(IssueKeypair(user_id=uid, resource_policy="default"))
    with pytest.raises(GenericBadRequest, match=r"used by 1 keypair"):
        await tenancy.handle(DeletePolicy(name="default"))
    with pytest.raises(GenericBadRequest, match=r"still has 1 user\(s\) and 0 project"):
        await tenancy.handle(PurgeDomain(name="lab"))
    await tenancy.handle(PurgeUser(user_id=uid))
    await tenancy.handle(DeletePolicy(name="default"))
    await tenancy.handle(Associate(name="gpu", target_kind="domain", target="lab"))
    await tenancy.handle(PurgeDomain(name="lab"))
    await tenancy.handle(DeleteScalingGroup(name="gpu"))
    lookups = await fold(store)
    assert await lookups.domain("lab") is None
    assert await lookups.policy("default") is None
    assert await lookups.scaling_group("gpu") is None
    assert await lookups.every("domain") == [] and await lookups.every("sgroup") == []


async def test_a_deleted_keypair_stops_signing_and_loses_its_groups(
    store: RedisEventStore, tenancy: TenancyService, box: SecretBox
) -> None:
    uid = await tenancy.handle(CreateUser(username="eve", email="eve@lab.org", domain="lab"))
    kept, _ = await tenancy.handle(IssueKeypair(user_id=uid))
    doomed, _ = await tenancy.handle(IssueKeypair(user_id=uid))
    await tenancy.handle(Associate(name="gpu", target_kind="keypair", target=doomed))
    auth = await AuthCache(store, box).start()
    try:
        await tenancy.handle(DeleteKeypair(access_key=doomed))
        await eventually(lambda: auth.lookup(doomed) is None, timeout=2)
        assert auth.lookup(kept) is not None
    finally:
        await auth.stop()
    lookups = await fold(store)
    assert [k["access_key"] for k in await lookups.keypairs_of(str(uid))] == [kept]
    assert await lookups.allowed_scaling_groups("lab", None, doomed) == []
    assert (await lookups.scaling_group("gpu") or {})["for"] == []


async def test_projects_are_renamed_uniquely_and_purged(
    store: RedisEventStore, tenancy: TenancyService
) -> None:
    ml = await tenancy.handle(CreateProject(name="ml", domain="lab"))
    await tenancy.handle(CreateProject(name="vision", domain="lab"))
    with pytest.raises(InvalidAPIParameters, match="'vision' already exists"):
        await tenancy.handle(UpdateProject(project_id=ml, name="vision"))
    await tenancy.handle(UpdateProject(project_id=ml, name="nlp"))
    lookups = await fold(store)
    assert (await lookups.project_by_name("lab", "nlp") or {}).get("project_id") == str(ml)
    assert await lookups.project_by_name("lab", "ml") is None
    await tenancy.handle(Associate(name="gpu", target_kind="project", target=str(ml)))
    await tenancy.handle(PurgeProject(project_id=ml))
    lookups = await fold(store)
    assert await lookups.project(str(ml)) is None
    assert await lookups.project_by_name("lab", "nlp") is None
    assert await lookups.allowed_scaling_groups("lab", str(ml), None) == []
    assert sorted(p["name"] for p in await lookups.every("project")) == ["vision"]


async def test_aliases_are_removed(store: RedisEventStore, tenancy: TenancyService) -> None:
    await tenancy.handle(RegisterImage(name="cr.lab/python:3.11"))
    await tenancy.handle(SetAlias(alias="python", target="cr.lab/python:3.11"))
    assert (await (await fold(store)).image("python") or {}).get("name") == "cr.lab/python:3.11"
    await tenancy.handle(RemoveAlias(alias="python"))
    lookups = await fold(store)
    assert await lookups.image("python") is None
    assert await lookups.image("cr.lab/python:3.11") is not None


async def test_who_asked_is_in_every_event_the_command_appends(
    store: RedisEventStore, tenancy: TenancyService
) -> None:
    uid = await tenancy.handle(
        CreateUser(username="cy", email="cy@lab.org", domain="lab", initiator=ADMIN)
    )
    await tenancy.handle(UpdateUser(user_id=uid, full_name="Cy", initiator=ADMIN))
    events = [e for e in await store.read_stream("tenancy-users")]
    assert [e.initiator for e in events] == [ADMIN, ADMIN]
    # and an in-process bootstrap's event has none (it is not in the bytes either)
    domains = await store.read_stream("tenancy-domains")
    assert domains[0].initiator is None


async def test_a_password_is_only_ever_a_slow_salted_hash(
    store: RedisEventStore, tenancy: TenancyService
) -> None:
    password = "correct horse battery"
    hashed = hash_password(password)
    assert hashed != hash_password(password)  # salted
    assert verify_password(password, hashed) and not verify_password("wrong password", hashed)
    uid = await tenancy.handle(
        CreateUser(username="dee", email="dee@lab.org", domain="lab", password_hash=hashed)
    )
    lookups = await fold(store)
    record = await lookups.user(str(uid)) or {}
    assert record["has_password"] is True and "password_hash" not in record
    dumped = b""
    async for key in store.redis.scan_iter(match="*"):
        kind = await store.redis.type(key)
        if kind == b"hash":
            dumped += b"".join(k + v for k, v in (await store.redis.hgetall(key)).items())
        elif kind == b"stream":
            for _, fields in await store.redis.xrange(key):
                dumped += b"".join(fields.values())
        elif kind == b"string":
            dumped += await store.redis.get(key) or b""
    assert password.encode() not in dumped
    (created,) = await store.read_stream("tenancy-users")
    shown = redact(created.type, created.data.model_dump(mode="json"))
    assert shown["password_hash"] == "***"


@pytest.mark.unit
def test_passwords_out_of_bounds_are_refused_without_being_named() -> None:
    with pytest.raises(InvalidAPIParameters, match="at least 8") as short:
        check_password("hunter2")
    assert "hunter2" not in str(short.value)
    with pytest.raises(InvalidAPIParameters, match="at most 1024 bytes"):
        check_password("x" * 1025)
    assert not verify_password("anything at all", "scrypt$30$8$1$AAAA$AAAA")  # 2^30: refused
    assert not verify_password("anything at all", "")


async def test_kh_events_lines_say_who_asked(
    store: RedisEventStore, tenancy: TenancyService
) -> None:
    """``kh events show`` answers "who gave bob a GPU": the line of an admin's event ends
    with who asked and from where; an event no one asked for through the API has no ``by``."""
    await tenancy.handle(Associate(name="gpu", target_kind="domain", target="lab", initiator=ADMIN))
    (associated,) = [
        e
        for e in await store.read_stream_stored("tenancy-sgroups")
        if e.type == "scaling_group_associated"
    ]
    line = event_line(associated)
    assert line.endswith("by=root@lab.org/AKIAADMIN@::1"), line
    (created,) = await store.read_stream_stored("tenancy-domains")
    assert "by=" not in event_line(created)


@pytest.mark.unit
def test_a_user_name_may_be_an_e_mail_address_but_nothing_stranger() -> None:
    """23.03 makes the e-mail the user name when none is given (``admin user add DOMAIN
    EMAIL PASSWORD``); a control character or an unbounded address is still refused."""
    from actors.domain.tenancy import TenancyState, decide

    state = TenancyState(domains={"lab": {"name": "lab"}})
    ok = UserCreated(
        user_id=uuid.uuid4(), username="bob@lab.org", email="bob@lab.org", domain="lab"
    )
    assert decide(state, ok) == [ok]
    for username, email in [
        ("bob\n@lab.org", "bob@lab.org"),
        ("x" * 250 + "@lab.org", "bob@lab.org"),
        ("bob", "bob\x00@lab.org"),
        ("bob", "b" * 300 + "@lab.org"),
    ]:
        bad = UserCreated(user_id=uuid.uuid4(), username=username, email=email, domain="lab")
        with pytest.raises(InvalidAPIParameters):
            decide(state, bad)


@pytest.mark.unit
def test_allowed_client_ip_holds_only_addresses_and_ranges() -> None:
    from actors.domain.tenancy import TenancyState, decide

    state = TenancyState(domains={"lab": {"name": "lab"}})
    good = ["127.0.0.1", "10.0.0.0/8", "::1/128"]
    user = UserCreated(
        user_id=uuid.uuid4(),
        username="fay",
        email="f@lab.org",
        domain="lab",
        allowed_client_ip=good,
    )
    assert decide(state, user) == [user]
    for bad in (["localhost"], ["10.0.0.0/33"], ["1" * 70], ["127.0.0.1"] * 65):
        wrong = user.model_copy(update={"allowed_client_ip": bad})
        with pytest.raises(InvalidAPIParameters, match="allowed_client_ip"):
            decide(state, wrong)
