"""Configuration defaults and environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from actors.domain.liveness import DEFAULT_HEARTBEAT_INTERVAL_S, DEFAULT_LOST_TIMEOUT_S
from events import Durability
from kernelhub.config import Settings

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    settings = Settings.from_env({"HOME": "/home/u"})
    assert settings.durability is Durability.EVERYSEC
    assert settings.redis_url is None and settings.redis_port is None
    assert settings.key_prefix == "kh"
    assert settings.data_dir.name == "kernelhub"
    assert settings.stop_grace_s == 10.0  # 23.03's docker stop timeout
    assert (
        (settings.heartbeat_interval_s, settings.lost_timeout_s)
        == (DEFAULT_HEARTBEAT_INTERVAL_S, DEFAULT_LOST_TIMEOUT_S)
        == (20.0, 40.0)
    )


def test_environment_and_overrides() -> None:
    env = {
        "KH_DATA_DIR": "/srv/kh",
        "KH_DURABILITY": "always",
        "KH_REDIS_PORT": "7001",
        "KH_STOP_GRACE_S": "1.5",
        "KH_HEARTBEAT_INTERVAL_S": "1",
        "KH_LOST_TIMEOUT_S": "3",
        "KH_RECONCILE_INTERVAL_S": "5",
    }
    settings = Settings.from_env(env)
    assert settings.reconcile_interval_s == 5.0
    assert (settings.heartbeat_interval_s, settings.lost_timeout_s) == (1.0, 3.0)
    assert settings.stop_grace_s == 1.5
    assert settings.data_dir == Path("/srv/kh")
    assert settings.durability is Durability.ALWAYS
    assert settings.redis_port == 7001
    assert Settings.from_env(env, durability="everysec").durability is Durability.EVERYSEC


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="durability"):
        Settings.from_env({"KH_DURABILITY": "sometimes"})
    with pytest.raises(ValidationError, match="redis_port"):
        Settings.from_env({"KH_REDIS_PORT": "70000"})
    with pytest.raises(ValidationError, match="stop_grace_s"):
        Settings.from_env({"KH_STOP_GRACE_S": "0"})


def test_ray_cluster_yaml_is_a_valid_node_types_config_with_a_cloud_provider() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((Path(__file__).parents[1] / "ray_cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "head_node_type", "available_node_types"):
        assert key in config
    assert config["provider"]["type"] not in ("local", "readonly")
    assert config["head_node_type"] in config["available_node_types"]
    resources = {t: c["resources"] for t, c in config["available_node_types"].items()}
    assert resources[config["head_node_type"]] == {"kernelhub_head": 1}
    assert {"kernelhub_agent": 1} in resources.values()
    validate_config(prepare_config(config))  # what `ray up` runs before anything else


def test_the_on_premise_variant_is_a_valid_local_provider_config() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(__file__).parents[1] / "ray_cluster.local.yaml"
    config = yaml.safe_load(path.read_text())
    assert config["provider"]["type"] == "local" and "available_node_types" not in config
    validate_config(prepare_config(config))


def test_idle_configuration_from_the_environment() -> None:
    from actors.domain.idle import IdleConfig

    assert Settings.from_env({}).idle == {}
    raw = '{"enabled": "timeout", "checkers": {"timeout": {"threshold": "90s"}}}'
    settings = Settings.from_env({"KH_IDLE": raw})
    config = IdleConfig.parse(settings.idle)
    assert config.enabled == ("network_timeout",) and config.network_threshold == 90
    assert config.warnings  # the old name is said out loud
    with pytest.raises(ValidationError, match="KH_IDLE is not JSON"):
        Settings.from_env({"KH_IDLE": "{nope"})


def test_the_documented_defaults_of_the_idle_checkers() -> None:
    from actors.domain.idle import IdleConfig

    defaults = IdleConfig.parse({})
    assert defaults.enabled == ()  # as 23.03: only the policy's session lifetime
    assert defaults.network_threshold == 600
    assert defaults.utilization.time_window == 600
    assert defaults.utilization.initial_grace_period == 300
    assert defaults.utilization.thresholds_check_operator == "and"


def test_every_registered_metric_is_documented() -> None:
    from actors.runtime.metrics import DOCUMENTED

    table = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert documented == set(DOCUMENTED)
