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


# ---- failure memory (review S1: a failing replica was replaced at once, for ever) ----------------
def _fold_at(state: EndpointState, at_ms: int, *events: object) -> None:
    for event in events:
        for appended in decide(state, event):  # type: ignore[arg-type]
            endpoint_id = appended.endpoint_id  # type: ignore[union-attr]
            state.apply(state.version(endpoint_id) + 1, appended, at_ms)


def _fail_one(state: EndpointState, endpoint: EndpointCreated, at_ms: int, how: str) -> None:
    """A replica added and failed: ``unhealthy`` (drained after), ``lost`` (its session ended
    while it served), or ``flap`` (HEALTHY, then lost a second later)."""
    route = _route(endpoint)
    _fold_at(state, at_ms - 1000, route)
    if how == "unhealthy":
        _fold_at(state, at_ms, _status(route, "UNHEALTHY"), _status(route, "TERMINATING"))
        _fold_at(state, at_ms + 500, _removed(route))
    elif how == "flap":
        _fold_at(state, at_ms - 1000, _status(route, "HEALTHY"))
        _fold_at(state, at_ms, _removed(route))
    else:
        _fold_at(state, at_ms, _removed(route))


def _removed(route: EndpointRouteAdded) -> EndpointRouteRemoved:
    return EndpointRouteRemoved(endpoint_id=route.endpoint_id, route_id=route.route_id)


@pytest.mark.unit
@pytest.mark.hostile
def test_failing_replicas_are_replaced_after_a_doubling_backoff_then_not_at_all() -> None:
    from actors.domain.endpoints import BACKOFF_BASE_S, MAX_FAILURES, replacement_hold

    assert MAX_FAILURES == 5 and BACKOFF_BASE_S == 5.0
    state = EndpointState()
    endpoint = _created(desired_session_count=1)
    eid = endpoint.endpoint_id
    _fold_at(state, 1_000, endpoint)
    assert replicas_to_start(state, eid, now_ms=1_000) == 1
    t = 100_000
    for k, how in enumerate(["unhealthy", "lost", "flap", "unhealthy"], start=1):
        _fail_one(state, endpoint, t, how)
        folded = state.endpoints[eid]
        assert (folded.failures, folded.last_failure_ms) == (k, t), how
        wait_ms = int(BACKOFF_BASE_S * 2 ** (k - 1) * 1000)
        # the unfixed rule answered 1 here, at once: a replacement per failure, for ever
        assert replicas_to_start(state, eid, now_ms=t + wait_ms - 1) == 0
        assert replicas_to_start(state, eid) == 0  # no time given: held, never let through
        hold = replacement_hold(folded, t + 1)
        assert hold is not None and hold.until_ms == t + wait_ms and not hold.stopped
        assert replicas_to_start(state, eid, now_ms=t + wait_ms) == 1
        t += wait_ms + 10_000
    _fail_one(state, endpoint, t, "lost")
    hold = replacement_hold(state.endpoints[eid], t + 10**9)
    assert hold is not None and hold.stopped and "scales" in hold.reason()
    assert replicas_to_start(state, eid, now_ms=t + 10**9) == 0  # stopped: no time lets it
    # the owner asks again (sync appends a scale to the same count): the log forgets
    again = EndpointScaled(endpoint_id=eid, desired_session_count=1)
    assert decide(state, again) == [again]
    _fold_at(state, t + 1, again)
    assert state.endpoints[eid].failures == 0 and decide(state, again) == []  # now a no-op
    assert replicas_to_start(state, eid, now_ms=t + 2) == 1
    # the backoff is capped
    for n in range(4):
        _fail_one(state, endpoint, t + 10**7 * (n + 1), "lost")
    hold = replacement_hold(state.endpoints[eid], t + 4 * 10**7, base_s=1000.0)
    assert hold is not None and hold.until_ms == t + 4 * 10**7 + 600_000


@pytest.mark.unit
def test_drained_replicas_are_no_failures_and_a_long_served_one_starts_the_count_afresh() -> None:
    from actors.domain.endpoints import STABLE_S

    state = EndpointState()
    endpoint = _created(desired_session_count=3)
    eid = endpoint.endpoint_id
    _fold_at(state, 0, endpoint)
    drained, never_made = _route(endpoint), _route(endpoint)
    _fold_at(state, 1_000, drained, never_made, _status(drained, "HEALTHY"))
    _fold_at(state, 2_000, EndpointScaled(endpoint_id=eid, desired_session_count=1))
    _fold_at(state, 3_000, _status(drained, "TERMINATING"), _status(never_made, "TERMINATING"))
    _fold_at(state, 4_000, _removed(drained), _removed(never_made))
    assert state.endpoints[eid].failures == 0  # scale down: no failure
    for n in range(3):
        _fail_one(state, endpoint, 10_000 * (n + 1), "flap")  # HEALTHY for a second: counts on
    assert state.endpoints[eid].failures == 3
    served = _route(endpoint)
    _fold_at(state, 50_000, served, _status(served, "HEALTHY"))
    _fold_at(state, 50_000 + int(STABLE_S * 1000), _removed(served))  # served long, then lost
    assert state.endpoints[eid].failures == 1
    destroying = _route(endpoint)
    _fold_at(state, 10**9, destroying, EndpointDestroying(endpoint_id=eid))
    _fold_at(state, 10**9 + 1, _status(destroying, "TERMINATING"), _removed(destroying))
    assert state.endpoints[eid].failures == 1  # rm drains: no failure


@pytest.mark.redis
async def test_a_restarted_writer_folds_the_failures_with_the_logs_time(
    store: RedisEventStore,
) -> None:
    import time

    from actors.domain.endpoints import replacement_hold

    writer = await EndpointService(store).load()
    endpoint = _created("churn", desired_session_count=1)
    eid = endpoint.endpoint_id
    await writer.handle(EndpointCommand(event=endpoint))
    before_ms = int(time.time() * 1000) - 1000
    for _ in range(2):
        route = _route(endpoint)
        await writer.handle(EndpointCommand(event=route))
        await writer.handle(EndpointCommand(event=_status(route, "UNHEALTHY")))
        await writer.handle(EndpointCommand(event=_status(route, "TERMINATING")))
        await writer.handle(EndpointCommand(event=_removed(route)))
    folded = writer.state.endpoints[eid]
    assert folded.failures == 2 and folded.last_failure_ms >= before_ms  # Redis time, not 0
    reloaded = (await EndpointService(store).load()).state.endpoints[eid]
    assert reloaded == folded  # the same memory and the same clock after a restart
    hold = replacement_hold(reloaded, reloaded.last_failure_ms + 1)
    assert hold is not None and hold.until_ms == reloaded.last_failure_ms + 10_000
