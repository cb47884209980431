"""Inference endpoints' model: the events' bounds, the pure rules (names, scale, routes and
their statuses, ratios, tokens, destruction), the reconciler's two questions, and the single
writer against real Redis (one stream per endpoint, retries answered from the log)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from actors.domain.commands.endpoints import EndpointCommand
from actors.domain.endpoints import (
    MAX_ENDPOINTS_PER_OWNER,
    MAX_ROUTES,
    EndpointState,
    check_name,
    decide,
    decide_downscale,
    ready_to_destroy,
    replicas_to_start,
    routes_to_drain,
)
from actors.domain.errors import EndpointNotFound, InvalidAPIParameters, RoutingNotFound
from actors.endpoints.writer import EndpointService
from events import RedisEventStore
from events.catalogue import (
    EndpointCreated,
    EndpointDestroyed,
    EndpointDestroying,
    EndpointRouteAdded,
    EndpointRouteRemoved,
    EndpointRouteStatusChanged,
    EndpointScaled,
    EndpointTokenIssued,
    EndpointTrafficRatioChanged,
    VFolderTrashed,
)

ALICE, BOB = uuid.uuid4(), uuid.uuid4()
LAB = uuid.uuid4()
MODEL = uuid.uuid4()


def _created(name: str = "chat", *, owner: uuid.UUID = ALICE, **kw: object) -> EndpointCreated:
    fields: dict[str, object] = {
        "endpoint_id": uuid.uuid4(),
        "name": name,
        "image": "cr.backend.ai/stable/python:3.11-ubuntu22.04",
        "model": MODEL,
        "resource_slots": {"cpu": "1", "mem": "1073741824"},
        "scaling_group": "default",
        "desired_session_count": 2,
        "owner": owner,
        "access_key": "AKIAIOSFODNN7EXAMPLE",
        "project_id": LAB,
        "domain": "default",
        **kw,
    }
    return EndpointCreated.model_validate(fields)


def _fold(state: EndpointState, *events: object) -> list[object]:
    appended_all: list[object] = []
    for event in events:
        for appended in decide(state, event):  # type: ignore[arg-type]
            endpoint_id = appended.endpoint_id  # type: ignore[union-attr]
            state.apply(state.version(endpoint_id) + 1, appended)
            appended_all.append(appended)
    return appended_all


def _route(endpoint: EndpointCreated, ratio: float = 1.0) -> EndpointRouteAdded:
    return EndpointRouteAdded(
        endpoint_id=endpoint.endpoint_id,
        route_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        traffic_ratio=ratio,
    )


def _status(route: EndpointRouteAdded, status: str) -> EndpointRouteStatusChanged:
    return EndpointRouteStatusChanged.model_validate(
        {"endpoint_id": route.endpoint_id, "route_id": route.route_id, "status": status}
    )


@pytest.mark.unit
def test_rm_drains_every_route_refuses_growth_and_destroys_once_drained() -> None:
    state = EndpointState()
    endpoint = _created()
    first, second = _route(endpoint), _route(endpoint)
    _fold(state, endpoint, first, second, _status(first, "HEALTHY"))
    gone = EndpointDestroying(endpoint_id=endpoint.endpoint_id)
    assert _fold(state, gone) == [gone]
    assert _fold(state, gone) == []  # asked twice: once
    assert replicas_to_start(state, endpoint.endpoint_id) == 0
    assert set(routes_to_drain(state, endpoint.endpoint_id)) == {first.route_id, second.route_id}
    for refused in (
        EndpointScaled(endpoint_id=endpoint.endpoint_id, desired_session_count=3),
        _route(endpoint),
    ):
        with pytest.raises(InvalidAPIParameters, match="being destroyed"):
            decide(state, refused)
    with pytest.raises(InvalidAPIParameters, match="already exists"):  # name still taken
        _fold(state, _created())
    assert not ready_to_destroy(state, endpoint.endpoint_id)
    _fold(state, _status(first, "TERMINATING"), _status(second, "TERMINATING"))
    _fold(
        state,
        *(
            EndpointRouteRemoved(endpoint_id=endpoint.endpoint_id, route_id=r.route_id)
            for r in (first, second)
        ),
    )
    assert ready_to_destroy(state, endpoint.endpoint_id)
    _fold(state, EndpointDestroyed(endpoint_id=endpoint.endpoint_id))
    assert _fold(state, _created())  # and now the name is free


@pytest.mark.unit
def test_downscale_route_scales_and_drains_that_route_in_one_decision() -> None:
    state = EndpointState()
    endpoint = _created()
    first, second = _route(endpoint), _route(endpoint)
    _fold(state, endpoint, first, second, _status(first, "HEALTHY"), _status(second, "HEALTHY"))
    decided = decide_downscale(state, first.route_id, endpoint.endpoint_id)
    assert [type(e).__name__ for e in decided] == ["EndpointScaled", "EndpointRouteStatusChanged"]
    for event in decided:
        state.apply(state.version(endpoint.endpoint_id) + 1, event)
    assert routes_to_drain(state, endpoint.endpoint_id) == []  # the other route stays
    assert replicas_to_start(state, endpoint.endpoint_id) == 0  # and none replaces this one
    assert decide_downscale(state, first.route_id, endpoint.endpoint_id) == []  # once
    with pytest.raises(RoutingNotFound):
        decide_downscale(state, uuid.uuid4(), endpoint.endpoint_id)
    with pytest.raises(ValidationError):
        EndpointCommand(
            event=EndpointScaled(endpoint_id=endpoint.endpoint_id, desired_session_count=1),
            downscale=True,
        )


@pytest.mark.unit
def test_an_owner_holds_a_bounded_number_of_endpoints() -> None:
    state = EndpointState()
    _fold(state, *(_created(f"m{n}") for n in range(MAX_ENDPOINTS_PER_OWNER)))
    with pytest.raises(InvalidAPIParameters, match="at most"):
        decide(state, _created("one-more"))
    assert _fold(state, _created("bobs", owner=BOB))  # per owner


@pytest.mark.unit
def test_the_events_refuse_hostile_values() -> None:
    for bad in ("x" * 10_000, "", "-x", ".x", "a/b", "spa ce", "é"):
        with pytest.raises(ValidationError):
            _created(bad)
    for count in (-1, 65, 10**9, 2**63):
        with pytest.raises(ValidationError):
            _created(desired_session_count=count)
        with pytest.raises(ValidationError):
            EndpointScaled(endpoint_id=uuid.uuid4(), desired_session_count=count)
    for ratio in (2.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            EndpointRouteAdded(
                endpoint_id=uuid.uuid4(),
                route_id=uuid.uuid4(),
                session_id=uuid.uuid4(),
                traffic_ratio=ratio,
            )
        with pytest.raises(ValidationError):
            EndpointTrafficRatioChanged(
                endpoint_id=uuid.uuid4(), route_id=uuid.uuid4(), traffic_ratio=ratio
            )
    for bad_mount in ("models", "/" + "m" * 300, "/mo dels", "/models\n"):
        with pytest.raises(ValidationError):
            _created(model_mount_destination=bad_mount)
    with pytest.raises(ValidationError):
        _created(environ={f"K{i}": "v" for i in range(65)})
    with pytest.raises(ValidationError):
        _created(environ={"K": "v" * 5000})
    with pytest.raises(ValidationError):
        _created(resource_slots={"cpu": "1e100000000"})
    assert _created().model_mount_destination == "/models"


@pytest.mark.unit
def test_names_are_slugs_and_unique_among_the_owners_live_endpoints() -> None:
    for bad in ("", "-x", "x" * 65, "x" * 10_000, "a/b"):
        with pytest.raises(InvalidAPIParameters):
            check_name(bad)
    state = EndpointState()
    first = _created("chat", desired_session_count=0)
    _fold(state, first)
    assert decide(state, first) == []  # the same create again: a retry
    with pytest.raises(InvalidAPIParameters, match="already exists"):
        decide(state, _created("chat"))
    assert decide(state, _created("chat", owner=BOB))  # another owner's name space
    _fold(state, EndpointDestroyed(endpoint_id=first.endpoint_id))
    assert decide(state, _created("chat"))  # a destroyed endpoint's name is free again
    with pytest.raises(InvalidAPIParameters, match="mount destination"):
        decide(state, _created("other", model_mount_destination="/models/../etc"))


@pytest.mark.unit
def test_scale_is_bounded_and_nothing_follows_destruction() -> None:
    state = EndpointState()
    endpoint = _created(desired_session_count=1)
    _fold(state, endpoint)
    scaled = EndpointScaled(endpoint_id=endpoint.endpoint_id, desired_session_count=3)
    assert _fold(state, scaled) == [scaled]
    assert decide(state, scaled) == []  # the same count again changes nothing
    huge = EndpointScaled.model_construct(
        endpoint_id=endpoint.endpoint_id, desired_session_count=10**12
    )  # past the event's own bound (a writer that forgot to validate)
    with pytest.raises(InvalidAPIParameters, match="replicas"):
        decide(state, huge)
    with pytest.raises(EndpointNotFound):
        decide(state, EndpointScaled(endpoint_id=uuid.uuid4(), desired_session_count=1))

    route = _route(endpoint)
    _fold(state, route)
    with pytest.raises(InvalidAPIParameters, match="drain"):  # routes first
        decide(state, EndpointDestroyed(endpoint_id=endpoint.endpoint_id))
    _fold(state, _status(route, "TERMINATING"))
    _fold(state, EndpointRouteRemoved(endpoint_id=endpoint.endpoint_id, route_id=route.route_id))
    gone = EndpointDestroyed(endpoint_id=endpoint.endpoint_id)
    assert _fold(state, gone) == [gone]
    assert decide(state, gone) == []  # destroyed once
    for after in (
        EndpointScaled(endpoint_id=endpoint.endpoint_id, desired_session_count=1),
        _route(endpoint),
        EndpointTokenIssued(
            endpoint_id=endpoint.endpoint_id,
            token_id=uuid.uuid4(),
            expires_at=datetime(2100, 1, 1, tzinfo=UTC),
        ),
    ):
        with pytest.raises(EndpointNotFound):
            decide(state, after)
    assert replicas_to_start(state, endpoint.endpoint_id) == 0
    assert routes_to_drain(state, endpoint.endpoint_id) == []
    with pytest.raises(EndpointNotFound):
        decide(state, EndpointDestroyed(endpoint_id=uuid.uuid4()))
    with pytest.raises(TypeError):
        decide(state, VFolderTrashed(folder_id=uuid.uuid4()))


@pytest.mark.unit
def test_a_route_is_added_once_belongs_to_one_endpoint_and_moves_sanely() -> None:
    state = EndpointState()
    mine, theirs = _created("a"), _created("b", owner=BOB)
    _fold(state, mine, theirs)
    route = _route(mine)
    assert _fold(state, route) == [route]
    assert decide(state, route) == []  # added twice: once is enough
    with pytest.raises(InvalidAPIParameters, match="another session"):
        decide(state, route.model_copy(update={"session_id": uuid.uuid4()}))
    with pytest.raises(InvalidAPIParameters, match="taken"):  # another endpoint's route id
        decide(state, route.model_copy(update={"endpoint_id": theirs.endpoint_id}))
    with pytest.raises(InvalidAPIParameters, match="session already"):  # one route a session
        decide(state, route.model_copy(update={"route_id": uuid.uuid4()}))
    with pytest.raises(RoutingNotFound):
        decide(state, _status(route.model_copy(update={"route_id": uuid.uuid4()}), "HEALTHY"))

    assert _fold(state, _status(route, "HEALTHY"))
    assert decide(state, _status(route, "HEALTHY")) == []
    assert _fold(state, _status(route, "UNHEALTHY"), _status(route, "HEALTHY"))
    with pytest.raises(InvalidAPIParameters, match="does not become PROVISIONING"):
        decide(state, _status(route, "PROVISIONING"))
    _fold(state, _status(route, "TERMINATING"))
    for status in ("HEALTHY", "UNHEALTHY", "PROVISIONING"):
        with pytest.raises(InvalidAPIParameters, match="TERMINATING"):
            decide(state, _status(route, status))

    removed = EndpointRouteRemoved(endpoint_id=mine.endpoint_id, route_id=route.route_id)
    assert _fold(state, removed) == [removed]
    assert decide(state, removed) == []  # removed only once
    with pytest.raises(InvalidAPIParameters, match="taken"):  # its id is never reused
        decide(state, route)
    with pytest.raises(RoutingNotFound):
        decide(state, _status(route, "HEALTHY"))
    with pytest.raises(RoutingNotFound):
        decide(state, EndpointRouteRemoved(endpoint_id=mine.endpoint_id, route_id=uuid.uuid4()))


@pytest.mark.unit
def test_ratios_are_from_0_to_1_even_past_the_events_bounds() -> None:
    state = EndpointState()
    endpoint = _created()
    route = _route(endpoint, 0.5)
    _fold(state, endpoint, route)
    change = EndpointTrafficRatioChanged(
        endpoint_id=endpoint.endpoint_id, route_id=route.route_id, traffic_ratio=0.25
    )
    assert _fold(state, change) == [change]
    assert decide(state, change) == []
    assert state.endpoints[endpoint.endpoint_id].routes[route.route_id].traffic_ratio == 0.25
    for ratio in (2.0, float("nan"), float("inf"), -1.0):
        forged = EndpointTrafficRatioChanged.model_construct(
            endpoint_id=endpoint.endpoint_id, route_id=route.route_id, traffic_ratio=ratio
        )
        with pytest.raises(InvalidAPIParameters, match="ratio"):
            decide(state, forged)
        forged_route = EndpointRouteAdded.model_construct(
            endpoint_id=endpoint.endpoint_id,
            route_id=uuid.uuid4(),
            session_id=uuid.uuid4(),
            traffic_ratio=ratio,
        )
        with pytest.raises(InvalidAPIParameters, match="ratio"):
            decide(state, forged_route)


@pytest.mark.unit
def test_routes_are_bounded_per_endpoint() -> None:
    state = EndpointState()
    endpoint = _created()
    _fold(state, endpoint)
    _fold(state, *(_route(endpoint) for _ in range(MAX_ROUTES)))
    with pytest.raises(InvalidAPIParameters, match="at most"):
        decide(state, _route(endpoint))


@pytest.mark.unit
def test_tokens_are_issued_once_and_expire_in_the_future() -> None:
    state = EndpointState()
    endpoint = _created(open_to_public=False)
    _fold(state, endpoint)
    now = datetime(2026, 12, 3, tzinfo=UTC)
    token = EndpointTokenIssued(
        endpoint_id=endpoint.endpoint_id, token_id=uuid.uuid4(), expires_at=now + timedelta(days=1)
    )
    assert decide(state, token, now=now) == [token]
    _fold(state, token)
    assert decide(state, token, now=now) == []
    with pytest.raises(InvalidAPIParameters, match="future"):
        decide(state, token.model_copy(update={"token_id": uuid.uuid4()}), now=now + timedelta(2))
    assert "token" not in {f for f in EndpointTokenIssued.model_fields if f != "token_id"}


@pytest.mark.unit
def test_the_reconciler_starts_what_is_missing_and_drains_unhealthy_then_newest() -> None:
    state = EndpointState()
    endpoint = _created(desired_session_count=3)
    _fold(state, endpoint)
    eid = endpoint.endpoint_id
    assert replicas_to_start(state, eid) == 3
    assert replicas_to_start(state, uuid.uuid4()) == 0
    first, second, third, fourth = (_route(endpoint) for _ in range(4))
    _fold(state, first, second, third)
    assert replicas_to_start(state, eid) == 0
    assert routes_to_drain(state, eid) == []
    _fold(state, _status(first, "TERMINATING"))  # being drained: no longer a replica
    assert replicas_to_start(state, eid) == 1
    _fold(state, fourth, _status(second, "UNHEALTHY"), _status(third, "HEALTHY"))
    _fold(state, EndpointScaled(endpoint_id=eid, desired_session_count=1))
    assert replicas_to_start(state, eid) == 0
    assert routes_to_drain(state, eid) == [second.route_id, fourth.route_id]
    _fold(state, EndpointScaled(endpoint_id=eid, desired_session_count=0))
    assert routes_to_drain(state, eid) == [second.route_id, fourth.route_id, third.route_id]
    _fold(state, EndpointScaled(endpoint_id=eid, desired_session_count=64))
    assert replicas_to_start(state, eid) == 61


@pytest.mark.redis
async def test_the_writer_appends_one_stream_per_endpoint_and_a_reload_folds_the_same(
    store: RedisEventStore,
) -> None:
    now = datetime(2026, 12, 3, tzinfo=UTC)
    writer = await EndpointService(store, clock=lambda: now).load()
    endpoint = _created("chat")
    stream = f"endpoint-{endpoint.endpoint_id.hex}"
    command = EndpointCommand(event=endpoint)
    assert await writer.handle(command) == [endpoint]
    assert await writer.handle(command) == [endpoint]  # a retry: answered from the log
    assert await store.stream_version(stream) == 1
    with pytest.raises(InvalidAPIParameters, match="already exists"):
        await writer.handle(EndpointCommand(event=_created("chat")))
    other = _created("chat", owner=BOB)
    await writer.handle(EndpointCommand(event=other))

    route = _route(endpoint)
    added = EndpointCommand(event=route)
    assert await writer.handle(added) == [route]
    assert await writer.handle(added) == [route]  # retried after a lost answer
    assert await writer.handle(EndpointCommand(event=route)) == []  # a new command, no change
    await writer.handle(EndpointCommand(event=_status(route, "HEALTHY")))
    await writer.handle(
        EndpointCommand(
            event=EndpointScaled(endpoint_id=endpoint.endpoint_id, desired_session_count=5)
        )
    )
    with pytest.raises(InvalidAPIParameters, match="future"):
        await writer.handle(
            EndpointCommand(
                event=EndpointTokenIssued(
                    endpoint_id=endpoint.endpoint_id,
                    token_id=uuid.uuid4(),
                    expires_at=now - timedelta(seconds=1),
                )
            )
        )
    assert await store.stream_version(stream) == 4

    reloaded = await EndpointService(store).load()  # a restarted writer
    assert set(reloaded.state.endpoints) == set(writer.state.endpoints)
    for endpoint_id, folded in writer.state.endpoints.items():
        assert reloaded.state.endpoints[endpoint_id] == folded
    assert reloaded.state.route_owner == {route.route_id: endpoint.endpoint_id}
    assert replicas_to_start(reloaded.state, endpoint.endpoint_id) == 4
    with pytest.raises(InvalidAPIParameters, match="already exists"):
        await reloaded.handle(EndpointCommand(event=_created("chat")))
