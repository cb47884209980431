"""Create-time checks of a model service, without a stack: what ``POST /services`` refuses
(400 naming the field or the definition's key) before anything is appended, so that an
endpoint is never created whose every replica would then fail (review S2, S13, S15)."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from actors.domain.errors import InvalidAPIParameters
from actors.domain.model_definition import (
    MAX_DEFINITION_BYTES,
    InvalidModelDefinition,
    parse_model_definition,
)
from actors.gateway.service_params import ServiceConfig
from actors.gateway.serving_access import mount_destination
from events.catalogue.endpoint import MAX_ENDPOINT_ENV

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "destination",
    ["/home", "/home/work", "/home/work/.ssh", "/home/work/.bashrc", "/home/user", "/etc", "/"],
)
def test_a_mount_destination_the_agent_refuses_is_refused_at_create(destination: str) -> None:
    """Review S2: the gateway's check is the agent's (model_mount_path), so none of these is
    a 200 followed by replicas failing with MountRefused for ever."""
    with pytest.raises(InvalidAPIParameters, match="model_mount_destination"):
        mount_destination(destination)


def test_the_default_and_plain_destinations_are_kept() -> None:
    assert mount_destination(None) == "/models"
    assert mount_destination("  ") == "/models"
    assert mount_destination("/home/work/models") == "/home/work/models"
    assert mount_destination("/models/./llama/") == "/models/llama"


DEFINITION = """\
models:
  - name: m
    service:
      start_command: ["python3", "server.py"]
      port: 8000
    environ:
"""


@pytest.mark.parametrize(
    "environ",
    [
        "      KERNELHUB_RUNNER_SOCKET: /tmp/x\n",
        "      BACKENDAI_X: '1'\n",
        '      A: "x\\ny"\n',
        "      9A: x\n",
        "".join(f"      V{i}: x\n" for i in range(65)),
    ],
)
def test_a_definition_environ_no_replica_could_be_given_is_refused(environ: str) -> None:
    """Review S13: only the reconciler refused these, at every replica creation, after the
    create had answered 200 (no replica ever started, nobody told why)."""
    with pytest.raises(InvalidModelDefinition, match=r"model-definition\.yaml's environ"):
        parse_model_definition((DEFINITION + environ).encode())
    assert parse_model_definition((DEFINITION + "      A: x\n").encode()).environ == {"A": "x"}


def test_an_endpoint_environ_is_bounded_as_an_endpoint_keeps_it() -> None:
    """Review S15: 65-128 variables passed the params and made the event invalid: a 500."""
    many = {f"V{i}": "1" for i in range(MAX_ENDPOINT_ENV + 1)}
    with pytest.raises(ValidationError, match="environ"):
        ServiceConfig.model_validate({"model": "m", "environ": many})
    few = {f"V{i}": "1" for i in range(MAX_ENDPOINT_ENV)}
    assert ServiceConfig.model_validate({"model": "m", "environ": few}).environ == few


def test_a_definition_is_small_and_parsed_quickly() -> None:
    """Review S7: 64 KiB of pure-Python YAML held the gateway ~0.7 s. At most 16 KiB now, and
    the C loader where it is there."""
    assert MAX_DEFINITION_BYTES == 16 * 2**10
    with pytest.raises(InvalidModelDefinition, match="larger than 16 KiB"):
        parse_model_definition(b"#" * (MAX_DEFINITION_BYTES + 1))
    for worst in (b"models: [" + b"1," * 8000 + b"1]", b"models: " + b"[" * 16000):
        started = time.perf_counter()
        with pytest.raises(InvalidModelDefinition):
            parse_model_definition(worst[:MAX_DEFINITION_BYTES])
        assert time.perf_counter() - started < 0.3
