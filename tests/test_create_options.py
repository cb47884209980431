"""Every create parameter of 23.03's ``POST /session`` (docs/api.md, spec table §1.1) is
honoured or refused with a 400 naming it, never accepted and dropped (issue "An honest
session API").

The pure checks first (what each option must be, as the gateway reads it), then one ``kh up``
with the official client: a walk over the whole parameter list, each key (and every alias)
observable in the session (its info, its read-model record, its creation event, or the
kernel, through an exec) or refused naming it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from actors.domain.errors import ImageNotFound, InvalidAPIParameters
from actors.domain.scheduling.records import spec_of
from actors.domain.session import (
    DEFAULT_SHMEM,
    ClusterMode,
    check_callback_url,
    check_environ,
    check_shmem,
    designated_agents,
    parse_starts_at,
    resource_opts_of,
    session_architecture,
)
from actors.gateway.params import CreateConfig, CreateParams, parse

M = 2**20

# ---- the parameter list: every key and alias of the spec's table ---------------------------
TOP_LEVEL = {
    "name": ("name", "clientSessionToken"),
    "image": ("image", "lang"),
    "architecture": ("arch", "architecture"),
    "session_type": ("type", "sessionType"),
    "group": ("group", "groupName", "group_name"),
    "domain": ("domain", "domainName", "domain_name"),
    "cluster_size": ("cluster_size", "clusterSize"),
    "cluster_mode": ("cluster_mode", "clusterMode"),
    "config": ("config",),
    "tag": ("tag",),
    "enqueue_only": ("enqueueOnly", "enqueue_only"),
    "max_wait_seconds": ("maxWaitSeconds", "max_wait_seconds"),
    "starts_at": ("starts_at", "startsAt"),
    "reuse_if_exists": ("reuseIfExists", "reuse_if_exists"),
    "startup_command": ("startupCommand", "startup_command"),
    "bootstrap_script": ("bootstrap_script", "bootstrapScript"),
    "dependencies": ("dependencies",),
    "callback_url": ("callback_url", "callbackUrl", "callbackURL"),
    "owner_access_key": ("owner_access_key",),
}
CONFIG = {
    "mounts": ("mounts",),
    "mount_map": ("mount_map", "mountMap"),
    "environ": ("environ",),
    "scaling_group": ("scaling_group", "scalingGroup"),
    "resources": ("resources",),
    "resource_opts": ("resource_opts", "resourceOpts"),
    "preopen_ports": ("preopen_ports", "preopenPorts"),
    "agent_list": ("agent_list", "agentList"),
}
SAMPLE: dict[str, Any] = {
    "name": "walker",
    "image": "python",
    "architecture": "x86_64",
    "session_type": "batch",
    "group": "default",
    "domain": "default",
    "cluster_size": 1,
    "cluster_mode": "single-node",
    "config": {},
    "tag": "t",
    "enqueue_only": True,
    "max_wait_seconds": 5,
    "starts_at": "10s",
    "reuse_if_exists": False,
    "startup_command": "true",
    "bootstrap_script": "true",
    "dependencies": [],
    "callback_url": "http://example.com/cb",
    "owner_access_key": "AK",
    "mounts": ["data"],
    "mount_map": {"data": "/home/work/d"},
    "environ": {"FOO": "bar"},
    "scaling_group": "default",
    "resources": {"cpu": 1},
    "resource_opts": {"shmem": "64m"},
    "preopen_ports": [8080],
    "agent_list": ["i-local"],
}


def _aliases(model: type[Any]) -> dict[str, tuple[str, ...]]:
    """Each field of a request model and the keys it accepts."""
    found = {}
    for field, info in model.model_fields.items():
        alias = info.validation_alias
        found[field] = tuple(alias.choices) if alias is not None else (field,)  # type: ignore[union-attr]
    return found


@pytest.mark.unit
def test_the_walk_covers_every_key_the_gateway_accepts() -> None:
    """The lists below are the spec's table: a key the request models accept and the walk
    does not know (or the reverse) fails here, so no parameter escapes the walk."""
    assert _aliases(CreateParams) == TOP_LEVEL
    assert _aliases(CreateConfig) == CONFIG


@pytest.mark.unit
@pytest.mark.parametrize(
    ("field", "key"), [(f, k) for f, keys in TOP_LEVEL.items() for k in keys if f != "name"]
)
def test_every_top_level_alias_sets_its_field(field: str, key: str) -> None:
    base = {k: v for k, v in {"name": "walker", "image": "python"}.items() if k != field}
    params = parse(CreateParams, {**base, key: SAMPLE[field]})
    assert getattr(params, field) is not None


@pytest.mark.unit
@pytest.mark.parametrize(("field", "key"), [(f, k) for f, keys in CONFIG.items() for k in keys])
def test_every_config_alias_sets_its_field(field: str, key: str) -> None:
    body = {"name": "walker", "image": "python", "config": {key: SAMPLE[field]}}
    params = parse(CreateParams, body)
    assert params.config is not None and getattr(params.config, field) == SAMPLE[field]


@pytest.mark.unit
def test_an_unknown_key_is_refused_naming_it() -> None:
    with pytest.raises(InvalidAPIParameters, match="clusterSize"):
        parse(CreateParams, {"name": "walker", "image": "python", "config": {"clusterSize": 2}})
    with pytest.raises(InvalidAPIParameters, match="shmem"):
        parse(CreateParams, {"name": "walker", "image": "python", "shmem": "1g"})


# ---- each option's own rules ------------------------------------------------------------------
@pytest.mark.unit
class TestEnviron:
    def test_plain_names_pass(self) -> None:
        assert check_environ({"FOO": "bar", "_lower_9": "", "SP": "a b=c"}) == {
            "FOO": "bar",
            "_lower_9": "",
            "SP": "a b=c",
        }
        assert check_environ({}) is None and check_environ(None) is None

    @pytest.mark.parametrize("name", ["", "A=B", "A\0B", "9A", "A-B", "A.B", "É"])
    def test_a_name_no_environment_can_hold_is_refused(self, name: str) -> None:
        with pytest.raises(InvalidAPIParameters, match=r"config\.environ"):
            check_environ({name: "x"})

    @pytest.mark.parametrize("name", ["BACKENDAI_SESSION_ID", "BACKENDAI_X", "KERNELHUB_AGENT_ID"])
    def test_kernelhubs_own_variables_cannot_be_overridden(self, name: str) -> None:
        with pytest.raises(InvalidAPIParameters, match=f"{name}.*reserved"):
            check_environ({"OK": "1", name: "forged"})

    @pytest.mark.parametrize("value", ["x\0y", "x\nINJECTED=1", "x\ry"])
    def test_a_nul_or_a_line_break_in_a_value_is_refused(self, value: str) -> None:
        with pytest.raises(InvalidAPIParameters, match="NUL or a line break"):
            check_environ({"A": value})


@pytest.mark.unit
class TestShmem:
    def test_asked_then_the_image_label_then_64m(self) -> None:
        label = {"ai.backend.resource.preferred.shmem": "128m"}
        assert resource_opts_of({"shmem": "1g"}, label) == {"shmem": 1024 * M}
        assert resource_opts_of({"shmem": 4096}, label) == {"shmem": 4096}
        assert resource_opts_of({}, label) == {"shmem": 128 * M}
        assert resource_opts_of(None, {}) == {"shmem": DEFAULT_SHMEM} == {"shmem": 64 * M}

    @pytest.mark.parametrize("opts", [{"cpuset": "0"}, {"shmem": "1g", "ulimit": 1}])
    def test_any_other_option_is_refused_naming_it(self, opts: dict[str, Any]) -> None:
        (other,) = set(opts) - {"shmem"}
        with pytest.raises(InvalidAPIParameters, match=f"resource_opts.{other}"):
            resource_opts_of(opts, {})

    @pytest.mark.parametrize("value", ["", "lots", "-1m", 0, -5, True, 1.5, ["1g"], "inf", "0.5"])
    def test_an_ill_formed_size_is_refused(self, value: Any) -> None:
        with pytest.raises(InvalidAPIParameters, match="shmem"):
            resource_opts_of({"shmem": value}, {})

    def test_a_bad_image_label_is_refused_naming_it(self) -> None:
        with pytest.raises(InvalidAPIParameters, match=r"preferred\.shmem"):
            resource_opts_of(None, {"ai.backend.resource.preferred.shmem": "much"})

    def test_it_must_be_less_than_the_memory(self) -> None:
        check_shmem(64 * M, Decimal(65 * M))
        with pytest.raises(InvalidAPIParameters, match=r"Shared memory should be less .*s:1g"):
            check_shmem(1024 * M, Decimal(1024 * M))


@pytest.mark.unit
class TestArchitecture:
    def test_the_images_own_when_none_is_asked(self) -> None:
        assert session_architecture(None, "img", "aarch64") == "aarch64"
        assert session_architecture("", "img", "x86_64") == "x86_64"

    @pytest.mark.parametrize("asked", ["x86_64", "amd64", "X64", " x86_64 "])
    def test_aliases_read_as_upstream(self, asked: str) -> None:
        assert session_architecture(asked, "img", "x86_64") == "x86_64"

    def test_another_architecture_is_not_found_as_upstream(self) -> None:
        with pytest.raises(ImageNotFound, match="registered for x86_64, not aarch64"):
            session_architecture("arm64", "img", "x86_64")


@pytest.mark.unit
class TestAgentList:
    KNOWN = {"i-a", "i-b", "i-c"}

    def test_single_node_names_one_agent_for_every_kernel(self) -> None:
        assert designated_agents(["i-a"], ClusterMode.SINGLE_NODE, 3, self.KNOWN) == ("i-a",) * 3
        with pytest.raises(InvalidAPIParameters, match="only one manually assigned agent"):
            designated_agents(["i-a", "i-b"], ClusterMode.SINGLE_NODE, 2, self.KNOWN)

    def test_multi_node_names_one_distinct_agent_per_kernel(self) -> None:
        agents = designated_agents(["i-b", "i-a"], ClusterMode.MULTI_NODE, 2, self.KNOWN)
        assert agents == ("i-b", "i-a")
        with pytest.raises(InvalidAPIParameters, match="same to the cluster size"):
            designated_agents(["i-a"], ClusterMode.MULTI_NODE, 2, self.KNOWN)
        with pytest.raises(InvalidAPIParameters, match="distinct agents"):
            designated_agents(["i-a", "i-a"], ClusterMode.MULTI_NODE, 2, self.KNOWN)

    def test_an_unknown_agent_is_refused_as_upstream(self) -> None:
        with pytest.raises(InvalidAPIParameters, match=r"^No such agent: i-z$"):
            designated_agents(["i-z"], ClusterMode.SINGLE_NODE, 1, self.KNOWN)

    def test_none_asked_leaves_the_choice_to_the_scheduler(self) -> None:
        assert designated_agents(None, ClusterMode.SINGLE_NODE, 1, self.KNOWN) == ()
        assert designated_agents([], ClusterMode.MULTI_NODE, 2, self.KNOWN) == ()

    def test_the_scheduler_reads_the_agent_the_record_carries(self) -> None:
        """From the read model (which copies ``session_enqueued``'s kernel agents) to the
        spec the placement reads (tests/test_domain_scheduler.py: a designated agent is
        used, or the session stays pending)."""
        kernel = {
            "id": str(uuid.uuid4()),
            "cluster_role": "main",
            "cluster_idx": 1,
            "local_rank": 0,
            "cluster_hostname": "main1",
            "requested_slots": {"cpu": "1", "mem": str(2**30)},
            "image": "img",
            "architecture": "x86_64",
            "role": "COMPUTE",
            "agent": "i-b",
        }
        record = {
            "id": str(uuid.uuid4()),
            "name": "s",
            "access_key": "AK",
            "kernels": {kernel["id"]: kernel},
            "created_ms": 0,
            "type": "interactive",
            "cluster_mode": "single-node",
            "domain": "default",
            "scaling_group": "default",
            "dependencies": [],
            "creation_id": "c",
        }
        assert spec_of(record).main_kernel.agent == "i-b"


@pytest.mark.unit
class TestCallbackUrl:
    @pytest.mark.parametrize(
        "url", ["http://example.com/cb", "https://h:8443/p?q=1", "http://127.0.0.1:9/x"]
    )
    def test_http_urls_with_a_host_pass(self, url: str) -> None:
        assert check_callback_url(url) == url

    @pytest.mark.parametrize(
        "url",
        [
            "ftp://example.com/",
            "file:///etc/passwd",
            "http:///nohost",
            "example.com/cb",
            "http://h:99999/",
            "http://h/ space",
            "http://h/\r\nX-Injected: 1",
            "http://hé/",
            "http://h/" + "a" * 3000,
        ],
    )
    def test_anything_else_is_refused_naming_the_field(self, url: str) -> None:
        with pytest.raises(InvalidAPIParameters, match="callback_url"):
            check_callback_url(url)


@pytest.mark.unit
class TestStartsAt:
    NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def test_a_time_without_a_zone_is_utc(self) -> None:
        assert parse_starts_at("2026-01-02T03:04:05", self.NOW) == datetime(
            2026, 1, 2, 3, 4, 5, tzinfo=UTC
        )

    def test_a_zone_is_kept(self) -> None:
        at = parse_starts_at("2026-01-02T03:04:05+09:00", self.NOW)
        assert at == datetime(2026, 1, 1, 18, 4, 5, tzinfo=UTC)
        assert parse_starts_at("2026-01-02T03:04:05Z", self.NOW).tzinfo is not None

    @pytest.mark.parametrize(
        ("text", "delta"), [("10s", 10), ("30m", 1800), ("1h", 3600), ("1h30m", 5400)]
    )
    def test_relative_durations_count_from_now(self, text: str, delta: int) -> None:
        assert parse_starts_at(text, self.NOW) == self.NOW + timedelta(seconds=delta)

    def test_a_number_is_not_a_string(self) -> None:
        """As 23.03's schema: starts_at is a string (a JSON number is no time)."""
        with pytest.raises(InvalidAPIParameters, match="starts_at"):
            parse(CreateParams, {"name": "walker", "image": "python", "starts_at": 1700000000})
