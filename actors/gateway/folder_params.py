"""The bodies of the ``/folders`` routes, as the official client 23.3.12 sends them, checked
by pydantic before anything is looked up: unknown keys are refused (never ignored), every
string and list is bounded, and a refusal names the field (``parse`` of :mod:`.params`).

What kernelhub cannot honour is refused by name rather than dropped: ``unmanaged_path``
(folders outside the volume, 23.03's admin-only "unmanaged" folders) would have the gateway
serve a host path a request chose.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from ..domain.sizes import parse_size
from ..domain.vfolders import check_name

__all__ = [
    "BIGINT_MAX",
    "MAX_EMAILS",
    "AcceptInvitation",
    "CloneFolder",
    "CreateFolder",
    "DeleteById",
    "Emails",
    "InviteUsers",
    "LeaveFolder",
    "ListFolders",
    "RenameFolder",
    "ShareFolder",
    "UnshareFolder",
    "UpdateOptions",
    "quota_bytes",
]

BIGINT_MAX = 2**63 - 1
MAX_EMAILS = 64
"""Users one invitation, share or unshare names (each is an event's worth of work)."""
MAX_REF = 256
Permission = Literal["ro", "rw", "wd"]
UsageMode = Literal["general", "model", "data"]
Ref = Annotated[str, StringConstraints(max_length=MAX_REF)]
Email = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _checked_name(value: Any) -> Any:
    """23.03's name rule, and never a name that reads as a folder id: folders are named by
    name or id, the id tried first, so a folder named like another folder's id would answer
    for it once the caller may no longer see that one (review F2)."""
    if isinstance(value, str):
        try:
            check_name(value)
        except Exception as exc:
            raise ValueError(getattr(exc, "msg", str(exc))) from None
        try:
            uuid.UUID(value)
        except ValueError:
            return value
        raise ValueError("a folder name may not be a UUID (folders are named by their ids too)")
    return value


FolderName = Annotated[str, BeforeValidator(_checked_name), StringConstraints(max_length=64)]


def quota_bytes(value: Any) -> int:
    """The client's ``quota``: bytes as a number, or its text with a 1024-based suffix
    (``"0"``, ``"10m"``, ``"1.5g"``: its ``ByteSizeParamCheckType`` sends what was typed)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a size in bytes, or with a suffix such as '10g'")
    if isinstance(value, str) and len(value) > 32:
        raise ValueError("must be a size in bytes, or with a suffix such as '10g'")
    try:
        size = parse_size(value, allow_infinity=False)
    except (ValueError, ArithmeticError):
        raise ValueError("must be a size in bytes, or with a suffix such as '10g'") from None
    if size < 0 or size > BIGINT_MAX or size != size.to_integral_value():
        raise ValueError("must be whole bytes within 0..2^63-1")
    return int(Decimal(size))


Quota = Annotated[int, BeforeValidator(quota_bytes)]


def _refuse_unmanaged(value: str | None) -> str | None:
    if value is not None:
        raise ValueError(
            "unmanaged folders (a host path outside the volume) are not supported by "
            "kernelhub; create a managed folder and upload into it"
        )
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CreateFolder(_Body):
    """``POST /folders`` (``vfolder create``)."""

    name: FolderName
    host: Ref | None = Field(default=None, validation_alias=AliasChoices("host", "folder_host"))
    unmanaged_path: Annotated[Ref | None, AfterValidator(_refuse_unmanaged)] = None
    group: Ref | None = Field(
        default=None, validation_alias=AliasChoices("group", "groupId", "group_id")
    )
    usage_mode: UsageMode = "general"
    permission: Permission = "rw"
    quota: Quota = 0
    cloneable: bool = False


class ListFolders(_Body):
    """``GET /folders`` (``{"all": bool}``; 23.03's ``group_id`` and ``owner_user_email``
    narrow it)."""

    all: bool = False
    group_id: Ref | None = Field(default=None, validation_alias=AliasChoices("group_id", "groupId"))
    owner_user_email: Email | None = None


class RenameFolder(_Body):
    new_name: FolderName


class DeleteById(_Body):
    """``DELETE /folders`` and the 23.09 trash routes: the folder by its id."""

    id: Ref = Field(validation_alias=AliasChoices("id", "vfolderId", "vfolder_id"))


class UpdateOptions(_Body):
    """``POST /folders/{name}/update-options`` (``None``: kept)."""

    permission: Permission | None = None
    cloneable: bool | None = None


class CloneFolder(_Body):
    target_name: FolderName
    target_host: Ref | None = Field(
        default=None, validation_alias=AliasChoices("target_host", "folder_host")
    )
    usage_mode: UsageMode = "general"
    permission: Permission = "rw"
    cloneable: bool = False
    quota: Quota = 0


Emails = Annotated[list[Email], Field(min_length=1, max_length=MAX_EMAILS)]


class InviteUsers(_Body):
    """``POST /folders/{name}/invite``: the client sends e-mails as ``user_ids``."""

    perm: Permission = Field(default="rw", validation_alias=AliasChoices("perm", "permission"))
    user_ids: Emails = Field(validation_alias=AliasChoices("user_ids", "userIds", "emails"))


class AcceptInvitation(_Body):
    inv_id: Ref = Field(validation_alias=AliasChoices("inv_id", "invitation_id"))


class ShareFolder(_Body):
    permission: Permission = Field(
        default="rw", validation_alias=AliasChoices("permission", "perm")
    )
    emails: Emails


class UnshareFolder(_Body):
    emails: Emails


class LeaveFolder(_Body):
    shared_user_uuid: Ref | None = None
