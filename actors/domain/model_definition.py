"""A model folder's definition: how its replicas serve it.

The owner puts ``model-definition.yaml`` (or ``.yml``, or ``.json``) at the top of the model
folder, in the shape Backend.AI's later releases read::

    models:
      - name: echo
        model_path: /models
        service:
          start_command: ["python3", "/models/server.py"]   # or one string, split as sh does
          port: 8000
          health_check:
            path: /health
            interval: 10        # seconds between probes
            max_retries: 3      # failed probes in a row that make a route UNHEALTHY
            initial_delay: 60   # how long a new replica may take to pass its first probe
        environ: {MODEL_NAME: echo}

Only the first model is served (as 23.09 does). The text is the tenant's: it is read with a
bound, parsed with the safe loader, and every value is checked (through
:class:`events.catalogue.ModelService`) before it can become an event. Pure: the caller reads
the file (:func:`actors.storage.volume` never follows the tenant's links).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from pydantic import ValidationError

from events.catalogue.endpoint import MAX_ENDPOINT_ENV, ModelService

from .errors import InvalidAPIParameters
from .session import check_environ

__all__ = ["DEFINITION_NAMES", "MAX_DEFINITION_BYTES", "parse_model_definition"]

DEFINITION_NAMES = ("model-definition.yaml", "model-definition.yml", "model-definition.json")
"""Where a definition is looked for, in this order, at the top of the model folder."""
MAX_DEFINITION_BYTES = 16 * 2**10
"""A definition is a few hundred bytes; parsing even 64 KiB of pure-Python YAML took ~0.7 s
(review S7)."""


class InvalidModelDefinition(InvalidAPIParameters):
    pass


def _load(text: str, name: str) -> Any:
    if name.endswith(".json"):
        return json.loads(text)
    import yaml

    # libyaml's safe loader where it is there (many times faster); the same safe constructors
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def _first_model(document: Any) -> dict[str, Any]:
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, list) or not models or not isinstance(models[0], dict):
        raise InvalidModelDefinition("the model definition lists no model ('models: [...]')")
    return models[0]


def _command(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise InvalidModelDefinition(
                f"the model's start_command does not parse: {exc}"
            ) from None
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return list(value)
    raise InvalidModelDefinition("the model's start_command is a string or a list of strings")


def _environ(environ: dict[str, str], name: str) -> dict[str, str]:
    """The definition's environ as a replica can be given it: the same check as a session's
    ``config.environ`` (names, reserved prefixes, one-line values) and at most
    :data:`MAX_ENDPOINT_ENV` variables, refused here (a 400 naming the file's key) rather
    than by every replica's creation later, where nobody sees it (review S13)."""
    if len(environ) > MAX_ENDPOINT_ENV:
        raise InvalidModelDefinition(
            f"{name}'s environ: at most {MAX_ENDPOINT_ENV} variables ({len(environ)} given)"
        )
    try:
        check_environ(environ)
    except InvalidAPIParameters as exc:
        detail = exc.msg.removeprefix("config.environ: ")
        raise InvalidModelDefinition(f"{name}'s environ: {detail}") from None
    return environ


def parse_model_definition(raw: bytes, name: str = "model-definition.yaml") -> ModelService:
    """The service a definition file describes; :class:`InvalidModelDefinition` (a 400)
    naming what is wrong otherwise."""
    if len(raw) > MAX_DEFINITION_BYTES:
        raise InvalidModelDefinition(
            f"the model definition is larger than {MAX_DEFINITION_BYTES // 1024} KiB"
        )
    try:
        document = _load(raw.decode("utf-8"), name)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidModelDefinition(f"the model definition does not parse: {exc}") from None
    except Exception as exc:  # the YAML parser's own errors (and its nesting limit)
        raise InvalidModelDefinition(
            f"the model definition does not parse: {type(exc).__name__}"
        ) from None
    model = _first_model(document)
    service = model.get("service")
    if not isinstance(service, dict):
        raise InvalidModelDefinition("the model has no 'service' section")
    health = service.get("health_check") or {}
    if not isinstance(health, dict):
        raise InvalidModelDefinition("the service's health_check is a mapping")
    fields: dict[str, Any] = {
        "start_command": _command(service.get("start_command")),
        "port": service.get("port"),
    }
    for key, source in (
        ("health_check_path", "path"),
        ("health_check_interval_s", "interval"),
        ("max_retries", "max_retries"),
        ("initial_delay_s", "initial_delay"),
    ):
        if health.get(source) is not None:
            fields[key] = health[source]
    environ = model.get("environ", service.get("environ"))
    if environ is not None:
        plain = (str, int, float, bool)
        if not isinstance(environ, dict) or not all(
            isinstance(k, plain) and isinstance(v, plain) for k, v in environ.items()
        ):  # never str() a nested value: YAML aliases make those exponentially large
            raise InvalidModelDefinition("the model's environ maps names to plain values")
        fields["environ"] = _environ({str(k): str(v) for k, v in environ.items()}, name)
    try:
        return ModelService.model_validate(fields, strict=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "service"
        raise InvalidModelDefinition(
            f"the model definition's {where} is invalid: {first['msg']}"
        ) from None
