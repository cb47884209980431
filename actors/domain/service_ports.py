"""The ``ai.backend.service-ports`` image label: the apps an image offers, parsed as upstream.

The grammar and the refusals are 23.03's ``ai.backend.common.service_ports.parse_service_ports``
(the upstream messages too: clients and admin scripts match on them). A label is
comma-separated items, each ``name:protocol:port`` or ``name:protocol:[port,port,...]``; the
name is letters, digits, ``_`` and ``-``; the protocol is ``tcp``, ``http`` or ``preopen``
(``pty`` is accepted and skipped, as upstream: no kernel serves it); a port lies strictly
between 1024 and 65535, is not one the kernel itself uses (2000-2003 for the runner, 2200 for
sshd, 7681 for ttyd), and is used once in the whole label.

Where kernelhub is stricter than upstream (docs/deviations.md):

* a name used twice is refused (upstream keeps both, and then ``start-service`` by name can
  only ever reach the first);
* names and digits are ASCII only (upstream's ``\\w`` and ``\\d`` take any Unicode letter or
  digit, so a port in full-width digits would be read as its ASCII number there);
* the label is read in one left-to-right pass (upstream re-slices the rest after each item,
  quadratic in the label's length).

Pure: the gateway, the image catalogue and the agent all call :func:`parse_service_ports`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidAPIParameters

__all__ = [
    "ENDPOINT_PORTS_LABEL",
    "RESERVED_PORTS",
    "SERVICE_PORTS_LABEL",
    "InvalidServiceConfig",
    "ServicePort",
    "ServicePortProtocol",
    "image_service_ports",
    "parse_service_ports",
    "service_ports_json",
]

SERVICE_PORTS_LABEL = "ai.backend.service-ports"
ENDPOINT_PORTS_LABEL = "ai.backend.endpoint-ports"
RESERVED_PORTS = frozenset({2000, 2001, 2002, 2003, 2200, 7681})
"""Ports the kernel itself listens on: the runner (2000-2003), sshd (2200), ttyd (7681)."""

_ITEM = re.compile(
    r"(?P<name>[\w-]+):(?P<proto>\w+):(?P<ports>\[\d+(?:,\d+)*\]|\d+)(?:,|$)", re.ASCII
)
_DIGITS_SHOWN = 12
"""A port written with more digits than this is shown cut short in the refusal (a label is
an image's, possibly long; the message must not be)."""


class ServicePortProtocol(enum.StrEnum):
    TCP = "tcp"
    HTTP = "http"
    PREOPEN = "preopen"


class InvalidServiceConfig(InvalidAPIParameters):
    """A service-ports label kernelhub refuses (upstream's message as ``msg``): a 400
    ``invalid-api-params`` at the front door."""


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One app of an image: its name, how it is reached, and the container ports it uses
    (the first is the one a client gets when it names no port)."""

    name: str
    protocol: ServicePortProtocol
    ports: tuple[int, ...]
    is_inference: bool = False
    """Named by the image's ``ai.backend.endpoint-ports`` label (a model-serving app)."""

    def to_json(self) -> dict[str, Any]:
        """The create reply's ``servicePorts`` item and the app list's: name, protocol,
        ports."""
        return {"name": self.name, "protocol": str(self.protocol), "ports": list(self.ports)}

    def to_kernel_json(self) -> dict[str, Any]:
        """Upstream's ``ServicePort`` record, the shape a kernel's ``service_ports`` has in
        the session info and GraphQL: no host ports (kernelhub's apps go through the
        gateway's tunnel), so each is ``None`` as upstream's before a container starts."""
        return {
            "name": self.name,
            "protocol": str(self.protocol),
            "container_ports": list(self.ports),
            "host_ports": [None] * len(self.ports),
            "is_inference": self.is_inference,
        }


def _port_text(digits: str) -> str:
    return digits if len(digits) <= _DIGITS_SHOWN else f"{digits[:_DIGITS_SHOWN]}..."


def _check_port(digits: str, used: set[int]) -> int:
    """One port, checked in upstream's order (so a label with several faults gets
    upstream's message) and added to ``used`` (a list repeating a port is refused too)."""
    if len(digits.lstrip("0")) > 5:  # no int() of a thousand digits; surely >= 65535
        raise InvalidServiceConfig(
            f"The service port number {_port_text(digits)} must be smaller than 65535."
        )
    port = int(digits)
    if port in used:
        raise InvalidServiceConfig(f"The port {port} is already used by another service port.")
    if port <= 1024:
        raise InvalidServiceConfig(
            f"The service port number {port} must be "
            "larger than 1024 to run without the root privilege."
        )
    if port >= 65535:
        raise InvalidServiceConfig(f"The service port number {port} must be smaller than 65535.")
    if port in RESERVED_PORTS:
        raise InvalidServiceConfig(
            "The service ports 2000 to 2003, 2200 and 7681 are reserved for internal use."
        )
    used.add(port)
    return port


def parse_service_ports(
    label: str, endpoint_ports: str | Sequence[str] = ""
) -> tuple[ServicePort, ...]:
    """The apps ``label`` declares, in its order; :class:`InvalidServiceConfig` with
    upstream's message for the first fault. ``""`` declares none. ``endpoint_ports`` (the
    ``ai.backend.endpoint-ports`` label, comma-separated) marks inference apps."""
    inference = set(
        endpoint_ports.split(",") if isinstance(endpoint_ports, str) else endpoint_ports
    )
    items: list[ServicePort] = []
    used_ports: set[int] = set()
    used_names: set[str] = set()
    pos = 0
    while pos < len(label):
        match = _ITEM.match(label, pos)
        if match is None:
            raise InvalidServiceConfig("Invalid service-ports format")
        pos = match.end()
        name, protocol = match["name"], match["proto"]
        if protocol == "pty":  # upstream: unsupported, skipped
            continue
        if protocol not in ServicePortProtocol.__members__.values():
            raise InvalidServiceConfig(f"Unsupported service port protocol: {protocol}")
        ports = tuple(_check_port(d, used_ports) for d in match["ports"].strip("[]").split(","))
        if name in used_names:
            raise InvalidServiceConfig(
                f"The service name {name!r} is already used by another service port."
            )
        used_names.add(name)
        items.append(ServicePort(name, ServicePortProtocol(protocol), ports, name in inference))
    return tuple(items)


def image_service_ports(labels: Mapping[str, str]) -> tuple[ServicePort, ...]:
    """The apps of an image, from its labels (none when it has no service-ports label)."""
    return parse_service_ports(
        labels.get(SERVICE_PORTS_LABEL, ""), labels.get(ENDPOINT_PORTS_LABEL, "")
    )


def service_ports_json(ports: Sequence[ServicePort]) -> list[dict[str, Any]]:
    """``[{"name", "protocol", "ports": [...]}]``, the shape the API answers."""
    return [port.to_json() for port in ports]
