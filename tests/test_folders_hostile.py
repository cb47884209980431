"""Folder listings against the hostile review of issue 30 (``/tmp`` notes F6): what a
caller lists is what they may use now, judged again from every index entry, on the real
gateway app over real Redis (the fixture of :mod:`tests.test_storage_transfer`)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from actors.domain.commands.tenancy import UpdateKeypair
from actors.gateway.folder_disk import GRAVEYARD, remove_folder_dir
from actors.tenancy.writer import TenancyService
from events.catalogue import VFolderCreated, VFolderShared
from events.secrets import SecretBox
from projections.models import TenancyProjection
from projections.runtime import Projector

from .test_storage_transfer import Gateway, _change, gateway

__all__ = ["gateway"]

pytestmark = [pytest.mark.redis, pytest.mark.hostile, pytest.mark.timeout(120)]


async def test_a_share_row_that_outlived_its_reason_lists_nothing(gateway: Gateway) -> None:
    """Bob was given a user-specific permission on a project's folder and is not (or no
    longer) a member of that project: the share row stays in the read model, but it grants
    nothing (a project folder is for members). Before the fix his listing still named the
    folder, with the folder's default permission, while its info said 404."""
    ctx = gateway.server.app["ctx"]
    project = await ctx.lookups.project_by_name("default", "default")
    folder_id = uuid.uuid4()
    await _change(
        gateway,
        VFolderCreated(
            folder_id=folder_id,
            name="projdata",
            host="local:default",
            domain="default",
            ownership_type="group",
            group=uuid.UUID(str(project["project_id"])),
            creator="admin@kernelhub.local",
        ),
    )
    await _change(
        gateway, VFolderShared(folder_id=folder_id, user_id=gateway.bob.user_id, permission="ro")
    )
    status, listed = await gateway.call(gateway.bob, "GET", "/folders", {"all": False})
    assert status == 200 and "projdata" not in [f["name"] for f in listed], listed
    status, _ = await gateway.call(gateway.bob, "GET", f"/folders/{folder_id.hex}")
    assert status == 404  # one answer: it is not his
    status, listed = await gateway.call(gateway.alice, "GET", "/folders", {"all": False})
    assert "projdata" in [f["name"] for f in listed]  # a member (the admin) sees it


async def test_transfer_requests_count_against_the_keypairs_rate_limit(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Review F11: the transfer routes are unsigned (the token is the credential) and
    skipped the keypair's rate limit, so one token bought an unbounded rate of HEADs, each
    a read-model lookup and a volume thread. Now they count as signed requests do."""
    store = gateway.server.app["ctx"].store
    tenancy = await TenancyService(store, SecretBox.from_file(tmp_path / "master.key")).load()
    await tenancy.handle(UpdateKeypair(access_key=gateway.bob.access_key, rate_limit=6))
    await Projector(store, [TenancyProjection()]).catch_up()
    token, url = await gateway.token(gateway.bob, "bobs", "upload", path="f.bin", size=10)
    statuses = []
    async with aiohttp.ClientSession() as client:
        for _ in range(8):
            async with client.head(
                URL(url).with_query(token=token), headers={"Tus-Resumable": "1.0.0"}
            ) as resp:
                statuses.append(resp.status)
    assert statuses[:5] == [200] * 5 and statuses[-1] == 429, statuses


@pytest.mark.unit
def test_a_purge_removes_a_tree_of_any_depth_and_follows_no_link(tmp_path: Path) -> None:
    """Review F7: a session nested a folder's files 200 directories deep; the purge's
    descriptor walk stopped at 128 levels, the purge was appended anyway and 51 MB stayed on
    the host, named by no folder. Now the directory is renamed out of reach and removed
    whole; a link inside is removed as a link, what it names stays."""
    root = tmp_path / "vfolders"
    folder = root / uuid.uuid4().hex
    deep = folder
    for _ in range(200):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "payload").write_bytes(b"x" * 4096)
    outside = tmp_path / "host-file"
    outside.write_text("keep me")
    (folder / "link").symlink_to(outside)
    (folder / "dirlink").symlink_to(tmp_path)
    assert remove_folder_dir(root, folder.name)
    assert not folder.exists() and os.listdir(root / GRAVEYARD) == []
    assert outside.read_text() == "keep me" and (tmp_path / "vfolders").is_dir()
    assert not remove_folder_dir(root, folder.name)  # a retried purge: nothing left
