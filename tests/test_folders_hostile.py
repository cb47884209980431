"""Folder listings against the hostile review of issue 30 (``/tmp`` notes F6): what a
caller lists is what they may use now, judged again from every index entry, on the real
gateway app over real Redis (the fixture of :mod:`tests.test_storage_transfer`)."""

from __future__ import annotations

import uuid

import pytest

from events.catalogue import VFolderCreated, VFolderShared

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
