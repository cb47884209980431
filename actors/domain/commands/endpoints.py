"""The command the endpoint writer handles: one proposed endpoint event, with its id.

The gateway decides *who* may act (the endpoint's owner, their project's and domain's
admins) and proposes the event; the reconciler proposes routes and their statuses; the
writer decides whether the endpoints as the log says allow it (the name free among the
owner's live endpoints, the route its endpoint's, the status change sane) and appends. The
command id makes a retry after ``RayActorError`` harmless.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field, model_validator

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
)
from events.envelope import Initiator

from . import Command

__all__ = ["EndpointCommand", "EndpointEvent"]

EndpointEvent = Annotated[
    Union[  # noqa: UP007 - a discriminated union reads best spelled out
        EndpointCreated,
        EndpointScaled,
        EndpointRouteAdded,
        EndpointRouteStatusChanged,
        EndpointRouteRemoved,
        EndpointTrafficRatioChanged,
        EndpointTokenIssued,
        EndpointDestroying,
        EndpointDestroyed,
    ],
    Field(discriminator="type"),
]


class EndpointCommand(Command):
    event: EndpointEvent
    """What the caller proposes."""
    initiator: Initiator | None = None
    """Who asked (recorded in the envelope)."""
    downscale: bool = False
    """With a route's ``TERMINATING``: ``downscale-route`` — the desired count goes down by
    one in the same append (:func:`actors.domain.endpoints.decide_downscale`)."""

    @model_validator(mode="after")
    def _downscale_names_a_drain(self) -> EndpointCommand:
        event = self.event
        if self.downscale and not (
            isinstance(event, EndpointRouteStatusChanged) and event.status == "TERMINATING"
        ):
            raise ValueError("downscale goes with a route's TERMINATING")
        return self
