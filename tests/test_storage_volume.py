"""A tenant against the storage code under virtual folders (issue 30): the folder is mounted
read-write in the tenant's sessions, so each test plants what a session could leave there
(symlinks out of the folder, to a file, to a directory, in the middle of a path; FIFOs; hard
links; deep or wide trees) and checks that listing, download, upload, mkdir, delete, rename,
move and usage measurement never read, write or count anything outside the folder, never
hang, and stay within their bounds. Tokens are forged, altered, replayed elsewhere, expired.

Real directories, no services: these run with the unit layer."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from actors.agents import safe_fs
from actors.domain.errors import InvalidAPIParameters, ObjectNotFound, QuotaExceeded
from actors.storage import transfer as transfer_module
from actors.storage import tree as tree_module
from actors.storage.errors import BodyCut, OffsetConflict, TooLarge, TooManyUploads
from actors.storage.paths import MAX_DEPTH, parse_name, parse_path
from actors.storage.tokens import MAX_TOKEN, TOKEN_TTL_S, Claims, InvalidToken, TokenSigner
from actors.storage.transfer import Read, Transfers
from actors.storage.tree import Tree
from actors.storage.usage import measure
from actors.storage.volume import Volume

pytestmark = [pytest.mark.unit, pytest.mark.hostile]

SECRET = b"outside the folder: the host's secret\n"
TENANT_UID = 1000
AS_ROOT = os.geteuid() == 0
T = TypeVar("T")


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with openat2 and with the one-component-at-a-time fallback."""
    if request.param == "walk":
        monkeypatch.setattr(safe_fs, "OPENAT2", False)
    return str(request.param)


@pytest.fixture
def root(tmp_path: Path, resolver: str) -> Path:
    """The volume root: folders are ``<root>/<hex>``; the host's secrets live beside it."""
    path = tmp_path / "vfolders"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """What the tenant wants: a host directory with a secret file, outside every folder."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_bytes(SECRET)
    return host


@pytest.fixture
def folder(root: Path) -> Path:
    """A folder's directory, owned (as sessions see it) by the tenant's user."""
    path = root / uuid.uuid4().hex
    path.mkdir()
    if AS_ROOT:
        os.chown(path, TENANT_UID, TENANT_UID)
    return path


def _snapshot(path: Path) -> dict[str, tuple[int, bytes | None]]:
    """Everything under ``path`` (names, modes, contents), to show nothing changed."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for item in sorted(path.rglob("*")):
        info = item.lstat()
        data = item.read_bytes() if stat.S_ISREG(info.st_mode) else None
        found[str(item.relative_to(path))] = (info.st_mode, data)
    return found


def _tree(folder: Path) -> Iterator[Tree]:
    with Tree.opened(folder) as tree:
        yield tree


@pytest.fixture
def tree(folder: Path) -> Iterator[Tree]:
    yield from _tree(folder)


def _within(seconds: float, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a thread that must finish in ``seconds`` (a FIFO must never hang)."""
    result: list[T | BaseException] = []

    def run() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:
            result.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the operation blocked"
    found = result[0]
    if isinstance(found, BaseException):
        raise found
    return found


# --- paths ------------------------------------------------------------------------------


def test_paths_are_split_and_bounded_never_resolved() -> None:
    assert parse_path("./a//b/") == ("a", "b")
    assert parse_path(".") == ()
    for bad in ("../x", "a/../../etc", "/etc/passwd", "a\0b", "a/" * (MAX_DEPTH + 1), "x" * 5000):
        with pytest.raises(InvalidAPIParameters):
            parse_path(bad)
    with pytest.raises(InvalidAPIParameters):
        parse_path("n" * 256)
    with pytest.raises(InvalidAPIParameters):
        parse_path(".", root_ok=False)
    with pytest.raises(InvalidAPIParameters):
        parse_path(["a"])
    with pytest.raises(InvalidAPIParameters):
        parse_path("a/\ud800")  # a lone surrogate (JSON allows one)
    assert parse_name("b.txt") == "b.txt"
    for bad_name in ("a/b", "..", ".", ""):
        with pytest.raises(InvalidAPIParameters):
            parse_name(bad_name)


# --- listing and reading ---------------------------------------------------------------


def test_listing_shows_links_as_links_and_never_follows_them(
    tree: Tree, folder: Path, outside: Path
) -> None:
    (folder / "data.csv").write_bytes(b"a,b\n")
    (folder / "sub").mkdir()
    (folder / "to-secret").symlink_to(outside / "secret")
    (folder / "to-host").symlink_to(outside)
    os.mkfifo(folder / "pipe")
    entries = {e.name: e for e in _within(5, tree.listing, ())}
    assert entries["data.csv"].kind == "FILE" and entries["data.csv"].size == 4
    assert entries["sub"].kind == "DIRECTORY"
    assert entries["to-secret"].kind == "SYMLINK"
    assert entries["to-secret"].size == len(str(outside / "secret"))  # the link's, not the file's
    assert stat.S_ISFIFO(entries["pipe"].mode)
    for through in (("to-host",), ("to-host", "x"), ("to-secret",), ("pipe",)):
        with pytest.raises(InvalidAPIParameters):
            tree.listing(through)


def test_a_download_opens_only_regular_files_inside(
    tree: Tree, folder: Path, outside: Path
) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "ok.txt").write_bytes(b"fine")
    (folder / "to-secret").symlink_to(outside / "secret")
    (folder / "to-host").symlink_to(outside)
    (folder / "sub" / "up").symlink_to("..")
    os.mkfifo(folder / "pipe")
    fd, info = tree.open_file(("sub", "ok.txt"))
    with safe_fs.closing(fd):
        assert os.read(fd, 100) == b"fine" and info.st_size == 4
    for path in (("to-secret",), ("to-host", "secret"), ("sub", "up", "sub", "ok.txt"), ("sub",)):
        with pytest.raises(InvalidAPIParameters):
            tree.open_file(path)
    with pytest.raises(InvalidAPIParameters):  # a FIFO never blocks the open
        _within(5, tree.open_file, ("pipe",))
    with pytest.raises(ObjectNotFound):
        tree.open_file(("missing",))


@pytest.mark.skipif(not AS_ROOT, reason="hard links to another user's file need root to set up")
def test_a_hard_link_to_a_file_the_folder_owner_does_not_own_is_not_read(
    tree: Tree, folder: Path, tmp_path: Path
) -> None:
    foreign = tmp_path / "vfolders" / "root-owned"
    foreign.write_bytes(SECRET)
    os.link(foreign, folder / "linked")
    with pytest.raises(InvalidAPIParameters, match="hard link"):
        tree.open_file(("linked",))


# --- writing: mkdir, delete, rename, move, uploads --------------------------------------


def test_mkdir_never_makes_anything_through_a_link(tree: Tree, folder: Path, outside: Path) -> None:
    before = _snapshot(outside)
    (folder / "to-host").symlink_to(outside)
    tree.make_dir(("a", "b"), parents=True, exist_ok=False)
    assert (folder / "a" / "b").is_dir()
    if AS_ROOT:  # made for the folder's owner, so the tenant's sessions can write in it
        assert (folder / "a" / "b").stat().st_uid == TENANT_UID
    tree.make_dir(("a", "b"), parents=False, exist_ok=True)
    with pytest.raises(InvalidAPIParameters):
        tree.make_dir(("a", "b"), parents=False, exist_ok=False)
    for path in (("to-host", "evil"), ("to-host", "x", "y")):
        with pytest.raises(InvalidAPIParameters):
            tree.make_dir(path, parents=True, exist_ok=True)
    with pytest.raises(InvalidAPIParameters):  # a link at the name is not a directory
        tree.make_dir(("to-host",), parents=False, exist_ok=True)
    with pytest.raises(ObjectNotFound):
        tree.make_dir(("no", "parent"), parents=False, exist_ok=False)
    assert _snapshot(outside) == before


def test_delete_removes_links_not_their_targets_and_never_descends_through_one(
    tree: Tree, folder: Path, outside: Path
) -> None:
    before = _snapshot(outside)
    (folder / "to-secret").symlink_to(outside / "secret")
    (folder / "to-host").symlink_to(outside)
    (folder / "dir" / "deep").mkdir(parents=True)
    (folder / "dir" / "deep" / "f").write_bytes(b"x")
    (folder / "dir" / "to-host").symlink_to(outside)
    os.mkfifo(folder / "dir" / "pipe")
    with pytest.raises(InvalidAPIParameters):
        tree.delete(("to-host", "secret"), recursive=False)
    with pytest.raises(InvalidAPIParameters, match="not empty"):
        tree.delete(("dir",), recursive=False)
    tree.delete(("to-secret",), recursive=False)
    tree.delete(("to-host",), recursive=True)
    _within(10, lambda: tree.delete(("dir",), recursive=True))
    assert sorted(os.listdir(folder)) == []
    assert _snapshot(outside) == before
    with pytest.raises(InvalidAPIParameters):
        tree.delete((), recursive=True)


def test_a_recursive_delete_is_bounded(
    tree: Tree, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tree_module, "MAX_DELETE_ENTRIES", 5)
    (folder / "many").mkdir()
    for i in range(10):
        (folder / "many" / str(i)).write_bytes(b"")
    with pytest.raises(InvalidAPIParameters, match="more than 5 entries"):
        tree.delete(("many",), recursive=True)
    monkeypatch.setattr(tree_module, "MAX_DELETE_DEPTH", 3)
    (folder / "d1" / "d2" / "d3" / "d4").mkdir(parents=True)
    with pytest.raises(InvalidAPIParameters, match="deeper"):
        tree.delete(("d1",), recursive=True)


def test_rename_never_replaces_and_move_replaces_a_link_instead_of_following_it(
    tree: Tree, folder: Path, outside: Path
) -> None:
    before = _snapshot(outside)
    (folder / "a.txt").write_bytes(b"A")
    (folder / "b.txt").write_bytes(b"B")
    with pytest.raises(InvalidAPIParameters, match="exists"):
        tree.rename(("a.txt",), "b.txt")
    tree.rename(("a.txt",), "c.txt")
    assert (folder / "c.txt").read_bytes() == b"A"
    (folder / "to-host").symlink_to(outside)
    (folder / "to-secret").symlink_to(outside / "secret")
    tree.move(("c.txt",), ("to-host",))  # a link to a directory is a name to replace
    assert (folder / "to-host").read_bytes() == b"A" and not (folder / "to-host").is_symlink()
    tree.move(("b.txt",), ("to-secret",))
    assert (folder / "to-secret").read_bytes() == b"B"
    (folder / "sub").mkdir()
    tree.move(("to-host",), ("sub",))  # into a directory
    assert (folder / "sub" / "to-host").read_bytes() == b"A"
    with pytest.raises(InvalidAPIParameters, match="itself"):
        tree.move(("sub",), ("sub", "inner"))
    (folder / "lnk").symlink_to(outside)
    with pytest.raises(InvalidAPIParameters):
        tree.move(("lnk", "secret"), ("stolen",))  # a source through a link
    with pytest.raises(InvalidAPIParameters):
        tree.move(("to-secret",), ("lnk", "planted"))  # a destination through a link
    assert _snapshot(outside) == before


def test_an_upload_lands_by_rename_never_through_a_link(
    root: Path, folder: Path, outside: Path
) -> None:
    before = _snapshot(outside)
    (folder / "to-secret").symlink_to(outside / "secret")
    (folder / "to-host").symlink_to(outside)
    staging = root / "staging"
    staging.mkdir()
    (staging / "u1").write_bytes(b"uploaded")
    with Tree.opened(folder) as tree, safe_fs.closing(os.open(staging, os.O_RDONLY)) as sfd:
        tree.place(sfd, "u1", ("to-secret",))
        assert (folder / "to-secret").read_bytes() == b"uploaded"
        (staging / "u2").write_bytes(b"x")
        with pytest.raises(InvalidAPIParameters):
            tree.place(sfd, "u2", ("to-host", "planted"))
        tree.place(sfd, "u2", ("new", "dirs", "file"))  # parents made, inside
        assert (folder / "new" / "dirs" / "file").read_bytes() == b"x"
        tree.create_empty(("to-host",))  # a 0-byte upload replaces the link too
        assert (folder / "to-host").stat().st_size == 0
        with pytest.raises(InvalidAPIParameters):
            tree.create_empty(("new", "dirs"))  # a directory is not replaced
    assert _snapshot(outside) == before


# --- usage -----------------------------------------------------------------------------


def test_usage_counts_what_is_inside_once_and_follows_no_link(folder: Path, outside: Path) -> None:
    (outside / "big").write_bytes(b"x" * 100_000)
    (folder / "a").write_bytes(b"x" * 10)
    (folder / "d" / "e").mkdir(parents=True)
    (folder / "d" / "e" / "b").write_bytes(b"x" * 20)
    os.link(folder / "a", folder / "d" / "a-again")
    (folder / "to-big").symlink_to(outside / "big")
    (folder / "to-host").symlink_to(outside)
    os.mkfifo(folder / "pipe")
    with safe_fs.closing(safe_fs.open_root(folder)) as fd:
        usage = _within(5, measure, fd)
    assert usage.complete
    links = len(str(outside / "big")) + len(str(outside))
    assert usage.bytes == 10 + 20 + links
    assert usage.dirs == 2
    with safe_fs.closing(safe_fs.open_root(folder)) as fd:
        assert not measure(fd, max_entries=3).complete
        assert not measure(fd, max_depth=1).complete


# --- tokens ----------------------------------------------------------------------------


def test_tokens_are_refused_when_forged_altered_expired_or_for_another_use() -> None:
    signer = TokenSigner(b"k" * 32)
    folder, user = uuid.uuid4(), uuid.uuid4()
    token, claims = signer.issue(
        "upload", folder=folder, path="a/b", user=user, access_key="AK", size=3
    )
    assert signer.verify(token, "upload") == claims
    with pytest.raises(InvalidToken, match="for an upload"):
        signer.verify(token, "download")
    with pytest.raises(InvalidToken, match="signature"):
        TokenSigner(b"x" * 32).verify(token, "upload")  # another installation's key
    version, body, mac = token.split(".")
    other, _ = signer.issue("upload", folder=uuid.uuid4(), path="a/b", user=user, access_key="AK")
    with pytest.raises(InvalidToken, match="signature"):
        signer.verify(f"{version}.{other.split('.')[1]}.{mac}", "upload")  # claims swapped
    with pytest.raises(InvalidToken):
        signer.verify(f"{version}.{body}.{mac[:-2]}", "upload")
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify(token, "upload", now=time.time() + 10**6)
    longest = "/".join(["日" * 85] * 16)  # 4095 bytes of UTF-8: the longest path accepted
    assert len(parse_path(longest)) == 16
    big, _ = signer.issue("download", folder=folder, path=longest, user=user, access_key="AK")
    assert signer.verify(big, "download").path == longest
    for junk in ("", "v1", "v1..", "v2.a.b", "v1.!!.!!", "x" * (MAX_TOKEN + 1)):
        with pytest.raises(InvalidToken):
            signer.verify(junk, "upload")


# --- uploads through the staging area, with the quota -----------------------------------


@pytest.fixture
async def transfers(root: Path) -> AsyncIterator[Transfers]:
    volume = Volume(root, threads=2)
    yield Transfers(volume)
    volume.close()


def _claims(size: int, path: str, folder: Path) -> Claims:
    _, claims = TokenSigner(b"k" * 32).issue(
        "upload",
        folder=uuid.UUID(folder.name),
        path=path,
        user=uuid.uuid4(),
        access_key="AK",
        size=size,
    )
    return claims


def _reader(data: bytes, *, piece: int = 7, fail_after: int | None = None) -> Read:
    """A PATCH body arriving in small pieces (and cut off after ``fail_after`` bytes)."""
    sent = 0

    async def read(n: int) -> bytes:
        nonlocal sent
        if fail_after is not None and sent >= fail_after:
            raise ConnectionResetError("the client went away")
        take = data[sent : sent + min(n, piece)]
        sent += len(take)
        return take

    return read


async def test_an_interrupted_upload_resumes_and_lands_whole(
    transfers: Transfers, folder: Path, root: Path
) -> None:
    data = os.urandom(3000)
    claims = _claims(len(data), "in/file.bin", folder)
    with pytest.raises(BodyCut):
        await transfers.receive(
            claims,
            folder,
            0,
            ("in", "file.bin"),
            offset=0,
            length=len(data),
            read=_reader(data, fail_after=1000),
        )
    offset = await transfers.offset(claims)
    assert 1000 <= offset < len(data)
    assert not (folder / "in").exists()  # nothing half-written in the folder
    with pytest.raises(OffsetConflict):
        await transfers.receive(
            claims,
            folder,
            0,
            ("in", "file.bin"),
            offset=0,
            length=len(data),
            read=_reader(data),
        )
    rest = data[offset:]
    at = await transfers.receive(
        claims,
        folder,
        0,
        ("in", "file.bin"),
        offset=offset,
        length=len(rest),
        read=_reader(rest, piece=500),
    )
    assert at == len(data) and (folder / "in" / "file.bin").read_bytes() == data
    if AS_ROOT:
        assert (folder / "in" / "file.bin").stat().st_uid == TENANT_UID
    assert await transfers.offset(claims) == len(data)
    # the last PATCH repeated (its answer was lost) is told it is done; a restart is refused
    assert await transfers.receive(
        claims,
        folder,
        0,
        ("in", "file.bin"),
        offset=len(data),
        length=0,
        read=_reader(b""),
    ) == len(data)
    with pytest.raises(OffsetConflict):
        await transfers.receive(
            claims,
            folder,
            0,
            ("in", "file.bin"),
            offset=0,
            length=5,
            read=_reader(b"again"),
        )


async def test_nothing_is_written_past_the_declared_size_or_the_quota(
    transfers: Transfers, folder: Path, root: Path
) -> None:
    (folder / "existing").write_bytes(b"x" * 60)
    claims = _claims(10, "f", folder)
    with pytest.raises(TooLarge):
        await transfers.receive(
            claims,
            folder,
            0,
            ("f",),
            offset=0,
            length=11,
            read=_reader(b"y" * 11),
        )
    fid = uuid.UUID(folder.name)
    with pytest.raises(QuotaExceeded):  # request-upload: 60 + 50 > 100
        await transfers.prepare_upload(fid, folder, 100, ("big",), 50)
    await transfers.prepare_upload(fid, folder, 100, ("ok",), 40)
    first, second = _claims(30, "one", folder), _claims(30, "two", folder)
    # the first upload is under way (declared 30: 60 + 30 fits) ...
    with pytest.raises(BodyCut):
        await transfers.receive(
            first,
            folder,
            100,
            ("one",),
            offset=0,
            length=30,
            read=_reader(b"1" * 30, fail_after=10),
        )
    # ... so the second cannot have the same bytes: 60 + 30 + 30 > 100
    with pytest.raises(QuotaExceeded):
        await transfers.receive(
            second,
            folder,
            100,
            ("two",),
            offset=0,
            length=30,
            read=_reader(b"2" * 30),
        )
    assert not (folder / "two").exists()
    at = await transfers.offset(first)
    # a quota lowered meanwhile applies at the next PATCH
    with pytest.raises(QuotaExceeded):
        await transfers.receive(
            first,
            folder,
            80,
            ("one",),
            offset=at,
            length=30 - at,
            read=_reader(b"1" * (30 - at)),
        )
    await transfers.receive(
        first,
        folder,
        100,
        ("one",),
        offset=at,
        length=30 - at,
        read=_reader(b"1" * (30 - at)),
    )
    assert (folder / "one").read_bytes() == b"1" * 30
    sizes = [os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(folder) for f in fs]
    assert sum(sizes) <= 100


async def test_one_patch_at_a_time_per_upload(transfers: Transfers, folder: Path) -> None:
    claims = _claims(10, "f", folder)
    gate = asyncio.Event()

    async def slow(n: int) -> bytes:
        await gate.wait()
        return b"a" * min(n, 10)

    first = asyncio.create_task(
        transfers.receive(
            claims,
            folder,
            0,
            ("f",),
            offset=0,
            length=10,
            read=slow,
        )
    )
    await asyncio.sleep(0.05)
    with pytest.raises(OffsetConflict, match="another request"):
        await transfers.receive(
            claims,
            folder,
            0,
            ("f",),
            offset=0,
            length=10,
            read=_reader(b"b" * 10),
        )
    gate.set()
    assert await first == 10
    assert (folder / "f").read_bytes() == b"a" * 10


async def test_unfinished_uploads_per_folder_are_capped_and_old_ones_swept(
    transfers: Transfers, folder: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer_module, "MAX_STAGED_PER_FOLDER", 2)
    started = [_claims(10, f"f{i}", folder) for i in range(3)]
    for claims in started[:2]:
        with pytest.raises(BodyCut):
            await transfers.receive(
                claims,
                folder,
                0,
                (claims.path,),
                offset=0,
                length=10,
                read=_reader(b"x" * 10, fail_after=3),
            )
    with pytest.raises(TooManyUploads):
        await transfers.receive(
            started[2], folder, 0, ("f2",), offset=0, length=10, read=_reader(b"x" * 10)
        )
    staged = root / ".kh-staging" / folder.name
    old = time.time() - TOKEN_TTL_S - 7200
    os.utime(staged / started[0].upload_id, (old, old))  # older than any token: dead
    assert (
        await transfers.receive(
            started[2], folder, 0, ("f2",), offset=0, length=10, read=_reader(b"x" * 10)
        )
        == 10
    )
    assert not (staged / started[0].upload_id).exists()
