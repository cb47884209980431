"""The rules of where a session's folders go (``actors.domain.mount_paths``), played by a
tenant who wants a bind mount somewhere it must not be: over ``/etc``, over the work dir,
over the runner's files, through ``..``, across another mount, or a log entry that grows
without bound. Also the agent's own reading of mounts from the log
(``actors.agents.vfolder_mounts.parse_mounts``), which trusts no writer."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from actors.agents.kernel_env import kernel_environ
from actors.agents.vfolder_mounts import MountRefused, parse_mounts
from actors.domain.errors import InvalidAPIParameters
from actors.domain.mount_paths import (
    MAX_MOUNTS,
    kernel_path_of,
    kernel_paths,
    model_mount_path,
    mount_plan,
    place,
)
from actors.gateway.params import CreateParams, parse
from events.catalogue.session import SessionCreationSpec, VFolderMountSpec

pytestmark = pytest.mark.unit


def paths(mounts: list[str], mount_map: dict[str, str] | None = None) -> list[str]:
    plans = mount_plan(mounts, mount_map)
    return place(plans, [p.ref for p in plans])


def refused(mounts: list[str], mount_map: dict[str, str] | None = None) -> str:
    with pytest.raises(InvalidAPIParameters) as caught:
        paths(mounts, mount_map)
    return str(caught.value)


def test_a_folder_lands_in_the_work_dir_by_its_name_or_where_mapped() -> None:
    assert paths(["data", "out"]) == ["/home/work/data", "/home/work/out"]
    assert paths(["data"], {"data": "/home/work/input/d"}) == ["/home/work/input/d"]
    assert paths(["data"], {"data": "input"}) == ["/home/work/input"]  # 23.03: relative
    assert paths(["data"], {"data": "/home/work/a//b/./c/"}) == ["/home/work/a/b/c"]


def test_a_name_given_twice_is_one_mount() -> None:
    """The official client appends BACKEND_VFOLDER_MOUNTS to -m: a folder in both is sent
    twice, and is one mount."""
    assert paths(["data", "data"]) == ["/home/work/data"]


@pytest.mark.parametrize(
    "alias",
    [
        "/etc",
        "/etc/passwd",
        "/home/work",
        "/home/work/",
        "/home/work/..",
        "/home/work/../x",
        "/home/work/a/../../root",
        "../x",
        "..",
        "a/../..",
        "/home/worker/x",
        "/opt/kernelhub/run",
        "/home/config",
        "/",
        "",
        " ",
        "a:b",
        "a,b",
        "a\nb",
        "a\x00b",
        "/home/work/.logs",
        ".ssh",
        ".bashrc",
        ".profile_x/../.bash_profile",
        "/".join(["d"] * 9),
        "x" * 129,
    ],
)
def test_a_mapped_path_outside_the_work_dir_or_odd_is_refused(alias: str) -> None:
    message = refused(["data"], {"data": alias})
    assert "config.mount_map.data" in message


@pytest.mark.parametrize(
    "name", ["../etc", "data/sub", "data/../other", "/abs", ".hidden", "-x", "a b", "é", "x" * 65]
)
def test_a_name_that_is_no_folder_name_or_a_subpath_is_refused(name: str) -> None:
    assert "config.mounts[0]" in refused([name])


def test_two_mounts_may_not_nest_or_meet() -> None:
    assert "overlaps" in refused(["a", "b"], {"a": "x", "b": "x/y"})
    assert "overlaps" in refused(["a", "b"], {"b": "a/inside"})
    assert "Duplicate alias" in refused(["a", "b"], {"a": "x", "b": "x"})
    assert "overlaps" in refused(["a", "b"], {"a": "x", "b": "/home/work/x"})
    assert "existing folder name" in refused(["a", "b"], {"a": "b"})


def test_a_map_entry_for_a_folder_not_mounted_is_refused_not_ignored() -> None:
    """23.03 ignores it; an option dropped silently runs a session that is not what was asked."""
    assert "config.mount_map.other" in refused(["data"], {"other": "x"})


def test_the_count_is_bounded() -> None:
    assert len(paths([f"f{i}" for i in range(MAX_MOUNTS)])) == MAX_MOUNTS
    assert f"at most {MAX_MOUNTS}" in refused([f"f{i}" for i in range(MAX_MOUNTS + 1)])


def test_the_request_bounds_a_thousand_mounts_and_a_huge_name() -> None:
    """Before any rule runs, the request's own bounds: what a tenant sends never grows
    the gateway's work or the log past them, and the refusal names the field."""
    base: dict[str, Any] = {"name": "s1", "image": "python"}
    for config, field in (
        ({"mounts": [f"f{i}" for i in range(1000)]}, "config.mounts"),
        ({"mounts": ["x" * 10_000]}, "config.mounts.0"),
        ({"mount_map": {"x" * 10_000: "y"}}, "config.mount_map"),
    ):
        with pytest.raises(InvalidAPIParameters) as caught:
            parse(CreateParams, {**base, "config": config})
        assert field in str(caught.value)


def test_a_folder_named_by_id_lands_at_its_name() -> None:
    folder = uuid.uuid4().hex
    plans = mount_plan([folder], None)
    assert place(plans, ["data"]) == ["/home/work/data"]


def test_kernel_path_of_keeps_what_it_makes() -> None:
    made = kernel_path_of("a/b", "x")
    assert kernel_paths([made]) == [made]
    with pytest.raises(InvalidAPIParameters):
        kernel_paths(["/home/work/a/../b"])
    with pytest.raises(InvalidAPIParameters):
        kernel_paths(["/home/work/a", "/home/work/a/b"])


def _mount(**overrides: Any) -> dict[str, Any]:
    vfid = uuid.uuid4().hex
    return {
        "name": "data",
        "vfid": vfid,
        "vfsubpath": ".",
        "host_path": f"/srv/vfolders/{vfid}",
        "kernel_path": "/home/work/data",
        "mount_perm": "rw",
        "usage_mode": "general",
        **overrides,
    }


@pytest.mark.parametrize(
    "overrides",
    [
        {"kernel_path": "/etc"},
        {"kernel_path": "/home/work"},
        {"kernel_path": "/home/work/../../etc"},
        {"kernel_path": "/home/work/.ssh"},
        {"vfid": "../../etc"},
        {"vfid": "ABC"},
        {"mount_perm": "rwx"},
        {"vfsubpath": "../.."},
        {"host_path": None},
    ],
)
def test_the_agent_refuses_a_mount_from_the_log_that_the_gateway_never_wrote(
    overrides: dict[str, Any],
) -> None:
    with pytest.raises(MountRefused):
        parse_mounts([_mount(**overrides)])


def test_the_agent_reads_what_the_gateway_writes() -> None:
    (mount,) = parse_mounts([_mount(mount_perm="ro")])
    assert mount.read_only and mount.parts == ("data",)
    with pytest.raises(MountRefused, match="overlaps"):
        parse_mounts([_mount(), _mount(kernel_path="/home/work/data/x")])


@pytest.mark.parametrize(
    "overrides",
    [
        {"kernel_path": "/models"},  # a general folder, even read-only
        {"kernel_path": "/models", "usage_mode": "model", "mount_perm": "rw"},  # writable
        {"kernel_path": "/etc", "usage_mode": "model", "mount_perm": "ro"},
        {"kernel_path": "/usr/lib/x", "usage_mode": "model", "mount_perm": "ro"},
        {"kernel_path": "/home/other", "usage_mode": "model", "mount_perm": "ro"},
        {"kernel_path": "/", "usage_mode": "model", "mount_perm": "ro"},
        {"kernel_path": "/models/../etc", "usage_mode": "model", "mount_perm": "ro"},
        {"kernel_path": "/models//x", "usage_mode": "model", "mount_perm": "ro"},
    ],
)
def test_only_a_read_only_model_folder_lands_outside_the_work_dir_and_never_on_the_system(
    overrides: dict[str, Any],
) -> None:
    if overrides["kernel_path"] == "/models" and overrides.get("usage_mode") is None:
        overrides = {**overrides, "mount_perm": "ro"}
    with pytest.raises(MountRefused):
        parse_mounts([_mount(**overrides)])


def test_an_inference_replica_mounts_its_model_at_models() -> None:
    (mount,) = parse_mounts([_mount(kernel_path="/models", usage_mode="model", mount_perm="ro")])
    assert mount.read_only and not mount.in_work_dir
    assert model_mount_path("/models/") == "/models"
    assert model_mount_path("/home/work/models") == "/home/work/models"
    for refused in ("models", "/", "/etc/x", "/home/work", "/home/work/.ssh", "/a/../b"):
        with pytest.raises(InvalidAPIParameters, match="model_mount_destination"):
            model_mount_path(refused)


def test_the_log_bounds_a_session_s_mounts() -> None:
    """The catalogue's own bound (64) and shapes: a writer that forgot the gateway's checks
    still cannot append a thousand mounts or a folder id that is a path."""
    spec = {"name": "s", "access_key": "AK", "scaling_group": "default", "kernels": []}
    SessionCreationSpec.model_validate({**spec, "mounts": [_mount()] * 64})
    with pytest.raises(ValueError):
        SessionCreationSpec.model_validate({**spec, "mounts": [_mount()] * 65})
    with pytest.raises(ValueError):
        VFolderMountSpec.model_validate(_mount(vfid="../etc"))
    with pytest.raises(ValueError):
        VFolderMountSpec.model_validate(_mount(vfsubpath="sub"))


def test_the_kernel_environment_names_the_mount_paths() -> None:
    spec = {"name": "s", "kernels": [], "mounts": [_mount(), _mount(kernel_path="/home/work/o")]}
    environ = kernel_environ(uuid.uuid4(), spec, uuid.uuid4(), "i-x")
    assert environ["KERNELHUB_VFOLDER_MOUNTS"] == "/home/work/data,/home/work/o"
    assert (
        kernel_environ(uuid.uuid4(), {"kernels": []}, uuid.uuid4(), "i")["KERNELHUB_VFOLDER_MOUNTS"]
        == ""
    )
