"""A folder's directory as the gateway makes, clones and purges it, attacked the way a
tenant can (sessions mount the folder read-write, so any name in it may be a symlink to the
host's ``/etc``, a FIFO, a hard link): nothing is ever followed out of the folder. And the
``/folders`` bodies: every bad value is refused naming its field, ``unmanaged_path`` never
dropped. Pure filesystem and pydantic: no services."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from actors.agents.safe_fs import OverLimit
from actors.domain.errors import InvalidAPIParameters, VFolderOperationFailed
from actors.gateway import folder_disk
from actors.gateway.admin.vfolders import VFOLDER_FIELDS, _row, _view
from actors.gateway.folder_disk import (
    clone_budget,
    clone_tree,
    make_folder_dir,
    remove_folder_dir,
)
from actors.gateway.folder_params import CloneFolder, CreateFolder, InviteUsers, quota_bytes
from actors.gateway.gql_filter import parse_filter, parse_order, select
from actors.gateway.params import parse

pytestmark = pytest.mark.unit

SRC, DST = "a" * 32, "b" * 32


def test_the_work_uid_is_the_docker_backends() -> None:
    docker = pytest.importorskip("actors.agents.backends.docker")
    assert folder_disk.WORK_UID == docker.WORK_UID


def test_a_folder_dir_is_made_under_a_root_nobody_else_may_write(tmp_path: Path) -> None:
    root = tmp_path / "vfolders"
    make_folder_dir(root, SRC)
    make_folder_dir(root, SRC)  # a retried create keeps it
    assert (root / SRC).is_dir() and not (root / SRC).is_symlink()
    assert stat.S_IMODE(root.stat().st_mode) & 0o022 == 0
    if os.geteuid() == 0:
        assert (root / SRC).stat().st_uid == folder_disk.WORK_UID
    os.chmod(root, 0o777)
    with pytest.raises(VFolderOperationFailed):
        make_folder_dir(root, DST)


@pytest.mark.hostile
def test_a_link_planted_at_a_folders_name_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "vfolders"
    root.mkdir()
    os.symlink("/etc", root / SRC)
    with pytest.raises(VFolderOperationFailed):
        make_folder_dir(root, SRC)


def _tenant_tree(root: Path) -> Path:
    make_folder_dir(root, SRC)
    src = root / SRC
    (src / "data").mkdir()
    (src / "data" / "x.csv").write_text("1,2\n")
    (src / "top.txt").write_text("top")
    os.symlink("/etc", src / "etc-link")  # a session's link to the host's /etc
    os.symlink("../../..", src / "data" / "up")
    os.mkfifo(src / "pipe")  # opening it would hang a thread forever
    return src


@pytest.mark.hostile
def test_clone_copies_links_as_links_and_never_reads_through_them(tmp_path: Path) -> None:
    root = tmp_path / "vfolders"
    _tenant_tree(root)
    make_folder_dir(root, DST)
    done: list[folder_disk.CloneReport] = []
    worker = threading.Thread(target=lambda: done.append(clone_tree(root, SRC, DST)))
    worker.start()
    worker.join(20)
    assert done, "the clone hung (a FIFO opened?)"
    (report,) = done
    dst = root / DST
    assert (dst / "top.txt").read_text() == "top"
    assert (dst / "data" / "x.csv").read_text() == "1,2\n"
    assert os.readlink(dst / "etc-link") == "/etc" and (dst / "etc-link").is_symlink()
    assert os.readlink(dst / "data" / "up") == "../../.."
    assert not (dst / "pipe").exists()
    assert (report.files, report.dirs, report.links, report.skipped) == (2, 1, 2, 1)
    assert not (dst / "etc-link" / "passwd").is_file() or (dst / "etc-link").is_symlink()


def test_clone_stops_past_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "vfolders"
    src = _tenant_tree(root)
    for n in range(10):
        (src / f"f{n}").write_text("x")
    make_folder_dir(root, DST)
    monkeypatch.setattr(folder_disk, "MAX_CLONE_ENTRIES", 5)
    with pytest.raises(OverLimit):
        clone_tree(root, SRC, DST)


@pytest.mark.hostile
def test_a_sparse_file_stays_sparse_and_the_copy_keeps_to_its_budget(tmp_path: Path) -> None:
    """Review F1: a session makes a 64 GiB file for free (``truncate``); the clone wrote every
    zero of it. Now holes stay holes, and no more data is written than the budget allows."""
    root = tmp_path / "vfolders"
    make_folder_dir(root, SRC)
    sparse = root / SRC / "sparse.bin"
    with sparse.open("wb") as out:
        out.write(b"head")
        out.truncate(64 << 30)
    (root / SRC / "data.bin").write_bytes(os.urandom(3 << 20))
    make_folder_dir(root, DST)
    report = clone_tree(root, SRC, DST, budget=4 << 20)
    copied = root / DST / "sparse.bin"
    assert copied.stat().st_size == 64 << 30
    assert copied.stat().st_blocks * 512 < 1 << 20  # nothing allocated for the holes
    assert copied.open("rb").read(4) == b"head"
    assert (root / DST / "data.bin").read_bytes() == (root / SRC / "data.bin").read_bytes()
    assert report.files == 2
    remove_folder_dir(root, DST)
    make_folder_dir(root, DST)
    with pytest.raises(OverLimit):  # a file grown past what was measured: refused, not copied
        clone_tree(root, SRC, DST, budget=1 << 20)


def test_the_clone_budget_is_the_least_of_source_quota_and_spare_room(tmp_path: Path) -> None:
    assert clone_budget(tmp_path, 1000, 0) == 1000
    assert clone_budget(tmp_path, 1000, 10) == 10
    spare = clone_budget(tmp_path, 2**62, 0)
    assert 0 <= spare < 2**62  # the volume's free space, less its reserve


@pytest.mark.hostile
def test_a_hard_link_to_a_file_the_folder_does_not_own_is_not_copied(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file owned by another user")
    root = tmp_path / "vfolders"
    src = _tenant_tree(root)
    os.chown(src, folder_disk.WORK_UID, folder_disk.WORK_UID)
    secret = tmp_path / "host-secret"
    secret.write_text("root's")
    os.link(secret, src / "stolen")  # as if hard-linked from a file the host owns
    make_folder_dir(root, DST)
    with pytest.raises(InvalidAPIParameters):
        clone_tree(root, SRC, DST)
    assert not (root / DST / "stolen").exists() or (root / DST / "stolen").read_text() != "root's"


@pytest.mark.hostile
def test_purge_removes_the_tree_and_only_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "vfolders"
    _tenant_tree(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    os.symlink(outside, root / SRC / "data" / "outside")
    assert remove_folder_dir(root, SRC) is True
    assert not (root / SRC).exists()
    assert (outside / "keep.txt").read_text() == "keep"
    assert remove_folder_dir(root, SRC) is False  # a retried purge
    assert remove_folder_dir(tmp_path / "none", SRC) is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), (0, 0), ("0", 0), ("1024", 1024), ("10m", 10 * 2**20), ("1.5g", 3 * 2**29)],
)
def test_quota_reads_the_clients_sizes(value: object, expected: int) -> None:
    assert quota_bytes(value) == expected


@pytest.mark.parametrize("value", ["lots", "-1", True, 1.5, "9" * 40, [1], "9e"])
def test_quota_refuses_what_is_not_a_size(value: object) -> None:
    with pytest.raises(ValueError):
        quota_bytes(value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ".x"}, "name"),
        ({"name": "a" * 65}, "name"),
        ({"name": "ok", "unmanaged_path": "/etc"}, "unmanaged_path"),
        ({"name": "ok", "usage_mode": "x"}, "usage_mode"),
        ({"name": "ok", "quota": -1}, "quota"),
        ({"name": "ok", "host": "h" * 300}, "host"),
        ({"name": "ok", "extra": 1}, "extra"),
    ],
)
def test_create_bodies_are_refused_by_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidAPIParameters) as refused:
        parse(CreateFolder, body)
    assert field in refused.value.msg


def test_the_clients_create_body_is_read_whole() -> None:
    body = {
        "name": "data",
        "host": None,
        "unmanaged_path": None,
        "group": None,
        "usage_mode": "general",
        "permission": "rw",
        "quota": "0",
        "cloneable": False,
    }
    parsed = parse(CreateFolder, body)
    assert (parsed.name, parsed.quota, parsed.host) == ("data", 0, None)
    clone = parse(CloneFolder, {"target_name": "c", "target_host": None, "usage_mode": "general"})
    assert clone.target_name == "c"


def test_invitations_are_bounded() -> None:
    with pytest.raises(InvalidAPIParameters):
        parse(InviteUsers, {"perm": "rw", "user_ids": [f"u{n}@x" for n in range(65)]})
    with pytest.raises(InvalidAPIParameters):
        parse(InviteUsers, {"perm": "rw", "user_ids": []})


def test_vfolder_list_filters_and_orders_by_23_03_names() -> None:
    records = [
        {
            "folder_id": f"{n:032x}",
            "name": name,
            "host": "local:default",
            "ownership_type": kind,
            "user": "00000000-0000-0000-0000-000000000001" if kind == "user" else None,
            "group": None if kind == "user" else "00000000-0000-0000-0000-000000000002",
            "permission": perm,
            "status": status,
            "created_at": f"2026-01-0{n + 1}T00:00:00+00:00",
            "creator": "a@x",
        }
        for n, (name, kind, perm, status) in enumerate(
            [
                ("a", "user", "rw", "ready"),
                ("b", "group", "ro", "ready"),
                ("c", "user", "wd", "delete-pending"),
            ]
        )
    ]
    views = [_view(r, None, None) for r in records]
    rows = [(_row(v), v) for v in views]

    def names(text: str | None, order: str | None = None) -> list[str]:
        keep = parse_filter(text, fields=VFOLDER_FIELDS) if text else None
        ordering = parse_order(order, fields=VFOLDER_FIELDS) if order else None
        return [v["name"] for v in select(rows, keep, ordering)]

    assert names('ownership_type == "USER"') == ["a", "c"]
    assert names('permission in ["READ_ONLY", "RW_DELETE"]') == ["b", "c"]
    assert names('status == "READY" & name like "%"') == ["a", "b"]
    assert names(None, "-created_at") == ["c", "b", "a"]
    with pytest.raises(InvalidAPIParameters):
        parse_filter('secret == "x"', fields=VFOLDER_FIELDS)
