"""Virtual folders in real kernels, from the session's creation event to the agent's mount
(``actors.agents.vfolder_mounts``): a folder bound read-write is written by the session's
user and what it writes stays on the host; one bound read-only refuses writes (EROFS); and
the agent, root on the host, refuses what a tenant or a forged log entry could make it
bind: a symlink planted as the folder's directory, a host path outside the volume root,
a symlink planted at the mount point in the work dir. The process backend's links too."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors.agents.backends.docker import WORK_UID, DockerBackend
from actors.agents.backends.process import ProcessBackend
from actors.agents.safe_fs import Owner
from actors.agents.vfolder_mounts import MountRefused, docker_mounts, parse_mounts
from actors.domain.commands.sessions import CreateSession, DestroySession, RestartSession
from actors.domain.slots import ResourceSlot
from actors.hosts.local import LocalCluster
from events import RedisEventStore
from kernelhub.testing import BASE_IMAGE, eventually
from projections.mount_queries import live_sessions_mounting

G = 2**30
AGENT = "i-mounts"


def volume(tmp_path: Path) -> Path:
    """A volume root as the storage host makes it: root's, writable by nobody else."""
    root = tmp_path / "vfolders"
    root.mkdir(exist_ok=True)
    root.chmod(0o755)
    return root


def folder(root: Path, files: dict[str, str] | None = None) -> str:
    """A folder's directory (its id the name), as the storage layer creates it."""
    folder_id = uuid.uuid4().hex
    (root / folder_id).mkdir(mode=0o755)
    for name, text in (files or {}).items():
        (root / folder_id / name).write_text(text)
    return folder_id


def mount(
    root: Path, folder_id: str, kernel_path: str, perm: str = "rw", name: str = "data"
) -> dict[str, str]:
    return {
        "name": name,
        "vfid": folder_id,
        "vfsubpath": ".",
        "host_path": str(root / folder_id),
        "kernel_path": kernel_path,
        "mount_perm": perm,
        "usage_mode": "general",
    }


async def create(cluster: LocalCluster, mounts: list[dict[str, str]], **kwargs: Any) -> uuid.UUID:
    sid: uuid.UUID = await cluster.shard.handle(
        CreateSession(
            name=f"m{uuid.uuid4().hex[:6]}",
            access_key="AK1",
            scaling_group="default",
            image=BASE_IMAGE,
            requested=[ResourceSlot(cpu=1, mem=G)],
            mounts=tuple(mounts),
            **kwargs,
        )
    )
    return sid


async def reach(cluster: LocalCluster, sid: uuid.UUID, *statuses: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any]:
        if (await cluster.shard.get(sid)).status.name not in statuses:
            return {}
        record = await cluster.agents[AGENT].models.session(str(sid))
        return record if record is not None and record["status"] in statuses else {}

    return await eventually(reached, timeout=60, message="/".join(statuses))


async def run(cluster: LocalCluster, sid: uuid.UUID, code: str) -> str:
    result = await cluster.execution.execute(sid, None, "query", code)
    console = list(result["console"])
    while result["status"] != "finished":
        result = await cluster.execution.execute(sid, result["runId"], "continue")
        console += result["console"]
    return "".join(data for kind, data in console if kind in ("stdout", "stderr"))


async def refused_with(cluster: LocalCluster, sid: uuid.UUID) -> str:
    record = await reach(cluster, sid, "CANCELLED")
    error = record["status_data"]["error"]
    assert error["name"] == "MountRefused", error
    return str(error["repr"])


_PROBE = """
import errno, os
print(os.environ['KERNELHUB_VFOLDER_MOUNTS'])
print(open('/home/work/data/in.txt').read())
with open('/home/work/data/out.txt', 'w') as out:
    out.write('written in the kernel')
try:
    open('/home/work/ref/x', 'w')
    print('ro: written')
except OSError as exc:
    print('ro:', errno.errorcode[exc.errno])
print(sorted(os.listdir('/home/work/ref')))
os.mkdir('/home/work/deep/nest/mine')
open('/home/work/deep/mine.txt', 'w').write('the parent of a mount point is writable')
print(os.stat('/home/work/deep').st_uid, os.stat('/home/work/data').st_uid)
"""


# ---- docker -----------------------------------------------------------------------------
@pytest.fixture
async def docker_cluster(
    store: RedisEventStore, tmp_path: Path, docker: None
) -> AsyncIterator[LocalCluster]:
    root = volume(tmp_path)
    async with LocalCluster(
        store,
        [(AGENT, {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.5,
        backend=lambda agent_id: DockerBackend(
            tmp_path / agent_id, owner=agent_id, volume_root=root
        ),
        stop_grace_s=1.0,
    ) as local:
        yield local


@pytest.mark.docker
async def test_a_folder_is_bound_rw_or_ro_and_what_the_kernel_writes_stays(
    docker_cluster: LocalCluster, tmp_path: Path, store: RedisEventStore
) -> None:
    root = volume(tmp_path)
    data = folder(root, {"in.txt": "uploaded before"})
    ref = folder(root, {"r.txt": "reference"})
    nest = folder(root)
    sid = await create(
        docker_cluster,
        [
            mount(root, data, "/home/work/data"),
            mount(root, ref, "/home/work/ref", "ro", name="ref"),
            mount(root, nest, "/home/work/deep/nest", name="nest"),
        ],
    )
    await reach(docker_cluster, sid, "RUNNING")
    assert await live_sessions_mounting(store, data) == [str(sid)]
    out = (await run(docker_cluster, sid, _PROBE)).splitlines()
    assert out and out[0] == "/home/work/data,/home/work/ref,/home/work/deep/nest", out
    assert out[1:] == [
        "uploaded before",
        "ro: EROFS",
        "['r.txt']",
        f"{WORK_UID} {WORK_UID}",
    ], out
    assert (root / data / "out.txt").read_text() == "written in the kernel"
    assert (root / data / "out.txt").stat().st_uid == WORK_UID
    assert (root / nest / "mine").is_dir()
    assert not (root / ref / "x").exists() and (root / ref).stat().st_uid == 0
    await docker_cluster.shard.handle(DestroySession(session_id=sid))
    await reach(docker_cluster, sid, "TERMINATED")
    assert await live_sessions_mounting(store, data) == []
    assert (root / data / "out.txt").read_text() == "written in the kernel"  # it outlives it


@pytest.mark.docker
@pytest.mark.hostile
async def test_a_symlink_planted_as_the_folder_directory_is_refused(
    docker_cluster: LocalCluster, tmp_path: Path
) -> None:
    root = volume(tmp_path)
    planted = uuid.uuid4().hex
    (root / planted).symlink_to("/etc")
    sid = await create(docker_cluster, [mount(root, planted, "/home/work/data")])
    assert "symlink" in await refused_with(docker_cluster, sid)
    assert os.stat("/etc").st_uid == 0  # never given to the kernel's user


@pytest.mark.docker
@pytest.mark.hostile
async def test_a_host_path_outside_the_volume_root_is_refused(
    docker_cluster: LocalCluster, tmp_path: Path
) -> None:
    """A log entry the gateway never wrote (another writer's, a forged one) binding the
    host's /etc, or a folder beside the volume root: refused, nothing is mounted."""
    root = volume(tmp_path)
    real = folder(root)
    forged = {**mount(root, real, "/home/work/data"), "host_path": "/etc"}
    sid = await create(docker_cluster, [forged])
    assert "host path" in await refused_with(docker_cluster, sid)
    beside = tmp_path / real
    beside.mkdir()
    sid = await create(docker_cluster, [{**forged, "host_path": str(beside)}])
    assert "host path" in await refused_with(docker_cluster, sid)


@pytest.mark.docker
@pytest.mark.hostile
async def test_a_volume_root_others_may_write_is_refused(
    docker_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Whoever may write the volume root may swap a folder's directory for a link between
    the agent's check and Docker's bind: the agent binds nothing from such a root."""
    root = volume(tmp_path)
    data = folder(root)
    root.chmod(0o777)
    try:
        sid = await create(docker_cluster, [mount(root, data, "/home/work/data")])
        assert "written by others" in await refused_with(docker_cluster, sid)
    finally:
        root.chmod(0o755)


@pytest.mark.docker
@pytest.mark.hostile
async def test_a_restart_mounts_again_and_never_follows_a_link_at_the_mount_point(
    docker_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The work dir outlives a restart, and the session's user owns it: a restart mounts the
    folder again where it was; but once the user has put a link to ``/etc`` where the mount
    point's parent was, the agent (root, making mount points) refuses the name rather than
    make anything through it, and the restart fails."""
    root = volume(tmp_path)
    data = folder(root)
    sid = await create(docker_cluster, [mount(root, data, "/home/work/a/data")])
    await reach(docker_cluster, sid, "RUNNING")
    await run(docker_cluster, sid, "open('/home/work/a/data/one', 'w').write('1')")
    await docker_cluster.shard.handle(RestartSession(session_id=sid))
    await reach(docker_cluster, sid, "RUNNING")
    again = "print(open('/home/work/a/data/one').read())"
    assert await run(docker_cluster, sid, again) == "1\n"
    plant = (
        "import os; os.rename('/home/work/a', '/home/work/old'); os.symlink('/etc', '/home/work/a')"
    )
    await run(docker_cluster, sid, plant)
    link = "import os; print(os.readlink('/home/work/a'))"
    assert await run(docker_cluster, sid, link) == "/etc\n"
    await docker_cluster.shard.handle(RestartSession(session_id=sid))
    record = await reach(docker_cluster, sid, "ERROR")
    assert "symbolic link" in json.dumps(record["status_data"]), record["status_data"]
    assert not await asyncio.to_thread(os.path.lexists, "/etc/data")
    backend = docker_cluster.agents[AGENT].backend
    assert isinstance(backend, DockerBackend)
    (kernel_id,) = backend.known()
    with pytest.raises(MountRefused, match="symbolic link"):  # and the check itself, direct
        docker_mounts(
            root,
            parse_mounts([mount(root, data, "/home/work/a/data")]),
            backend.dirs(kernel_id).work,
            Owner(WORK_UID, WORK_UID),
        )


# ---- process ----------------------------------------------------------------------------
@pytest.fixture
async def process_cluster(store: RedisEventStore, tmp_path: Path) -> AsyncIterator[LocalCluster]:
    root = volume(tmp_path)
    async with LocalCluster(
        store,
        [(AGENT, {"cpu": 4, "mem": 8 * G})],
        safety_tick_s=0.5,
        backend=lambda agent_id: ProcessBackend(tmp_path / agent_id, volume_root=root),
        stop_grace_s=1.0,
    ) as local:
        yield local


@pytest.mark.redis
async def test_the_process_backend_links_folders_into_the_work_dir(
    process_cluster: LocalCluster, tmp_path: Path
) -> None:
    """No isolation there (one trusted user): the folder is a link in the work dir, and a
    ``ro`` folder, which it cannot protect, is named in the kernel log."""
    root = volume(tmp_path)
    data = folder(root, {"in.txt": "uploaded"})
    ref = folder(root)
    sid = await create(
        process_cluster,
        [mount(root, data, "/home/work/sub/data"), mount(root, ref, "/home/work/ref", "ro")],
    )
    await reach(process_cluster, sid, "RUNNING")
    code = (
        "import os; print(open('sub/data/in.txt').read()); "
        "open('sub/data/out.txt', 'w').write('kept'); "
        "print(os.environ['KERNELHUB_VFOLDER_MOUNTS'])"
    )
    out = (await run(process_cluster, sid, code)).splitlines()
    assert out == ["uploaded", "/home/work/sub/data,/home/work/ref"], out
    assert (root / data / "out.txt").read_text() == "kept"
    backend = process_cluster.agents[AGENT].backend
    (kernel_id,) = backend.known()
    assert b"read-only" in await backend.logs(kernel_id)
    planted = uuid.uuid4().hex
    (root / planted).symlink_to(tmp_path)
    sid = await create(process_cluster, [mount(root, planted, "/home/work/x")])
    assert "symlink" in await refused_with(process_cluster, sid)
