"""Which folder a request names, and what its caller may do with it.

Every folder route (metadata, files, transfers, session mounts) starts here: a name or id
is resolved among the folders *the caller may see* (their own, those shared with them,
their projects'), so another tenant's folder answers exactly as one that does not exist
(404 "No such virtual folder."). What they may then do is the pure rules of
:mod:`actors.domain.vfolders` (the folder's permission for them, whether they manage it)
and the storage host's permissions for them (the union of their domain's, their keypair
policy's and, for a project's folder, the project's ``allowed_vfolder_hosts``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from events.correlation import correlation_kwargs
from projections.vfolder_queries import VFolderLookups

from ..domain.commands.vfolders import VFolderCommand, VFolderEvent
from ..domain.errors import (
    GenericForbidden,
    InvalidAPIParameters,
    TooManyVFoldersFound,
    VFolderNotFound,
    VFolderOperationFailed,
)
from ..domain.vfolders import Folder as FolderState
from ..domain.vfolders import at_least, host_permissions, may_manage, permission_of
from .auth import Caller
from .context import GatewayContext

__all__ = [
    "Folder",
    "Op",
    "caller_host_permissions",
    "folder_for",
    "folder_state",
    "host_path_of",
    "visible_folders",
    "write_vfolder",
]

Op = Literal["see", "download", "upload", "write", "delete-files", "mount", "manage", "delete"]
"""What a request does with a folder: ``see`` its metadata and listing, ``download`` or
``upload`` files, ``write`` (mkdir, move, rename files), ``delete-files``, ``mount`` it in a
session, ``manage`` it (rename, share, invite, options), ``delete`` it (trash, restore,
purge)."""

_NEEDS: dict[str, tuple[str | None, str | None, bool]] = {
    # op: (least permission, host permission, managers only)
    "see": (None, None, False),
    "download": ("ro", "download-file", False),
    "upload": ("rw", "upload-file", False),
    "write": ("rw", "upload-file", False),
    "delete-files": ("rw", None, False),
    "mount": ("ro", "mount-in-session", False),
    "manage": (None, "modify-vfolder", True),
    "delete": (None, "delete-vfolder", True),
}
_MAX_REF = 128


def folder_state(record: dict[str, Any]) -> FolderState:
    """A read-model record as the domain's :class:`~actors.domain.vfolders.Folder`."""

    def uid(value: Any) -> uuid.UUID | None:
        return None if value is None else uuid.UUID(str(value))

    return FolderState(
        folder_id=uuid.UUID(str(record["folder_id"])),
        name=record["name"],
        host=record["host"],
        domain=record["domain"],
        ownership_type=record["ownership_type"],
        user=uid(record.get("user")),
        group=uid(record.get("group")),
        creator=record.get("creator", ""),
        usage_mode=record.get("usage_mode", "general"),
        permission=record.get("permission", "rw"),
        max_size=int(record.get("max_size", 0)),
        cloneable=bool(record.get("cloneable", False)),
        status=record.get("status", "ready"),
        shares={uuid.UUID(u): p for u, p in (record.get("shares") or {}).items()},
    )


def host_path_of(ctx: GatewayContext, folder_id: uuid.UUID) -> Path:
    """The folder's directory on the ``local:default`` host (its id is the name)."""
    if ctx.vfolder_root is None:
        raise VFolderOperationFailed("this gateway serves no storage host")
    return ctx.vfolder_root / folder_id.hex


@dataclass(frozen=True)
class Folder:
    """A folder the caller may see, with what they may do with it."""

    record: dict[str, Any]
    state: FolderState
    permission: str | None
    """Their permission on its files (``None``: they may see it only as its manager)."""
    manager: bool
    host_perms: frozenset[str]
    host_path: Path | None

    @property
    def folder_id(self) -> uuid.UUID:
        return self.state.folder_id

    @property
    def name(self) -> str:
        return self.state.name

    def may(self, op: Op) -> bool:
        try:
            self.require(op)
        except (GenericForbidden, VFolderOperationFailed):
            return False
        return True

    def require(self, op: Op) -> None:
        """Refuse ``op`` unless the caller may: 403 naming what is missing."""
        least, host_perm, managers_only = _NEEDS[op]
        if managers_only and not self.manager:
            raise GenericForbidden("only the folder's owner (or its project's admins) may do this")
        if least is not None and not at_least(self.permission, least):  # type: ignore[arg-type]
            raise GenericForbidden(
                f"your permission on this folder is {self.permission}; this needs {least}"
            )
        if host_perm is not None and host_perm not in self.host_perms:
            raise GenericForbidden(
                f"the storage host {self.state.host} does not allow you {host_perm}"
            )
        if op in ("upload", "write", "delete-files", "mount") and self.state.status != "ready":
            raise VFolderOperationFailed(f"the folder {self.name!r} is in the trash")


async def _project_ids(ctx: GatewayContext, caller: Caller) -> list[uuid.UUID]:
    return [uuid.UUID(str(p["project_id"])) for p in await ctx.lookups.projects_of(caller.user_id)]


async def caller_host_permissions(
    ctx: GatewayContext, caller: Caller, project_id: uuid.UUID | None = None
) -> dict[str, frozenset[str]]:
    """What each storage host allows the caller (for a project's folder: the project's
    grants too)."""
    domain = await ctx.lookups.domain(caller.domain) or {}
    policy_name = caller.keypair.get("resource_policy")
    policy = await ctx.lookups.policy(str(policy_name)) if policy_name else None
    sources: list[Any] = [
        domain.get("allowed_vfolder_hosts"),
        (policy or {}).get("allowed_vfolder_hosts"),
    ]
    if project_id is not None:
        project = await ctx.lookups.project(str(project_id)) or {}
        sources.append(project.get("allowed_vfolder_hosts"))
    return host_permissions(*(s for s in sources if s))


async def visible_folders(ctx: GatewayContext, caller: Caller) -> list[dict[str, Any]]:
    """Every folder the caller may see now, as read-model records (each once): the index
    entries that name them (owner, share, project) are judged again, so a share row that
    outlived its reason (its user left the project) shows nothing (review F6)."""
    lookups = VFolderLookups(ctx.store)
    found: dict[str, dict[str, Any]] = {}
    projects = await _project_ids(ctx, caller)
    records = await lookups.owned_by(caller.user_id) + await lookups.shared_with(caller.user_id)
    for project_id in projects:
        records += await lookups.of_project(str(project_id))
    me = uuid.UUID(caller.user_id)
    for record in records:
        state = folder_state(record)
        seen = permission_of(
            state, me, role=caller.role, domain=caller.domain, project_ids=projects
        ) is not None or may_manage(state, me, role=caller.role, domain=caller.domain)
        if seen:
            found.setdefault(str(record["folder_id"]), record)
    return list(found.values())


async def _judged(ctx: GatewayContext, caller: Caller, record: dict[str, Any]) -> Folder | None:
    state = folder_state(record)
    me = uuid.UUID(caller.user_id)
    projects = await _project_ids(ctx, caller)
    permission = permission_of(
        state, me, role=caller.role, domain=caller.domain, project_ids=projects
    )
    manager = may_manage(state, me, role=caller.role, domain=caller.domain)
    if permission is None and not manager:
        return None
    hosts = await caller_host_permissions(ctx, caller, state.group)
    path = host_path_of(ctx, state.folder_id) if ctx.vfolder_root is not None else None
    return Folder(
        record=record,
        state=state,
        permission=permission,
        manager=manager,
        host_perms=hosts.get(state.host, frozenset()),
        host_path=path,
    )


async def folder_for(ctx: GatewayContext, caller: Caller, ref: str) -> Folder:
    """The folder ``ref`` (its name, or its id with or without dashes) names among those
    the caller may see; 404 otherwise, whether or not it exists."""
    if not isinstance(ref, str) or not ref or len(ref) > _MAX_REF:
        raise VFolderNotFound()
    try:
        by_id = uuid.UUID(ref)
    except ValueError:
        by_id = None
    if by_id is not None:
        record = await VFolderLookups(ctx.store).folder(str(by_id))
        judged = None if record is None else await _judged(ctx, caller, record)
        if judged is not None:
            return judged
    named = [r for r in await visible_folders(ctx, caller) if r.get("name") == ref]
    if not named:
        raise VFolderNotFound()
    if len(named) > 1:
        raise TooManyVFoldersFound(f"{len(named)} folders are named {ref!r}; name one by its id")
    judged = await _judged(ctx, caller, named[0])
    if judged is None:
        raise VFolderNotFound()
    return judged


async def write_vfolder(
    ctx: GatewayContext,
    caller: Caller,
    event: VFolderEvent,
    *,
    max_count: int = 0,
    peer: str | None = None,
) -> list[Any]:
    """Run ``event`` at the vfolder writer as this caller, then wait until the read model
    has it (so the caller's next request sees it). A refusal comes back as itself."""
    import ray

    from .admin.base import AdminCall

    call = AdminCall(ctx, caller, peer)
    command = VFolderCommand(event=event, max_count=max_count, initiator=call.initiator())
    try:
        writer = ray.get_actor("tenancy", namespace=ctx.router.namespace)
    except ValueError:
        raise InvalidAPIParameters("this gateway has no folder service to write to") from None
    appended: list[Any] = await writer.vfolder.remote(command, **correlation_kwargs())
    await call.settled()
    return appended
