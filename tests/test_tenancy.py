"""Tenancy against a real Redis: commands and invariants, limits, secrets, bootstrap, lookups."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from actors.domain.commands.tenancy import (
    AddMember,
    Associate,
    CreateDomain,
    CreateProject,
    CreateUser,
    IssueKeypair,
    RegisterImage,
    RemoveMember,
    SetAlias,
    SetPolicy,
    SetScalingGroup,
    UpdateDomain,
    UpdateKeypair,
    UpdateProject,
    UpdateUser,
)
from actors.domain.errors import GenericBadRequest, InvalidAPIParameters, ObjectNotFound
from actors.domain.limits import effective_limits
from actors.domain.slots import INTRINSIC_SLOTS, SlotType
from actors.tenancy.auth import AuthCache
from actors.tenancy.writer import TENANCY_STREAMS, TenancyService
from events import RedisEventStore
from events.catalogue import redact
from events.secrets import SecretBox
from kernelhub.bootstrap import BASE_IMAGE, bootstrap, write_client_config
from kernelhub.testing import eventually
from projections.inspect import dump_generation
from projections.models import TenancyProjection
from projections.runtime import Projector
from projections.tenancy_queries import TenancyLookups

pytestmark = pytest.mark.redis


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox.from_file(tmp_path / "master.key", create=True)


@pytest.fixture
async def tenancy(store: RedisEventStore, box: SecretBox) -> AsyncIterator[TenancyService]:
    service = await TenancyService(store, box).load()
    await service.handle(CreateDomain(name="lab"))
    await service.handle(SetPolicy(name="default"))
    yield service


async def fold(store: RedisEventStore) -> TenancyLookups:
    await Projector(store, [TenancyProjection()]).catch_up()
    return TenancyLookups(store)


class TestCommandsAndInvariants:
    async def test_names_are_unique(self, tenancy: TenancyService) -> None:
        with pytest.raises(InvalidAPIParameters, match="domain 'lab' already exists"):
            await tenancy.handle(CreateDomain(name="lab", description="another"))
        await tenancy.handle(CreateDomain(name="lab"))  # the very same command again: a no-op
        await tenancy.handle(CreateDomain(name="other"))
        await tenancy.handle(CreateProject(name="ml", domain="lab"))
        await tenancy.handle(
            CreateProject(name="ml", domain="other")
        )  # the same name in another domain is fine
        with pytest.raises(
            InvalidAPIParameters, match=r"project 'ml' already exists in domain 'lab'"
        ):
            await tenancy.handle(CreateProject(name="ml", domain="lab", project_id=uuid.uuid4()))
        await tenancy.handle(CreateUser(username="ana", email="ana@lab.org", domain="lab"))
        with pytest.raises(InvalidAPIParameters, match="username 'ana' is taken"):
            await tenancy.handle(CreateUser(username="ana", email="ana2@lab.org", domain="lab"))
        with pytest.raises(InvalidAPIParameters, match=r"e-mail 'ana@lab\.org' is taken"):
            await tenancy.handle(CreateUser(username="ana2", email="ana@lab.org", domain="lab"))
        with pytest.raises(InvalidAPIParameters, match="invalid domain name"):
            await tenancy.handle(CreateDomain(name="has space"))

    async def test_references_must_exist(self, tenancy: TenancyService) -> None:
        with pytest.raises(ObjectNotFound, match="domain 'nowhere' does not exist"):
            await tenancy.handle(CreateUser(username="bo", email="bo@x.org", domain="nowhere"))
        with pytest.raises(ObjectNotFound, match="does not exist"):
            await tenancy.handle(IssueKeypair(user_id=uuid.uuid4()))
        user = await tenancy.handle(CreateUser(username="bo", email="bo@x.org", domain="lab"))
        with pytest.raises(ObjectNotFound, match="policy 'gold' does not exist"):
            await tenancy.handle(IssueKeypair(user_id=user, resource_policy="gold"))

    async def test_membership(self, tenancy: TenancyService) -> None:
        await tenancy.handle(CreateDomain(name="other"))
        project = await tenancy.handle(CreateProject(name="ml", domain="lab"))
        ana = await tenancy.handle(CreateUser(username="ana", email="ana@lab.org", domain="lab"))
        outsider = await tenancy.handle(
            CreateUser(username="out", email="out@x.org", domain="other")
        )
        await tenancy.handle(AddMember(project_id=project, user_id=ana))
        await tenancy.handle(AddMember(project_id=project, user_id=ana))  # idempotent
        assert tenancy.state.projects[str(project)]["members"] == [str(ana)]
        with pytest.raises(GenericBadRequest, match="own domain"):
            await tenancy.handle(AddMember(project_id=project, user_id=outsider))
        await tenancy.handle(RemoveMember(project_id=project, user_id=ana))
        assert tenancy.state.projects[str(project)]["members"] == []

    async def test_keypairs_deactivation_and_retries(
        self, tenancy: TenancyService, store: RedisEventStore, box: SecretBox
    ) -> None:
        user = await tenancy.handle(CreateUser(username="ana", email="ana@lab.org", domain="lab"))
        command = uuid.uuid4()
        access_key, secret = await tenancy.handle(IssueKeypair(user_id=user, command_id=command))
        assert len(access_key) == 20 and access_key.startswith("AKIA") and access_key.isupper()
        assert len(secret) == 40
        again = await tenancy.handle(
            IssueKeypair(user_id=user, command_id=command)
        )  # a retried command
        assert again == (access_key, secret)
        assert len(tenancy.keypairs_of(user)) == 1
        await tenancy.handle(UpdateKeypair(access_key=access_key, is_active=False))
        lookups = await fold(store)
        record = await lookups.keypair(access_key)
        assert record is not None and record["is_active"] is False
        assert box.decrypt(record["secret_key"]) == secret

    async def test_two_writers_race_on_one_stream(
        self, store: RedisEventStore, box: SecretBox
    ) -> None:
        first, second = (
            await TenancyService(store, box).load(),
            await TenancyService(store, box).load(),
        )
        await asyncio.gather(
            first.handle(CreateDomain(name="a")), second.handle(CreateDomain(name="b"))
        )
        await first.load()
        assert set(first.state.domains) == {"a", "b"}
        results = await asyncio.gather(
            first.handle(CreateUser(username="same", email="one@x.org", domain="a")),
            second.handle(CreateUser(username="same", email="two@x.org", domain="b")),
            return_exceptions=True,
        )
        assert sum(isinstance(r, InvalidAPIParameters) for r in results) == 1


async def test_effective_limits_combine_keypair_project_and_domain(
    tenancy: TenancyService, store: RedisEventStore
) -> None:
    policy_slots = {"cpu": Decimal(4), "tpu.device": Decimal(9)}  # tpu: unknown to the cluster
    await tenancy.handle(
        SetPolicy(
            name="small", default_for_unspecified="LIMITED", total_resource_slots=policy_slots
        )
    )
    await tenancy.handle(UpdateDomain(name="lab", total_resource_slots={"cpu": Decimal(2)}))
    project = await tenancy.handle(
        CreateProject(name="ml", domain="lab", total_resource_slots={"mem": Decimal(8 * 2**30)})
    )
    user = await tenancy.handle(CreateUser(username="ana", email="ana@lab.org", domain="lab"))
    access_key, _ = await tenancy.handle(IssueKeypair(user_id=user, resource_policy="small"))
    lookups = await fold(store)
    limits = await lookups.limits_of(access_key, str(project))
    assert limits is not None
    known = {**INTRINSIC_SLOTS, "cuda.device": SlotType.UNIQUE}
    caps = effective_limits(limits, known)
    inf = Decimal("Infinity")
    # LIMITED: unlisted known slots are 0; the unknown tpu slot is dropped
    assert dict(caps.keypair) == {"cpu": 4, "mem": 0, "cuda.device": 0}
    # project and domain leave what they do not list unlimited
    assert dict(caps.project) == {"cpu": inf, "mem": 8 * 2**30, "cuda.device": inf}
    assert dict(caps.domain) == {"cpu": 2, "mem": inf, "cuda.device": inf}
    assert dict(caps.combined) == {"cpu": 2, "mem": 0, "cuda.device": 0}
    await tenancy.handle(
        SetPolicy(
            name="small",
            default_for_unspecified="UNLIMITED",
            total_resource_slots={"cpu": Decimal(4)},
        )
    )
    await Projector(store, [TenancyProjection()]).catch_up()
    caps = effective_limits(await lookups.limits_of(access_key, str(project)) or {}, known)
    assert dict(caps.combined) == {"cpu": 2, "mem": 8 * 2**30, "cuda.device": inf}


async def test_lookups(tenancy: TenancyService, store: RedisEventStore) -> None:
    project = await tenancy.handle(CreateProject(name="ml", domain="lab"))
    user = await tenancy.handle(CreateUser(username="ana", email="ana@lab.org", domain="lab"))
    await tenancy.handle(AddMember(project_id=project, user_id=user))
    access_key, _ = await tenancy.handle(IssueKeypair(user_id=user))
    for name, public in (("shared", True), ("gpu", True), ("private", False), ("retired", True)):
        await tenancy.handle(SetScalingGroup(name=name, is_public=public))
    await tenancy.handle(Associate(name="shared", target_kind="domain", target="lab"))
    await tenancy.handle(Associate(name="gpu", target_kind="project", target=str(project)))
    await tenancy.handle(Associate(name="private", target_kind="keypair", target=access_key))
    await tenancy.handle(Associate(name="retired", target_kind="domain", target="lab"))
    await tenancy.handle(SetScalingGroup(name="retired", is_active=False))
    await tenancy.handle(
        RegisterImage(name="kernelhub/python:3.11", labels={"ai.backend.resource.min.cpu": "1"})
    )
    await tenancy.handle(SetAlias(alias="python", target="kernelhub/python:3.11"))
    lookups = await fold(store)
    assert (await lookups.user_by_email("ana@lab.org"))["user_id"] == str(user)  # type: ignore[index]
    assert (await lookups.project_by_name("lab", "ml"))["project_id"] == str(project)  # type: ignore[index]
    assert [p["name"] for p in await lookups.projects_of(str(user))] == ["ml"]
    assert [k["access_key"] for k in await lookups.keypairs_of(str(user))] == [access_key]
    allowed = await lookups.allowed_scaling_groups("lab", str(project), access_key)
    assert [g["name"] for g in allowed] == ["gpu", "private", "shared"]
    assert [g["name"] for g in await lookups.allowed_scaling_groups("lab", None, None)] == [
        "shared"
    ]
    assert (await lookups.image("python"))["name"] == "kernelhub/python:3.11"  # type: ignore[index]
    assert await lookups.image("nope") is None
    with pytest.raises(Exception, match="No such environment image"):
        tenancy.state.resolve_image("nope")


async def test_deactivation_bites_within_a_second(
    tenancy: TenancyService, store: RedisEventStore, box: SecretBox
) -> None:
    user = await tenancy.handle(CreateUser(username="ana", email="ana@lab.org", domain="lab"))
    access_key, secret = await tenancy.handle(IssueKeypair(user_id=user))
    cache = await AuthCache(store, box).start()
    try:
        credentials = cache.lookup(access_key)
        assert credentials is not None and credentials.secret_key == secret
        await tenancy.handle(UpdateKeypair(access_key=access_key, is_active=False))
        await eventually(
            lambda: cache.lookup(access_key) is None, timeout=1.0, message="keypair off"
        )
        await tenancy.handle(UpdateKeypair(access_key=access_key, is_active=True))
        await eventually(
            lambda: cache.lookup(access_key) is not None, timeout=1.0, message="on again"
        )
        await tenancy.handle(UpdateUser(user_id=user, status="inactive"))
        await eventually(lambda: cache.lookup(access_key) is None, timeout=1.0, message="user off")
        assert cache.lookup("AKIANOSUCHKEY0000000") is None
    finally:
        await cache.stop()


async def _every_value(store: RedisEventStore) -> list[str]:
    """Every byte Redis holds for us, as text: all keys of every type."""
    values: list[str] = []
    async for raw_key in store.redis.scan_iter(count=1000):
        key = raw_key.decode()
        kind = (await store.redis.type(key)).decode()
        if kind == "string":
            values.append((await store.redis.get(key)).decode())
        elif kind == "hash":
            values += [f"{k!r}{v!r}" for k, v in (await store.redis.hgetall(key)).items()]
        elif kind == "list":
            values += [v.decode() for v in await store.redis.lrange(key, 0, -1)]
        elif kind == "zset":
            values += [m.decode() for m in await store.redis.zrange(key, 0, -1)]
        elif kind == "stream":
            values += [f"{f!r}" for _, f in await store.redis.xrange(key)]
        values.append(key)
    return values


async def test_secrets_never_appear_in_clear(store: RedisEventStore, box: SecretBox) -> None:
    result = await bootstrap(store, box)
    tenancy = await TenancyService(store, box).load()
    _, second_secret = await tenancy.handle(IssueKeypair(user_id=result.user_id))
    await Projector(store, [TenancyProjection()]).catch_up()
    everything = "\n".join(await _every_value(store))
    for secret in (result.secret_key, second_secret):
        assert secret not in everything
    tenancy_events = [e for stream in TENANCY_STREAMS for e in await store.read_stream(stream)]
    assert {e.type for e in tenancy_events} >= {"keypair_issued", "user_created", "domain_created"}
    for event in tenancy_events:
        body = event.data.model_dump(mode="json")
        shown = json.dumps(redact(event.type, body))
        assert result.secret_key not in shown and second_secret not in shown
        if event.type == "keypair_issued":
            assert '"secret_key": "***"' in shown
            assert body["secret_key"] not in shown  # not even the ciphertext


async def test_bootstrap_keeps_what_an_admin_changed_and_grants_the_storage_host(
    store: RedisEventStore, box: SecretBox
) -> None:
    """An admin edits the default domain, project and admin user; the next ``kh up`` (a
    second bootstrap) neither fails on them ("domain 'default' already exists", as it did
    once the domain differed from the bootstrap's own create) nor undoes them. The default
    domain may use ``local:default`` for everything, granted once."""
    first = await bootstrap(store, box)
    tenancy = await TenancyService(store, box).load()
    await tenancy.handle(UpdateDomain(name="default", description="our lab"))
    await tenancy.handle(UpdateProject(project_id=first.project_id, description="everyone"))
    await tenancy.handle(UpdateUser(user_id=first.user_id, full_name="The Admin"))
    assert await bootstrap(store, box) == first
    state = (await TenancyService(store, box).load()).state
    assert state.domains["default"]["description"] == "our lab"
    assert state.projects[str(first.project_id)]["description"] == "everyone"
    assert state.users[str(first.user_id)]["full_name"] == "The Admin"
    hosts = state.domains["default"]["allowed_vfolder_hosts"]
    assert set(hosts["local:default"]) >= {"create-vfolder", "mount-in-session", "upload-file"}


async def test_bootstrap_is_idempotent_and_replays_identically(
    store: RedisEventStore, box: SecretBox, tmp_path: Path
) -> None:
    first = await bootstrap(store, box)
    length = await store.log_length()
    second = await bootstrap(store, box)
    assert second == first
    assert await store.log_length() == length, "a second bootstrap appended events"
    lookups = await fold(store)
    admin = await lookups.user_by_email("admin@kernelhub.local")
    assert admin is not None and admin["role"] == "superadmin"
    keypair = await lookups.keypair(first.access_key)
    assert (
        keypair is not None
        and keypair["is_admin"]
        and box.decrypt(keypair["secret_key"]) == first.secret_key
    )
    assert (await lookups.image("python"))["name"] == BASE_IMAGE  # type: ignore[index]
    assert [g["name"] for g in await lookups.allowed_scaling_groups("default", None, None)] == [
        "default"
    ]

    projector = Projector(store, [TenancyProjection()])
    await projector.catch_up()
    live = await dump_generation(store.redis, store.keys.projection_generation("tenancy", 1))
    generation = await projector.rebuild("tenancy")
    assert (
        await dump_generation(store.redis, store.keys.projection_generation("tenancy", generation))
        == live
    )

    config = tmp_path / "cfg" / "config.toml"
    write_client_config(config, first)
    assert config.stat().st_mode & 0o777 == 0o600
    text = config.read_text()
    assert (
        f'access_key = "{first.access_key}"' in text
        and f'secret_key = "{first.secret_key}"' in text
    )


def test_a_master_key_others_can_read_is_refused(tmp_path: Path) -> None:
    from events.secrets import SecretError

    path = tmp_path / "master.key"
    SecretBox.from_file(path, create=True)
    path.chmod(0o644)
    with pytest.raises(SecretError, match="readable by others"):
        SecretBox.from_file(path)
    with pytest.raises(SecretError, match="is missing"):
        SecretBox.from_file(tmp_path / "nope.key")
    other = SecretBox.from_file(tmp_path / "other.key", create=True)
    token = other.encrypt("x")
    path.chmod(0o600)
    with pytest.raises(SecretError, match="wrong master key"):
        SecretBox.from_file(path).decrypt(token)
