"""Configuration of a kernelhub installation, from the environment (``KH_*``).

Every interval and path is configuration so that tests can run the real thing on second
scales in temporary directories.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from events import Durability
from events.keys import DEFAULT_PREFIX

from .paths import default_config_dir, default_data_dir

__all__ = ["Settings", "default_config_dir", "default_data_dir"]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir)
    config_dir: Path = Field(
        default_factory=default_config_dir,
        description="Where `kh up` writes config.toml with the admin keypair (0600).",
    )
    redis_url: str | None = Field(
        default=None,
        description="An external Redis (redis:// or unix://); unset: the embedded one.",
    )
    redis_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Embedded Redis TCP port on 127.0.0.1 (0: a free one); unset: unix socket.",
    )
    durability: Durability = Durability.EVERYSEC
    key_prefix: str = DEFAULT_PREFIX
    gateway_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="The gateway's port on 127.0.0.1 (Backend.AI manager's 8081; 0: a free one).",
    )
    gateway_host: str = Field(
        default="127.0.0.1",
        description="The address the gateway binds: loopback for the embedded stack; on a "
        "cluster joined with `kh up --address`, the head's address clients reach.",
    )
    stop_grace_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="How long a kernel's runner has to end after SIGTERM before it is killed "
        "(Docker's stop timeout; 23.03's 10 s).",
    )
    heartbeat_interval_s: float = Field(
        default=20.0,
        gt=0,
        le=3600,  # actors.domain.liveness's defaults (a test keeps them)
        description="How often each agent heartbeats (23.03's 20 s).",
    )
    lost_timeout_s: float = Field(
        default=40.0,
        gt=0,
        le=86400,
        description="Heartbeat silence after which an agent is LOST (23.3.1's 40 s).",
    )
    reconcile_interval_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How often each agent compares what its backend runs with what the log "
        "says runs there (a difference seen twice is acted on).",
    )
    idle: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend.AI's config/idle as JSON: enabled checkers and their settings.",
    )

    @field_validator("idle", mode="before")
    @classmethod
    def _idle_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"KH_IDLE is not JSON: {exc}") from None
        return value

    @property
    def master_key_path(self) -> Path:
        """The key that encrypts secrets in the log; never stored in Redis."""
        return self.data_dir / "master.key"

    @property
    def client_config_path(self) -> Path:
        return self.config_dir / "config.toml"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field, var in (
            ("data_dir", "KH_DATA_DIR"),
            ("config_dir", "KH_CONFIG_DIR"),
            ("redis_url", "KH_REDIS_URL"),
            ("redis_port", "KH_REDIS_PORT"),
            ("durability", "KH_DURABILITY"),
            ("key_prefix", "KH_KEY_PREFIX"),
            ("stop_grace_s", "KH_STOP_GRACE_S"),
            ("gateway_port", "KH_GATEWAY_PORT"),
            ("gateway_host", "KH_GATEWAY_HOST"),
            ("heartbeat_interval_s", "KH_HEARTBEAT_INTERVAL_S"),
            ("lost_timeout_s", "KH_LOST_TIMEOUT_S"),
            ("reconcile_interval_s", "KH_RECONCILE_INTERVAL_S"),
            ("idle", "KH_IDLE"),
        ):
            if env.get(var):
                values[field] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
