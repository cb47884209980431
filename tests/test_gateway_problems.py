"""The gateway maps the domain's refusals to HTTP statuses and problem bodies: the domain's
errors name no status (issue 27, point 8), the front door's table does."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest

from actors.domain import errors as domain
from actors.gateway.apps import AppNotFound
from actors.gateway.gql_limits import QueryTooComplex
from actors.gateway.manager import ServerFrozen
from actors.gateway.problems import (
    AuthorizationFailed,
    InsufficientPrivilege,
    InternalServerError,
    SessionAlreadyExists,
    SessionNotFound,
    problem,
    status_of,
)
from actors.gateway.sessions import TooManyOpenSessions
from actors.gateway.stream_limits import TooManyStreams

pytestmark = pytest.mark.unit

CASES: list[tuple[domain.DomainError, int, str]] = [
    (domain.DomainError(), 500, "general-error"),
    (domain.GenericBadRequest(), 400, "generic-bad-request"),
    (domain.InvalidAPIParameters("x"), 400, "invalid-api-params"),
    (domain.GenericForbidden(), 403, "generic-forbidden"),
    (domain.QuotaExceeded(), 412, "quota-exceeded"),
    (domain.ScalingGroupNotFound(), 404, "object-not-found"),
    (domain.InstanceNotAvailable(), 503, "instance-not-available"),
    (domain.ObjectNotFound("thing"), 404, "object-not-found"),
    (domain.ImageNotFound(), 404, "object-not-found"),
    (domain.KernelExecutionFailed(), 500, "kernel-execution-failed"),
    (SessionNotFound(), 404, "object-not-found"),
    (AppNotFound("app"), 404, "object-not-found"),
    (QueryTooComplex("deep"), 400, "invalid-api-params"),
    (AuthorizationFailed(), 401, "auth-failed"),
    (InsufficientPrivilege(), 403, "insufficient-privilege"),
    (InternalServerError(), 500, "internal-server-error"),
    (SessionAlreadyExists("sid"), 400, "session-already-exists"),
    (ServerFrozen(), 503, "server-frozen"),
    (TooManyOpenSessions(), 429, "rate-limit-exceeded"),
    (TooManyStreams(), 429, "rate-limit-exceeded"),
]


@pytest.mark.parametrize(("error", "status", "kind"), CASES, ids=lambda c: type(c).__name__)
def test_each_refusal_answers_with_its_status_and_problem_type(
    error: domain.DomainError, status: int, kind: str
) -> None:
    assert status_of(error) == status
    response = problem(error)
    assert response.status == status
    assert response.content_type == "application/problem+json"
    assert response.text is not None
    body = json.loads(response.text)
    assert body["type"] == f"https://api.backend.ai/probs/{kind}"
    assert body["title"] == error.title


def test_domain_errors_name_no_http_status() -> None:
    """Every refusal the domain defines (any module of ``actors.domain``) leaves the status to
    the gateway's table."""
    import actors.domain

    for info in pkgutil.walk_packages(actors.domain.__path__, "actors.domain."):
        importlib.import_module(info.name)
    pending = [domain.DomainError]
    seen = 0
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("actors.domain"):
            assert "status" not in vars(cls), f"{cls.__module__}.{cls.__name__}"
            seen += 1
    assert seen >= 10


@pytest.mark.parametrize("dead", ["RayActorError", "ActorUnavailableError"])
async def test_an_actor_restarting_past_the_routers_retries_is_a_503_to_retry(dead: str) -> None:
    """A request whose actor died (Ray is restarting it, the routers' retries ran out) is told
    to come back, as during a Redis outage: never a 500 that reads as a bug."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    from ray import exceptions

    from actors.gateway import app as gateway_app
    from actors.runtime.outage import Outages

    async def handler(request: web.Request) -> web.Response:
        if dead == "ActorUnavailableError":
            raise exceptions.ActorUnavailableError("the actor is restarting", None)
        raise exceptions.RayActorError()

    application = web.Application(middlewares=[gateway_app.problems])
    application[gateway_app._OUTAGE_KEY] = Outages("test requests")
    application.router.add_get("/x", handler)
    async with TestClient(TestServer(application)) as client:
        reply = await client.get("/x")
        body = await reply.json()
    assert reply.status == 503 and reply.headers["Retry-After"] == "1"
    assert body["type"].endswith("/service-unavailable") and "restarting" in body["title"]
