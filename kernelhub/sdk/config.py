"""Where the SDK connects, and as whom.

The same variables as Backend.AI's client (``BACKEND_ENDPOINT``, ``BACKEND_ACCESS_KEY``,
``BACKEND_SECRET_KEY``), so one environment serves both; without them, the config file
``kh up`` wrote for this installation (``$KH_CONFIG_DIR/config.toml``), so that on the
machine running the embedded stack nothing needs exporting at all.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..paths import default_config_dir
from .errors import ConfigurationError

__all__ = ["DEFAULT_ENDPOINT", "ClientConfig"]

DEFAULT_ENDPOINT = "http://127.0.0.1:8081"
"""The gateway's default address on the machine running ``kh up``."""


class ClientConfig(BaseModel):
    """An endpoint and a keypair; everything else is per call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = DEFAULT_ENDPOINT
    access_key: str = Field(min_length=1)
    secret_key: str = Field(min_length=1, repr=False)
    domain: str = "default"
    group: str = "default"
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float | None = Field(
        default=None, description="None: no read timeout (a create that waits can be long)"
    )

    @field_validator("endpoint")
    @classmethod
    def _one_http_url(cls, value: str) -> str:
        first = value.split(",")[0].strip().rstrip("/")  # the official client takes a list
        if not first.startswith(("http://", "https://")):
            raise ValueError(f"the endpoint is not an http(s) URL: {first!r}")
        return first

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, config_file: Path | None = None
    ) -> ClientConfig:
        """From ``BACKEND_*`` variables first, then ``kh up``'s config file."""
        env = os.environ if environ is None else environ
        path = config_file or _config_path(env)
        stored = _read_toml(path)
        access_key = env.get("BACKEND_ACCESS_KEY") or stored.get("access_key")
        secret_key = env.get("BACKEND_SECRET_KEY") or stored.get("secret_key")
        if not access_key or not secret_key:
            raise ConfigurationError(
                "no keypair: set BACKEND_ACCESS_KEY and BACKEND_SECRET_KEY, or run `kh up` "
                f"(which writes {path})"
            )
        values = {
            "endpoint": env.get("BACKEND_ENDPOINT") or stored.get("endpoint") or DEFAULT_ENDPOINT,
            "access_key": access_key,
            "secret_key": secret_key,
            "domain": env.get("BACKEND_DOMAIN") or "default",
            "group": env.get("BACKEND_GROUP") or "default",
        }
        try:
            return cls.model_validate(values)
        except ValueError as exc:
            raise ConfigurationError(str(exc).splitlines()[-1].strip()) from None


def _config_path(env: Mapping[str, str]) -> Path:
    """Where ``kh up`` writes it (its ``KH_CONFIG_DIR``, else the XDG default)."""
    base = Path(env["KH_CONFIG_DIR"]) if env.get("KH_CONFIG_DIR") else default_config_dir(env)
    return base / "config.toml"


def _read_toml(path: Path) -> dict[str, str]:
    try:
        with open(path, "rb") as handle:
            return {k: str(v) for k, v in tomllib.load(handle).items()}
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from None
