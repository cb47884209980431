"""``kh vfolder ...``: virtual folders from the command line, the official client's
``backend.ai vfolder`` commands on the same ``/folders`` API, as the configured keypair.

Tables by default, ``--json`` everywhere; ``delete`` moves a folder to the trash (``restore``
brings it back), ``purge`` and ``rm`` ask first unless ``--yes``. Transfers show a progress
bar on stderr when it is a terminal (nothing in a pipe). The wire is
:mod:`kernelhub.sdk.vfolders`; the guide docs/cli.md, "kh vfolder".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import typer

from ..sdk import Client, ClientConfig
from ..sdk.vfolders import VFolders
from .admin_common import (
    Column,
    JsonFlag,
    Yes,
    confirm,
    field,
    handled,
    parse_size,
    print_json,
    print_listing,
    print_record,
)
from .terminal import Feedback

__all__ = ["app"]

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    help="Virtual folders: data kept between sessions (create, upload, share, ...).",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="the folder's name (or id)", metavar="NAME")]
Perm = Literal["ro", "rw", "wd"]
PermOption = Annotated[
    str, typer.Option("-p", "--permission", help="ro (read-only), rw, wd (rw and delete)")
]

COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("ID", field("id")),
    ("TYPE", field("ownership_type")),
    ("PERMISSION", field("permission")),
    ("OWNER", field("is_owner")),
    ("STATUS", field("status")),
    ("HOST", field("host")),
    ("MODE", field("usage_mode")),
]
FILE_COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("TYPE", field("type")),
    ("SIZE", field("size")),
    ("MODE", field("mode")),
    ("MODIFIED", field("modified")),
]


@contextmanager
def connected() -> Iterator[VFolders]:
    with Client(ClientConfig.load()) as client:
        yield VFolders(client)


def _perm(value: str) -> Perm:
    if value not in ("ro", "rw", "wd"):
        raise typer.BadParameter(f"{value!r}: use ro, rw or wd", param_hint="--permission")
    return value  # type: ignore[return-value]


def _done(text: str, as_json: bool, answer: object = None) -> None:
    if as_json:
        print_json(answer if answer is not None else {"ok": True})
    else:
        print(text)


@app.command("create", help="Create a folder (a project's with --group: domain admins).")
@handled
def create(
    name: Name,
    group: Annotated[
        str | None, typer.Option("-g", "--group", help="a project (id or name)")
    ] = None,
    usage_mode: Annotated[str, typer.Option("-m", "--usage-mode", help="general, model, data")] = (
        "general"
    ),
    permission: PermOption = "rw",
    quota: Annotated[str, typer.Option("-q", "--quota", help="bytes, or e.g. 10g; 0: none")] = "0",
    cloneable: Annotated[bool, typer.Option("--cloneable", help="others may clone it")] = False,
    as_json: JsonFlag = False,
) -> None:
    size = parse_size(quota, "--quota")
    with connected() as folders:
        answer = folders.create(
            name,
            group=group,
            usage_mode=usage_mode,
            permission=_perm(permission),
            quota=size,
            cloneable=cloneable,
        )
    _done(f'folder "{answer["name"]}" created ({answer["id"]})', as_json, answer)


@app.command("list", help="The folders you may see (--all: an admin's domain's).")
@handled
def list_(
    all_: Annotated[bool, typer.Option("--all", help="every folder you administer")] = False,
    as_json: JsonFlag = False,
) -> None:
    with connected() as folders:
        print_listing(COLUMNS, folders.list(all=all_), as_json)


@app.command("info", help="A folder's details (files and bytes in it, your permission).")
@handled
def info(name: Name, as_json: JsonFlag = False) -> None:
    with connected() as folders:
        print_record(folders.info(name), as_json)


@app.command("rename", help="Rename a folder (its owner, or its project's admins).")
@handled
def rename(name: Name, new_name: str, as_json: JsonFlag = False) -> None:
    with connected() as folders:
        folders.rename(name, new_name)
    _done(f"renamed to {new_name}", as_json)


@app.command("set", help="Change a folder's permission or whether it may be cloned.")
@handled
def update(
    name: Name,
    permission: Annotated[str | None, typer.Option("-p", "--permission")] = None,
    cloneable: Annotated[bool | None, typer.Option("--cloneable/--not-cloneable")] = None,
    as_json: JsonFlag = False,
) -> None:
    if permission is None and cloneable is None:
        raise typer.BadParameter("give --permission or --cloneable/--not-cloneable")
    with connected() as folders:
        folders.update_options(
            name, permission=None if permission is None else _perm(permission), cloneable=cloneable
        )
    _done("updated", as_json)


@app.command("delete", help="Move a folder to the trash (restore brings it back).")
@handled
def delete(name: Name, as_json: JsonFlag = False) -> None:
    with connected() as folders:
        folders.delete(name)
    _done(f"{name} is in the trash (kh vfolder restore / purge)", as_json)


@app.command("restore", help="Bring a folder back from the trash.")
@handled
def restore(name: Name, as_json: JsonFlag = False) -> None:
    with connected() as folders:
        folders.restore(name)
    _done(f"{name} restored", as_json)


@app.command("purge", help="Remove a folder in the trash and its files, for good.")
@handled
def purge(name: Name, yes: Yes = False, as_json: JsonFlag = False) -> None:
    confirm(f"purge folder {name} and every file in it", yes)
    with connected() as folders:
        folders.purge(name)
    _done(f"{name} purged", as_json)


@app.command("clone", help="Copy a (cloneable) folder into a new folder of yours.")
@handled
def clone(
    name: Name,
    target: Annotated[str, typer.Argument(help="the new folder's name")],
    permission: PermOption = "rw",
    as_json: JsonFlag = False,
) -> None:
    with connected() as folders:
        answer = folders.clone(name, target, permission=_perm(permission))
    _done(f'folder "{answer["name"]}" cloned from {name}', as_json, answer)


@app.command("hosts", help="The storage hosts you may use.")
@handled
def hosts(as_json: JsonFlag = False) -> None:
    with connected() as folders:
        answer = folders.hosts()
    if as_json:
        print_json(answer)
    else:
        print(f"default: {answer['default']}\nallowed: {', '.join(answer['allowed'])}")


# ---- sharing ----------------------------------------------------------------------------------
@app.command("invite", help="Invite users (e-mails) to your folder; they accept.")
@handled
def invite(
    name: Name, emails: list[str], permission: PermOption = "ro", as_json: JsonFlag = False
) -> None:
    with connected() as folders:
        answer = folders.invite(name, emails, permission=_perm(permission))
    if as_json:
        print_json(answer)
        return
    for email in answer["invited_ids"]:
        print(f"invited {email}")
    for email in answer.get("not_found") or ():
        print(f"no such user: {email}")


@app.command("invitations", help="Your pending invitations.")
@handled
def invitations(as_json: JsonFlag = False) -> None:
    columns: list[Column] = [
        ("ID", field("id")),
        ("FOLDER", field("vfolder_name")),
        ("FROM", field("inviter")),
        ("PERMISSION", field("perm")),
    ]
    with connected() as folders:
        print_listing(columns, folders.invitations(), as_json)


@app.command("accept", help="Accept an invitation (its id: kh vfolder invitations).")
@handled
def accept(invitation: str, as_json: JsonFlag = False) -> None:
    with connected() as folders:
        folders.accept_invitation(invitation)
    _done("accepted", as_json)


@app.command("decline", help="Reject an invitation to you, or cancel one you sent.")
@handled
def decline(invitation: str, as_json: JsonFlag = False) -> None:
    with connected() as folders:
        folders.delete_invitation(invitation)
    _done("declined", as_json)


@app.command("share", help="Give a project folder's members a permission of their own (admins).")
@handled
def share(
    name: Name, emails: list[str], permission: PermOption = "ro", as_json: JsonFlag = False
) -> None:
    with connected() as folders:
        shared = folders.share(name, emails, permission=_perm(permission))
    _done("\n".join(f"shared with {e} ({permission})" for e in shared), as_json, shared)


@app.command("unshare", help="Take back what users were shared.")
@handled
def unshare(name: Name, emails: list[str], as_json: JsonFlag = False) -> None:
    with connected() as folders:
        gone = folders.unshare(name, emails)
    _done("\n".join(f"unshared {e}" for e in gone) or "nobody was sharing it", as_json, gone)


@app.command("leave", help="Stop using a folder shared with you.")
@handled
def leave(name: Name, as_json: JsonFlag = False) -> None:
    with connected() as folders:
        folders.leave(name)
    _done(f"left {name}", as_json)


# ---- files ------------------------------------------------------------------------------------
@app.command("ls", help="List a directory of a folder.")
@handled
def ls(name: Name, path: str = ".", as_json: JsonFlag = False) -> None:
    with connected() as folders:
        print_listing(FILE_COLUMNS, folders.files(name, path), as_json)


@app.command("mkdir", help="Make a directory in a folder.")
@handled
def mkdir(
    name: Name,
    path: str,
    parents: Annotated[bool, typer.Option("-p", "--parents")] = False,
    as_json: JsonFlag = False,
) -> None:
    with connected() as folders:
        folders.mkdir(name, path, parents=parents, exist_ok=parents)
    _done(f"made {path}", as_json)


@app.command("rm", help="Delete files (directories with -r) in a folder.")
@handled
def rm(
    name: Name,
    paths: list[str],
    recursive: Annotated[bool, typer.Option("-r", "--recursive")] = False,
    yes: Yes = False,
    as_json: JsonFlag = False,
) -> None:
    confirm(f"delete {', '.join(paths)} from {name}", yes)
    with connected() as folders:
        folders.delete_files(name, paths, recursive=recursive)
    _done("deleted", as_json)


@app.command("mv", help="Move a file or directory within a folder.")
@handled
def mv(name: Name, src: str, dst: str, as_json: JsonFlag = False) -> None:
    with connected() as folders:
        folders.move_file(name, src, dst)
    _done(f"moved {src} to {dst}", as_json)


@app.command("upload", help="Upload files (paths relative to --base-dir or here).")
@handled
def upload(
    name: Name,
    files: list[Path],
    base_dir: Annotated[Path | None, typer.Option("-b", "--base-dir")] = None,
    as_json: JsonFlag = False,
) -> None:
    with connected() as folders, Feedback().progress("uploading") as progress:
        names = folders.upload(name, files, base_dir=base_dir, progress=progress)
    _done("\n".join(f"uploaded {n}" for n in names), as_json, names)


@app.command("download", help="Download files of a folder (into --dest or here).")
@handled
def download(
    name: Name,
    files: list[str],
    dest: Annotated[Path | None, typer.Option("-d", "--dest")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace local files")] = False,
    as_json: JsonFlag = False,
) -> None:
    with connected() as folders, Feedback().progress("downloading") as progress:
        written = folders.download(name, files, dest=dest, overwrite=overwrite, progress=progress)
    shown = [str(p) for p in written]
    _done("\n".join(f"downloaded {p}" for p in shown), as_json, shown)
