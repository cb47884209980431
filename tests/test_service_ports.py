"""The ``ai.backend.service-ports`` label parsed as upstream (23.03's ``parse_service_ports``):
every form it takes, every refusal with upstream's message; an image whose label does not
parse is refused at registration; an image already in the log with one offers no apps; the
app list answers the parsed ports."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from actors.domain.commands.tenancy import RegisterImage, SetAlias
from actors.domain.errors import InvalidAPIParameters
from actors.domain.service_ports import (
    RESERVED_PORTS,
    InvalidServiceConfig,
    ServicePort,
    ServicePortProtocol,
    image_service_ports,
    parse_service_ports,
    service_ports_json,
)
from actors.domain.tenancy import TenancyState, decide
from actors.gateway.apps import apps_of, image_apps
from actors.gateway.problems import status_of
from actors.tenancy.writer import TenancyService
from events import RedisEventStore, events_for_command
from events.catalogue import ImageRegistered
from events.secrets import SecretBox
from kernelhub.bootstrap import BASE_IMAGE_LABELS
from projections.models import TenancyProjection
from projections.runtime import Projector
from projections.tenancy_queries import TenancyLookups

TCP, HTTP, PREOPEN = ServicePortProtocol.TCP, ServicePortProtocol.HTTP, ServicePortProtocol.PREOPEN
LABEL = "ai.backend.service-ports"


# ---- the parser, pure ------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize(
    ("label", "parsed"),
    [
        ("", ()),
        ("a:http:1230", (ServicePort("a", HTTP, (1230,)),)),
        ("a:preopen:1230", (ServicePort("a", PREOPEN, (1230,)),)),
        ("a:tcp:[5000,5005]", (ServicePort("a", TCP, (5000, 5005)),)),
        (
            "a:tcp:[1230,1240,9000],x:http:3000,t:http:[5000,5001]",
            (
                ServicePort("a", TCP, (1230, 1240, 9000)),
                ServicePort("x", HTTP, (3000,)),
                ServicePort("t", HTTP, (5000, 5001)),
            ),
        ),
        ("x:pty:1234,y:tcp:1235", (ServicePort("y", TCP, (1235,)),)),  # pty: skipped
        ("x:pty:80", ()),  # a skipped item's ports are not checked, as upstream
        ("jupyter-lab_2:http:8090", (ServicePort("jupyter-lab_2", HTTP, (8090,)),)),
        (
            "a:tcp:1025,b:tcp:65534",
            (ServicePort("a", TCP, (1025,)), ServicePort("b", TCP, (65534,))),
        ),
        ("a:tcp:01234", (ServicePort("a", TCP, (1234,)),)),  # leading zeros: the number
        ("a:tcp:1234,", (ServicePort("a", TCP, (1234,)),)),  # one trailing comma: upstream's regex
    ],
)
def test_every_form_upstream_takes(label: str, parsed: tuple[ServicePort, ...]) -> None:
    assert parse_service_ports(label) == parsed


@pytest.mark.unit
@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("x:unsupported:1234", "Unsupported service port protocol: unsupported"),
        ("x:HTTP:1234", "Unsupported service port protocol: HTTP"),
        ("x:udp:1234", "Unsupported service port protocol: udp"),
        ("x:http:65536", "The service port number 65536 must be smaller than 65535."),
        ("x:http:65535", "The service port number 65535 must be smaller than 65535."),
        (
            "x:http:1000",
            "The service port number 1000 must be larger than 1024 to run without the root "
            "privilege.",
        ),
        (
            "x:http:1024",
            "The service port number 1024 must be larger than 1024 to run without the root "
            "privilege.",
        ),
        ("x:http:-1", "Invalid service-ports format"),
        ("abcdefg", "Invalid service-ports format"),
        ("x:tcp:1234,abcdefg", "Invalid service-ports format"),
        ("abcdefg,x:tcp:1234", "Invalid service-ports format"),
        ("x:tcp:1234, y:tcp:1235", "Invalid service-ports format"),  # no blanks, as upstream
        ("x:tcp:1234,,y:tcp:1235", "Invalid service-ports format"),
        ("x:tcp:[]", "Invalid service-ports format"),
        ("x:tcp:[1234,]", "Invalid service-ports format"),
        ("x::1234", "Invalid service-ports format"),
        (":tcp:1234", "Invalid service-ports format"),
        ("x:tcp:1234:5", "Invalid service-ports format"),
        ("x y:tcp:1234", "Invalid service-ports format"),
        ("x:tcp:1234,y:tcp:1234", "The port 1234 is already used by another service port."),
        ("x:tcp:[5000,5000]", "The port 5000 is already used by another service port."),
        ("x:tcp:[5000,5001],y:http:5001", "The port 5001 is already used by another service port."),
        (
            "y:tcp:7711,x:tcp:2200",
            "The service ports 2000 to 2003, 2200 and 7681 are reserved for internal use.",
        ),
        # kernelhub's own refusals (docs/deviations.md): a name twice, non-ASCII
        ("x:tcp:5000,x:http:5001", "The service name 'x' is already used by another service port."),
        ("x:tcp:\uff11\uff12\uff13\uff14", "Invalid service-ports format"),  # full-width 1234
        ("\u00e9:tcp:1234", "Invalid service-ports format"),
    ],
)
def test_every_refusal_with_upstreams_message(label: str, message: str) -> None:
    with pytest.raises(InvalidServiceConfig) as refused:
        parse_service_ports(label)
    assert refused.value.msg == message
    assert isinstance(refused.value, InvalidAPIParameters)  # a 400 invalid-api-params
    assert status_of(refused.value) == 400 and refused.value.error_type == "invalid-api-params"


@pytest.mark.unit
@pytest.mark.parametrize("port", sorted(RESERVED_PORTS))
def test_each_reserved_port_is_refused(port: int) -> None:
    with pytest.raises(InvalidServiceConfig, match="reserved for internal use"):
        parse_service_ports(f"x:tcp:[3000,{port}]")


@pytest.mark.unit
def test_the_first_fault_decides_the_message_in_upstreams_order() -> None:
    """Upstream checks each port in turn: reuse, then the lower bound, the upper, the
    reserved set; items are read left to right."""
    with pytest.raises(InvalidServiceConfig, match="already used"):
        parse_service_ports("x:tcp:1234,y:tcp:[1234,1000]")
    with pytest.raises(InvalidServiceConfig, match="larger than 1024"):
        parse_service_ports("x:tcp:1234,y:tcp:[1000,1234]")
    with pytest.raises(InvalidServiceConfig, match="Unsupported"):
        parse_service_ports("x:udp:1000,abc")  # the protocol before the ports
    with pytest.raises(InvalidServiceConfig, match="larger than 1024"):
        parse_service_ports("x:tcp:1000,abc")  # an item is checked before the next is read


@pytest.mark.unit
def test_a_port_of_a_thousand_digits_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidServiceConfig) as refused:
        parse_service_ports("x:tcp:" + "9" * 5000)
    assert (
        refused.value.msg == "The service port number 999999999999... must be smaller than 65535."
    )


@pytest.mark.unit
def test_a_long_label_is_read_in_one_pass() -> None:
    """20,000 items (upstream re-slices the rest after each: quadratic)."""
    label = ",".join(f"s{i}:tcp:{10_000 + i}" for i in range(20_000))
    assert len(parse_service_ports(label)) == 20_000


@pytest.mark.unit
def test_endpoint_ports_mark_inference_apps_and_json_has_the_api_shape() -> None:
    ports = image_service_ports(
        {LABEL: "a:preopen:1230,b:http:[5000,5001]", "ai.backend.endpoint-ports": "a"}
    )
    assert [p.is_inference for p in ports] == [True, False]
    assert service_ports_json(ports) == [
        {"name": "a", "protocol": "preopen", "ports": [1230]},
        {"name": "b", "protocol": "http", "ports": [5000, 5001]},
    ]
    assert image_service_ports({}) == ()
    assert ports[1].to_kernel_json() == {
        "name": "b",
        "protocol": "http",
        "container_ports": [5000, 5001],
        "host_ports": [None, None],
        "is_inference": False,
    }


items = st.tuples(
    st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
    st.sampled_from(["tcp", "http", "preopen"]),
    st.lists(
        st.integers(1025, 65534).filter(lambda p: p not in RESERVED_PORTS),
        min_size=1,
        max_size=4,
    ),
)


@pytest.mark.unit
@given(st.lists(items, max_size=6))
def test_a_written_label_parses_back_or_is_refused_for_a_repeat(
    declared: list[tuple[str, str, list[int]]],
) -> None:
    """Any label written in the grammar parses to what was written, unless it repeats a name
    or a port (then refused, naming the repeat)."""
    label = ",".join(
        f"{name}:{proto}:{ports[0] if len(ports) == 1 else '[' + ','.join(map(str, ports)) + ']'}"
        for name, proto, ports in declared
    )
    names = [name for name, _, _ in declared]
    every_port = [p for _, _, ports in declared for p in ports]
    if len(set(names)) < len(names) or len(set(every_port)) < len(every_port):
        with pytest.raises(InvalidServiceConfig, match="already used"):
            parse_service_ports(label)
        return
    parsed = parse_service_ports(label)
    assert [(p.name, str(p.protocol), list(p.ports)) for p in parsed] == [
        (name, proto, ports) for name, proto, ports in declared
    ]


@pytest.mark.unit
@given(st.text(max_size=40))
def test_any_text_parses_or_is_refused_never_crashes(label: str) -> None:
    try:
        parsed = parse_service_ports(label)
    except InvalidServiceConfig:
        return
    for port in parsed:
        assert all(1024 < p < 65535 and p not in RESERVED_PORTS for p in port.ports)


# ---- registration: the catalogue's decision ----------------------------------------------------
@pytest.mark.unit
def test_an_image_with_a_bad_label_is_refused_at_registration_with_the_parsers_message() -> None:
    state = TenancyState()
    bad = ImageRegistered(name="lab/web:1", labels={LABEL: "web:http:2200"})
    with pytest.raises(InvalidServiceConfig, match="reserved for internal use"):
        decide(state, bad)
    good = ImageRegistered(name="lab/web:1", labels={LABEL: "web:http:8080"})
    assert decide(state, good) == [good]
    assert decide(state, ImageRegistered(name="lab/plain:1")) != []  # no label: no apps
    assert image_service_ports(BASE_IMAGE_LABELS) == ()  # the bootstrap's image registers


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox.from_file(tmp_path / "master.key", create=True)


class _Ctx:
    """What :func:`apps_of` reads of the gateway's context: the tenancy lookups."""

    def __init__(self, lookups: TenancyLookups) -> None:
        self.lookups = lookups


@pytest.mark.redis
async def test_registration_refuses_a_bad_label_and_the_app_list_answers_the_parsed_ports(
    store: RedisEventStore, box: SecretBox
) -> None:
    """Through the tenancy writer and the real log: the refused image never reaches the log
    (so never the catalogue); the good one's apps are the parsed ports, then the session's
    pre-opened ones; an image an older kernelhub let into the log with a bad label stays
    usable but offers no apps, with a warning naming it."""
    tenancy = await TenancyService(store, box).load()
    with pytest.raises(InvalidServiceConfig, match="Unsupported service port protocol: udp"):
        await tenancy.handle(RegisterImage(name="lab/bad:1", labels={LABEL: "dns:udp:5353"}))
    await tenancy.handle(
        RegisterImage(name="lab/web:1", labels={LABEL: "web:http:8080,ssh2:tcp:[3022,3023]"})
    )
    await tenancy.handle(SetAlias(alias="web", target="lab/web:1"))
    old = ImageRegistered(name="lab/old:1", labels={LABEL: "jupyter:http:2000"})
    version = tenancy.state.versions.get("image-catalogue", 0)
    await store.append(
        "image-catalogue", events_for_command(uuid.uuid4(), [old], actor="kh 0.x"), version
    )
    logged = [getattr(e.data, "name", None) for e in await store.read_stream("image-catalogue")]
    assert logged == ["lab/web:1", None, "lab/old:1"]  # the alias has no name
    await Projector(store, [TenancyProjection()]).catch_up()
    ctx = _Ctx(TenancyLookups(store))
    assert await ctx.lookups.image("lab/bad:1") is None

    session: dict[str, Any] = {"image": "web", "preopen_ports": [9000]}
    assert await apps_of(ctx, session) == [
        {"name": "web", "protocol": "http", "ports": [8080]},
        {"name": "ssh2", "protocol": "tcp", "ports": [3022, 3023]},
        {"name": "9000", "protocol": "preopen", "ports": [9000]},
    ]
    with capture_logs() as logs:
        assert await apps_of(ctx, {"image": "lab/old:1"}) == []
    (warning,) = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["image"] == "lab/old:1" and "reserved" in warning["error"]
    with capture_logs() as again:  # a tenant asking again and again adds no line
        assert await apps_of(ctx, {"image": "lab/old:1"}) == []
    assert [entry for entry in again if entry["log_level"] == "warning"] == []
    assert await ctx.lookups.image("lab/old:1") is not None  # kept: sessions may run on it


@pytest.mark.unit
def test_image_apps_of_an_image_without_labels_is_empty() -> None:
    assert image_apps({}) == [] and image_apps({"labels": None}) == []
