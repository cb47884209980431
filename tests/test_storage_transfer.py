"""The transfer endpoint and the folder file routes, served by the real gateway app
(``make_app``) on 127.0.0.1 against real Redis (the tenancy and vfolder read models folded
by the real projector), driven by the official client (its SDK, whose uploads go through
``aiotusclient``) and by hand-made requests that play the attacker: forged, altered,
expired and misused tokens, uploads past the declared size or the quota, links planted to
lead the host outside the folder, another tenant's folder, a PATCH cut off midway.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from actors.domain.commands.tenancy import CreateUser, IssueKeypair, UpdateKeypair
from actors.domain.commands.vfolders import VFolderCommand
from actors.domain.idle import IdleConfig
from actors.gateway import storage_routes
from actors.gateway.app import make_app
from actors.gateway.auth import Authenticator
from actors.gateway.context import GatewayContext
from actors.gateway.ratelimit import RateLimiter
from actors.gateway.storage_routes import STORAGE, storage_of
from actors.idle.facts import IdleFacts
from actors.sessions.routing import ShardRouter
from actors.tenancy.writer import TenancyService
from actors.vfolders.writer import VFolderService
from events import RedisEventStore
from events.catalogue import VFolderCreated, VFolderShared, VFolderTrashed, VFolderUnshared
from events.secrets import SecretBox
from kernelhub.bootstrap import bootstrap
from kernelhub.sdk._wire import signed_headers
from kernelhub.testing import eventually
from projections.models import TenancyProjection
from projections.queries import ReadModels
from projections.runtime import Projector
from projections.tenancy_queries import TenancyLookups

from .khstack import ROOT

pytestmark = [pytest.mark.redis, pytest.mark.hostile, pytest.mark.timeout(180)]

BAI_PYTHON = ROOT / ".venv-bai" / "bin" / "python"
SECRET = b"the host's secret\n"
TUS = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}


@dataclass
class Tenant:
    access_key: str
    secret_key: str
    user_id: uuid.UUID


@dataclass
class Gateway:
    server: TestServer
    root: Path
    outside: Path
    alice: Tenant
    bob: Tenant
    folders: dict[str, Path]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def call(
        self, tenant: Tenant, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        """A request signed as the official client signs it."""
        data = b"" if body is None else json.dumps(body).encode()
        host = f"127.0.0.1:{self.server.port}"
        headers = signed_headers(
            method, path, host, "application/json", tenant.access_key, tenant.secret_key
        )
        headers["Content-Type"] = "application/json"
        async with (
            aiohttp.ClientSession() as client,
            client.request(method, self.endpoint + path, data=data, headers=headers) as resp,
        ):
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def token(self, tenant: Tenant, folder: str, op: str, **body: Any) -> tuple[str, str]:
        status, answer = await self.call(tenant, "POST", f"/folders/{folder}/request-{op}", body)
        assert status == 200, answer
        return answer["token"], answer["url"]


async def _folder(
    store: RedisEventStore, root: Path, owner: Tenant, name: str, max_size: int = 0
) -> Path:
    folder_id = uuid.uuid4()
    writer = await VFolderService(store).load()
    await writer.handle(
        VFolderCommand(
            event=VFolderCreated(
                folder_id=folder_id,
                name=name,
                host="local:default",
                domain="default",
                ownership_type="user",
                user=owner.user_id,
                creator=f"{name}@kernelhub.local",
                max_size=max_size,
            )
        )
    )
    path = root / folder_id.hex
    path.mkdir()
    if os.geteuid() == 0:
        os.chown(path, 1000, 1000)
    return path


@pytest.fixture
async def gateway(store: RedisEventStore, tmp_path: Path) -> AsyncIterator[Gateway]:
    box = SecretBox.from_file(tmp_path / "master.key", create=True)
    boot = await bootstrap(store, box)
    alice = Tenant(boot.access_key, boot.secret_key, boot.user_id)
    tenancy = await TenancyService(store, box).load()
    bob_id = await tenancy.handle(
        CreateUser(username="bob", email="bob@kernelhub.local", domain="default")
    )
    bob_ak, bob_sk = await tenancy.handle(IssueKeypair(user_id=bob_id))
    bob = Tenant(bob_ak, bob_sk, bob_id)
    root = tmp_path / "vfolders"
    root.mkdir()
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    folders = {
        "data": await _folder(store, root, alice, "data"),
        "small": await _folder(store, root, alice, "small", max_size=1000),
        "bobs": await _folder(store, root, bob, "bobs"),
    }
    await Projector(store, [TenancyProjection()]).catch_up()
    lookups = TenancyLookups(store)
    ctx = GatewayContext(
        store=store,
        router=ShardRouter.named(store, 1, f"test-{uuid.uuid4().hex[:8]}"),
        auth=Authenticator(lookups, box),
        models=ReadModels(store),
        lookups=lookups,
        rate_limiter=RateLimiter(store.rate_limits),
        idle=IdleFacts(store, IdleConfig.parse({})),
        vfolder_root=root,
    )
    server = TestServer(make_app(ctx), host="127.0.0.1")
    await server.start_server()
    try:
        yield Gateway(server, root, outside, alice, bob, folders)
    finally:
        await server.close()


def _outside_intact(gw: Gateway) -> None:
    assert sorted(os.listdir(gw.outside)) == ["secret"]
    assert (gw.outside / "secret").read_bytes() == SECRET


async def _patch(url: str, token: str, offset: int, data: bytes, **headers: str) -> Any:
    async with (
        aiohttp.ClientSession() as client,
        client.patch(
            URL(url).with_query(token=token),
            data=data,
            headers={**TUS, "Upload-Offset": str(offset), **headers},
        ) as resp,
    ):
        return resp.status, resp.headers.get("Upload-Offset"), await resp.text()


async def _head(url: str, token: str) -> tuple[int, str | None]:
    async with (
        aiohttp.ClientSession() as client,
        client.head(URL(url).with_query(token=token), headers=TUS) as resp,
    ):
        return resp.status, resp.headers.get("Upload-Offset")


# --- the official client ----------------------------------------------------------------

SDK_SCRIPT = """
import json, sys
from pathlib import Path
from ai.backend.client.session import Session

base, out = Path(sys.argv[1]), Path(sys.argv[2])
with Session() as s:
    f = s.VFolder("data")
    f.upload(["big.bin", "empty.txt", "nested/n.txt"], basedir=base, chunk_size=1 << 20)
    f.mkdir("sub/deeper", parents=True)
    f.move_file("big.bin", "sub")
    f.rename_file("sub/big.bin", "renamed.bin")
    listing = f.list_files("sub")
    f.download(["sub/renamed.bin", "empty.txt", "nested/n.txt"], basedir=out)
    f.delete_files(["empty.txt"])
    print(json.dumps({"listing": listing, "root": f.list_files(".")}))
"""


async def _official(gw: Gateway, tenant: Tenant, *args: str, cwd: Path) -> tuple[int, str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "BACKEND_ENDPOINT": gw.endpoint,
        "BACKEND_ENDPOINT_TYPE": "api",
        "BACKEND_ACCESS_KEY": tenant.access_key,
        "BACKEND_SECRET_KEY": tenant.secret_key,
    }
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 150)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.e2e
async def test_the_official_client_uploads_lists_moves_and_downloads(
    gateway: Gateway, tmp_path: Path
) -> None:
    if not BAI_PYTHON.exists():
        pytest.skip("the official client's venv (.venv-bai) is not installed")
    base, out = tmp_path / "src", tmp_path / "out"
    (base / "nested").mkdir(parents=True)
    (out / "sub").mkdir(parents=True)
    (out / "nested").mkdir()
    big = os.urandom(3 * 2**20 + 123)  # four PATCHes of 1 MiB
    (base / "big.bin").write_bytes(big)
    (base / "empty.txt").write_bytes(b"")  # no PATCH at all: request-upload makes it
    (base / "nested" / "n.txt").write_bytes(b"nested\n")
    code, stdout, stderr = await _official(
        gateway, gateway.alice, str(BAI_PYTHON), "-c", SDK_SCRIPT, str(base), str(out), cwd=tmp_path
    )
    assert code == 0, (stdout, stderr)
    result = json.loads(stdout.strip().splitlines()[-1])
    listed = {item["name"]: item for item in result["listing"]["items"]}
    assert listed["renamed.bin"]["size"] == len(big) and listed["deeper"]["type"] == "DIRECTORY"
    legacy = {f["filename"] for f in json.loads(result["listing"]["files"])}
    assert legacy == {"renamed.bin", "deeper"}
    assert {i["name"] for i in result["root"]["items"]} == {"sub", "nested"}
    assert (out / "sub" / "renamed.bin").read_bytes() == big
    assert (out / "empty.txt").read_bytes() == b""
    assert (out / "nested" / "n.txt").read_bytes() == b"nested\n"
    folder = gateway.folders["data"]
    assert (folder / "sub" / "renamed.bin").read_bytes() == big
    assert not (folder / "empty.txt").exists()
    staged = os.listdir(gateway.root / ".kh-staging" / folder.name)
    assert all(name.endswith(".done") for name in staged)  # nothing left half-uploaded
    # the CLI's ``vfolder ls`` prints the legacy listing
    cli = str(BAI_PYTHON.parent / "backend.ai")
    code, stdout, stderr = await _official(
        gateway, gateway.alice, cli, "vfolder", "ls", "data", "sub", cwd=tmp_path
    )
    assert code == 0 and "renamed.bin" in stdout, (stdout, stderr)


# --- tokens -----------------------------------------------------------------------------


async def test_forged_altered_expired_and_misused_tokens_are_refused(gateway: Gateway) -> None:
    token, url = await gateway.token(gateway.alice, "data", "upload", path="a.txt", size=4)
    assert url == f"{gateway.endpoint}/storage/upload"
    version, body, mac = token.split(".")
    bob_token, _ = await gateway.token(gateway.bob, "bobs", "upload", path="a.txt", size=4)
    spliced = f"{version}.{bob_token.split('.')[1]}.{mac}"  # bob's claims, alice's MAC
    forged = f"{version}.{body}.{'A' * len(mac)}"
    for bad in (spliced, forged, token + "x", "", "v1." + "a" * 9000):
        status, _, text = await _patch(url, bad, 0, b"data")
        assert status == 400, text
    storage = storage_of(gateway.server.app)
    expired, _ = storage.signer.issue(
        "upload",
        folder=uuid.UUID(gateway.folders["data"].name),
        path="a.txt",
        user=gateway.alice.user_id,
        access_key=gateway.alice.access_key,
        size=4,
        ttl_s=-1,
    )
    status, _, text = await _patch(url, expired, 0, b"data")
    assert status == 400 and "expired" in text
    download, durl = await _token_download(gateway)
    status, _, text = await _patch(url, download, 0, b"data")  # a download token uploads nothing
    assert status == 400 and "download" in text
    async with aiohttp.ClientSession() as client:
        async with client.get(URL(durl).with_query(token=token)) as resp:
            assert resp.status == 400  # nor does an upload token download
        async with client.get(URL(durl).with_query(token=download, dst_dir="/etc")) as resp:
            assert resp.status == 400 and "dst_dir" in await resp.text()
    # a token issued to alice for bob's folder is refused: she may not see it
    stolen, _ = storage.signer.issue(
        "upload",
        folder=uuid.UUID(gateway.folders["bobs"].name),
        path="planted",
        user=gateway.alice.user_id,
        access_key=gateway.alice.access_key,
        size=4,
    )
    status, _, text = await _patch(url, stolen, 0, b"evil")
    assert status == 404, text
    # and a token claiming alice's user under bob's keypair is not bob's folder key either
    mixed, _ = storage.signer.issue(
        "upload",
        folder=uuid.UUID(gateway.folders["bobs"].name),
        path="planted",
        user=gateway.alice.user_id,
        access_key=gateway.bob.access_key,
        size=4,
    )
    status, _, _ = await _patch(url, mixed, 0, b"evil")
    assert status == 400
    assert not (gateway.folders["bobs"] / "planted").exists()
    status, offset, _ = await _patch(url, token, 0, b"data")  # the genuine one works
    assert (status, offset) == (204, "4")
    assert (gateway.folders["data"] / "a.txt").read_bytes() == b"data"


async def _token_download(gateway: Gateway) -> tuple[str, str]:
    (gateway.folders["data"] / "d.txt").write_bytes(b"download me")
    return await gateway.token(gateway.alice, "data", "download", path="d.txt")


async def test_another_tenants_folder_is_not_found_on_every_file_route(gateway: Gateway) -> None:
    (gateway.folders["data"] / "mine.txt").write_bytes(b"alice's")
    for method, route, body in (
        ("GET", "files", {"path": "."}),
        ("POST", "mkdir", {"path": "x"}),
        ("DELETE", "delete-files", {"files": ["mine.txt"]}),
        ("POST", "rename-file", {"target_path": "mine.txt", "new_name": "y"}),
        ("POST", "move-file", {"src": "mine.txt", "dst": "z"}),
        ("POST", "request-upload", {"path": "p", "size": 1}),
        ("POST", "request-download", {"path": "mine.txt"}),
    ):
        status, answer = await gateway.call(gateway.bob, method, f"/folders/data/{route}", body)
        assert status == 404 and answer["title"] == "No such virtual folder.", (route, answer)
    assert sorted(os.listdir(gateway.folders["data"])) == ["mine.txt"]


# --- quota, declared size, resume --------------------------------------------------------


async def test_an_upload_past_its_size_or_the_quota_is_refused_and_nothing_lands(
    gateway: Gateway,
) -> None:
    status, answer = await gateway.call(
        gateway.alice, "POST", "/folders/small/request-upload", {"path": "big", "size": 2000}
    )
    assert status == 412 and answer["type"].endswith("/quota-exceeded"), answer
    token, url = await gateway.token(gateway.alice, "small", "upload", path="f", size=800)
    status, _, _ = await _patch(url, token, 0, b"x" * 900)  # more than declared
    assert status == 413
    status, offset, _ = await _patch(url, token, 0, b"x" * 400)
    assert (status, offset) == (204, "400")
    # the unfinished upload holds its declared 800 bytes: 300 more do not fit in 1000
    status, answer = await gateway.call(
        gateway.alice, "POST", "/folders/small/request-upload", {"path": "g", "size": 300}
    )
    assert status == 412, answer
    status, offset, _ = await _patch(url, token, 400, b"y" * 400)
    assert (status, offset) == (204, "800")
    assert (gateway.folders["small"] / "f").read_bytes() == b"x" * 400 + b"y" * 400
    status, answer = await gateway.call(
        gateway.alice, "POST", "/folders/small/request-upload", {"path": "g", "size": 201}
    )
    assert status == 412, answer
    assert sorted(os.listdir(gateway.folders["small"])) == ["f"]
    storage = storage_of(gateway.server.app)
    small = uuid.UUID(gateway.folders["small"].name)
    usage = await storage.usage(small, gateway.folders["small"])
    assert (usage.bytes, usage.files, usage.complete) == (800, 1, True)
    # a purged folder's unfinished uploads go with it
    token, url = await gateway.token(gateway.alice, "small", "upload", path="h", size=100)
    assert (await _patch(url, token, 0, b"z" * 50))[:2] == (204, "50")
    await storage.forget(small)
    assert not (gateway.root / ".kh-staging" / small.hex).exists()


async def test_a_patch_cut_off_midway_resumes_from_what_arrived(gateway: Gateway) -> None:
    data = os.urandom(200_000)
    token, url = await gateway.token(gateway.alice, "data", "upload", path="r.bin", size=len(data))
    target = URL(url).with_query(token=token)
    _, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
    head = (
        f"PATCH {target.path_qs} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    writer.write(head.encode() + data[:70_000])
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()  # the connection drops with 130 000 bytes unsent
    await writer.wait_closed()

    async def arrived() -> int:
        for _ in range(100):
            status, offset = await _head(url, token)
            assert status == 200
            if offset is not None and int(offset) > 0:
                return int(offset)
            await asyncio.sleep(0.05)
        raise AssertionError("nothing was staged")

    offset = await arrived()
    assert 0 < offset <= 70_000
    assert not (gateway.folders["data"] / "r.bin").exists()  # staged outside the folder
    status, _, _ = await _patch(url, token, 0, data)  # the wrong offset
    assert status == 409
    status, done, _ = await _patch(url, token, offset, data[offset:])
    assert (status, done) == (204, str(len(data)))
    assert (gateway.folders["data"] / "r.bin").read_bytes() == data


async def test_a_download_resumes_with_range_and_if_range(gateway: Gateway) -> None:
    content = os.urandom(50_000)
    (gateway.folders["data"] / "dl.bin").write_bytes(content)
    token, url = await gateway.token(gateway.alice, "data", "download", path="dl.bin")
    target = URL(url).with_query(token=token)
    async with aiohttp.ClientSession() as client:
        async with client.get(target) as resp:
            assert resp.status == 200 and await resp.read() == content
            last_modified = resp.headers["Last-Modified"]
            assert int(resp.headers["Content-Length"]) == len(content)
        ranged = {"Range": "bytes=20000-", "If-Range": last_modified}
        async with client.get(target, headers=ranged) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 20000-49999/{len(content)}"
            assert await resp.read() == content[20000:]
        stale = email.utils.formatdate(0, usegmt=True)
        async with client.get(target, headers={**ranged, "If-Range": stale}) as resp:
            assert resp.status == 200 and await resp.read() == content  # changed: all of it
        async with client.get(target, headers={"Range": "bytes=60000-"}) as resp:
            assert resp.status == 416


# --- links and FIFOs a session left in the folder ----------------------------------------


async def test_links_in_the_folder_never_lead_a_route_outside(gateway: Gateway) -> None:
    folder, outside = gateway.folders["data"], gateway.outside
    (folder / "to-secret").symlink_to(outside / "secret")
    (folder / "to-host").symlink_to(outside)
    os.mkfifo(folder / "pipe")
    alice = gateway.alice
    for method, route, body in (
        ("GET", "files", {"path": "to-host"}),
        ("POST", "mkdir", {"path": "to-host/planted", "parents": True}),
        ("DELETE", "delete-files", {"files": ["to-host/secret"]}),
        ("POST", "rename-file", {"target_path": "to-host/secret", "new_name": "x"}),
        ("POST", "move-file", {"src": "to-host/secret", "dst": "stolen"}),
        ("POST", "move-file", {"src": "pipe", "dst": "to-host/pipe"}),
        ("POST", "request-download", {"path": "to-secret"}),
        ("POST", "request-download", {"path": "to-host/secret"}),
        ("POST", "request-download", {"path": "pipe"}),
        ("POST", "request-download", {"path": "../host/secret"}),
        ("POST", "request-upload", {"path": "/etc/passwd", "size": 1}),
        ("GET", "files", {"path": "../.."}),
    ):
        status, answer = await asyncio.wait_for(
            gateway.call(alice, method, f"/folders/data/{route}", body), 10
        )
        assert status == 400, (route, body, answer)
    _outside_intact(gateway)
    # an upload whose path runs through a link is refused at once ...
    for path in ("to-host/planted", "to-host/new/deeper"):
        status, answer = await gateway.call(
            alice, "POST", "/folders/data/request-upload", {"path": path, "size": 4}
        )
        assert status == 400, answer
    # ... and where it would land, when the link is planted after the token was issued
    token, url = await gateway.token(alice, "data", "upload", path="later-dir/planted", size=4)
    (folder / "later-dir").symlink_to(outside)
    status, _, text = await _patch(url, token, 0, b"evil")
    assert status == 400, text
    # a link as the last name is replaced by the upload, never written through
    token, url = await gateway.token(alice, "data", "upload", path="to-secret", size=4)
    assert (await _patch(url, token, 0, b"mine"))[0] == 204
    assert (folder / "to-secret").read_bytes() == b"mine" and not (
        folder / "to-secret"
    ).is_symlink()
    # a link swapped in after request-download is refused at the GET
    (folder / "later").write_bytes(b"fine")
    token, url = await gateway.token(alice, "data", "download", path="later")
    (folder / "later").unlink()
    (folder / "later").symlink_to(outside / "secret")
    async with aiohttp.ClientSession() as client:
        async with client.get(URL(url).with_query(token=token)) as resp:
            assert resp.status == 400 and SECRET not in await resp.read()
    status, answer = await gateway.call(alice, "GET", "/folders/data/files", {"path": "."})
    kinds = {item["name"]: item["type"] for item in answer["items"]}
    assert kinds["to-host"] == "SYMLINK"
    _outside_intact(gateway)


async def test_the_tus_options_answer_and_public_routes_need_their_token(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.options(f"{gateway.endpoint}/storage/upload") as resp:
            assert resp.status == 204 and resp.headers["Tus-Version"] == "1.0.0"
        async with client.patch(f"{gateway.endpoint}/storage/upload", headers=TUS) as resp:
            assert resp.status == 400  # no token: refused by the route, not by a signature
    assert STORAGE in gateway.server.app


async def _change(gateway: Gateway, event: Any) -> None:
    store: RedisEventStore = gateway.server.app["ctx"].store
    writer = await VFolderService(store).load()
    await writer.handle(VFolderCommand(event=event))
    await Projector(store, [TenancyProjection()]).catch_up()


async def test_a_withdrawn_share_or_a_trashed_folder_stops_a_token_at_its_next_request(
    gateway: Gateway,
) -> None:
    data = uuid.UUID(gateway.folders["data"].name)
    (gateway.folders["data"] / "shared.txt").write_bytes(b"for bob, for a while")
    await _change(
        gateway, VFolderShared(folder_id=data, user_id=gateway.bob.user_id, permission="ro")
    )
    token, url = await gateway.token(gateway.bob, str(data), "download", path="shared.txt")
    status, answer = await gateway.call(
        gateway.bob, "POST", f"/folders/{data}/request-upload", {"path": "x", "size": 1}
    )
    assert status == 403, answer  # read-only: no upload token at all
    async with aiohttp.ClientSession() as client:
        async with client.get(URL(url).with_query(token=token)) as resp:
            assert resp.status == 200 and await resp.read() == b"for bob, for a while"
        await _change(gateway, VFolderUnshared(folder_id=data, user_ids=[gateway.bob.user_id]))
        async with client.get(URL(url).with_query(token=token)) as resp:
            assert resp.status == 404  # the token outlived the share: refused all the same
    upload, uurl = await gateway.token(gateway.alice, "data", "upload", path="late", size=2)
    await _change(gateway, VFolderTrashed(folder_id=data))
    status, _, text = await _patch(uurl, upload, 0, b"no")
    assert status == 400 and "trash" in text
    assert not (gateway.folders["data"] / "late").exists()


@pytest.mark.bench_smoke
def test_the_transfer_bench_prints_its_figures() -> None:
    if not BAI_PYTHON.exists():
        pytest.skip("the official client's venv (.venv-bai) is not installed")
    result = subprocess.run(
        [sys.executable, "bench/vfolder_transfer.py", "--mib", "2", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("upload_mib_s", "download_mib_s", "copy_mib_s", "upload_ratio", "machine"):
        assert key in figures


JUNK_VALUES: list[Any] = [
    None, 0, -1, 2**70, 1.5, True, "", ".", "..", "/", "a" * 5000, "\u0000", ["x"] * 60,
    [[["deep"]]], {"k": "v"}, [], "日本/語", "a/../b", "./x/",
]  # fmt: skip


async def _raw(gateway: Gateway, method: str, path: str, data: bytes) -> int:
    host = f"127.0.0.1:{gateway.server.port}"
    alice = gateway.alice
    headers = signed_headers(
        method, path, host, "application/json", alice.access_key, alice.secret_key
    )
    headers["Content-Type"] = "application/json"
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, gateway.endpoint + path, data=data, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status


async def test_malformed_bodies_and_headers_get_4xx_never_5xx(gateway: Gateway) -> None:
    (gateway.folders["data"] / "f.txt").write_bytes(b"x")
    routes = {
        ("GET", "files"): ("path",),
        ("POST", "mkdir"): ("path", "parents", "exist_ok"),
        ("DELETE", "delete-files"): ("files", "recursive"),
        ("POST", "rename-file"): ("target_path", "new_name"),
        ("POST", "move-file"): ("src", "dst"),
        ("POST", "request-upload"): ("path", "size"),
        ("POST", "request-download"): ("path", "archive"),
    }
    seen: set[int] = set()
    for (method, route), fields in routes.items():
        path = f"/folders/data/{route}"
        for raw in (b"[1]", b"{", b'{"path": NaN}', b'"x"', b'{"unknown": 1}'):
            status = await _raw(gateway, method, path, raw)
            assert 400 <= status < 500, (route, raw, status)
        for field in fields:
            for junk in JUNK_VALUES:
                body = {f: "ok.txt" for f in fields} | {field: junk}
                status, answer = await gateway.call(gateway.alice, method, path, body)
                assert status < 500, (route, field, junk, answer)
                seen.add(status)
    assert seen & {400, 404}
    token, url = await gateway.token(gateway.alice, "data", "upload", path="u", size=3)
    for headers in (
        {"Upload-Offset": "-1"},
        {"Upload-Offset": "1e3"},
        {"Upload-Offset": "9" * 30},
        {"Tus-Resumable": "0.2.2"},
        {"Content-Type": "text/plain"},
        {"Upload-Checksum": "sha1 AAAA"},
    ):
        status, _, text = await _patch(url, token, 0, b"abc", **headers)
        assert 400 <= status < 500, (headers, status, text)
    token, url = await gateway.token(gateway.alice, "data", "download", path="f.txt")
    async with aiohttp.ClientSession() as client:
        for ranged in ("bytes=5-2", "bytes=-5", "bytes=0-1,3-4", "items=0-", "bytes=" + "9" * 30):
            async with client.get(
                URL(url).with_query(token=token), headers={"Range": ranged}
            ) as resp:
                assert resp.status in (200, 206, 416), (ranged, resp.status)


async def test_a_deactivated_keypairs_tokens_stop_working(gateway: Gateway, tmp_path: Path) -> None:
    token, url = await gateway.token(gateway.bob, "bobs", "upload", path="b", size=4)
    assert (await _patch(url, token, 0, b"bo"))[:2] == (204, "2")
    store: RedisEventStore = gateway.server.app["ctx"].store
    box = SecretBox.from_file(tmp_path / "master.key")
    tenancy = await TenancyService(store, box).load()
    await tenancy.handle(UpdateKeypair(access_key=gateway.bob.access_key, is_active=False))
    await Projector(store, [TenancyProjection()]).catch_up()
    for _ in range(100):  # the gateway's revocation follower reads it from the log
        if (await _head(url, token))[0] != 200:
            break
        await asyncio.sleep(0.05)
    status, _, text = await _patch(url, token, 2, b"b!")
    assert status == 400 and "no longer active" in text, text
    assert not (gateway.folders["bobs"] / "b").exists()


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as file:
        file.truncate(size)


@pytest.mark.hostile
async def test_a_download_under_way_ends_when_the_share_is_withdrawn(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review F5: bob, shared a folder read-only, reads a large file slowly; alice
    withdraws the share. Before, the stream went on to the last byte (a read channel for
    ever, on a live file); now it ends within a re-check (shortened here), short of its
    Content-Length."""
    monkeypatch.setattr(storage_routes, "RECHECK_S", 0.2)
    data = uuid.UUID(gateway.folders["data"].name)
    _sparse(gateway.folders["data"] / "big.bin", 256 << 20)  # costs no disk
    await _change(
        gateway, VFolderShared(folder_id=data, user_id=gateway.bob.user_id, permission="ro")
    )
    token, url = await gateway.token(gateway.bob, str(data), "download", path="big.bin")
    received = 0
    async with aiohttp.ClientSession() as client:
        async with client.get(URL(url).with_query(token=token)) as resp:
            assert resp.status == 200 and resp.content_length == 256 << 20
            received += len(await resp.content.readexactly(1 << 20))
            await _change(gateway, VFolderUnshared(folder_id=data, user_ids=[gateway.bob.user_id]))
            with pytest.raises(aiohttp.ClientPayloadError):
                while chunk := await resp.content.read(1 << 16):
                    received += len(chunk)
                    await asyncio.sleep(0.001)
    assert received < 256 << 20
    assert storage_of(gateway.server.app).limits.held(gateway.bob.access_key) == 0


@pytest.mark.hostile
async def test_a_client_that_stops_reading_gives_its_transfer_slot_back(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review F9: a download whose client never reads held one of the gateway's transfer
    slots for as long as it kept the socket (8 such clients per keypair, 64 in all, denied
    every tenant's transfers). Now a write that waits longer than the write timeout (made
    short here) ends the response and the slot comes back."""
    monkeypatch.setattr(storage_routes, "WRITE_TIMEOUT_S", 0.5)
    _sparse(gateway.folders["data"] / "big.bin", 256 << 20)
    token, url = await gateway.token(gateway.alice, "data", "download", path="big.bin")
    limits = storage_of(gateway.server.app).limits
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector, read_bufsize=1 << 10) as client,
        client.get(URL(url).with_query(token=token)) as resp,
    ):
        assert resp.status == 200
        assert limits.held(gateway.alice.access_key) == 1
        # read nothing: the server's socket buffers fill, its writes wait, then give up
        await eventually(
            lambda: limits.held(gateway.alice.access_key) == 0, timeout=20, message="slot back"
        )
        assert limits.held(gateway.alice.access_key) == 0
