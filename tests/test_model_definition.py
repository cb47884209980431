"""Create-time checks of a model service, without a stack: what ``POST /services`` refuses
(400 naming the field or the definition's key) before anything is appended, so that an
endpoint is never created whose every replica would then fail (review S2, S13, S15)."""

from __future__ import annotations

import pytest

from actors.domain.errors import InvalidAPIParameters
from actors.gateway.serving_access import mount_destination

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
