"""Virtual folders' model: the pure rules (names, lifecycle, who may do what), the single
writer against real Redis (one stream per folder, retries answered from the log), and the
read model the gateway resolves folders from."""

from __future__ import annotations

import uuid

import pytest

from actors.domain.commands.vfolders import VFolderCommand
from actors.domain.errors import (
    GenericForbidden,
    InvalidAPIParameters,
    QuotaExceeded,
    VFolderAlreadyExists,
    VFolderNotFound,
    VFolderOperationFailed,
)
from actors.domain.vfolders import (
    ALL_HOST_PERMISSIONS,
    VFolderState,
    check_name,
    decide,
    host_permissions,
    may_manage,
    permission_of,
)
from actors.vfolders.writer import VFolderService
from events import RedisEventStore
from events.catalogue import (
    VFolderCreated,
    VFolderInvitationAnswered,
    VFolderInvited,
    VFolderPurged,
    VFolderRenamed,
    VFolderRestored,
    VFolderShared,
    VFolderTrashed,
    VFolderUnshared,
)
from projections.models import TenancyProjection
from projections.runtime import Projector
from projections.vfolder_queries import VFolderLookups

ALICE, BOB, CAROL = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
LAB = uuid.uuid4()


def _created(name: str = "data", *, user: uuid.UUID | None = ALICE, **kw: object) -> VFolderCreated:
    fields: dict[str, object] = {
        "folder_id": uuid.uuid4(),
        "name": name,
        "host": "local:default",
        "domain": "default",
        "ownership_type": "user" if user is not None else "group",
        "user": user,
        "creator": "alice@x.org",
        **kw,
    }
    return VFolderCreated.model_validate(fields)


def _fold(state: VFolderState, *events: object) -> None:
    for event in events:
        for appended in decide(state, event):  # type: ignore[arg-type]
            folder = state.folders.get(appended.folder_id)  # type: ignore[union-attr]
            state.apply((0 if folder is None else folder.version) + 1, appended)


@pytest.mark.unit
def test_names_are_slugs_and_unique_within_their_owner() -> None:
    for bad in ("", ".hidden", "-x", "a/b", "..", "x" * 65, "spa ce", "é"):
        with pytest.raises(InvalidAPIParameters):
            check_name(bad)
    state = VFolderState()
    first = _created("data")
    _fold(state, first)
    with pytest.raises(VFolderAlreadyExists):
        decide(state, _created("data"))
    assert decide(state, _created("data", user=BOB))  # another owner: free
    assert decide(state, first) == []  # the same id again: a retried create
    other = _created("other")
    _fold(state, other)
    with pytest.raises(VFolderAlreadyExists):
        decide(state, VFolderRenamed(folder_id=other.folder_id, name="data"))
    with pytest.raises(QuotaExceeded):
        decide(state, _created("third"), max_count=2)


@pytest.mark.unit
def test_delete_goes_to_the_trash_then_purge_and_the_name_is_free_again() -> None:
    state = VFolderState()
    folder = _created("data")
    _fold(state, folder)
    with pytest.raises(VFolderOperationFailed):
        decide(state, VFolderPurged(folder_id=folder.folder_id))  # not in the trash yet
    _fold(state, VFolderTrashed(folder_id=folder.folder_id))
    with pytest.raises(VFolderOperationFailed):  # a trashed folder takes no new share
        decide(state, VFolderShared(folder_id=folder.folder_id, user_id=BOB, permission="ro"))
    with pytest.raises(VFolderAlreadyExists):  # the trash keeps the name
        decide(state, _created("data"))
    _fold(state, VFolderRestored(folder_id=folder.folder_id))
    assert state.folders[folder.folder_id].status == "ready"
    invitation = uuid.uuid4()
    _fold(
        state,
        VFolderInvited(
            folder_id=folder.folder_id,
            invitation_id=invitation,
            inviter=ALICE,
            invitee=BOB,
            invitee_email="bob@x.org",
            inviter_email="alice@x.org",
        ),
        VFolderTrashed(folder_id=folder.folder_id),
    )
    (purged,) = decide(state, VFolderPurged(folder_id=folder.folder_id))
    assert isinstance(purged, VFolderPurged) and purged.invitation_ids == [invitation]
    _fold(state, purged)
    assert decide(state, _created("data"))  # purged: the name is free
    with pytest.raises(VFolderNotFound):
        decide(state, VFolderRenamed(folder_id=folder.folder_id, name="x"))


@pytest.mark.unit
def test_invitations_and_shares_decide_who_sees_what() -> None:
    state = VFolderState()
    mine = _created("data", permission="rw")
    lab = _created("shared", user=None, group=LAB, permission="ro")
    _fold(state, mine, lab)
    folder, project_folder = state.folders[mine.folder_id], state.folders[lab.folder_id]

    def perm(
        who: uuid.UUID, f: object = folder, role: str = "user", projects: tuple = ()
    ) -> object:
        return permission_of(f, who, role=role, domain="default", project_ids=projects)  # type: ignore[arg-type]

    assert perm(ALICE) == "rw" and perm(BOB) is None
    assert perm(BOB, role="superadmin") is None  # a user's folder is private even to admins
    invitation = uuid.uuid4()
    invite = VFolderInvited(
        folder_id=mine.folder_id,
        invitation_id=invitation,
        inviter=ALICE,
        invitee=BOB,
        invitee_email="bob@x.org",
        inviter_email="alice@x.org",
        permission="ro",
    )
    _fold(state, invite)
    assert decide(state, invite.model_copy(update={"invitation_id": uuid.uuid4()})) == []
    assert perm(BOB) is None  # pending: nothing yet
    _fold(
        state,
        VFolderInvitationAnswered(
            folder_id=mine.folder_id, invitation_id=invitation, state="accepted"
        ),
    )
    assert perm(BOB) == "ro"
    with pytest.raises(VFolderNotFound):  # answered once
        decide(
            state,
            VFolderInvitationAnswered(
                folder_id=mine.folder_id, invitation_id=invitation, state="rejected"
            ),
        )
    with pytest.raises(InvalidAPIParameters):
        decide(state, VFolderShared(folder_id=mine.folder_id, user_id=ALICE, permission="ro"))
    _fold(state, VFolderUnshared(folder_id=mine.folder_id, user_ids=[BOB, CAROL]))
    assert perm(BOB) is None
    assert decide(state, VFolderUnshared(folder_id=mine.folder_id, user_ids=[BOB])) == []
    # a project's folder: members get its permission, a share overrides for one member
    assert perm(CAROL, project_folder) is None
    assert perm(CAROL, project_folder, projects=(LAB,)) == "ro"
    _fold(state, VFolderShared(folder_id=lab.folder_id, user_id=CAROL, permission="rw"))
    assert perm(CAROL, project_folder, projects=(LAB,)) == "rw"
    assert perm(BOB, project_folder, role="admin") == "wd"  # the domain's admin
    assert may_manage(folder, ALICE, role="user", domain="default")
    assert not may_manage(folder, BOB, role="superadmin", domain="default")
    assert not may_manage(project_folder, CAROL, role="user", domain="default")
    assert may_manage(project_folder, BOB, role="admin", domain="default")
    assert not may_manage(project_folder, BOB, role="admin", domain="elsewhere")


@pytest.mark.unit
def test_a_clone_needs_a_cloneable_source_unless_it_is_the_owners() -> None:
    state = VFolderState()
    source = _created("data")
    _fold(state, source)
    with pytest.raises(GenericForbidden):
        decide(state, _created("copy", user=BOB, cloned_from=source.folder_id))
    assert decide(state, _created("copy", cloned_from=source.folder_id))


@pytest.mark.unit
def test_host_permissions_are_the_union_and_unknown_grants_nothing() -> None:
    allowed = host_permissions(
        {"local:default": ["mount-in-session", "fly"]},
        {"local:default": ["upload-file"], "nfs:x": "everything"},
        ["old:host"],
        "garbage",
    )
    assert allowed["local:default"] == {"mount-in-session", "upload-file"}
    assert allowed["nfs:x"] == frozenset()  # a malformed value allows nothing
    assert allowed["old:host"] == ALL_HOST_PERMISSIONS  # 22.09's list of hosts


@pytest.mark.redis
async def test_the_writer_appends_one_stream_per_folder_and_the_read_model_follows(
    store: RedisEventStore,
) -> None:
    writer = await VFolderService(store).load()
    first = _created("data")
    command = VFolderCommand(event=first, max_count=3)
    assert await writer.handle(command) == [first]
    assert await store.stream_version(f"vfolder-{first.folder_id.hex}") == 1
    assert await writer.handle(command) == [first]  # a retry: answered from the log
    assert await store.stream_version(f"vfolder-{first.folder_id.hex}") == 1
    second = _created("data")
    with pytest.raises(VFolderAlreadyExists):
        await writer.handle(VFolderCommand(event=second))
    lab = _created("lab-data", user=None, group=LAB)
    await writer.handle(VFolderCommand(event=lab))
    await writer.handle(
        VFolderCommand(event=VFolderShared(folder_id=first.folder_id, user_id=BOB, permission="ro"))
    )

    mounting = {first.folder_id}

    async def mounted(folder_id: uuid.UUID) -> list[str]:
        return ["s1"] if folder_id in mounting else []

    reloaded = await VFolderService(store, mounted_by=mounted).load()  # a restarted actor
    assert reloaded.state.folders[first.folder_id].shares == {BOB: "ro"}
    with pytest.raises(VFolderOperationFailed, match="mounted"):
        await reloaded.handle(VFolderCommand(event=VFolderTrashed(folder_id=first.folder_id)))
    await reloaded.handle(VFolderCommand(event=VFolderTrashed(folder_id=lab.folder_id)))
    mounting.add(lab.folder_id)  # a session enqueued as it was trashed (the read model lagged)
    with pytest.raises(VFolderOperationFailed, match="mounted"):  # never purged under it
        await reloaded.handle(VFolderCommand(event=VFolderPurged(folder_id=lab.folder_id)))

    await Projector(store, [TenancyProjection()]).catch_up()
    lookups = VFolderLookups(store)
    (mine,) = await lookups.owned_by(str(ALICE))
    assert mine["name"] == "data" and mine["status"] == "ready"
    assert mine["shares"] == {str(BOB): "ro"}
    assert [f["name"] for f in await lookups.shared_with(str(BOB))] == ["data"]
    (project,) = await lookups.of_project(str(LAB))
    assert project["status"] == "delete-pending"
    assert {f["name"] for f in await lookups.every()} == {"data", "lab-data"}
