"""``kh vfolder`` and the SDK's :class:`~kernelhub.sdk.vfolders.VFolders` against one real
``kh up``: a folder made, files uploaded in several tus chunks and downloaded whole, listed,
shared by invitation, trashed, restored, purged; progress reported to the last byte; and
another user's folder answering as a missing one through every command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from kernelhub.sdk import Client, ClientConfig, NotFound, PermissionDenied
from kernelhub.sdk.vfolders import VFolders

from .khstack import Stack, second_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


class Lab:
    def __init__(self, stack: Stack, bob: dict[str, str]) -> None:
        self.stack, self.bob = stack, bob

    def kh(self, *args: str, **env: str) -> Any:
        done = self.stack.kh("vfolder", *args, "--json", **env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def config(self, keys: dict[str, str] | None = None) -> ClientConfig:
        exports = {**self.stack.exports, **(keys or {})}
        return ClientConfig(
            endpoint=exports["BACKEND_ENDPOINT"],
            access_key=exports["BACKEND_ACCESS_KEY"],
            secret_key=exports["BACKEND_SECRET_KEY"],
        )


@pytest.fixture(scope="module")
def lab(shared_stack: Stack) -> Lab:
    access_key, secret_key = asyncio.run(second_tenant(shared_stack, "bob"))
    return Lab(shared_stack, {"BACKEND_ACCESS_KEY": access_key, "BACKEND_SECRET_KEY": secret_key})


def test_kh_vfolder_keeps_files_between_upload_and_download(lab: Lab, tmp_path: Path) -> None:
    created = lab.kh("create", "data")
    assert created["name"] == "data" and created["ownership_type"] == "user"
    work = lab.stack.workdir
    (work / "small.csv").write_text("a,b\n1,2\n")
    big = os.urandom(9 * 2**20 + 123)  # three PATCH chunks of 4 MiB, the last short
    (work / "big.bin").write_bytes(big)
    (work / "empty").write_bytes(b"")
    assert lab.kh("upload", "data", "small.csv", "big.bin", "empty") == [
        "small.csv",
        "big.bin",
        "empty",
    ]
    listed = {f["name"]: f for f in lab.kh("ls", "data")["items"]}
    assert listed["big.bin"]["size"] == len(big) and listed["empty"]["size"] == 0
    assert lab.kh("info", "data")["numFiles"] == 3
    written = lab.kh("download", "data", "big.bin", "small.csv", "-d", str(tmp_path))
    assert (tmp_path / "big.bin").read_bytes() == big
    assert (tmp_path / "small.csv").read_text() == "a,b\n1,2\n"
    assert sorted(written) == sorted(str(tmp_path / n) for n in ("big.bin", "small.csv"))
    refused = lab.stack.kh("vfolder", "download", "data", "small.csv", "-d", str(tmp_path))
    assert refused.returncode != 0 and "exists" in refused.stderr  # never overwritten silently
    assert not list(tmp_path.glob(".*kh-partial"))


def test_the_sdk_reports_progress_to_the_last_byte(lab: Lab, tmp_path: Path) -> None:
    payload = os.urandom(5 * 2**20)
    source = tmp_path / "up" / "blob.bin"
    source.parent.mkdir()
    source.write_bytes(payload)
    seen: list[tuple[int, int]] = []
    with Client(lab.config()) as client:
        folders = VFolders(client)
        folders.create("sdk-data")
        names = folders.upload(
            "sdk-data", [source], base_dir=source.parent, progress=lambda d, t: seen.append((d, t))
        )
        assert names == ["blob.bin"]
        assert seen[-1] == (len(payload), len(payload))
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        got: list[tuple[int, int]] = []
        (written,) = folders.download(
            "sdk-data",
            ["blob.bin"],
            dest=tmp_path / "down",
            progress=lambda d, t: got.append((d, t)),
        )
        assert written.read_bytes() == payload and got[-1] == (len(payload), len(payload))
        with pytest.raises(Exception, match="not a path inside"):
            folders.download("sdk-data", ["../escape"], dest=tmp_path)


def test_invite_accept_trash_restore_purge(lab: Lab) -> None:
    lab.kh("create", "shared")
    answer = lab.kh("invite", "shared", "bob@kernelhub.local", "-p", "ro")
    assert answer["invited_ids"] == ["bob@kernelhub.local"]
    (invitation,) = lab.kh("invitations", **lab.bob)["items"]
    assert invitation["vfolder_name"] == "shared"
    lab.kh("accept", invitation["id"], **lab.bob)
    mine = {f["name"]: f for f in lab.kh("list", **lab.bob)["items"]}
    assert mine["shared"]["permission"] == "ro" and mine["shared"]["is_owner"] is False
    with Client(lab.config(lab.bob)) as client, pytest.raises(PermissionDenied):
        VFolders(client).rename("shared", "taken")
    lab.kh("delete", "shared")
    assert {f["name"]: f for f in lab.kh("list")["items"]}["shared"]["status"] == "delete-pending"
    lab.kh("restore", "shared")
    lab.kh("delete", "shared")
    unconfirmed = lab.stack.kh("vfolder", "purge", "shared")
    assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr
    lab.kh("purge", "shared", "--yes")
    assert "shared" not in {f["name"] for f in lab.kh("list")["items"]}


def test_another_users_folder_is_not_found_through_kh_and_the_sdk(lab: Lab) -> None:
    lab.kh("create", "admins-only")
    for args in (
        ("info", "admins-only"),
        ("rename", "admins-only", "mine"),
        ("delete", "admins-only"),
        ("ls", "admins-only"),
        ("download", "admins-only", "x"),
    ):
        done = lab.stack.kh("vfolder", *args, **lab.bob)
        assert done.returncode != 0 and "No such virtual folder" in done.stderr, (args, done)
    with Client(lab.config(lab.bob)) as client:
        folders = VFolders(client)
        assert "admins-only" not in {f["name"] for f in folders.list(all=True)}
        with pytest.raises(NotFound):
            folders.info("admins-only")
        with pytest.raises(NotFound):
            folders.upload(
                "admins-only", [lab.stack.workdir / "small.csv"], base_dir=lab.stack.workdir
            )
    assert "admins-only" in {f["name"] for f in lab.kh("list")["items"]}


class CuttingProxy:
    """A TCP relay in front of the gateway that breaks one connection, once, after it has
    carried ``after`` bytes in one direction (``up``: client to gateway, ``down``: back): the
    network failing mid-transfer, for the SDK to resume from."""

    def __init__(self, target: str, direction: str, after: int) -> None:
        host, port = target.removeprefix("http://").rstrip("/").split(":")
        self.target = (host, int(port))
        self.direction, self.after = direction, after
        self.cut = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, way: str) -> None:
            carried = 0
            try:
                while data := await src.read(65536):
                    carried += len(data)
                    if way == self.direction and not self.cut.is_set() and carried > self.after:
                        self.cut.set()
                        dst.write(data[: len(data) // 2])
                        for end in (writer, up_writer):
                            end.transport.abort()
                        return
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, "up"), pipe(up_reader, writer, "down"), return_exceptions=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_transfer_broken_midway_resumes(lab: Lab, tmp_path: Path, direction: str) -> None:
    """The upload asks HEAD for the offset and goes on; the download resumes with Range."""
    payload = os.urandom(6 * 2**20 + 7)
    source = tmp_path / "blob.bin"
    source.write_bytes(payload)
    folder = f"resume-{direction}"
    with Client(lab.config()) as client:
        VFolders(client).create(folder)
        if direction == "down":
            VFolders(client).upload(folder, [source], base_dir=tmp_path)
    proxy = CuttingProxy(lab.stack.exports["BACKEND_ENDPOINT"], direction, after=2 * 2**20)
    try:
        config = lab.config().model_copy(update={"endpoint": proxy.endpoint})
        with Client(config) as client:
            folders = VFolders(client)
            seen: list[int] = []
            if direction == "up":
                folders.upload(
                    folder, [source], base_dir=tmp_path, progress=lambda d, _t: seen.append(d)
                )
                (written,) = folders.download(folder, ["blob.bin"], dest=tmp_path / "back")
            else:
                (written,) = folders.download(
                    folder,
                    ["blob.bin"],
                    dest=tmp_path / "back",
                    progress=lambda d, _t: seen.append(d),
                )
        assert proxy.cut.is_set(), "the connection was never broken: nothing tested"
        assert written.read_bytes() == payload
        # resumed, not started over: the bytes done never went back to the start
        assert seen == sorted(seen) and seen[-1] == len(payload), seen[:5]
    finally:
        proxy.close()
