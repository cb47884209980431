"""Scaling-group rules at session creation (issue 28 point 2; 23.03's ``check_scaling_group``).

Three layers: the pure rules (:mod:`actors.domain.scaling_groups`: the order, the messages,
public groups, the record a group is read from); the gateway's
:func:`actors.gateway.scaling.scaling_group_for` over a real tenancy read model (the union of
what a domain, a project and a keypair may use); and creates through the front door of one
``kh up`` (the process backend, the operator having opted in: no session here needs to run),
by the official client and as raw signed requests, a tenant naming groups it may not use
among them. Every refusal carries 23.03's words: clients and scripts match on them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.domain.commands.tenancy import (
    AddMember,
    Associate,
    CreateDomain,
    CreateProject,
    CreateUser,
    IssueKeypair,
    RegisterImage,
    SetPolicy,
    SetScalingGroup,
    TargetKind,
)
from actors.domain.errors import ScalingGroupNotFound
from actors.domain.scaling_groups import (
    DEFAULT_ALLOWED_SESSION_TYPES,
    ScalingGroup,
    check_scaling_group,
    from_record,
    image_role,
    preference_order,
    public_only_for,
    upstream_type_name,
)
from actors.domain.session import KernelRole, SessionType
from actors.gateway.scaling import role_of_image, scaling_group_for
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.catalogue.tenancy import SessionTypeName
from events.secrets import SecretBox
from kernelhub.bootstrap import BASE_IMAGE_LABELS
from kernelhub.testing import eventually
from projections.models import TenancyProjection
from projections.queries import ReadModels
from projections.runtime import Projector
from projections.tenancy_queries import TenancyLookups

from .khstack import kh_up, second_tenant, signed_request
from .test_official_client import BaiStack, client_binary

unit = pytest.mark.unit
INT, B, X = SessionType.INTERACTIVE, SessionType.BATCH, SessionType.INFERENCE

NONE_ALLOWED = "You have no scaling groups allowed to use."


def no_access(name: str) -> str:
    return (
        f"The scaling group '{name}' does not exist "
        f"or you do not have access to the scaling group '{name}'."
    )


def refused_type(name: str, spelled: str) -> str:
    return f"The scaling group '{name}' does not accept the session type '{spelled}'."


def no_type(spelled: str) -> str:
    return f"No scaling groups accept the session type '{spelled}'."


def refusal(groups: list[ScalingGroup], t: SessionType, wanted: str | None, **kw: Any) -> str:
    with pytest.raises(ScalingGroupNotFound) as refused:
        check_scaling_group(groups, t, wanted, **kw)
    assert refused.value.error_type == "object-not-found"
    assert refused.value.title == "No such scaling group."
    return refused.value.msg


# ---- the pure rules ------------------------------------------------------------------------
INTER = ScalingGroup("a-inter", allowed_session_types=(INT,))
BATCH = ScalingGroup("b-batch", allowed_session_types=(B,))
BOTH = ScalingGroup("c-both")
PRIVATE = ScalingGroup("d-private", is_public=False)
OFF = ScalingGroup("e-off", is_active=False)
DEFAULT_BOTH = ScalingGroup("default")


@unit
def test_none_requested_takes_the_first_group_that_accepts_the_type() -> None:
    groups = [INTER, BATCH, BOTH]
    assert check_scaling_group(groups, B, None) == BATCH  # a-inter is first but refuses batch
    assert check_scaling_group(groups, INT, None) == INTER
    assert check_scaling_group(groups, INT, "") == INTER  # an empty name is no name
    assert refusal(groups, X, None) == no_type("SessionTypes.INFERENCE")


@unit
def test_default_goes_first_only_where_it_accepts_the_type() -> None:
    batch_free_default = ScalingGroup("default", allowed_session_types=(INT,))
    assert [g.name for g in preference_order([BOTH, DEFAULT_BOTH, INTER])] == [
        "default",
        "c-both",
        "a-inter",
    ]
    assert check_scaling_group(preference_order([BOTH, DEFAULT_BOTH]), INT, None) == DEFAULT_BOTH
    ordered = preference_order([BATCH, batch_free_default])
    assert check_scaling_group(ordered, INT, None) == batch_free_default
    assert check_scaling_group(ordered, B, None) == BATCH
    hidden = ScalingGroup("default", is_public=False)
    assert check_scaling_group(preference_order([BOTH, hidden]), INT, None) == BOTH


@unit
def test_upstreams_messages_word_for_word() -> None:
    groups = [INTER, BATCH, BOTH]
    assert refusal(groups, B, "a-inter") == refused_type("a-inter", "SessionTypes.BATCH")
    assert refusal(groups, INT, "b-batch") == refused_type("b-batch", "SessionTypes.INTERACTIVE")
    assert refusal(groups, INT, "nowhere") == no_access("nowhere")
    assert refusal([], INT, None) == NONE_ALLOWED
    assert refusal([], B, "c-both") == NONE_ALLOWED  # checked before the name
    assert refusal([INTER], B, None) == no_type("SessionTypes.BATCH")
    assert check_scaling_group(groups, B, "c-both") == BOTH


@unit
def test_the_types_are_spelled_as_23_03_on_python_3_11_spells_them() -> None:
    """23.03's ``SessionTypes`` is a ``(str, Enum)``; on Python 3.11 an f-string of one of
    its members is ``SessionTypes.BATCH`` (as printed by the official client's own copy)."""
    assert [upstream_type_name(t) for t in SessionType] == [
        "SessionTypes.INTERACTIVE",
        "SessionTypes.BATCH",
        "SessionTypes.INFERENCE",
    ]


@unit
def test_non_public_groups_only_for_system_role_images() -> None:
    groups = [PRIVATE, BOTH]
    assert public_only_for(KernelRole.COMPUTE) and public_only_for(KernelRole.INFERENCE)
    assert not public_only_for(KernelRole.SYSTEM)
    assert refusal(groups, INT, "d-private") == no_access("d-private")
    assert check_scaling_group(groups, INT, None) == BOTH
    assert check_scaling_group(groups, INT, "d-private", public_only=False) == PRIVATE
    assert check_scaling_group(groups, INT, None, public_only=False) == PRIVATE
    assert refusal([PRIVATE], INT, None) == NONE_ALLOWED


@unit
def test_inactive_groups_are_nobodys() -> None:
    assert refusal([OFF, BOTH], INT, "e-off") == no_access("e-off")
    assert refusal([OFF, BOTH], INT, "e-off", public_only=False) == no_access("e-off")
    assert refusal([OFF], INT, None) == NONE_ALLOWED


@unit
def test_an_images_role_comes_from_its_label() -> None:
    assert image_role(BASE_IMAGE_LABELS) is KernelRole.COMPUTE
    assert image_role({"ai.backend.role": "SYSTEM"}) is KernelRole.SYSTEM
    assert image_role({}) is KernelRole.COMPUTE and image_role(None) is KernelRole.COMPUTE
    assert image_role({"ai.backend.role": "system"}) is KernelRole.COMPUTE  # not a role
    assert role_of_image({"name": "x", "labels": {"ai.backend.role": "SYSTEM"}}) is (
        KernelRole.SYSTEM
    )
    assert role_of_image({"name": "x"}) is KernelRole.COMPUTE


@unit
def test_a_group_is_read_from_its_tenancy_record() -> None:
    record = {
        "name": "g",
        "is_active": False,
        "is_public": False,
        "allowed_session_types": ["batch", "inference", "someday"],
        "pending_timeout": 30,
        "for": [["domain", "default"]],
    }
    group = from_record(record)
    assert group is not None
    assert (group.is_active, group.is_public, group.allowed_session_types) == (False, False, (B, X))
    assert group.pending_timeout == 30.0
    defaults = from_record({"name": "h"})
    assert defaults is not None and defaults.allowed_session_types == DEFAULT_ALLOWED_SESSION_TYPES
    assert defaults.is_active and defaults.is_public
    assert from_record({"for": [["domain", "default"]]}) is None  # associated, never set


GROUP_NAMES = st.sampled_from(["default", "a", "b", "c", "d"])
GROUPS = st.builds(
    ScalingGroup,
    GROUP_NAMES,
    is_active=st.booleans(),
    is_public=st.booleans(),
    allowed_session_types=st.lists(st.sampled_from(list(SessionType)), unique=True).map(tuple),
)


def _outcome(groups: list[ScalingGroup], t: SessionType, wanted: str, public_only: bool) -> str:
    try:
        return "chose " + check_scaling_group(groups, t, wanted, public_only=public_only).name
    except ScalingGroupNotFound as refused:
        return refused.msg


@unit
@given(
    st.lists(GROUPS, unique_by=lambda g: g.name),
    st.sampled_from(list(SessionType)),
    GROUP_NAMES,
    st.booleans(),
)
def test_a_group_one_may_not_use_answers_as_one_that_does_not_exist(
    groups: list[ScalingGroup], t: SessionType, wanted: str, public_only: bool
) -> None:
    """The attacker's view: naming a group that is there but closed to you (inactive, or
    non-public for your image) tells you exactly what naming a group that is not there does
    (a group another tenant may use is not in your list at all: the same case)."""
    named = [g for g in groups if g.name == wanted]
    if named and (not named[0].is_active or (public_only and not named[0].is_public)):
        without = [g for g in groups if g.name != wanted]
        assert _outcome(groups, t, wanted, public_only) == _outcome(without, t, wanted, public_only)


# ---- the gateway's lookups over a real read model ----------------------------------------------
@dataclass
class Lab:
    lookups: TenancyLookups
    domain: str
    project: str
    access_key: str
    rival_project: str
    rival_key: str


async def _lab(
    store: RedisEventStore, box: SecretBox, *, default_types: list[SessionTypeName]
) -> Lab:
    """Domain ``lab``: project ``team`` (alice) and ``rivals`` (rick). ``a-inter``
    (interactive only) for the domain, ``b-batch`` (batch only) for ``team``, ``c-both``
    for alice's keypair, ``d-private`` (non-public) for ``team``, ``e-off`` (inactive) for
    the domain, ``f-rivals`` for ``rivals``, ``default`` (``default_types``) for the domain."""
    tenancy = await TenancyService(store, box).load()
    await tenancy.handle(CreateDomain(name="lab"))
    await tenancy.handle(SetPolicy(name="default"))
    team = await tenancy.handle(CreateProject(name="team", domain="lab"))
    rivals = await tenancy.handle(CreateProject(name="rivals", domain="lab"))
    keys = []
    for name, project in (("alice", team), ("rick", rivals)):
        user = await tenancy.handle(
            CreateUser(username=name, email=f"{name}@lab.local", domain="lab")
        )
        await tenancy.handle(AddMember(project_id=project, user_id=user))
        access_key, _ = await tenancy.handle(IssueKeypair(user_id=user))
        keys.append(access_key)
    alice, rick = keys
    groups: list[tuple[SetScalingGroup, TargetKind, str]] = [
        (SetScalingGroup(name="a-inter", allowed_session_types=["interactive"]), "domain", "lab"),
        (SetScalingGroup(name="b-batch", allowed_session_types=["batch"]), "project", str(team)),
        (SetScalingGroup(name="c-both"), "keypair", alice),
        (SetScalingGroup(name="d-private", is_public=False), "project", str(team)),
        (SetScalingGroup(name="e-off", is_active=False), "domain", "lab"),
        (SetScalingGroup(name="f-rivals"), "project", str(rivals)),
        (
            SetScalingGroup(name="default", allowed_session_types=default_types),
            "domain",
            "lab",
        ),
    ]
    for command, kind, target in groups:
        await tenancy.handle(command)
        await tenancy.handle(Associate(name=command.name, target_kind=kind, target=target))
    await Projector(store, [TenancyProjection()]).catch_up()
    return Lab(TenancyLookups(store), "lab", str(team), alice, str(rivals), rick)


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox.from_file(tmp_path / "master.key", create=True)


async def _for(lab: Lab, t: SessionType, wanted: str | None, **kw: Any) -> str:
    return await scaling_group_for(
        lab.lookups,
        session_type=t,
        requested=wanted,
        domain=kw.pop("domain", lab.domain),
        project_id=kw.pop("project_id", lab.project),
        access_key=kw.pop("access_key", lab.access_key),
        **kw,
    )


async def _refusal(lab: Lab, t: SessionType, wanted: str | None, **kw: Any) -> str:
    with pytest.raises(ScalingGroupNotFound) as refused:
        await _for(lab, t, wanted, **kw)
    return refused.value.msg


@pytest.mark.redis
async def test_the_union_of_domain_project_and_keypair_groups(
    store: RedisEventStore, box: SecretBox
) -> None:
    lab = await _lab(store, box, default_types=["interactive"])
    allowed = await lab.lookups.allowed_scaling_groups(lab.domain, lab.project, lab.access_key)
    assert [g["name"] for g in allowed] == ["a-inter", "b-batch", "c-both", "d-private", "default"]
    assert [(g["is_public"], g["allowed_session_types"]) for g in allowed[:2]] == [
        (True, ["interactive"]),
        (True, ["batch"]),
    ]
    assert await _for(lab, INT, None) == "default"  # preferred: allowed, accepts interactive
    assert await _for(lab, B, None) == "b-batch"  # default and a-inter refuse batch
    assert await _for(lab, B, "c-both") == "c-both"  # through the keypair
    assert await _for(lab, B, "b-batch") == "b-batch"  # through the project
    assert await _refusal(lab, B, "a-inter") == refused_type("a-inter", "SessionTypes.BATCH")
    assert await _refusal(lab, X, None) == no_type("SessionTypes.INFERENCE")
    assert await _refusal(lab, INT, "d-private") == no_access("d-private")
    assert await _for(lab, INT, "d-private", image_role=KernelRole.SYSTEM) == "d-private"
    assert await _refusal(lab, INT, "e-off") == no_access("e-off")
    rick = {"project_id": lab.rival_project, "access_key": lab.rival_key}
    assert await _for(lab, B, "f-rivals", **rick) == "f-rivals"
    for closed in ("f-rivals", "d-private", "e-off", "no-such-group"):  # the same answer
        assert await _refusal(lab, B, closed) == no_access(closed)
    assert await _refusal(lab, B, "c-both", **rick) == no_access("c-both")  # alice's keypair's
    nobody = {"domain": "elsewhere", "project_id": str(uuid.uuid4()), "access_key": "AKNONE"}
    assert await _refusal(lab, INT, None, **nobody) == NONE_ALLOWED


@pytest.mark.redis
async def test_default_is_preferred_only_when_it_accepts_the_type(
    store: RedisEventStore, box: SecretBox
) -> None:
    lab = await _lab(store, box, default_types=["interactive", "batch"])
    assert await _for(lab, B, None) == "default"
    assert await _for(lab, INT, None) == "default"
    rick = {"project_id": lab.rival_project, "access_key": lab.rival_key}
    assert await _for(lab, B, None, **rick) == "default"


# ---- through the front door ------------------------------------------------------------------
@dataclass
class World:
    stack: BaiStack
    alice: tuple[str, str]
    mallory: tuple[str, str]
    bob: tuple[str, str]


SYSTEM_IMAGE = "kernelhub/python-system:3.11"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    env = {"KH_ALLOW_UNISOLATED": "1", "DOCKER_HOST": "tcp://127.0.0.1:9"}  # process backend
    with kh_up(**env) as stack:
        yield asyncio.run(_populate(BaiStack(stack.root, stack.exports, stack.backend)))


async def _populate(stack: BaiStack) -> World:
    """Domain ``sglab``, project ``team``, alice in it: ``sg-a-inter`` (interactive only,
    the domain's), ``sg-b-batch`` (batch only, the project's), ``sg-c-private``
    (non-public, alice's keypair's), ``sg-d-off`` (inactive, the domain's). In ``default``:
    mallory, with ``aa-early`` (hers, first by name), and bob with ``bob-private`` (his
    keypair's). A SYSTEM-role image beside the base one. None of these groups has agents:
    a create that is let in stays PENDING, which is all these tests look at."""
    mallory = await second_tenant(stack, "mallory")
    bob = await second_tenant(stack, "bob")
    store = RedisEventStore.from_url(stack.exports["KH_REDIS_URL"])
    try:
        tenancy = await TenancyService(
            store, SecretBox.from_file(stack.root / "data" / "master.key")
        ).load()
        await tenancy.handle(CreateDomain(name="sglab"))
        team = await tenancy.handle(CreateProject(name="team", domain="sglab"))
        user = await tenancy.handle(
            CreateUser(username="alice", email="alice@sglab.local", domain="sglab")
        )
        await tenancy.handle(AddMember(project_id=team, user_id=user))
        alice = await tenancy.handle(IssueKeypair(user_id=user))
        await tenancy.handle(
            RegisterImage(
                name=SYSTEM_IMAGE, labels={**BASE_IMAGE_LABELS, "ai.backend.role": "SYSTEM"}
            )
        )
        groups: list[tuple[SetScalingGroup, TargetKind, str]] = [
            (
                SetScalingGroup(name="sg-a-inter", allowed_session_types=["interactive"]),
                "domain",
                "sglab",
            ),
            (
                SetScalingGroup(name="sg-b-batch", allowed_session_types=["batch"]),
                "project",
                str(team),
            ),
            (SetScalingGroup(name="sg-c-private", is_public=False), "keypair", alice[0]),
            (SetScalingGroup(name="sg-d-off", is_active=False), "domain", "sglab"),
            (SetScalingGroup(name="aa-early"), "keypair", mallory[0]),
            (SetScalingGroup(name="bob-private"), "keypair", bob[0]),
        ]
        for command, kind, target in groups:
            await tenancy.handle(command)
            await tenancy.handle(Associate(name=command.name, target_kind=kind, target=target))
        lookups = TenancyLookups(store)

        async def projected() -> bool:
            seen = await lookups.allowed_scaling_groups("default", "", bob[0])
            return await lookups.image(SYSTEM_IMAGE) is not None and "bob-private" in [
                g["name"] for g in seen
            ]

        await eventually(projected, timeout=20, message="the tenancy read model")
        return World(stack, (alice[0], alice[1]), mallory, bob)
    finally:
        await store.close()


def _create(
    world: World, who: tuple[str, str], name: str, **body: Any
) -> tuple[int, dict[str, Any]]:
    """``POST /session`` as ``who``, enqueue only (nothing here needs to run)."""
    payload = {"clientSessionToken": name, "image": "python", "enqueueOnly": True, **body}
    endpoint = world.stack.exports["BACKEND_ENDPOINT"]
    status, answer = signed_request(
        endpoint, "POST", "/session", *who, json.dumps(payload).encode()
    )
    return status, answer


def _group_of(world: World, who: tuple[str, str], session_id: str) -> str:
    """The scaling group the session was enqueued in, from the sessions read model (23.03's
    ``GET /session`` does not say it; GraphQL would, through another owner's code)."""
    endpoint = world.stack.exports["BACKEND_ENDPOINT"]
    status, info = signed_request(endpoint, "GET", f"/session/{session_id}", *who)
    assert status == 200, info  # the owner sees it

    async def read() -> str:
        store = RedisEventStore.from_url(world.stack.exports["KH_REDIS_URL"])
        try:
            record = await ReadModels(store).session(session_id)
            return str((record or {}).get("scaling_group"))
        finally:
            await store.close()

    return asyncio.run(read())


def _in(group: str | None, project: str = "team", domain: str = "sglab") -> dict[str, Any]:
    config: dict[str, Any] = {} if group is None else {"config": {"scalingGroup": group}}
    return {"domain": domain, "group": project, **config}


def _refused(answer: tuple[int, dict[str, Any]], message: str) -> None:
    status, body = answer
    assert (status, body.get("title"), body.get("msg")) == (
        404,
        "No such scaling group.",
        message,
    ), body
    assert body["type"] == "https://api.backend.ai/probs/object-not-found"


def on_stack(test: Any) -> Any:
    return pytest.mark.timeout(600)(pytest.mark.e2e(test))


@on_stack
def test_the_official_client_is_told_an_interactive_group_takes_no_batch(world: World) -> None:
    if not client_binary().exists():
        pytest.skip(f"the official client is not installed at {client_binary()}")
    alice_env = {
        "BACKEND_ACCESS_KEY": world.alice[0],
        "BACKEND_SECRET_KEY": world.alice[1],
        "BACKEND_DOMAIN": "sglab",
    }
    args = ["session", "create", "--enqueue-only", "-t", "sg-batch-refused", "--type", "batch"]
    args += ["-c", "python3 -c pass", "--sgroup", "sg-a-inter", "-d", "sglab", "-g", "team"]
    created = world.stack.bai(*args, "python", **alice_env)
    said = created.stdout + created.stderr
    assert "No such scaling group." in said, said
    assert refused_type("sg-a-inter", "SessionTypes.BATCH") in said, said


@on_stack
def test_batch_without_a_group_goes_to_the_first_group_that_takes_batch(world: World) -> None:
    status, body = _create(
        world, world.alice, "sg-batch-any", type="batch", startupCommand="true", **_in(None)
    )
    assert status == 201, body
    assert _group_of(world, world.alice, body["sessionId"]) == "sg-b-batch"  # not sg-a-inter
    status, body = _create(world, world.alice, "sg-inter-any", **_in(None))
    assert status == 201, body
    assert _group_of(world, world.alice, body["sessionId"]) == "sg-a-inter"


@on_stack
def test_default_is_preferred_over_a_group_first_by_name(world: World) -> None:
    status, body = _create(
        world, world.mallory, "sg-mallory-any", **_in(None, "default", "default")
    )
    assert status == 201, body
    assert _group_of(world, world.mallory, body["sessionId"]) == "default"  # not aa-early
    status, body = _create(
        world, world.mallory, "sg-mallory-early", **_in("aa-early", "default", "default")
    )
    assert status == 201, body
    assert _group_of(world, world.mallory, body["sessionId"]) == "aa-early"


@on_stack
def test_a_non_public_group_is_for_system_role_images_only(world: World) -> None:
    _refused(
        _create(world, world.alice, "sg-private-py", **_in("sg-c-private")),
        no_access("sg-c-private"),
    )
    status, body = _create(
        world, world.alice, "sg-private-sys", image=SYSTEM_IMAGE, **_in("sg-c-private")
    )
    assert status == 201, body
    assert _group_of(world, world.alice, body["sessionId"]) == "sg-c-private"


@on_stack
def test_an_inactive_group_is_refused(world: World) -> None:
    _refused(_create(world, world.alice, "sg-off", **_in("sg-d-off")), no_access("sg-d-off"))


@on_stack
def test_no_other_create_route_lets_a_session_in(world: World) -> None:
    """23.03's other create routes (from a template, from params) are not served: they
    create nothing, so the rules above have no way around them. Should they come, they must
    go through the same check (``actors.gateway.scaling.scaling_group_for``)."""
    endpoint = world.stack.exports["BACKEND_ENDPOINT"]
    for path in ("/session/_/create-from-template", "/session/_/create-from-params"):
        name = "sg-" + path.rsplit("-", 1)[1]
        payload = {"template_id": str(uuid.uuid4()), "name": name, "image": "python"}
        payload |= {"scaling_group": "sg-d-off", "domain": "sglab", "group": "team"}
        status, body = signed_request(
            endpoint, "POST", path, *world.alice, json.dumps(payload).encode()
        )
        assert status != 201 and status < 500, (path, status, body)
        status, body = signed_request(endpoint, "GET", f"/session/{name}", *world.alice)
        assert status == 404, body


@pytest.mark.hostile
@on_stack
def test_another_tenants_group_answers_as_one_that_does_not_exist(world: World) -> None:
    """Mallory names bob's group, alice's project's group and a made-up one: three answers
    that differ only in the name she typed. Bob's own create in his group goes through
    (the group is real and working)."""
    answers = {}
    for group in ("bob-private", "sg-b-batch", "no-such-group"):
        status, body = _create(
            world, world.mallory, f"sg-probe-{group}", **_in(group, "default", "default")
        )
        _refused((status, body), no_access(group))
        answers[group] = json.dumps(body).replace(group, "<name>")
    assert len(set(answers.values())) == 1, answers
    status, body = _create(
        world, world.bob, "sg-bob-own", **_in("bob-private", "default", "default")
    )
    assert status == 201, body
    assert _group_of(world, world.bob, body["sessionId"]) == "bob-private"
    # in another tenant's domain and project, it is the project that is refused first
    status, body = _create(world, world.mallory, "sg-probe-lab", **_in("sg-a-inter"))
    assert status == 400 and body["type"].endswith("/invalid-api-params"), body
